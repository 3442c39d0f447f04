(** * Collection (DESIGN §9, Swift [ReplicatedDatabase.collect],
    [RecordState.isCollectable]): dropping a causally stable deleted record
    does not change the visible state reached after any later joins.

    Theorem, in words.  Let [t] be a record state that is deleted (its
    membership has no live dot).  Collecting it means the replica drops the
    record's whole state: its entry in the replica map becomes [None], the
    bottom of [optSL], exactly what [ReplicaState_apply] starts from for a
    record it never saw.  Let [u1 … un] be the states of that record that the
    replica joins afterwards (deltas, in delivery order).  If every later
    state that would make the record alive is, or is preceded in the
    sequence by, a whole-row re-insert causally after the delete, then the
    replica that kept [t] and the replica that dropped it show the same
    record: both invisible, or both alive with the same shown value in every
    column ([collect_record], [collect_updateWins_LWW]); and once the
    re-insert has arrived their states are even equal ([collect_record_state]),
    so they converge with everyone else.  Applied to a whole replica
    ([collect_replica], [collect_replica_updateWins_LWW]): collecting one
    stable dead record leaves the visible state after any later changesets
    unchanged; the other records are untouched.

    The hypothesis ([revivedOnlyBy crit t us]): for every split
    [us = pre ++ u :: post] with [u] alive (on its own), some [w] in
    [pre ++ [u]] satisfies [crit t w].  For [.updateWins] LWW columns the
    criterion is [wholeRowInsert t w]: [w]'s membership is causally after
    the delete ([causallyAfter]: its context covers the tombstone's, and its
    live dots are adds the delete had not seen; equivalently, for a dead [t],
    [t]'s membership is below [w]'s in the OR-set order,
    [causallyAfter_iff]), and [w] carries every column of [t] with a register
    of larger stamp.  Generic criteria: [wholeRowAfter] (any register
    lattice, "larger" meaning the register order: an LWW register with a
    larger stamp, an MV register written by a replica that saw the
    tombstone's), [wholeRowAfterDW] for [.deleteWins], and in general
    [leq t w] in the record lattice.  Dead later states (deletes, stale
    deletes, membership-less deltas) are unconstrained: they cannot make the
    record visible.  The condition is on the sequence, not on each state:
    once the re-insert has been joined, later per-field edits of the revived
    row are fine ([collect_revival_then_edit]), but an edit joined before the
    insert it depends on is not.  The hypothesis cannot be dropped:
    [collect_concurrent_edit_diverges] (an edit concurrent with the delete,
    unsent when the record was collected: "having merely received the delete
    is not enough") and [collect_stale_insert_diverges] (the pre-delete insert
    delivered again after collection) give different visible states.

    How DESIGN §9's protocol gives the hypothesis.  The server collects a
    record deleted at a position at or below the frontier and not changed
    since.  Every active device's stable position is at or above that
    position: each has completed a push that began after it had applied the
    delete, so every write it made before seeing the delete has reached the
    server, and none revived the record (it is still dead there).  Any later
    write is made by a device that has merged the delete; there the record is
    dead, so an UPDATE touches nothing (an edit needs the row alive) and only
    an INSERT can revive it.  What the Swift code must guarantee:
    - a revival arrives as a whole-row insert: an add at the transaction's
      fresh stamp on a membership that merged the delete, writing every
      column at that stamp; [local_insert_wholeRowInsert] derives
      [wholeRowInsert] from that and from the HLC (the insert's stamp is
      above every entry of the inserting replica's context, and every field
      stamp of an [.updateWins] tombstone is the dot of an add the delete
      observed);
    - causal delivery for the record: a state that makes the record alive
      (a later edit of the revived row) is joined only after the insert that
      revived it (the hub relays in its apply order, and a device pushes an
      edit only of a row it has, i.e. after pulling or making the insert);
    - no state from before the delete is delivered again after collection
      (e.g. a delayed or retried duplicate of an already-applied push):
      changesets are idempotent against the tombstone, not against its
      absence.

    [.deleteWins].  The record model is Swift's ([SwiftRecordState_SL]:
    membership × [Column -> FieldState?], FieldState = [.plain] ⊕
    [.incarnated]), so both policies are covered, and the generic
    [collect_record] holds for any [Prunable] field lattice.  Under
    [.deleteWins] a dead, well-formed tombstone keeps no value under an
    incarnation its context covers, so if it holds no value written under an
    incarnation the delete never saw ([noOrphans], true under causal
    delivery) all its incarnation maps are empty
    ([tombstone_incarnations_empty]) and stamps do not matter: a causally
    later insert that writes every column (as [.incarnated]) is enough
    ([collect_deleteWins], [collect_replica_deleteWins]).  The view there is
    any function of the state (Swift's [visibleRegister]), as the README
    says.

    Visible state.  [sameVisible view x y]: [x] is alive iff [y] is, and if
    so [view] agrees on every column; [view] is any function of the record
    state that respects its equality ([view_proper]); for LWW columns it is
    [shownValue] (the value of a [.plain] register, [None] for a missing
    column). *)

From Coq Require Import NArith ZArith List Lia.
Import ListNotations.
From Converge Require Import Lattice Stamp CausalContext ORSet LWW RecordState Convergence.

(** ** Generic: joining a later state above [t] absorbs [t]

    [joinAll x us] is what a replica's entry [x] becomes after the deltas
    [us] (Swift [ReplicaState.apply], see [apply_at]). *)
Section Absorb.
Context {L : Semilattice}.

Definition joinAll (x : option (car L)) (us : list (car L)) : option (car L) :=
  fold_left (fun acc u => optjoin acc (Some u)) us x.

Lemma joinAll_Some : forall us t, joinAll (Some t) us = Some (fold_join us t).
Proof. induction us as [|u us IH]; intros t; simpl. reflexivity. apply IH. Qed.

Lemma joinAll_None_cons u us : joinAll None (u :: us) = Some (fold_join us u).
Proof. apply joinAll_Some. Qed.

Lemma fold_join_shift : forall l (s x : car L),
  eqv (fold_join l (join s x)) (join s (fold_join l x)).
Proof.
  induction l as [|y l IH]; intros s x; simpl.
  - apply eqv_refl.
  - eapply eqv_trans. apply fold_join_proper, join_assoc. apply IH.
Qed.

Theorem joinAll_absorbed (t : car L) (us : list (car L)) :
  (exists w, In w us /\ leq t w) ->
  @eqv (optSL L) (joinAll (Some t) us) (joinAll None us).
Proof.
  intros [w [Hw Hle]]. destruct us as [|u us]; [destruct Hw|].
  rewrite joinAll_Some, joinAll_None_cons. simpl.
  destruct (fold_join_upper us u) as [H1 H2].
  assert (Ht : leq t (fold_join us u)).
  { destruct Hw as [<-|Hw]. eapply leq_trans; eassumption. eapply leq_trans. exact Hle. apply H2, Hw. }
  eapply eqv_trans. apply fold_join_shift. exact Ht.
Qed.
End Absorb.

(** ** Record level, any field lattice *)
Section Records.
Context (P : Prunable).
Let S := RecordState_SL P.

Definition alive (a : car S) : Prop := isAlive (fst (proj1_sig a)).
Definition aliveOpt (x : option (car S)) : Prop :=
  match x with Some a => alive a | None => False end.

Definition sameVisible {K W : Type} (view : Rec P -> K -> W) (x y : option (car S)) : Prop :=
  (aliveOpt x <-> aliveOpt y) /\
  forall a b, x = Some a -> y = Some b -> alive a -> forall k, view (proj1_sig a) k = view (proj1_sig b) k.

Definition view_proper {K W : Type} (view : Rec P -> K -> W) : Prop :=
  forall a b, Rec_eqv P a b -> forall k, view a k = view b k.

Lemma alive_eqv (a b : car S) : eqv a b -> alive a -> alive b.
Proof. intros [H _] [s Hs]. exists s. rewrite <- (proj1 H s). exact Hs. Qed.

Lemma sameVisible_of_eqv {K W} (view : Rec P -> K -> W) x y :
  view_proper view -> @eqv (optSL S) x y -> sameVisible view x y.
Proof.
  intros Hv. destruct x as [a|], y as [b|]; simpl; try tauto.
  - intros H. split.
    + split. apply alive_eqv, H. apply alive_eqv, (@eqv_sym S), H.
    + intros a' b' [= <-] [= <-] _. apply Hv, H.
  - intros _. split. tauto. intros a b [=].
Qed.

Lemma not_alive_dots (m : ORSet) : ~ isAlive m -> forall s, dots m s = false.
Proof. intros H s. destruct (dots m s) eqn:E; [exfalso; apply H; exists s; exact E|reflexivity]. Qed.

(** A live dot of a join is a live dot of one side. *)
Lemma fold_join_dot : forall us (t : car S) s,
  dots (fst (proj1_sig (fold_join us t))) s = true ->
  dots (fst (proj1_sig t)) s = true \/ exists u, In u us /\ dots (fst (proj1_sig u)) s = true.
Proof.
  induction us as [|u us IH]; intros t s H; simpl in H.
  - left; exact H.
  - destruct (IH _ _ H) as [H1|[w [Hw H2]]].
    + simpl in H1. unfold dotjoin in H1.
      destruct (dots (fst (proj1_sig t)) s) eqn:Et; [left; reflexivity|].
      destruct (dots (fst (proj1_sig u)) s) eqn:Eu; [right; exists u; split; [left; reflexivity|exact Eu]|].
      simpl in H1; discriminate H1.
    + right; exists w; split; [right|]; assumption.
Qed.

Lemma joinAll_alive x us :
  aliveOpt (joinAll x us) -> aliveOpt x \/ exists u, In u us /\ alive u.
Proof.
  destruct x as [t|].
  - rewrite joinAll_Some. intros [s Hs].
    destruct (fold_join_dot us t s Hs) as [H|[u [Hu H]]].
    + left; exists s; exact H.
    + right; exists u; split; [exact Hu|exists s; exact H].
  - destruct us as [|u us]; [simpl; tauto|]. rewrite joinAll_None_cons. intros [s Hs]. right.
    destruct (fold_join_dot us u s Hs) as [H|[w [Hw H]]].
    + exists u; split; [left; reflexivity|exists s; exact H].
    + exists w; split; [right; exact Hw|exists s; exact H].
Qed.

(** The stability hypothesis on the later states [us] (see the header). *)
Definition revivedOnlyBy (crit : car S -> car S -> Prop) (t : car S) (us : list (car S)) : Prop :=
  forall pre u post, us = pre ++ u :: post -> alive u ->
  exists w, In w (pre ++ [u]) /\ crit t w.

Lemma revivedOnlyBy_mono (crit1 crit2 : car S -> car S -> Prop) t us :
  (forall w, crit1 t w -> crit2 t w) -> revivedOnlyBy crit1 t us -> revivedOnlyBy crit2 t us.
Proof.
  intros Hc H pre u post E Ha. destruct (H pre u post E Ha) as [w [Hw Hcw]].
  exists w; split; [exact Hw|apply Hc, Hcw].
Qed.

Lemma revivedOnlyBy_prefix crit t l1 l2 : revivedOnlyBy crit t (l1 ++ l2) -> revivedOnlyBy crit t l1.
Proof.
  intros H pre u post E Ha. apply (H pre u (post ++ l2)); [|exact Ha].
  rewrite E, <- app_assoc. reflexivity.
Qed.

Lemma revivedOnlyBy_some crit t us :
  revivedOnlyBy crit t us -> (exists u, In u us /\ alive u) -> exists w, In w us /\ crit t w.
Proof.
  intros H [u [Hu Ha]]. destruct (in_split _ _ Hu) as [pre [post E]].
  destruct (H pre u post E Ha) as [w [Hw Hcw]]. exists w; split; [|exact Hcw].
  rewrite E. apply in_or_app. apply in_app_or in Hw as [Hw|[<-|[]]]; [left; exact Hw|right; left; reflexivity].
Qed.

(** Once a state above the tombstone has been joined, the two replicas hold equal states. *)
Theorem collect_record_state (t : car S) (us : list (car S)) :
  (exists w, In w us /\ leq t w) -> @eqv (optSL S) (joinAll (Some t) us) (joinAll None us).
Proof. apply joinAll_absorbed. Qed.

(** Main theorem, record level. *)
Theorem collect_record {K W : Type} (view : Rec P -> K -> W) (t : car S) (us : list (car S)) :
  view_proper view -> ~ alive t -> revivedOnlyBy leq t us ->
  sameVisible view (joinAll (Some t) us) (joinAll None us).
Proof.
  intros Hv Ht Hrev.
  assert (E : aliveOpt (joinAll (Some t) us) \/ aliveOpt (joinAll None us) ->
              @eqv (optSL S) (joinAll (Some t) us) (joinAll None us)).
  { intros H. apply joinAll_absorbed, (revivedOnlyBy_some _ _ _ Hrev).
    destruct H as [H|H]; apply joinAll_alive in H as [H|H]; simpl in H; tauto. }
  split.
  - split; intros H.
    + apply (proj1 (proj1 (sameVisible_of_eqv view _ _ Hv (E (or_introl H))))), H.
    + apply (proj2 (proj1 (sameVisible_of_eqv view _ _ Hv (E (or_intror H))))), H.
  - intros a b Ha Hb Hal.
    assert (H : aliveOpt (joinAll (Some t) us)) by (rewrite Ha; exact Hal).
    apply (proj2 (sameVisible_of_eqv view _ _ Hv (E (or_introl H)))); assumption.
Qed.

(** The same for every intermediate state (the hypothesis is prefix-closed). *)
Theorem collect_record_prefixes {K W : Type} (view : Rec P -> K -> W) (t : car S) (us : list (car S)) :
  view_proper view -> ~ alive t -> revivedOnlyBy leq t us ->
  forall n, sameVisible view (joinAll (Some t) (firstn n us)) (joinAll None (firstn n us)).
Proof.
  intros Hv Ht Hrev n. apply collect_record; auto.
  apply (revivedOnlyBy_prefix _ _ _ (skipn n us)). rewrite firstn_skipn. exact Hrev.
Qed.

Lemma leq_of_parts (t w : car S) :
  ORSet_eqv (ORSet_merge (fst (proj1_sig t)) (fst (proj1_sig w))) (fst (proj1_sig w)) ->
  @eqv (pfield P) (@join (pfield P) (snd (proj1_sig t)) (snd (proj1_sig w))) (snd (proj1_sig w)) ->
  leq t w.
Proof.
  intros H1 H2. unfold leq. split; simpl. exact H1.
  eapply eqv_trans. apply (pprune_proper P). apply dead_same_eqv, H1. exact H2.
  apply (pprune_clean P). exact (proj2 (proj2_sig w)).
Qed.
End Records.

(** ** Causally after the delete

    The membership [mu] has seen the delete [mt]: its context covers the
    delete's, and each of its live dots is an add the delete did not see. *)
Definition causallyAfter (mt mu : ORSet) : Prop :=
  CausalContext_leq (context mt) (context mu) /\
  forall d, dots mu d = true -> covers (context mt) d = false.

Lemma causallyAfter_merge mt mu :
  ~ isAlive mt -> causallyAfter mt mu -> ORSet_eqv (ORSet_merge mt mu) mu.
Proof.
  intros Hd [Hc Hn]. split; simpl.
  - intros s. rewrite (not_alive_dots mt Hd s).
    destruct (dots mu s) eqn:E; simpl; [rewrite (Hn s E)|]; reflexivity.
  - apply merge_absorb, Hc.
Qed.

Lemma causallyAfter_iff mt mu :
  ~ isAlive mt -> (causallyAfter mt mu <-> ORSet_eqv (ORSet_merge mt mu) mu).
Proof.
  intros Hd. split. apply causallyAfter_merge, Hd.
  intros [H1 H2]. split.
  - intros r. specialize (H2 r). simpl in H2. unfold CausalContext_merge in H2. lia.
  - intros d E. specialize (H1 d). simpl in H1. rewrite (not_alive_dots mt Hd d), E in H1.
    destruct (covers (context mt) d); [discriminate H1|reflexivity].
Qed.

(** ** Swift's record shape: [Column -> FieldState?] *)
Section Swift.
Context {Column : Type} {R : Semilattice}.
Local Notation P := (funPrune Column (FieldState_P R)).
Local Notation S := (SwiftRecordState_SL Column R).

Definition FieldValue : Type := (car R + (Stamp -> option (car R)))%type.
Definition membershipOf (a : car S) : ORSet := fst (proj1_sig a).
Definition fieldsOf (a : car S) : Column -> option FieldValue := snd (proj1_sig a).

(** [.updateWins]: every field of the tombstone is [.plain]. *)
Definition plainRecord (a : car S) : Prop :=
  forall c x, fieldsOf a c = Some x -> exists r, x = inl r.

Definition wholeRowAfter (t w : car S) : Prop :=
  causallyAfter (membershipOf t) (membershipOf w) /\
  forall c r, fieldsOf t c = Some (inl r) ->
    exists r', fieldsOf w c = Some (inl r') /\ leq r r'.

Local Notation FS := (ordsumSL R (funSL Stamp (optSL R))).

(** The field part of the record order, one column at a time. *)
Definition fieldLe (x y : option FieldValue) : Prop := @opteqv FS (@optjoin FS x y) y.

Lemma leq_of_fields (t w : car S) :
  ~ alive P t -> causallyAfter (membershipOf t) (membershipOf w) ->
  (forall c, fieldLe (fieldsOf t c) (fieldsOf w c)) -> leq t w.
Proof.
  intros Hd Hc Hf.
  exact (leq_of_parts P t w (causallyAfter_merge _ _ Hd Hc) (fun c => Hf c)).
Qed.

Lemma wholeRowAfter_leq (t w : car S) :
  ~ alive P t -> plainRecord t -> wholeRowAfter t w -> leq t w.
Proof.
  intros Hd Hp [Hc Hf]. apply leq_of_fields; [exact Hd|exact Hc|].
  intros c. unfold fieldLe. destruct (fieldsOf t c) as [x|] eqn:E.
  - destruct (Hp c x E) as [r ->]. destruct (Hf c r E) as [r' [E' Hle]].
    rewrite E'. simpl. exact Hle.
  - simpl. destruct (fieldsOf w c) as [y|]; [apply (@eqv_refl FS)|exact I].
Qed.

Theorem collect_updateWins {K W : Type} (view : Rec P -> K -> W) (t : car S) (us : list (car S)) :
  view_proper P view -> ~ alive P t -> plainRecord t -> revivedOnlyBy P wholeRowAfter t us ->
  sameVisible P view (joinAll (Some t) us) (joinAll None us).
Proof.
  intros Hv Hd Hp Hs. apply collect_record; [exact Hv|exact Hd|].
  apply (revivedOnlyBy_mono P wholeRowAfter); [|exact Hs].
  intros w Hw. apply wholeRowAfter_leq; assumption.
Qed.

(** [.deleteWins]: every field of the tombstone is [.incarnated]; no value
    under an incarnation the delete did not see. *)
Definition incarnatedRecord (a : car S) : Prop :=
  forall c x, fieldsOf a c = Some x -> exists g, x = inr g.

Definition noOrphans (a : car S) : Prop :=
  forall c g i r, fieldsOf a c = Some (inr g) -> g i = Some r ->
  covers (context (membershipOf a)) i = true.

Definition wholeRowAfterDW (t w : car S) : Prop :=
  causallyAfter (membershipOf t) (membershipOf w) /\
  forall c g, fieldsOf t c = Some (inr g) -> exists g', fieldsOf w c = Some (inr g').

Lemma tombstone_incarnations_empty (t : car S) c g i :
  ~ alive P t -> noOrphans t -> fieldsOf t c = Some (inr g) -> g i = None.
Proof.
  intros Hd Ho E. pose proof (proj2 (proj2_sig t) c) as Hc.
  change (match fieldsOf t c with
          | Some (inr b0) => forall i, dead (membershipOf t) i = true -> b0 i = None
          | _ => True end) in Hc.
  rewrite E in Hc.
  assert (Hd' : forall s, dots (membershipOf t) s = false) by exact (not_alive_dots _ Hd).
  destruct (g i) as [r|] eqn:Eg; [|reflexivity].
  rewrite <- Eg. apply Hc. unfold dead. rewrite (Ho c g i r E Eg), Hd'. reflexivity.
Qed.

Lemma wholeRowAfterDW_leq (t w : car S) :
  ~ alive P t -> incarnatedRecord t -> noOrphans t -> wholeRowAfterDW t w -> leq t w.
Proof.
  intros Hd Hi Ho [Hc Hf]. apply leq_of_fields; [exact Hd|exact Hc|].
  intros c. unfold fieldLe. destruct (fieldsOf t c) as [x|] eqn:E.
  - destruct (Hi c x E) as [g ->]. destruct (Hf c g E) as [g' E'].
    rewrite E'. simpl. intros i.
    rewrite (tombstone_incarnations_empty t c g i Hd Ho E). simpl.
    apply (@eqv_refl (optSL R)).
  - simpl. destruct (fieldsOf w c) as [y|]; [apply (@eqv_refl FS)|exact I].
Qed.

Theorem collect_deleteWins {K W : Type} (view : Rec P -> K -> W) (t : car S) (us : list (car S)) :
  view_proper P view -> ~ alive P t -> incarnatedRecord t -> noOrphans t ->
  revivedOnlyBy P wholeRowAfterDW t us ->
  sameVisible P view (joinAll (Some t) us) (joinAll None us).
Proof.
  intros Hv Hd Hi Ho Hs. apply collect_record; [exact Hv|exact Hd|].
  apply (revivedOnlyBy_mono P wholeRowAfterDW); [|exact Hs].
  intros w Hw. apply wholeRowAfterDW_leq; assumption.
Qed.
End Swift.

(** ** [.updateWins] with LWW columns: the stamp condition, the shown value *)
Section LWW.
Context {Column : Type}.
Local Notation P := (funPrune Column (FieldState_P LWWRegister_SL)).
Local Notation S := (SwiftRecordState_SL Column LWWRegister_SL).

Definition shownValue (a : Rec P) (c : Column) : option Value :=
  match snd a c with Some (inl r) => Some (value r) | _ => None end.

Lemma shownValue_proper : view_proper P shownValue.
Proof.
  intros a b [_ H] c. specialize (H c). unfold shownValue.
  destruct (snd a c) as [[r|g]|], (snd b c) as [[r'|g']|]; simpl in H; try contradiction; try reflexivity.
  rewrite H. reflexivity.
Qed.

Definition wholeRowInsert (t w : car S) : Prop :=
  causallyAfter (membershipOf t) (membershipOf w) /\
  forall c r, fieldsOf t c = Some (inl r) ->
    exists r', fieldsOf w c = Some (inl r') /\ Stamp_lt (stamp r) (stamp r').

Lemma wholeRowInsert_after (t w : car S) : wholeRowInsert t w -> wholeRowAfter t w.
Proof.
  intros [Hc Hf]. split; [exact Hc|]. intros c r E.
  destruct (Hf c r E) as [r' [E' Hlt]]. exists r'. split; [exact E'|].
  apply (LWWRegister_merge_larger_stamp_wins r r' Hlt).
Qed.

(** What the Swift code guarantees makes a revival a [wholeRowInsert]: the
    inserting replica has merged the delete (its context [m] covers the
    tombstone's), its clock has received every stamp its context records, so
    the insert's stamp [s] is above every entry of [m] (HLC receive, then
    tick), the insert writes every column at [s], and every field stamp of an
    [.updateWins] tombstone is the dot of an add the delete observed. *)
Lemma local_insert_wholeRowInsert (t w : car S) (m : ORSet) (s : Stamp) :
  CausalContext_leq (context (membershipOf t)) (context m) ->
  (forall r0, (context m r0 < hlc s)%N) ->
  (forall c r, fieldsOf t c = Some (inl r) -> covers (context (membershipOf t)) (stamp r) = true) ->
  membershipOf w = ORSet_add s m ->
  (forall c r, fieldsOf t c = Some (inl r) -> exists v, fieldsOf w c = Some (inl (mkLWW v s))) ->
  wholeRowInsert t w.
Proof.
  intros Hle Hclk Hcov Hm Hrow. split.
  - rewrite Hm. split.
    + intros r0. simpl. specialize (Hle r0). pose proof (record_leq (context m) s r0). lia.
    + intros d Hd. simpl in Hd. apply Stamp_eqb_spec in Hd. subst d.
      unfold covers. apply N.leb_gt. specialize (Hle (replica s)). specialize (Hclk (replica s)). lia.
  - intros c r E. destruct (Hrow c r E) as [v E']. exists (mkLWW v s). split; [exact E'|].
    simpl. left. specialize (Hcov c r E). unfold covers in Hcov. apply N.leb_le in Hcov.
    specialize (Hle (replica (stamp r))). specialize (Hclk (replica (stamp r))). unfold hlc in *. lia.
Qed.

(** Main theorem for [.updateWins] LWW records. *)
Theorem collect_updateWins_LWW (t : car S) (us : list (car S)) :
  ~ alive P t -> plainRecord t -> revivedOnlyBy P wholeRowInsert t us ->
  sameVisible P shownValue (joinAll (Some t) us) (joinAll None us).
Proof.
  intros Hd Hp Hs. apply collect_updateWins; [apply shownValue_proper|exact Hd|exact Hp|].
  apply (revivedOnlyBy_mono P wholeRowInsert); [|exact Hs].
  intros w; apply wholeRowInsert_after.
Qed.
End LWW.

(** ** Replica level: a map from record key to an optional record state *)
Section Replica.
Context (P : Prunable).
Local Notation S := (RecordState_SL P).

Definition collect (k0 : RecordKey) (st : @ReplicaState S) : @ReplicaState S :=
  fun k => if N.eqb k k0 then None else st k.

Definition deltasFor (k : RecordKey) (ds : @Changeset S) : list (car S) :=
  map snd (filter (fun d : @Delta S => N.eqb k (@fst RecordKey (car S) d)) ds).

Lemma apply_at : forall (ds : @Changeset S) (st : @ReplicaState S) k,
  fold_left apply_delta ds st k = joinAll (st k) (deltasFor k ds).
Proof.
  induction ds as [|d ds IH]; intros st k; simpl.
  - reflexivity.
  - rewrite IH. unfold apply_delta, deltasFor. simpl.
    destruct (N.eqb k (@fst RecordKey (Rec_WF P) d)); reflexivity.
Qed.

Lemma deliver_at (l : list (@Changeset S)) (st : @ReplicaState S) k :
  deliver st l k = joinAll (st k) (deltasFor k (concat l)).
Proof. rewrite deliver_concat. apply apply_at. Qed.

Definition sameVisibleReplica {K W : Type} (view : Rec P -> K -> W) (st1 st2 : @ReplicaState S) : Prop :=
  forall k, sameVisible P view (st1 k) (st2 k).

(** Main theorem, replica level. *)
Theorem collect_replica {K W : Type} (view : Rec P -> K -> W)
  (st : @ReplicaState S) (k0 : RecordKey) (t : car S) (l : list (@Changeset S)) :
  view_proper P view -> st k0 = Some t -> ~ alive P t ->
  revivedOnlyBy P leq t (deltasFor k0 (concat l)) ->
  sameVisibleReplica view (deliver st l) (deliver (collect k0 st) l).
Proof.
  intros Hv Hst Hd Hs k. rewrite !deliver_at. unfold collect.
  destruct (N.eqb_spec k k0) as [->|Hne].
  - rewrite Hst. apply collect_record; assumption.
  - apply sameVisible_of_eqv; [exact Hv|]. apply (@eqv_refl (optSL S)).
Qed.
End Replica.

Theorem collect_replica_updateWins_LWW {Column : Type}
  (st : @ReplicaState (SwiftRecordState_SL Column LWWRegister_SL)) k0 t l :
  st k0 = Some t -> ~ alive _ t -> plainRecord t ->
  revivedOnlyBy _ wholeRowInsert t (deltasFor _ k0 (concat l)) ->
  sameVisibleReplica _ shownValue (deliver st l) (deliver (collect _ k0 st) l).
Proof.
  intros Hst Hd Hp Hs. apply (collect_replica _ shownValue st k0 t l); [apply shownValue_proper|exact Hst|exact Hd|].
  apply (revivedOnlyBy_mono _ wholeRowInsert); [|exact Hs].
  intros w Hw. apply wholeRowAfter_leq; [exact Hd|exact Hp|apply wholeRowInsert_after, Hw].
Qed.

Theorem collect_replica_deleteWins {Column : Type} {R : Semilattice} {K W : Type}
  (view : Rec (funPrune Column (FieldState_P R)) -> K -> W)
  (st : @ReplicaState (SwiftRecordState_SL Column R)) k0 t l :
  view_proper _ view -> st k0 = Some t -> ~ alive _ t -> incarnatedRecord t -> noOrphans t ->
  revivedOnlyBy _ wholeRowAfterDW t (deltasFor _ k0 (concat l)) ->
  sameVisibleReplica _ view (deliver st l) (deliver (collect _ k0 st) l).
Proof.
  intros Hv Hst Hd Hi Ho Hs. apply (collect_replica _ view st k0 t l); [exact Hv|exact Hst|exact Hd|].
  apply (revivedOnlyBy_mono _ wholeRowAfterDW); [|exact Hs].
  intros w Hw. apply wholeRowAfterDW_leq; assumption.
Qed.

(** ** Examples: the hypothesis is needed, and is satisfiable *)
Section Examples.
Local Notation S := (SwiftRecordState_SL bool LWWRegister_SL).
Local Notation P := (funPrune bool (FieldState_P LWWRegister_SL)).

Definition row (s : Stamp) : bool -> option (@FieldValue LWWRegister_SL) :=
  fun c => Some (inl (mkLWW (if c then 10 else 20)%Z s)).

Definition mkState (m : ORSet) (f : bool -> option (@FieldValue LWWRegister_SL))
  (Hm : wellFormed m) (Hf : forall c, match f c with Some (inr _) => False | _ => True end) : car S.
Proof.
  refine (exist _ (m, f) (conj Hm _)). intros c. specialize (Hf c).
  simpl. destruct (f c) as [[r|g]|]; [exact I|destruct Hf|exact I].
Defined.

(** Replica 1 inserts the row at [(1,1)]; replica 2 deletes it at [(2,2)]
    after seeing the insert: the tombstone. *)
Definition tomb : car S :=
  mkState (ORSet_remove (2,2)%N (ORSet_add (1,1)%N ORSet_empty)) (row (1,1)%N)
          (ORSet_remove_wellFormed _ _) (fun c => I).

(** Replica 3 edited column [true] at [(3,3)] having seen the insert but not
    the delete (under [.updateWins] an edit is an add): a per-field delta. *)
Definition concurrentEdit : car S :=
  mkState (ORSet_add (3,3)%N (ORSet_add (1,1)%N ORSet_empty))
          (fun c => if c then Some (inl (mkLWW 11%Z (3,3)%N)) else None)
          (ORSet_add_wellFormed _ _) ltac:(intros [|]; exact I).

(** Merely having received the delete is not enough (DESIGN §3): if the edit
    was still unsent when the record was collected, the revived record shows
    column [false] ([20]) on a replica that kept the tombstone and nothing on
    one that collected it. *)
Theorem collect_concurrent_edit_diverges :
  ~ sameVisible P shownValue (joinAll (Some tomb) [concurrentEdit]) (joinAll None [concurrentEdit]).
Proof.
  intros [_ H].
  assert (Ha : alive P (join tomb concurrentEdit)) by (exists (3,3)%N; vm_compute; reflexivity).
  specialize (H _ _ eq_refl eq_refl Ha false). vm_compute in H. discriminate H.
Qed.

(** The original insert delivered again after collection (a stale duplicate,
    not causally after the delete) revives a collected record, while the
    tombstone would have absorbed it. *)
Definition staleInsert : car S :=
  mkState (ORSet_add (1,1)%N ORSet_empty) (row (1,1)%N) (ORSet_add_wellFormed _ _) (fun c => I).

Theorem collect_stale_insert_diverges :
  ~ sameVisible P shownValue (joinAll (Some tomb) [staleInsert]) (joinAll None [staleInsert]).
Proof.
  intros [[_ H] _].
  assert (Ha : aliveOpt P (joinAll None [staleInsert])) by (exists (1,1)%N; vm_compute; reflexivity).
  destruct (H Ha) as [s Hs]. simpl in Hs. unfold dotjoin in Hs.
  destruct (Stamp_eqb s (1,1)%N) eqn:E.
  - apply Stamp_eqb_spec in E. subst s. vm_compute in Hs. discriminate Hs.
  - simpl in Hs. discriminate Hs.
Qed.
(** Non-vacuity: replica 4, after merging the delete, re-inserts the row at
    [(4,4)] (a whole-row insert); replica 5 then edits one column at [(5,5)]
    (a per-field delta).  Delivered in causal order, the collected and the
    uncollected replica show the same record. *)
Definition reinsert : car S :=
  mkState (ORSet_add (4,4)%N (ORSet_remove (2,2)%N (ORSet_add (1,1)%N ORSet_empty))) (row (4,4)%N)
          (ORSet_add_wellFormed _ _) (fun c => I).

Definition laterEdit : car S :=
  mkState (ORSet_add (5,5)%N (ORSet_add (4,4)%N (ORSet_remove (2,2)%N (ORSet_add (1,1)%N ORSet_empty))))
          (fun c => if c then Some (inl (mkLWW 12%Z (5,5)%N)) else None)
          (ORSet_add_wellFormed _ _) ltac:(intros [|]; exact I).

Lemma reinsert_wholeRowInsert : wholeRowInsert tomb reinsert.
Proof.
  apply (local_insert_wholeRowInsert _ _ (ORSet_remove (2,2)%N (ORSet_add (1,1)%N ORSet_empty)) (4,4)%N).
  - intros r0; apply N.le_refl.
  - intros r0. simpl. unfold CausalContext_record, CausalContext_empty. simpl.
    destruct (N.eqb r0 2); destruct (N.eqb r0 1); simpl; lia.
  - intros c r E. unfold fieldsOf in E. simpl in E. injection E as <-. reflexivity.
  - reflexivity.
  - intros c r _. exists (if c then 10 else 20)%Z. reflexivity.
Qed.

Theorem collect_revival_then_edit :
  sameVisible P shownValue (joinAll (Some tomb) [reinsert; laterEdit]) (joinAll None [reinsert; laterEdit]).
Proof.
  apply collect_updateWins_LWW.
  - intros [s Hs]. simpl in Hs. discriminate Hs.
  - intros c x E. unfold fieldsOf in E. simpl in E. injection E as <-. eexists; reflexivity.
  - intros pre u post E _. exists reinsert. split; [|exact reinsert_wholeRowInsert].
    destruct pre as [|x [|y pre]]; simpl in E; injection E; intros; subst; simpl; auto.
Qed.
End Examples.
