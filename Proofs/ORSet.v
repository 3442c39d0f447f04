(** * ORSet (Swift [ORSet]): the add-wins observed-remove set of one record's
    membership, with dots compacted into a causal context.

    [dots] is modelled as a decidable predicate on stamps (a set given by its
    characteristic function); two OR-sets are equal ([ORSet_eqv]) when they
    have the same dots (as sets) and the same context (pointwise). *)

From Coq Require Import NArith Bool Lia.
From Converge Require Import Lattice Stamp CausalContext.

Record ORSet := mkORSet { dots : Stamp -> bool; context : CausalContext }.

Definition ORSet_eqv (a b : ORSet) : Prop :=
  (forall s, dots a s = dots b s) /\ CausalContext_eqv (context a) (context b).

(** Invariant: every live dot is covered by the context. *)
Definition wellFormed (a : ORSet) : Prop :=
  forall s, dots a s = true -> covers (context a) s = true.

(** Swift [ORSet.isAlive]. *)
Definition isAlive (a : ORSet) : Prop := exists s, dots a s = true.

Definition ORSet_empty : ORSet := mkORSet (fun _ => false) CausalContext_empty.

(** The join of dot sets, on one stamp: [x], [y] say whether the stamp is a
    live dot of each side, [cx], [cy] whether each side's context covers it.
    [(a ∩ b) ∪ (a − covered(b.context)) ∪ (b − covered(a.context))]. *)
Definition dotjoin (x y cx cy : bool) : bool :=
  (x && y) || (x && negb cy) || (y && negb cx).

(** Swift [ORSet.merge]. *)
Definition ORSet_merge (a b : ORSet) : ORSet :=
  mkORSet (fun s => dotjoin (dots a s) (dots b s) (covers (context a) s) (covers (context b) s))
          (CausalContext_merge (context a) (context b)).

(** Swift [ORSet.add(at:)]: an add at a fresh stamp [s = (h, r)]
    supersedes the dots it saw: [dots = {s}], [context[r] = max(context[r], h)]. *)
Definition ORSet_add (s : Stamp) (a : ORSet) : ORSet :=
  mkORSet (fun d => Stamp_eqb d s) (CausalContext_record (context a) s).

(** Swift [ORSet.remove(at:)]: [dots = {}], [context[r] = h].  Swift records
    the dot ([context[r] = max(context[r], h)]), which is [context[r] = h] for
    a fresh stamp ([set_eqv_record]). *)
Definition ORSet_remove (s : Stamp) (a : ORSet) : ORSet :=
  mkORSet (fun _ => false) (CausalContext_record (context a) s).

(** A stamp is fresh for a state when its context does not cover it (true of
    every stamp a replica issues, by the clock's monotonicity). *)
Definition fresh (c : CausalContext) (s : Stamp) : Prop := covers c s = false.

(** ** Boolean core *)

Lemma dotjoin_comm x y cx cy : dotjoin x y cx cy = dotjoin y x cy cx.
Proof. destruct x, y, cx, cy; reflexivity. Qed.

Lemma dotjoin_idem x cx : dotjoin x x cx cx = x.
Proof. destruct x, cx; reflexivity. Qed.

Lemma dotjoin_assoc x y z cx cy cz :
  (x = true -> cx = true) -> (y = true -> cy = true) -> (z = true -> cz = true) ->
  dotjoin (dotjoin x y cx cy) z (cx || cy) cz = dotjoin x (dotjoin y z cy cz) cx (cy || cz).
Proof.
  intros H1 H2 H3.
  destruct x, y, z, cx, cy, cz; simpl; try reflexivity;
  first [discriminate (H1 eq_refl) | discriminate (H2 eq_refl) | discriminate (H3 eq_refl)].
Qed.

(** ** Lattice laws *)

Lemma ORSet_eqv_refl a : ORSet_eqv a a.
Proof. split; [intros s|intros r]; reflexivity. Qed.

Lemma ORSet_eqv_sym a b : ORSet_eqv a b -> ORSet_eqv b a.
Proof. intros [H1 H2]; split; [intros s|intros r]; symmetry; [apply H1|apply H2]. Qed.

Lemma ORSet_eqv_trans a b c : ORSet_eqv a b -> ORSet_eqv b c -> ORSet_eqv a c.
Proof.
  intros [H1 H2] [H3 H4]; split; [intros s|intros r].
  - rewrite H1; apply H3.
  - rewrite H2; apply H4.
Qed.

Lemma ORSet_merge_proper a a' b b' :
  ORSet_eqv a a' -> ORSet_eqv b b' -> ORSet_eqv (ORSet_merge a b) (ORSet_merge a' b').
Proof.
  intros [H1 H2] [H3 H4]; split; simpl.
  - intros s. rewrite H1, H3, (covers_eqv _ _ s H2), (covers_eqv _ _ s H4). reflexivity.
  - intros r; unfold CausalContext_merge; rewrite H2, H4; reflexivity.
Qed.

Lemma wellFormed_eqv a b : ORSet_eqv a b -> wellFormed a -> wellFormed b.
Proof.
  intros [H1 H2] Ha s Hs. rewrite <- (covers_eqv _ _ s H2). apply Ha. rewrite H1; exact Hs.
Qed.

Theorem ORSet_merge_wellFormed a b :
  wellFormed a -> wellFormed b -> wellFormed (ORSet_merge a b).
Proof.
  intros Ha Hb s H. simpl in *. rewrite covers_merge. unfold dotjoin in H.
  destruct (dots a s) eqn:Ea.
  - rewrite (Ha s Ea); reflexivity.
  - destruct (dots b s) eqn:Eb.
    + rewrite (Hb s Eb); apply orb_true_r.
    + discriminate H.
Qed.

Theorem ORSet_merge_comm a b : ORSet_eqv (ORSet_merge a b) (ORSet_merge b a).
Proof.
  split; simpl.
  - intros s; apply dotjoin_comm.
  - apply CausalContext_merge_comm.
Qed.

Theorem ORSet_merge_assoc a b c :
  wellFormed a -> wellFormed b -> wellFormed c ->
  ORSet_eqv (ORSet_merge (ORSet_merge a b) c) (ORSet_merge a (ORSet_merge b c)).
Proof.
  intros Ha Hb Hc; split; simpl.
  - intros s. rewrite !covers_merge. apply dotjoin_assoc; auto.
  - apply CausalContext_merge_assoc.
Qed.

Theorem ORSet_merge_idem a : ORSet_eqv (ORSet_merge a a) a.
Proof.
  split; simpl.
  - intros s; apply dotjoin_idem.
  - apply CausalContext_merge_idem.
Qed.

(** ** Mutations *)

Lemma wellFormed_fresh_not_dot a s :
  wellFormed a -> fresh (context a) s -> dots a s = false.
Proof.
  unfold fresh; intros Ha Hs. destruct (dots a s) eqn:E; auto.
  rewrite (Ha s E) in Hs; discriminate.
Qed.

Theorem ORSet_add_wellFormed s a : wellFormed (ORSet_add s a).
Proof.
  intros d H; simpl in *. apply Stamp_eqb_spec in H; subst. apply record_covers_self.
Qed.

Theorem ORSet_remove_wellFormed s a : wellFormed (ORSet_remove s a).
Proof. intros d H; discriminate H. Qed.

Theorem ORSet_add_inflation a s :
  wellFormed a -> fresh (context a) s ->
  ORSet_eqv (ORSet_merge a (ORSet_add s a)) (ORSet_add s a).
Proof.
  intros Ha Hs; split; simpl.
  - intros d. unfold dotjoin. destruct (Stamp_eqb d s) eqn:E.
    + apply Stamp_eqb_spec in E; subst d.
      rewrite (wellFormed_fresh_not_dot a s Ha Hs). unfold fresh in Hs. rewrite Hs. reflexivity.
    + destruct (dots a d) eqn:Ed; [|reflexivity].
      rewrite (covers_mono _ _ d (record_leq (context a) s) (Ha d Ed)). reflexivity.
  - apply merge_absorb, record_leq.
Qed.

(** A remove is an inflation (for any stamp: it only clears dots it has seen). *)
Theorem ORSet_remove_inflation a s :
  wellFormed a ->
  ORSet_eqv (ORSet_merge a (ORSet_remove s a)) (ORSet_remove s a).
Proof.
  intros Ha; split; simpl.
  - intros d. unfold dotjoin. destruct (dots a d) eqn:Ed; [|reflexivity].
    rewrite (covers_mono _ _ d (record_leq _ s) (Ha d Ed)). reflexivity.
  - apply merge_absorb, record_leq.
Qed.

(** Swift: an [INSERT OR REPLACE] over an existing row is a delete and an
    insert in one transaction, at the transaction's one stamp.  The pair is
    an inflation of the state before the transaction. *)
Theorem ORSet_replace_inflation a s :
  wellFormed a -> fresh (context a) s ->
  ORSet_eqv (ORSet_merge a (ORSet_add s (ORSet_remove s a))) (ORSet_add s (ORSet_remove s a)).
Proof.
  intros Ha Hs; split; simpl.
  - intros d. unfold dotjoin. destruct (Stamp_eqb d s) eqn:E.
    + apply Stamp_eqb_spec in E; subst d.
      rewrite (wellFormed_fresh_not_dot a s Ha Hs). unfold fresh in Hs. rewrite Hs. reflexivity.
    + destruct (dots a d) eqn:Ed; [|reflexivity].
      rewrite (covers_mono _ _ d (record_leq _ s) (covers_mono _ _ d (record_leq _ s) (Ha d Ed))).
      reflexivity.
  - intros r. unfold CausalContext_merge, CausalContext_record.
    destruct (N.eqb r (replica s)); lia.
Qed.

(** Touching a record twice in one transaction (same stamp) changes nothing more. *)
Theorem ORSet_add_twice s a : ORSet_eqv (ORSet_add s (ORSet_add s a)) (ORSet_add s a).
Proof.
  split; simpl.
  - intros d; reflexivity.
  - intros r. unfold CausalContext_record. destruct (N.eqb r (replica s)); lia.
Qed.

(** Add wins: a live dot that the other side has not observed survives. *)
Theorem ORSet_add_wins a b d :
  dots a d = true -> covers (context b) d = false -> dots (ORSet_merge a b) d = true.
Proof.
  intros H1 H2; simpl; unfold dotjoin. rewrite H1, H2. destruct (dots b d); reflexivity.
Qed.

(** An add concurrent with a remove (the remove did not observe the add's
    stamp) keeps the record alive, whatever the order of merging. *)
Theorem ORSet_add_wins_over_concurrent_remove x y s s' :
  fresh (context (ORSet_remove s' y)) s ->
  isAlive (ORSet_merge (ORSet_add s x) (ORSet_remove s' y)) /\
  isAlive (ORSet_merge (ORSet_remove s' y) (ORSet_add s x)).
Proof.
  intros H. assert (Hd : dots (ORSet_add s x) s = true) by (simpl; apply Stamp_eqb_refl).
  split; exists s.
  - apply ORSet_add_wins; assumption.
  - rewrite (proj1 (ORSet_merge_comm _ _) s). apply ORSet_add_wins; assumption.
Qed.

(** A remove that observed every live dot of a state deletes it: after the
    merge the record is not alive. *)
Theorem ORSet_remove_observed a b s :
  wellFormed b -> CausalContext_leq (context b) (context a) ->
  ~ isAlive (ORSet_merge (ORSet_remove s a) b).
Proof.
  intros Hb Hle [d Hd]. simpl in Hd. unfold dotjoin in Hd.
  destruct (dots b d) eqn:Ed; [|simpl in Hd; discriminate].
  rewrite (covers_mono _ _ d (record_leq _ s) (covers_mono _ _ d Hle (Hb d Ed))) in Hd.
  discriminate.
Qed.

(** ** Deadness (used by the [.deleteWins] record policy).
    An incarnation (add dot) is dead when the context covers it and it is not live. *)
Definition dead (a : ORSet) (d : Stamp) : bool := covers (context a) d && negb (dots a d).

Lemma dead_eqv a b d : ORSet_eqv a b -> dead a d = dead b d.
Proof. intros [H1 H2]; unfold dead; rewrite H1, (covers_eqv _ _ d H2); reflexivity. Qed.

(** Once dead, always dead: deadness is monotone under merge. *)
Theorem ORSet_dead_merge_l a b d : dead a d = true -> dead (ORSet_merge a b) d = true.
Proof.
  unfold dead; simpl; intros H. apply andb_true_iff in H as [H1 H2].
  apply negb_true_iff in H2. rewrite covers_merge, H1, H2. unfold dotjoin.
  simpl. rewrite andb_false_r. reflexivity.
Qed.

Theorem ORSet_dead_merge_r a b d : dead b d = true -> dead (ORSet_merge a b) d = true.
Proof.
  intros H. rewrite (dead_eqv _ _ d (ORSet_merge_comm a b)). apply ORSet_dead_merge_l, H.
Qed.

(** ** The OR-set on well-formed states is a join-semilattice. *)
Definition ORSet_WF := { a : ORSet | wellFormed a }.

Definition ORSet_WF_merge (x y : ORSet_WF) : ORSet_WF :=
  exist _ (ORSet_merge (proj1_sig x) (proj1_sig y))
          (ORSet_merge_wellFormed _ _ (proj2_sig x) (proj2_sig y)).

Definition ORSet_SL : Semilattice.
Proof.
  refine {| car := ORSet_WF;
            eqv := fun x y => ORSet_eqv (proj1_sig x) (proj1_sig y);
            join := ORSet_WF_merge |}.
  - intros; apply ORSet_eqv_refl.
  - intros x y; apply ORSet_eqv_sym.
  - intros x y z; apply ORSet_eqv_trans.
  - intros x x' y y'; apply ORSet_merge_proper.
  - intros x y; apply ORSet_merge_comm.
  - intros [x Hx] [y Hy] [z Hz]; apply ORSet_merge_assoc; assumption.
  - intros x; apply ORSet_merge_idem.
Defined.
