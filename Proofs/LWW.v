(** * LWWRegister (Swift [LWWRegister]): last-writer-wins register.

    [Value] is modelled as [Z].  Swift orders values
    [NULL < INTEGER < REAL < TEXT < BLOB], then by value (REAL by IEEE-754
    totalOrder, then bytes): a decidable total order, which embeds in [Z] in
    the same way; only totality and decidability of the order are used. *)

From Coq Require Import NArith ZArith Bool Lia.
From Converge Require Import Lattice Stamp.

Definition Value := Z.

Record LWWRegister := mkLWW { value : Value; stamp : Stamp }.

(** Swift [LWWRegister(value:stamp:)]: a local write. *)
Definition LWWRegister_write (v : Value) (s : Stamp) : LWWRegister := mkLWW v s.

(** ** Generic: the maximum for a decidable strict total order is a semilattice. *)
Section MaxOrder.
Context {T : Type} (ltb : T -> T -> bool).
Context (irr : forall a, ltb a a = false).
Context (trans : forall a b c, ltb a b = true -> ltb b c = true -> ltb a c = true).
Context (tot : forall a b, ltb a b = false -> ltb b a = false -> a = b).

Definition maxb (a b : T) : T := if ltb a b then b else a.

Lemma asym a b : ltb a b = true -> ltb b a = false.
Proof.
  intros H. destruct (ltb b a) eqn:E; auto.
  rewrite <- (irr a). symmetry. eapply trans; eassumption.
Qed.

Lemma maxb_comm a b : maxb a b = maxb b a.
Proof.
  unfold maxb. destruct (ltb a b) eqn:E1, (ltb b a) eqn:E2; auto.
  - rewrite asym in E2; congruence.
Qed.

Lemma maxb_idem a : maxb a a = a.
Proof. unfold maxb; rewrite irr; reflexivity. Qed.

Lemma maxb_assoc a b c : maxb (maxb a b) c = maxb a (maxb b c).
Proof.
  unfold maxb.
  destruct (ltb a b) eqn:Hab, (ltb b c) eqn:Hbc; simpl; rewrite ?Hab, ?Hbc.
  - rewrite (trans a b c Hab Hbc); reflexivity.
  - reflexivity.
  - reflexivity.
  - destruct (ltb a c) eqn:Hac; auto.
    destruct (ltb b a) eqn:Hba.
    + rewrite (trans b a c Hba Hac) in Hbc; congruence.
    + rewrite <- (tot a b Hab Hba) in Hbc. congruence.
Qed.

Lemma maxb_ge_r a b : ltb a b = true -> maxb a b = b.
Proof. unfold maxb; intros ->; reflexivity. Qed.
End MaxOrder.

(** ** The order used by [merge]: by stamp, then by value (the deterministic
    tie-break for equal stamps, which only corruption can produce). *)
Definition LWW_ltb (a b : LWWRegister) : bool :=
  Stamp_ltb (stamp a) (stamp b) ||
  (Stamp_eqb (stamp a) (stamp b) && (value a <? value b)%Z).

Definition LWW_lt (a b : LWWRegister) : Prop :=
  (fst (stamp a) < fst (stamp b) \/
   (fst (stamp a) = fst (stamp b) /\
     (snd (stamp a) < snd (stamp b) \/
      (snd (stamp a) = snd (stamp b) /\ (value a < value b)%Z))))%N.

Lemma LWW_ltb_spec a b : LWW_ltb a b = true <-> LWW_lt a b.
Proof.
  destruct a as [v1 [h1 r1]], b as [v2 [h2 r2]].
  unfold LWW_ltb, LWW_lt, Stamp_ltb, Stamp_eqb; simpl.
  rewrite !orb_true_iff, !andb_true_iff, !N.ltb_lt, !N.eqb_eq, Z.ltb_lt.
  lia.
Qed.

Lemma LWW_ltb_false a b : LWW_ltb a b = false <-> ~ LWW_lt a b.
Proof. rewrite <- LWW_ltb_spec. destruct (LWW_ltb a b); intuition congruence. Qed.

Lemma LWW_irr a : LWW_ltb a a = false.
Proof. apply LWW_ltb_false. unfold LWW_lt. lia. Qed.

Lemma LWW_trans a b c : LWW_ltb a b = true -> LWW_ltb b c = true -> LWW_ltb a c = true.
Proof. rewrite !LWW_ltb_spec. unfold LWW_lt. lia. Qed.

Lemma LWW_tot a b : LWW_ltb a b = false -> LWW_ltb b a = false -> a = b.
Proof.
  rewrite !LWW_ltb_false. destruct a as [v1 [h1 r1]], b as [v2 [h2 r2]].
  unfold LWW_lt; simpl; intros H1 H2.
  assert (h1 = h2 /\ r1 = r2 /\ v1 = v2) as (-> & -> & ->) by lia. reflexivity.
Qed.

Ltac lww_order := solve [exact LWW_irr | exact LWW_trans | exact LWW_tot | assumption].

(** Swift [LWWRegister.merge]: the larger stamp wins; on equal stamps the larger value. *)
Definition LWWRegister_merge (a b : LWWRegister) : LWWRegister := maxb LWW_ltb a b.

Theorem LWWRegister_merge_comm a b : LWWRegister_merge a b = LWWRegister_merge b a.
Proof. apply maxb_comm; lww_order. Qed.

Theorem LWWRegister_merge_assoc a b c :
  LWWRegister_merge (LWWRegister_merge a b) c = LWWRegister_merge a (LWWRegister_merge b c).
Proof. apply maxb_assoc; lww_order. Qed.

Theorem LWWRegister_merge_idem a : LWWRegister_merge a a = a.
Proof. apply maxb_idem; lww_order. Qed.

(** The result of a merge is one of the inputs, and its stamp is the larger one. *)
Theorem LWWRegister_merge_larger_stamp_wins a b :
  Stamp_lt (stamp a) (stamp b) -> LWWRegister_merge a b = b /\ LWWRegister_merge b a = b.
Proof.
  intros H. assert (E : LWW_ltb a b = true).
  { unfold LWW_ltb. apply Stamp_ltb_spec in H. rewrite H. reflexivity. }
  split. apply maxb_ge_r; lww_order.
  rewrite LWWRegister_merge_comm. apply maxb_ge_r; lww_order.
Qed.

(** A local write at a stamp above the current one is an inflation. *)
Theorem LWWRegister_write_inflation (old : LWWRegister) (v : Value) (s : Stamp) :
  Stamp_lt (stamp old) s ->
  LWWRegister_merge old (LWWRegister_write v s) = LWWRegister_write v s.
Proof. intros H. apply (LWWRegister_merge_larger_stamp_wins old (LWWRegister_write v s) H). Qed.

Definition LWWRegister_SL : Semilattice.
Proof.
  refine {| car := LWWRegister; eqv := @eq LWWRegister; join := LWWRegister_merge |}.
  - reflexivity.
  - intros; symmetry; assumption.
  - intros; etransitivity; eassumption.
  - intros; subst; reflexivity.
  - apply LWWRegister_merge_comm.
  - apply LWWRegister_merge_assoc.
  - apply LWWRegister_merge_idem.
Defined.
