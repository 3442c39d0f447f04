(** * CausalContext (Swift [CausalContext]): per-replica high-water marks.

    Swift stores a dictionary [ReplicaID: HLC]; it is modelled as a total
    function [ReplicaID -> HLC] where [0] means "absent" (real stamps have
    [hlc >= 1], so an absent entry covers no real stamp).  Two contexts are
    equal when they agree pointwise. *)

From Coq Require Import NArith Bool Lia.
From Converge Require Import Lattice Stamp.
Open Scope N_scope.

Definition CausalContext := ReplicaID -> HLC.

Definition CausalContext_empty : CausalContext := fun _ => 0.

(** [covers c (h, r) := c[r] >= h]. *)
Definition covers (c : CausalContext) (s : Stamp) : bool := hlc s <=? c (replica s).

(** Pointwise max. *)
Definition CausalContext_merge (c d : CausalContext) : CausalContext :=
  fun r => N.max (c r) (d r).

Definition CausalContext_eqv (c d : CausalContext) : Prop := forall r, c r = d r.
Definition CausalContext_leq (c d : CausalContext) : Prop := forall r, c r <= d r.

(** Record a dot: [c[r] = max(c[r], h)]. *)
Definition CausalContext_record (c : CausalContext) (s : Stamp) : CausalContext :=
  fun r => if r =? replica s then N.max (c r) (hlc s) else c r.

(** Set an entry: [c[r] = h]. *)
Definition CausalContext_set (c : CausalContext) (s : Stamp) : CausalContext :=
  fun r => if r =? replica s then hlc s else c r.

Theorem CausalContext_merge_comm c d : CausalContext_eqv (CausalContext_merge c d) (CausalContext_merge d c).
Proof. intros r; unfold CausalContext_merge; lia. Qed.

Theorem CausalContext_merge_assoc c d e :
  CausalContext_eqv (CausalContext_merge (CausalContext_merge c d) e)
                    (CausalContext_merge c (CausalContext_merge d e)).
Proof. intros r; unfold CausalContext_merge; lia. Qed.

Theorem CausalContext_merge_idem c : CausalContext_eqv (CausalContext_merge c c) c.
Proof. intros r; unfold CausalContext_merge; lia. Qed.

Definition CausalContext_SL : Semilattice.
Proof.
  refine {| car := CausalContext; eqv := CausalContext_eqv; join := CausalContext_merge |}.
  - intros c r; reflexivity.
  - intros c d H r; symmetry; apply H.
  - intros c d e H1 H2 r; rewrite H1; apply H2.
  - intros c c' d d' H1 H2 r; unfold CausalContext_merge; rewrite H1, H2; reflexivity.
  - apply CausalContext_merge_comm.
  - apply CausalContext_merge_assoc.
  - apply CausalContext_merge_idem.
Defined.

Lemma covers_merge c d s : covers (CausalContext_merge c d) s = covers c s || covers d s.
Proof.
  unfold covers, CausalContext_merge.
  destruct (N.leb_spec (hlc s) (N.max (c (replica s)) (d (replica s))));
  destruct (N.leb_spec (hlc s) (c (replica s)));
  destruct (N.leb_spec (hlc s) (d (replica s))); simpl; auto; lia.
Qed.

Lemma covers_eqv c d s : CausalContext_eqv c d -> covers c s = covers d s.
Proof. intros H; unfold covers; rewrite H; reflexivity. Qed.

Lemma covers_mono c d s :
  CausalContext_leq c d -> covers c s = true -> covers d s = true.
Proof.
  unfold covers; intros H H1. apply N.leb_le in H1. apply N.leb_le.
  specialize (H (replica s)); lia.
Qed.

Lemma record_covers_self c s : covers (CausalContext_record c s) s = true.
Proof. unfold covers, CausalContext_record. rewrite N.eqb_refl. apply N.leb_le; lia. Qed.

Lemma record_leq c s : CausalContext_leq c (CausalContext_record c s).
Proof. intros r; unfold CausalContext_record. destruct (r =? replica s); lia. Qed.

(** For a fresh stamp (not covered), setting and recording agree. *)
Lemma set_eqv_record c s :
  covers c s = false -> CausalContext_eqv (CausalContext_set c s) (CausalContext_record c s).
Proof.
  unfold covers, CausalContext_set, CausalContext_record. intros H r.
  apply N.leb_gt in H.
  destruct (N.eqb_spec r (replica s)); subst; lia.
Qed.

Lemma merge_leq_l c d : CausalContext_leq c (CausalContext_merge c d).
Proof. intros r; unfold CausalContext_merge; lia. Qed.

Lemma merge_leq_r c d : CausalContext_leq d (CausalContext_merge c d).
Proof. intros r; unfold CausalContext_merge; lia. Qed.

Lemma merge_absorb c d :
  CausalContext_leq c d -> CausalContext_eqv (CausalContext_merge c d) d.
Proof. intros H r; unfold CausalContext_merge; specialize (H r); lia. Qed.
