(** * RecordState (Swift [RecordState]): membership × field registers, under
    the two table policies (Swift [DeletePolicy.updateWins] / [.deleteWins]). *)

From Coq Require Import NArith Bool.
From Converge Require Import Lattice Stamp CausalContext ORSet LWW MVRegister.

(** ** [.updateWins]: a record is the product of its membership and one
    register per column (LWW columns and MV "critical" columns); joins are
    pointwise.  A product of semilattices is a semilattice ([prodSL],
    [funSL] in [Lattice.v]).  [Column] is any type of column names. *)
Definition RecordState_updateWins_SL (Column : Type) : Semilattice :=
  prodSL ORSet_SL (prodSL (funSL Column LWWRegister_SL) (funSL Column MVRegister_SL)).

Section UpdateWins.
Context (Column : Type).
Let L := RecordState_updateWins_SL Column.

Theorem RecordState_updateWins_merge_comm (a b : car L) : eqv (join a b) (join b a).
Proof. apply join_comm. Qed.

Theorem RecordState_updateWins_merge_assoc (a b c : car L) :
  eqv (join (join a b) c) (join a (join b c)).
Proof. apply join_assoc. Qed.

Theorem RecordState_updateWins_merge_idem (a : car L) : eqv (join a a) a.
Proof. apply join_idem. Qed.
End UpdateWins.

(** ** [.deleteWins]: field values belong to the incarnation (add dot) they
    were written under.  A field is a map from (column, incarnation) to a
    register of any semilattice [R] (LWW or MV).  The join is the pointwise
    join of the maps (union of keys, register join on common keys) followed
    by [prune]: entries whose incarnation is dead in the joined membership
    are dropped. *)
Record RecordDW (Column : Type) (R : Semilattice) := mkDW {
  membership : ORSet;
  fields : (Column * Stamp) -> option (car R)
}.
Arguments mkDW {Column R} _ _.
Arguments membership {Column R} _.
Arguments fields {Column R} _ _.

Section DeleteWins.
Context {Column : Type} {R : Semilattice}.
Let O := optSL R.

Definition prune (m : ORSet) (f : (Column * Stamp) -> option (car R)) :
  (Column * Stamp) -> option (car R) :=
  fun k => if dead m (snd k) then None else f k.

Definition RecordState_deleteWins_merge (a b : RecordDW Column R) : RecordDW Column R :=
  let m := ORSet_merge (membership a) (membership b) in
  mkDW m (prune m (fun k => optjoin (fields a k) (fields b k))).

Definition DW_eqv (a b : RecordDW Column R) : Prop :=
  ORSet_eqv (membership a) (membership b) /\ forall k, opteqv (fields a k) (fields b k).

(** Invariant: the membership is well formed and no value is kept under a dead incarnation. *)
Definition DW_wellFormed (a : RecordDW Column R) : Prop :=
  wellFormed (membership a) /\ forall k, dead (membership a) (snd k) = true -> fields a k = None.

Lemma DW_eqv_refl a : DW_eqv a a.
Proof. split. apply ORSet_eqv_refl. intros k; apply (@eqv_refl O). Qed.

Lemma DW_eqv_sym a b : DW_eqv a b -> DW_eqv b a.
Proof.
  intros [H1 H2]; split. apply ORSet_eqv_sym, H1. intros k; apply (@eqv_sym O), H2.
Qed.

Lemma DW_eqv_trans a b c : DW_eqv a b -> DW_eqv b c -> DW_eqv a c.
Proof.
  intros [H1 H2] [H3 H4]; split. eapply ORSet_eqv_trans; eassumption.
  intros k; eapply (@eqv_trans O); [apply H2|apply H4].
Qed.

Theorem RecordState_deleteWins_merge_wellFormed a b :
  DW_wellFormed a -> DW_wellFormed b -> DW_wellFormed (RecordState_deleteWins_merge a b).
Proof.
  intros [Ha _] [Hb _]; split; simpl.
  - apply ORSet_merge_wellFormed; assumption.
  - intros k H. unfold prune. rewrite H. reflexivity.
Qed.

Lemma RecordState_deleteWins_merge_proper a a' b b' :
  DW_eqv a a' -> DW_eqv b b' ->
  DW_eqv (RecordState_deleteWins_merge a b) (RecordState_deleteWins_merge a' b').
Proof.
  intros [H1 H2] [H3 H4]. pose proof (ORSet_merge_proper _ _ _ _ H1 H3) as Hm.
  split; simpl. exact Hm.
  intros k. unfold prune. rewrite (dead_eqv _ _ _ Hm).
  destruct (dead _ _). exact I. apply (@join_proper O); [apply H2|apply H4].
Qed.

Theorem RecordState_deleteWins_merge_comm a b :
  DW_eqv (RecordState_deleteWins_merge a b) (RecordState_deleteWins_merge b a).
Proof.
  pose proof (ORSet_merge_comm (membership a) (membership b)) as Hm.
  split; simpl. exact Hm.
  intros k. unfold prune. rewrite (dead_eqv _ _ _ Hm).
  destruct (dead _ _). exact I. apply (@join_comm O).
Qed.

(** Key fact: deadness only grows under membership joins (once dead, always
    dead), so pruning by an intermediate membership is subsumed by pruning
    by the final one. *)
Theorem RecordState_deleteWins_merge_assoc a b c :
  DW_wellFormed a -> DW_wellFormed b -> DW_wellFormed c ->
  DW_eqv (RecordState_deleteWins_merge (RecordState_deleteWins_merge a b) c)
         (RecordState_deleteWins_merge a (RecordState_deleteWins_merge b c)).
Proof.
  intros [Ha _] [Hb _] [Hc _].
  pose proof (ORSet_merge_assoc _ _ _ Ha Hb Hc) as Hm.
  split; simpl. exact Hm.
  intros [col i]. unfold prune; simpl. rewrite (dead_eqv _ _ _ Hm).
  destruct (dead (ORSet_merge (membership a) (ORSet_merge (membership b) (membership c))) i) eqn:D.
  - exact I.
  - destruct (dead (ORSet_merge (membership a) (membership b)) i) eqn:Dab.
    { apply (ORSet_dead_merge_l _ (membership c)) in Dab.
      rewrite (dead_eqv _ _ _ Hm) in Dab. congruence. }
    destruct (dead (ORSet_merge (membership b) (membership c)) i) eqn:Dbc.
    { apply (ORSet_dead_merge_r (membership a)) in Dbc. congruence. }
    apply (@join_assoc O).
Qed.

Theorem RecordState_deleteWins_merge_idem a :
  DW_wellFormed a -> DW_eqv (RecordState_deleteWins_merge a a) a.
Proof.
  intros [Ha Hf].
  pose proof (ORSet_merge_idem (membership a)) as Hm.
  split; simpl. exact Hm.
  intros k. unfold prune. rewrite (dead_eqv _ _ _ Hm).
  destruct (dead (membership a) (snd k)) eqn:D.
  - rewrite (Hf k D). exact I.
  - apply (@join_idem O).
Qed.

(** A value written under an incarnation that the other side has deleted
    (its membership covers the incarnation and no longer holds it) never
    shows again, whatever its stamp: delete wins over a concurrent edit. *)
Theorem RecordState_deleteWins_dead_incarnation_pruned a b col i :
  dead (membership b) i = true ->
  fields (RecordState_deleteWins_merge a b) (col, i) = None /\
  fields (RecordState_deleteWins_merge b a) (col, i) = None.
Proof.
  intros H. simpl; unfold prune; simpl.
  rewrite (ORSet_dead_merge_r (membership a) _ _ H), (ORSet_dead_merge_l _ (membership a) _ H).
  split; reflexivity.
Qed.

Definition DW_WF := { a : RecordDW Column R | DW_wellFormed a }.

Definition DW_WF_merge (x y : DW_WF) : DW_WF :=
  exist _ (RecordState_deleteWins_merge (proj1_sig x) (proj1_sig y))
          (RecordState_deleteWins_merge_wellFormed _ _ (proj2_sig x) (proj2_sig y)).

End DeleteWins.

Definition RecordState_deleteWins_SL (Column : Type) (R : Semilattice) : Semilattice.
Proof.
  refine {| car := @DW_WF Column R;
            eqv := fun x y => DW_eqv (proj1_sig x) (proj1_sig y);
            join := DW_WF_merge |}.
  - intros; apply DW_eqv_refl.
  - intros x y; apply DW_eqv_sym.
  - intros x y z; apply DW_eqv_trans.
  - intros x x' y y'; apply RecordState_deleteWins_merge_proper.
  - intros x y; apply RecordState_deleteWins_merge_comm.
  - intros [x Hx] [y Hy] [z Hz]; apply RecordState_deleteWins_merge_assoc; assumption.
  - intros [x Hx]; apply RecordState_deleteWins_merge_idem; assumption.
Defined.

(** The two field policies for [.deleteWins] tables. *)
Definition RecordState_deleteWins_LWW_SL (Column : Type) : Semilattice :=
  RecordState_deleteWins_SL Column LWWRegister_SL.
Definition RecordState_deleteWins_MV_SL (Column : Type) : Semilattice :=
  RecordState_deleteWins_SL Column MVRegister_SL.
