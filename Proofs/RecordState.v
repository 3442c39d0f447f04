(** * RecordState, Swift-faithful shape: membership × [String: FieldState].

    Swift's [FieldState] is [.plain(Register)] (for [.updateWins]) or
    [.incarnated([incarnation: Register])] (for [.deleteWins]); the two meet
    only when a table's policy changed, and then [.incarnated] ranks above
    [.plain] (an ordered sum).  [RecordState.merging] joins the membership and
    the fields, then prunes the incarnated registers of incarnations that are
    dead in the joined membership.

    This file proves the record join a semilattice generically, for any field
    lattice with a "prune by membership" operation satisfying four laws
    ([Prunable]), and builds the Swift field lattice from combinators.  Note:
    the empty incarnated field is kept as [FInc] of the empty map; see the
    README ("pruned to nil") for why this matters. *)

From Coq Require Import NArith Bool.
From Converge Require Import Lattice Stamp CausalContext ORSet LWW MVRegister.

(** Deadness depends on the membership only through [dead]. *)
Definition dead_le (m1 m : ORSet) : Prop := forall i, dead m1 i = true -> dead m i = true.
Definition dead_same (m m' : ORSet) : Prop := forall i, dead m i = dead m' i.

Record Prunable := {
  pfield : Semilattice;
  pprune : ORSet -> car pfield -> car pfield;
  pclean : ORSet -> car pfield -> Prop;
  pprune_proper : forall m m' x x', dead_same m m' -> eqv x x' -> eqv (pprune m x) (pprune m' x');
  pprune_absorb : forall m1 m x y, dead_le m1 m ->
    eqv (pprune m (join (pprune m1 x) y)) (pprune m (join x y));
  pprune_prune : forall m1 m x, dead_le m1 m -> eqv (pprune m (pprune m1 x)) (pprune m x);
  pprune_clean : forall m x, pclean m x -> eqv (pprune m x) x;
  pclean_prune : forall m x, pclean m (pprune m x)
}.

Arguments pprune {_} _ _.
Arguments pclean {_} _ _.

(** ** The record lattice over a prunable field lattice *)
Section Rec.
Context (P : Prunable).
Let F := pfield P.

Definition Rec : Type := (ORSet * car F)%type.

Definition Rec_merge (a b : Rec) : Rec :=
  let m := ORSet_merge (fst a) (fst b) in (m, pprune m (join (snd a) (snd b))).

Definition Rec_eqv (a b : Rec) : Prop := ORSet_eqv (fst a) (fst b) /\ eqv (snd a) (snd b).

Definition Rec_wellFormed (a : Rec) : Prop := wellFormed (fst a) /\ pclean (fst a) (snd a).

Lemma dead_same_eqv m m' : ORSet_eqv m m' -> dead_same m m'.
Proof. intros H i; apply dead_eqv, H. Qed.

Lemma pprune_absorb_r m1 m (x y : car F) : dead_le m1 m ->
  eqv (pprune (p := P) m (join x (pprune (p := P) m1 y))) (pprune (p := P) m (join x y)).
Proof.
  intros H.
  eapply eqv_trans. apply (pprune_proper P m m). intros i; reflexivity. apply join_comm.
  eapply eqv_trans. apply (pprune_absorb P), H.
  apply (pprune_proper P m m). intros i; reflexivity. apply join_comm.
Qed.

Theorem RecordState_merge_wellFormed a b :
  Rec_wellFormed a -> Rec_wellFormed b -> Rec_wellFormed (Rec_merge a b).
Proof.
  intros [Ha _] [Hb _]; split; simpl.
  - apply ORSet_merge_wellFormed; assumption.
  - apply pclean_prune.
Qed.

Lemma RecordState_merge_proper a a' b b' :
  Rec_eqv a a' -> Rec_eqv b b' -> Rec_eqv (Rec_merge a b) (Rec_merge a' b').
Proof.
  intros [H1 H2] [H3 H4]. pose proof (ORSet_merge_proper _ _ _ _ H1 H3) as Hm.
  split; simpl. exact Hm.
  apply pprune_proper. apply dead_same_eqv, Hm. apply join_proper; assumption.
Qed.

Theorem RecordState_merge_comm a b : Rec_eqv (Rec_merge a b) (Rec_merge b a).
Proof.
  pose proof (ORSet_merge_comm (fst a) (fst b)) as Hm.
  split; simpl. exact Hm.
  apply pprune_proper. apply dead_same_eqv, Hm. apply join_comm.
Qed.

Theorem RecordState_merge_assoc a b c :
  Rec_wellFormed a -> Rec_wellFormed b -> Rec_wellFormed c ->
  Rec_eqv (Rec_merge (Rec_merge a b) c) (Rec_merge a (Rec_merge b c)).
Proof.
  intros [Ha _] [Hb _] [Hc _].
  pose proof (ORSet_merge_assoc _ _ _ Ha Hb Hc) as Hm.
  split; simpl. exact Hm.
  eapply eqv_trans. apply (pprune_absorb P).
  { intros i D. apply ORSet_dead_merge_l, D. }
  eapply eqv_trans. apply pprune_proper. apply dead_same_eqv, Hm. apply join_assoc.
  apply eqv_sym. apply pprune_absorb_r.
  intros i D. apply ORSet_dead_merge_r, D.
Qed.

Theorem RecordState_merge_idem a :
  Rec_wellFormed a -> Rec_eqv (Rec_merge a a) a.
Proof.
  intros [Ha Hc].
  pose proof (ORSet_merge_idem (fst a)) as Hm.
  split; simpl. exact Hm.
  eapply eqv_trans. apply pprune_proper. apply dead_same_eqv, Hm. apply join_idem.
  apply pprune_clean, Hc.
Qed.

Definition Rec_WF := { a : Rec | Rec_wellFormed a }.

Definition Rec_WF_merge (x y : Rec_WF) : Rec_WF :=
  exist _ (Rec_merge (proj1_sig x) (proj1_sig y))
          (RecordState_merge_wellFormed _ _ (proj2_sig x) (proj2_sig y)).
End Rec.

Definition RecordState_SL (P : Prunable) : Semilattice.
Proof.
  refine {| car := Rec_WF P;
            eqv := fun x y => Rec_eqv P (proj1_sig x) (proj1_sig y);
            join := Rec_WF_merge P |}.
  - intros x; split. apply ORSet_eqv_refl. apply eqv_refl.
  - intros x y [H1 H2]; split. apply ORSet_eqv_sym, H1. apply eqv_sym, H2.
  - intros x y z [H1 H2] [H3 H4]; split. eapply ORSet_eqv_trans; eassumption. eapply eqv_trans; eassumption.
  - intros x x' y y'; apply RecordState_merge_proper.
  - intros x y; apply RecordState_merge_comm.
  - intros [x Hx] [y Hy] [z Hz]; apply RecordState_merge_assoc; assumption.
  - intros [x Hx]; apply RecordState_merge_idem; assumption.
Defined.

(** ** Combinators *)

(** No pruning ([.plain] fields, [.updateWins]). *)
Definition noPrune (A : Semilattice) : Prunable.
Proof.
  refine {| pfield := A; pprune := fun _ x => x; pclean := fun _ _ => True |}.
  - intros; assumption.
  - intros; apply eqv_refl.
  - intros; apply eqv_refl.
  - intros; apply eqv_refl.
  - intros; exact I.
Defined.

(** Registers keyed by incarnation: drop the dead incarnations. *)
Definition incMap (R : Semilattice) : Prunable.
Proof.
  refine {| pfield := funSL Stamp (optSL R);
            pprune := fun m f i => if dead m i then None else f i;
            pclean := fun m f => forall i, dead m i = true -> f i = None |}.
  - intros m m' f f' Hd Hf i; simpl. rewrite Hd. destruct (dead m' i). exact I. apply Hf.
  - intros m1 m f g Hd i; simpl. destruct (dead m i) eqn:D. exact I.
    destruct (dead m1 i) eqn:D1. rewrite (Hd i D1) in D; discriminate.
    apply (@eqv_refl (optSL R)).
  - intros m1 m f Hd i; simpl. destruct (dead m i) eqn:D. exact I.
    destruct (dead m1 i) eqn:D1. rewrite (Hd i D1) in D; discriminate.
    apply (@eqv_refl (optSL R)).
  - intros m f Hc i; simpl. destruct (dead m i) eqn:D.
    rewrite (Hc i D); exact I. apply (@eqv_refl (optSL R)).
  - intros m f i D; simpl; rewrite D; reflexivity.
Defined.

(** Ordered sum [A ⊕ B]: every [B] element is above every [A] element
    (Swift: [.incarnated] ranks above [.plain]). *)
Definition ordsumSL (A B : Semilattice) : Semilattice.
Proof.
  refine {| car := (car A + car B)%type;
            eqv := fun x y => match x, y with
                              | inl a, inl a' => eqv a a'
                              | inr b, inr b' => eqv b b'
                              | _, _ => False end;
            join := fun x y => match x, y with
                               | inl a, inl a' => inl (join a a')
                               | inr b, inr b' => inr (join b b')
                               | inr b, inl _ => inr b
                               | inl _, inr b => inr b end |}.
  - intros [a|b]; apply eqv_refl.
  - intros [a|b] [a'|b']; try tauto; apply eqv_sym.
  - intros [a|b] [a'|b'] [a''|b'']; try tauto; apply eqv_trans.
  - intros [a|b] [a'|b'] [c|d] [c'|d']; try tauto; intros; try apply join_proper; assumption.
  - intros [a|b] [c|d]; try apply join_comm; apply eqv_refl.
  - intros [a|b] [c|d] [e|f]; try apply join_assoc; apply eqv_refl.
  - intros [a|b]; apply join_idem.
Defined.

Definition ordsumPrune (A : Semilattice) (P : Prunable) : Prunable.
Proof.
  refine {| pfield := ordsumSL A (pfield P);
            pprune := fun m x => match x with inl a => inl a | inr b => inr (pprune m b) end;
            pclean := fun m x => match x with inl _ => True | inr b => pclean m b end |}.
  - intros m m' [a|b] [a'|b'] Hd H; simpl in *; try tauto. apply (pprune_proper P); assumption.
  - intros m1 m [a|b] [c|d] Hd; simpl.
    + apply eqv_refl.
    + apply eqv_refl.
    + apply (pprune_prune P), Hd.
    + apply (pprune_absorb P), Hd.
  - intros m1 m [a|b] Hd; simpl. apply eqv_refl. apply (pprune_prune P), Hd.
  - intros m [a|b] Hc; simpl. apply eqv_refl. apply (pprune_clean P), Hc.
  - intros m [a|b]; simpl. exact I. apply (pclean_prune P).
Defined.

(** An optional entry (a missing dictionary entry is the bottom). *)
Definition optPrune (P : Prunable) : Prunable.
Proof.
  refine {| pfield := optSL (pfield P);
            pprune := fun m x => match x with None => None | Some b => Some (pprune m b) end;
            pclean := fun m x => match x with None => True | Some b => pclean m b end |}.
  - intros m m' [a|] [a'|] Hd H; simpl in *; try tauto. apply (pprune_proper P); assumption.
  - intros m1 m [a|] [c|] Hd; simpl.
    + apply (pprune_absorb P), Hd.
    + apply (pprune_prune P), Hd.
    + apply eqv_refl.
    + exact I.
  - intros m1 m [a|] Hd; simpl. apply (pprune_prune P), Hd. exact I.
  - intros m [a|] Hc; simpl. apply (pprune_clean P), Hc. exact I.
  - intros m [a|]; simpl. apply (pclean_prune P). exact I.
Defined.

(** Pointwise over columns. *)
Definition funPrune (I : Type) (P : Prunable) : Prunable.
Proof.
  refine {| pfield := funSL I (pfield P);
            pprune := fun m f i => pprune m (f i);
            pclean := fun m f => forall i, pclean m (f i) |}.
  - intros m m' f f' Hd H i; simpl. apply (pprune_proper P). exact Hd. apply H.
  - intros m1 m f g Hd i; simpl. apply (pprune_absorb P), Hd.
  - intros m1 m f Hd i; simpl. apply (pprune_prune P), Hd.
  - intros m f Hc i; simpl. apply (pprune_clean P), Hc.
  - intros m f i; simpl. apply (pclean_prune P).
Defined.

(** ** Swift's [RecordState]: [fields : Column -> FieldState?] with
    [FieldState = .plain(R) ⊕ .incarnated(Stamp -> R?)].  [R] is the register
    lattice (Swift [Register]: LWW or MV). *)
Definition FieldState_P (R : Semilattice) : Prunable :=
  optPrune (ordsumPrune R (incMap R)).

Definition SwiftRecordState_SL (Column : Type) (R : Semilattice) : Semilattice :=
  RecordState_SL (funPrune Column (FieldState_P R)).

Theorem SwiftRecordState_merge_comm (Column : Type) (R : Semilattice)
  (a b : car (SwiftRecordState_SL Column R)) : eqv (join a b) (join b a).
Proof. apply join_comm. Qed.

Theorem SwiftRecordState_merge_assoc (Column : Type) (R : Semilattice)
  (a b c : car (SwiftRecordState_SL Column R)) : eqv (join (join a b) c) (join a (join b c)).
Proof. apply join_assoc. Qed.

Theorem SwiftRecordState_merge_idem (Column : Type) (R : Semilattice)
  (a : car (SwiftRecordState_SL Column R)) : eqv (join a a) a.
Proof. apply join_idem. Qed.

(** ** Why an emptied [.incarnated] field must be kept (not removed)

    Swift's [FieldState.pruned(by:)] returns [nil] (removing the column) when
    no incarnation is left.  When a column holds [.plain] on one replica and
    [.incarnated] on another (after a table's delete policy changed), that
    breaks associativity, so replicas can diverge.  Below: a concrete
    counterexample on a faithful miniature of that code path (values [Z],
    incarnation lists).  Keeping the emptied field as [.incarnated([])], as
    [FieldState_P] does, makes the join a semilattice
    ([SwiftRecordState_merge_assoc]). *)
From Coq Require Import ZArith List.
Import ListNotations.

Inductive MiniField := MPlain (v : Z) | MInc (l : list (Stamp * Z)).

Definition mini_join (x y : option MiniField) : option MiniField :=
  match x, y with
  | None, y => y
  | x, None => x
  | Some (MPlain a), Some (MPlain b) => Some (MPlain (Z.max a b))
  | Some (MInc l), Some (MPlain _) => Some (MInc l)
  | Some (MPlain _), Some (MInc l) => Some (MInc l)
  | Some (MInc l1), Some (MInc l2) => Some (MInc (l1 ++ l2))
  end.

(** Swift's [pruned(by:)]: [nil] when nothing is left. *)
Definition mini_pruned_nil (m : ORSet) (x : option MiniField) : option MiniField :=
  match x with
  | Some (MInc l) =>
      match filter (fun e => negb (dead m (fst e))) l with
      | [] => None
      | l' => Some (MInc l')
      end
  | x => x
  end.

Definition mini_merge (a b : ORSet * option MiniField) : ORSet * option MiniField :=
  let m := ORSet_merge (fst a) (fst b) in (m, mini_pruned_nil m (mini_join (snd a) (snd b))).

Theorem FieldState_pruned_nil_not_assoc :
  let i : Stamp := (1, 7)%N in
  let a := (ORSet_empty, Some (MPlain 5%Z)) in
  let b := (ORSet_add i ORSet_empty, Some (MInc [(i, 9%Z)])) in
  let c := (ORSet_remove (2, 7)%N (ORSet_add i ORSet_empty), None) in
  snd (mini_merge (mini_merge a b) c) = None /\
  snd (mini_merge a (mini_merge b c)) = Some (MPlain 5%Z).
Proof. split; reflexivity. Qed.
