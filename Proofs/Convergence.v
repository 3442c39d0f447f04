(** * Convergence (Swift [Changeset], [ReplicaState.apply]): strong eventual
    consistency.

    A replica's state is a map from record key (Swift: table and primary key,
    modelled as [N]) to an optional record state of any semilattice [L]
    ([None]: record unknown).  A changeset is a list of record deltas
    [(key, state)]; applying one joins each delta into the record's state. *)

From Coq Require Import NArith List.
Import ListNotations.
From Converge Require Import Lattice Stamp CausalContext ORSet LWW MVRegister Record RecordState.

Definition RecordKey := N.

(** The replica state, as a lattice: pointwise over keys, [None] as bottom. *)
Definition ReplicaState_SL (L : Semilattice) : Semilattice := funSL RecordKey (optSL L).

Section Generic.
Context {L : Semilattice}.
Let S := ReplicaState_SL L.

Definition ReplicaState := car S.
Definition Delta : Type := (RecordKey * car L)%type.
Definition Changeset : Type := list Delta.

Definition ReplicaState_empty : ReplicaState := fun _ => None.

(** One delta, seen as a replica state with a single record. *)
Definition single (d : Delta) : ReplicaState :=
  fun k => if N.eqb k (fst d) then Some (snd d) else None.

Definition apply_delta (st : ReplicaState) (d : Delta) : ReplicaState :=
  fun k => if N.eqb k (fst d) then optjoin (st k) (Some (snd d)) else st k.

(** Swift [ReplicaState.apply(_:)]. *)
Definition ReplicaState_apply (st : ReplicaState) (cs : Changeset) : ReplicaState :=
  fold_left apply_delta cs st.

(** A replica that delivered the changesets [l], in this order. *)
Definition deliver (init : ReplicaState) (l : list Changeset) : ReplicaState :=
  fold_left ReplicaState_apply l init.

(** The state a changeset stands for (the join of its deltas). *)
Definition Changeset_state (cs : Changeset) : ReplicaState :=
  @fold_join S (map single cs) ReplicaState_empty.

Lemma apply_delta_is_join st d : @eqv S (apply_delta st d) (@join S st (single d)).
Proof.
  intros k. unfold apply_delta, single; simpl.
  destruct (N.eqb k (fst d)).
  - apply (@eqv_refl (optSL L)).
  - rewrite optjoin_None_r. apply (@eqv_refl (optSL L)).
Qed.

Lemma apply_is_fold_join : forall ds st,
  @eqv S (fold_left apply_delta ds st) (@fold_join S (map single ds) st).
Proof.
  induction ds as [|d ds IH]; intros st; simpl.
  - apply (@eqv_refl S).
  - eapply (@eqv_trans S). apply IH.
    apply fold_join_proper, apply_delta_is_join.
Qed.

Lemma deliver_concat : forall l st,
  deliver st l = fold_left apply_delta (concat l) st.
Proof.
  induction l as [|c l IH]; intros st; simpl.
  - reflexivity.
  - rewrite fold_left_app. apply IH.
Qed.

Lemma deliver_is_fold_join l st :
  @eqv S (deliver st l) (@fold_join S (map single (concat l)) st).
Proof. rewrite deliver_concat. apply apply_is_fold_join. Qed.

(** Strong eventual consistency, delta level: replicas that delivered the
    same deltas (changesets in any order, duplicated, or split/partial) from
    the same initial state hold equal states. *)
Theorem strong_eventual_consistency_deltas (l1 l2 : list Changeset) (init : ReplicaState) :
  (forall d, In d (concat l1) <-> In d (concat l2)) ->
  @eqv S (deliver init l1) (deliver init l2).
Proof.
  intros H.
  eapply (@eqv_trans S). apply deliver_is_fold_join.
  eapply (@eqv_trans S). 2: apply (@eqv_sym S), deliver_is_fold_join.
  apply fold_join_same_elements.
  intros x. rewrite !in_map_iff. split; intros [d [<- Hd]]; exists d; split; auto; apply H, Hd.
Qed.

(** Strong eventual consistency: replicas that delivered the same set of
    changesets (any order, any duplicates) from the same state are equal. *)
Theorem strong_eventual_consistency (l1 l2 : list Changeset) (init : ReplicaState) :
  (forall c, In c l1 <-> In c l2) ->
  @eqv S (deliver init l1) (deliver init l2).
Proof.
  intros H. apply strong_eventual_consistency_deltas.
  intros d. rewrite !in_concat. split; intros [c [Hc Hd]]; exists c; split; auto; apply H, Hc.
Qed.

Lemma empty_leq (st : ReplicaState) : @leq S ReplicaState_empty st.
Proof. intros k. apply (@eqv_refl (optSL L)). Qed.

(** Every delivered changeset (and the initial state) is below the result. *)
Theorem deliver_upper_bound (l : list Changeset) (init : ReplicaState) :
  @leq S init (deliver init l) /\
  forall c, In c l -> @leq S (Changeset_state c) (deliver init l).
Proof.
  destruct (fold_join_upper (map single (concat l)) init) as [H1 H2].
  pose proof (deliver_is_fold_join l init) as E.
  split.
  - eapply leq_proper. apply (@eqv_refl S). apply (@eqv_sym S), E. exact H1.
  - intros c Hc. apply fold_join_least. apply empty_leq.
    intros x Hx. eapply leq_proper. apply (@eqv_refl S). apply (@eqv_sym S), E.
    apply H2. apply in_map_iff in Hx as [d [<- Hd]]. apply in_map.
    apply in_concat. exists c; auto.
Qed.

End Generic.

(** ** Instances *)

(** Any semilattice: folding the same states in any order with duplicates. *)
Theorem fold_join_sec (L : Semilattice) (l1 l2 : list (car L)) (s : car L) :
  (forall x, In x l1 <-> In x l2) -> eqv (fold_join l1 s) (fold_join l2 s).
Proof. apply fold_join_same_elements. Qed.

Theorem LWWRegister_sec (l1 l2 : list LWWRegister) (s : LWWRegister) :
  (forall x, In x l1 <-> In x l2) ->
  fold_left LWWRegister_merge l1 s = fold_left LWWRegister_merge l2 s.
Proof. apply (fold_join_same_elements (L := LWWRegister_SL)). Qed.

Theorem CausalContext_sec (l1 l2 : list CausalContext) (s : CausalContext) :
  (forall x, In x l1 <-> In x l2) ->
  CausalContext_eqv (fold_left CausalContext_merge l1 s) (fold_left CausalContext_merge l2 s).
Proof. apply (fold_join_same_elements (L := CausalContext_SL)). Qed.

Theorem ORSet_sec (l1 l2 : list ORSet_WF) (s : ORSet_WF) :
  (forall x, In x l1 <-> In x l2) ->
  ORSet_eqv (proj1_sig (fold_left ORSet_WF_merge l1 s)) (proj1_sig (fold_left ORSet_WF_merge l2 s)).
Proof. apply (fold_join_same_elements (L := ORSet_SL)). Qed.

Theorem MVRegister_sec (l1 l2 : list MV_WF) (s : MV_WF) :
  (forall x, In x l1 <-> In x l2) ->
  MV_eqv (proj1_sig (fold_left MV_WF_merge l1 s)) (proj1_sig (fold_left MV_WF_merge l2 s)).
Proof. apply (fold_join_same_elements (L := MVRegister_SL)). Qed.

(** Whole replicas, [.updateWins] tables. *)
Theorem strong_eventual_consistency_updateWins (Column : Type)
  (l1 l2 : list (@Changeset (RecordState_updateWins_SL Column))) init :
  (forall c, In c l1 <-> In c l2) ->
  eqv (deliver init l1) (deliver init l2).
Proof. apply strong_eventual_consistency. Qed.

(** Whole replicas, [.deleteWins] tables (LWW or MV fields). *)
Theorem strong_eventual_consistency_deleteWins (Column : Type) (R : Semilattice)
  (l1 l2 : list (@Changeset (RecordState_deleteWins_SL Column R))) init :
  (forall c, In c l1 <-> In c l2) ->
  eqv (deliver init l1) (deliver init l2).
Proof. apply strong_eventual_consistency. Qed.

(** Whole replicas of Swift-shaped records ([String: FieldState] fields,
    [.plain] and [.incarnated] columns, any register lattice [R]). *)
Theorem strong_eventual_consistency_RecordState (Column : Type) (R : Semilattice)
  (l1 l2 : list (@Changeset (SwiftRecordState_SL Column R))) init :
  (forall c, In c l1 <-> In c l2) ->
  eqv (deliver init l1) (deliver init l2).
Proof. apply strong_eventual_consistency. Qed.
