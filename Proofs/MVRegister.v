(** * MVRegister (Swift [MVRegister]): multi-value register for critical
    fields, with the OR-set's dot machinery over values.

    [siblings] is modelled as a partial map [Stamp -> option Value] (so at
    most one value per stamp); two registers are equal ([MV_eqv]) when they
    have the same siblings and the same context (pointwise). *)

From Coq Require Import NArith ZArith Bool Lia.
From Converge Require Import Lattice Stamp CausalContext ORSet LWW.

Record MVRegister := mkMV { siblings : Stamp -> option Value; mvcontext : CausalContext }.

Definition MV_eqv (a b : MVRegister) : Prop :=
  (forall s, siblings a s = siblings b s) /\ CausalContext_eqv (mvcontext a) (mvcontext b).

Definition MV_wellFormed (a : MVRegister) : Prop :=
  forall s v, siblings a s = Some v -> covers (mvcontext a) s = true.

(** Join of the siblings on one stamp: kept iff the OR-set rule keeps the
    stamp.  Equal stamps with different values (corruption only) resolve
    deterministically to the larger value, as for [LWWRegister]. *)
Definition sibjoin (x y : option Value) (cx cy : bool) : option Value :=
  match x, y with
  | Some u, Some w => Some (Z.max u w)
  | Some u, None => if cy then None else Some u
  | None, Some w => if cx then None else Some w
  | None, None => None
  end.

Definition isSome {A} (o : option A) : bool := match o with Some _ => true | None => false end.

(** A sibling is kept exactly when the OR-set keeps its stamp. *)
Lemma sibjoin_is_dotjoin x y cx cy :
  isSome (sibjoin x y cx cy) = dotjoin (isSome x) (isSome y) cx cy.
Proof. destruct x, y, cx, cy; reflexivity. Qed.

(** Swift [MVRegister.merge]. *)
Definition MVRegister_merge (a b : MVRegister) : MVRegister :=
  mkMV (fun s => sibjoin (siblings a s) (siblings b s) (covers (mvcontext a) s) (covers (mvcontext b) s))
       (CausalContext_merge (mvcontext a) (mvcontext b)).

(** Swift [MVRegister.write(_:at:)]: the write observed all current siblings. *)
Definition MVRegister_write (v : Value) (s : Stamp) (a : MVRegister) : MVRegister :=
  mkMV (fun d => if Stamp_eqb d s then Some v else None) (CausalContext_record (mvcontext a) s).

(** Swift [MVRegister.isConflicted]: at least two siblings with distinct values. *)
Definition isConflicted (a : MVRegister) : Prop :=
  exists s1 s2 v1 v2, siblings a s1 = Some v1 /\ siblings a s2 = Some v2 /\ v1 <> v2.

(** ** Option/boolean core *)

Lemma sibjoin_comm x y cx cy : sibjoin x y cx cy = sibjoin y x cy cx.
Proof. destruct x, y, cx, cy; simpl; try reflexivity; f_equal; apply Z.max_comm. Qed.

Lemma sibjoin_idem x cx : sibjoin x x cx cx = x.
Proof. destruct x, cx; simpl; try reflexivity; rewrite Z.max_id; reflexivity. Qed.

Lemma sibjoin_assoc x y z cx cy cz :
  (cx = false -> x = None) -> (cy = false -> y = None) -> (cz = false -> z = None) ->
  sibjoin (sibjoin x y cx cy) z (cx || cy) cz = sibjoin x (sibjoin y z cy cz) cx (cy || cz).
Proof.
  intros H1 H2 H3.
  destruct x, y, z, cx, cy, cz; simpl; try reflexivity; try (rewrite Z.max_assoc; reflexivity);
  first [discriminate (H1 eq_refl) | discriminate (H2 eq_refl) | discriminate (H3 eq_refl)].
Qed.

Lemma wf_none a s : MV_wellFormed a -> covers (mvcontext a) s = false -> siblings a s = None.
Proof.
  intros Ha Hs. destruct (siblings a s) eqn:E; auto. rewrite (Ha s v E) in Hs; discriminate.
Qed.

(** ** Lattice laws *)

Lemma MV_eqv_refl a : MV_eqv a a.
Proof. split; [intros s|intros r]; reflexivity. Qed.

Lemma MV_eqv_sym a b : MV_eqv a b -> MV_eqv b a.
Proof. intros [H1 H2]; split; [intros s|intros r]; symmetry; [apply H1|apply H2]. Qed.

Lemma MV_eqv_trans a b c : MV_eqv a b -> MV_eqv b c -> MV_eqv a c.
Proof.
  intros [H1 H2] [H3 H4]; split; [intros s|intros r].
  - rewrite H1; apply H3.
  - rewrite H2; apply H4.
Qed.

Lemma MVRegister_merge_proper a a' b b' :
  MV_eqv a a' -> MV_eqv b b' -> MV_eqv (MVRegister_merge a b) (MVRegister_merge a' b').
Proof.
  intros [H1 H2] [H3 H4]; split; simpl.
  - intros s. rewrite H1, H3, (covers_eqv _ _ s H2), (covers_eqv _ _ s H4). reflexivity.
  - intros r; unfold CausalContext_merge; rewrite H2, H4; reflexivity.
Qed.

Theorem MVRegister_merge_wellFormed a b :
  MV_wellFormed a -> MV_wellFormed b -> MV_wellFormed (MVRegister_merge a b).
Proof.
  intros Ha Hb s v H. simpl in *. rewrite covers_merge.
  destruct (siblings a s) eqn:Ea.
  - rewrite (Ha s _ Ea); reflexivity.
  - destruct (siblings b s) eqn:Eb.
    + rewrite (Hb s _ Eb); apply orb_true_r.
    + discriminate H.
Qed.

Theorem MVRegister_merge_comm a b : MV_eqv (MVRegister_merge a b) (MVRegister_merge b a).
Proof.
  split; simpl.
  - intros s; apply sibjoin_comm.
  - apply CausalContext_merge_comm.
Qed.

Theorem MVRegister_merge_assoc a b c :
  MV_wellFormed a -> MV_wellFormed b -> MV_wellFormed c ->
  MV_eqv (MVRegister_merge (MVRegister_merge a b) c) (MVRegister_merge a (MVRegister_merge b c)).
Proof.
  intros Ha Hb Hc; split; simpl.
  - intros s. rewrite !covers_merge. apply sibjoin_assoc; intros H; apply wf_none; assumption.
  - apply CausalContext_merge_assoc.
Qed.

Theorem MVRegister_merge_idem a : MV_eqv (MVRegister_merge a a) a.
Proof.
  split; simpl.
  - intros s; apply sibjoin_idem.
  - apply CausalContext_merge_idem.
Qed.

(** ** Writes *)

Theorem MVRegister_write_wellFormed v s a : MV_wellFormed (MVRegister_write v s a).
Proof.
  intros d x H; simpl in *. destruct (Stamp_eqb d s) eqn:E; [|discriminate].
  apply Stamp_eqb_spec in E; subst. apply record_covers_self.
Qed.

Theorem MVRegister_write_inflation a v s :
  MV_wellFormed a -> fresh (mvcontext a) s ->
  MV_eqv (MVRegister_merge a (MVRegister_write v s a)) (MVRegister_write v s a).
Proof.
  intros Ha Hs; split; simpl.
  - intros d. destruct (Stamp_eqb d s) eqn:E.
    + apply Stamp_eqb_spec in E; subst d.
      rewrite (wf_none a s Ha Hs). unfold fresh in Hs. rewrite Hs. reflexivity.
    + destruct (siblings a d) eqn:Ed; [|reflexivity]. simpl.
      rewrite (covers_mono _ _ d (record_leq (mvcontext a) s) (Ha d _ Ed)). reflexivity.
  - apply merge_absorb, record_leq.
Qed.

(** Two concurrent writes (neither observed the other's stamp) both survive
    the merge, in either order. *)
Theorem MVRegister_concurrent_writes_survive a b v1 v2 s1 s2 :
  s1 <> s2 ->
  fresh (mvcontext (MVRegister_write v2 s2 b)) s1 ->
  fresh (mvcontext (MVRegister_write v1 s1 a)) s2 ->
  let m := MVRegister_merge (MVRegister_write v1 s1 a) (MVRegister_write v2 s2 b) in
  siblings m s1 = Some v1 /\ siblings m s2 = Some v2 /\
  (v1 <> v2 -> isConflicted m).
Proof.
  intros Hne H1 H2 m.
  assert (E1 : Stamp_eqb s1 s2 = false) by (apply Stamp_eqb_neq, Hne).
  assert (E2 : Stamp_eqb s2 s1 = false) by (apply Stamp_eqb_neq; auto).
  assert (A : siblings m s1 = Some v1).
  { unfold m; simpl. rewrite Stamp_eqb_refl, E1. unfold fresh in H1; simpl in H1. rewrite H1. reflexivity. }
  assert (B : siblings m s2 = Some v2).
  { unfold m; simpl. rewrite Stamp_eqb_refl, E2. unfold fresh in H2; simpl in H2. rewrite H2. reflexivity. }
  split; [exact A|split; [exact B|]].
  intros Hv. exists s1, s2, v1, v2. auto.
Qed.

(** A write that observed a state (its context covers that state's context)
    supersedes all of that state's siblings: merging leaves exactly the one
    written sibling, and no conflict (Swift: resolving a conflict). *)
Theorem MVRegister_resolve_single a b v s :
  MV_wellFormed a -> MV_wellFormed b ->
  CausalContext_leq (mvcontext b) (mvcontext a) -> fresh (mvcontext a) s ->
  let m := MVRegister_merge (MVRegister_write v s a) b in
  MV_eqv m (MVRegister_write v s a) /\
  (forall t x, siblings m t = Some x <-> t = s /\ x = v) /\
  ~ isConflicted m.
Proof.
  intros Ha Hb Hle Hs m.
  assert (Hbs : covers (mvcontext b) s = false).
  { destruct (covers (mvcontext b) s) eqn:E; auto. unfold fresh in Hs.
    rewrite (covers_mono _ _ s Hle E) in Hs; discriminate. }
  assert (Heq : MV_eqv m (MVRegister_write v s a)).
  { split; simpl.
    - intros t. destruct (Stamp_eqb t s) eqn:E.
      + apply Stamp_eqb_spec in E; subst t. rewrite (wf_none b s Hb Hbs), Hbs. reflexivity.
      + destruct (siblings b t) eqn:Et; [|reflexivity]. simpl.
        rewrite (covers_mono _ _ t (record_leq _ s) (covers_mono _ _ t Hle (Hb t _ Et))).
        reflexivity.
    - intros r. unfold CausalContext_merge. specialize (Hle r).
      pose proof (record_leq (mvcontext a) s r). lia. }
  assert (Hsib : forall t x, siblings m t = Some x <-> t = s /\ x = v).
  { intros t x. rewrite (proj1 Heq t). simpl. destruct (Stamp_eqb t s) eqn:E.
    - apply Stamp_eqb_spec in E. split; [intros H; inversion H; auto|intros [_ ->]; reflexivity].
    - apply Stamp_eqb_neq in E. split; [discriminate|intros [-> _]; congruence]. }
  split; [exact Heq|split; [exact Hsib|]].
  intros (s1 & s2 & v1 & v2 & H1 & H2 & Hne).
  apply Hsib in H1 as [_ ->]. apply Hsib in H2 as [_ ->]. auto.
Qed.

(** ** The MV-register on well-formed states is a join-semilattice. *)
Definition MV_WF := { a : MVRegister | MV_wellFormed a }.

Definition MV_WF_merge (x y : MV_WF) : MV_WF :=
  exist _ (MVRegister_merge (proj1_sig x) (proj1_sig y))
          (MVRegister_merge_wellFormed _ _ (proj2_sig x) (proj2_sig y)).

Definition MVRegister_SL : Semilattice.
Proof.
  refine {| car := MV_WF;
            eqv := fun x y => MV_eqv (proj1_sig x) (proj1_sig y);
            join := MV_WF_merge |}.
  - intros; apply MV_eqv_refl.
  - intros x y; apply MV_eqv_sym.
  - intros x y z; apply MV_eqv_trans.
  - intros x x' y y'; apply MVRegister_merge_proper.
  - intros x y; apply MVRegister_merge_comm.
  - intros [x Hx] [y Hy] [z Hz]; apply MVRegister_merge_assoc; assumption.
  - intros x; apply MVRegister_merge_idem.
Defined.
