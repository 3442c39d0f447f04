(** * Stamp: [(hlc, replica)] ordered lexicographically (Swift [Stamp], [Stamp.<]).

    [ReplicaID] is a 128-bit unsigned integer in Swift, compared as unsigned
    big-endian bytes, i.e. numerically; it is modelled as [N].  [HLC] is a
    [UInt64] in Swift, modelled as [N]. *)

From Coq Require Import NArith Bool Lia.
Open Scope N_scope.

Definition ReplicaID := N.
Definition HLC := N.

(** [Stamp = (hlc, replica)]. *)
Definition Stamp : Type := (HLC * ReplicaID)%type.
Definition hlc (s : Stamp) : HLC := fst s.
Definition replica (s : Stamp) : ReplicaID := snd s.

(** Swift [Stamp.<]. *)
Definition Stamp_lt (a b : Stamp) : Prop :=
  fst a < fst b \/ (fst a = fst b /\ snd a < snd b).

Definition Stamp_ltb (a b : Stamp) : bool :=
  (fst a <? fst b) || ((fst a =? fst b) && (snd a <? snd b)).

Definition Stamp_eqb (a b : Stamp) : bool :=
  (fst a =? fst b) && (snd a =? snd b).

Lemma Stamp_ltb_spec (a b : Stamp) : Stamp_ltb a b = true <-> Stamp_lt a b.
Proof.
  unfold Stamp_ltb, Stamp_lt.
  rewrite orb_true_iff, andb_true_iff, N.ltb_lt, N.eqb_eq, N.ltb_lt. tauto.
Qed.

Lemma Stamp_eqb_spec (a b : Stamp) : Stamp_eqb a b = true <-> a = b.
Proof.
  destruct a as [h1 r1], b as [h2 r2]; unfold Stamp_eqb; simpl.
  rewrite andb_true_iff, !N.eqb_eq. split.
  - intros [-> ->]; reflexivity.
  - intros H; inversion H; auto.
Qed.

Lemma Stamp_eqb_refl (a : Stamp) : Stamp_eqb a a = true.
Proof. apply Stamp_eqb_spec; reflexivity. Qed.

Lemma Stamp_eqb_neq (a b : Stamp) : Stamp_eqb a b = false <-> a <> b.
Proof.
  rewrite <- Stamp_eqb_spec. destruct (Stamp_eqb a b); intuition congruence.
Qed.

Theorem Stamp_lt_irrefl (a : Stamp) : ~ Stamp_lt a a.
Proof. unfold Stamp_lt; lia. Qed.

Theorem Stamp_lt_trans (a b c : Stamp) : Stamp_lt a b -> Stamp_lt b c -> Stamp_lt a c.
Proof. unfold Stamp_lt; lia. Qed.

Theorem Stamp_lt_asym (a b : Stamp) : Stamp_lt a b -> ~ Stamp_lt b a.
Proof. unfold Stamp_lt; lia. Qed.

(** Trichotomy: the order on stamps is total. *)
Theorem Stamp_lt_total (a b : Stamp) : Stamp_lt a b \/ a = b \/ Stamp_lt b a.
Proof.
  destruct a as [h1 r1], b as [h2 r2]; unfold Stamp_lt; simpl.
  destruct (N.lt_trichotomy h1 h2) as [H|[H|H]].
  - left; left; exact H.
  - subst h2. destruct (N.lt_trichotomy r1 r2) as [H'|[H'|H']].
    + left; right; auto.
    + subst; right; left; reflexivity.
    + right; right; right; auto.
  - right; right; left; exact H.
Qed.

Theorem Stamp_lt_dec (a b : Stamp) : {Stamp_lt a b} + {~ Stamp_lt a b}.
Proof.
  destruct (Stamp_ltb a b) eqn:E.
  - left; apply Stamp_ltb_spec, E.
  - right; intros H; apply Stamp_ltb_spec in H; congruence.
Defined.

Theorem Stamp_eq_dec (a b : Stamp) : {a = b} + {a <> b}.
Proof.
  destruct (Stamp_eqb a b) eqn:E.
  - left; apply Stamp_eqb_spec, E.
  - right; apply Stamp_eqb_neq, E.
Defined.

(** The Swift test [StampTests.totalOrder] checks all of the above together. *)
Theorem Stamp_strict_total_order :
  (forall a, ~ Stamp_lt a a) /\
  (forall a b c, Stamp_lt a b -> Stamp_lt b c -> Stamp_lt a c) /\
  (forall a b, Stamp_lt a b \/ a = b \/ Stamp_lt b a).
Proof.
  split; [exact Stamp_lt_irrefl|split; [exact Stamp_lt_trans|exact Stamp_lt_total]].
Qed.
