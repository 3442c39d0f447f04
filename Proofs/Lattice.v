(** * Lattice: join-semilattices up to an equivalence, and the generic
    strong-eventual-consistency theorem for folds of joins.

    Every state type of Converge is a join-semilattice.  Because sets of dots
    and causal contexts are modelled as functions, equality is an explicit
    (pointwise) equivalence [eqv] instead of Leibniz equality: this keeps the
    development free of the functional-extensionality axiom. *)

From Coq Require Import List.
Import ListNotations.

Record Semilattice := {
  car : Type;
  eqv : car -> car -> Prop;
  join : car -> car -> car;
  eqv_refl : forall x, eqv x x;
  eqv_sym : forall x y, eqv x y -> eqv y x;
  eqv_trans : forall x y z, eqv x y -> eqv y z -> eqv x z;
  join_proper : forall x x' y y', eqv x x' -> eqv y y' -> eqv (join x y) (join x' y');
  join_comm : forall x y, eqv (join x y) (join y x);
  join_assoc : forall x y z, eqv (join (join x y) z) (join x (join y z));
  join_idem : forall x, eqv (join x x) x
}.

Arguments eqv {_} _ _.
Arguments join {_} _ _.
Arguments eqv_refl {_} _.
Arguments eqv_sym {_} _ _ _.
Arguments eqv_trans {_} _ _ _ _ _.
Arguments join_proper {_} _ _ _ _ _ _.
Arguments join_comm {_} _ _.
Arguments join_assoc {_} _ _ _.
Arguments join_idem {_} _.

(** The order induced by the join (Swift: [a.merged(with: b) == b]). *)
Definition leq {L : Semilattice} (x y : car L) : Prop := eqv (join x y) y.

Section Laws.
Context {L : Semilattice}.

Lemma leq_refl (x : car L) : leq x x.
Proof. apply join_idem. Qed.

Lemma leq_trans (x y z : car L) : leq x y -> leq y z -> leq x z.
Proof.
  unfold leq; intros Hxy Hyz.
  eapply eqv_trans. apply join_proper. apply eqv_refl. apply eqv_sym, Hyz.
  eapply eqv_trans. apply eqv_sym, join_assoc.
  eapply eqv_trans. apply join_proper. exact Hxy. apply eqv_refl.
  exact Hyz.
Qed.

Lemma leq_antisym (x y : car L) : leq x y -> leq y x -> eqv x y.
Proof.
  unfold leq; intros Hxy Hyx.
  eapply eqv_trans. apply eqv_sym, Hyx.
  eapply eqv_trans. apply join_comm. exact Hxy.
Qed.

Lemma leq_proper (x x' y y' : car L) : eqv x x' -> eqv y y' -> leq x y -> leq x' y'.
Proof.
  unfold leq; intros Hx Hy H.
  eapply eqv_trans. apply join_proper; apply eqv_sym; eassumption.
  eapply eqv_trans; eassumption.
Qed.

Lemma leq_join_l (x y : car L) : leq x (join x y).
Proof.
  unfold leq.
  eapply eqv_trans. apply eqv_sym, join_assoc.
  apply join_proper. apply join_idem. apply eqv_refl.
Qed.

Lemma leq_join_r (x y : car L) : leq y (join x y).
Proof.
  unfold leq.
  eapply eqv_trans. apply join_comm.
  eapply eqv_trans. apply join_assoc.
  apply join_proper. apply eqv_refl. apply join_idem.
Qed.

Lemma join_lub (x y z : car L) : leq x z -> leq y z -> leq (join x y) z.
Proof.
  unfold leq; intros Hx Hy.
  eapply eqv_trans. apply join_assoc.
  eapply eqv_trans. apply join_proper. apply eqv_refl. exact Hy.
  exact Hx.
Qed.

(** A replica applies the states it receives by joining them in. *)
Definition fold_join (l : list (car L)) (s : car L) : car L :=
  fold_left (fun acc x => join acc x) l s.

Lemma fold_join_upper : forall l s,
  leq s (fold_join l s) /\ forall x, In x l -> leq x (fold_join l s).
Proof.
  induction l as [|y l IH]; intros s; simpl.
  - split. apply leq_refl. intros x [].
  - destruct (IH (join s y)) as [H1 H2]. split.
    + eapply leq_trans. apply leq_join_l. exact H1.
    + intros x [<-|Hin].
      * eapply leq_trans. apply leq_join_r. exact H1.
      * apply H2, Hin.
Qed.

Lemma fold_join_least : forall l s u,
  leq s u -> (forall x, In x l -> leq x u) -> leq (fold_join l s) u.
Proof.
  induction l as [|y l IH]; intros s u Hs Hl; simpl.
  - exact Hs.
  - apply IH.
    + apply join_lub. exact Hs. apply Hl. left; reflexivity.
    + intros x Hx. apply Hl. right; exact Hx.
Qed.

Lemma fold_join_proper : forall l s s',
  eqv s s' -> eqv (fold_join l s) (fold_join l s').
Proof.
  induction l as [|y l IH]; intros s s' H; simpl.
  - exact H.
  - apply IH. apply join_proper. exact H. apply eqv_refl.
Qed.

(** Strong eventual consistency, generic form: two replicas that start from
    the same state and deliver the same states (in any order, with any
    duplicates) hold equivalent states. *)
Theorem fold_join_same_elements : forall l1 l2 s,
  (forall x, In x l1 <-> In x l2) -> eqv (fold_join l1 s) (fold_join l2 s).
Proof.
  intros l1 l2 s H.
  destruct (fold_join_upper l1 s) as [A1 B1].
  destruct (fold_join_upper l2 s) as [A2 B2].
  apply leq_antisym; apply fold_join_least; auto.
  - intros x Hx. apply B2, H, Hx.
  - intros x Hx. apply B1, H, Hx.
Qed.

End Laws.

(** ** Constructions *)

(** Product of two semilattices (Swift: a struct of lattice fields). *)
Definition prodSL (A B : Semilattice) : Semilattice.
Proof.
  refine {| car := (car A * car B)%type;
            eqv := fun x y => eqv (fst x) (fst y) /\ eqv (snd x) (snd y);
            join := fun x y => (join (fst x) (fst y), join (snd x) (snd y)) |}.
  - intros [a b]; split; apply eqv_refl.
  - intros [a b] [c d] [H1 H2]; split; apply eqv_sym; assumption.
  - intros [a b] [c d] [e f] [H1 H2] [H3 H4]; split; eapply eqv_trans; eassumption.
  - intros [a b] [a' b'] [c d] [c' d'] [H1 H2] [H3 H4]; split; apply join_proper; assumption.
  - intros [a b] [c d]; split; apply join_comm.
  - intros [a b] [c d] [e f]; split; apply join_assoc.
  - intros [a b]; split; apply join_idem.
Defined.

(** Pointwise lattice on functions from an index type (Swift: a dictionary
    from column name, or from key, to a lattice value). *)
Definition funSL (I : Type) (A : Semilattice) : Semilattice.
Proof.
  refine {| car := I -> car A;
            eqv := fun f g => forall i, eqv (f i) (g i);
            join := fun f g i => join (f i) (g i) |}.
  - intros f i; apply eqv_refl.
  - intros f g H i; apply eqv_sym, H.
  - intros f g h H1 H2 i; eapply eqv_trans; [apply H1|apply H2].
  - intros f f' g g' H1 H2 i; apply join_proper; [apply H1|apply H2].
  - intros f g i; apply join_comm.
  - intros f g h i; apply join_assoc.
  - intros f i; apply join_idem.
Defined.

(** Lifting with a new bottom [None] (Swift: an optional entry of a
    dictionary; a missing entry is the bottom). *)
Definition optjoin {A : Semilattice} (x y : option (car A)) : option (car A) :=
  match x, y with
  | Some a, Some b => Some (join a b)
  | Some a, None => Some a
  | None, y => y
  end.

Definition opteqv {A : Semilattice} (x y : option (car A)) : Prop :=
  match x, y with
  | Some a, Some b => eqv a b
  | None, None => True
  | _, _ => False
  end.

Definition optSL (A : Semilattice) : Semilattice.
Proof.
  refine {| car := option (car A); eqv := @opteqv A; join := @optjoin A |}.
  - intros [a|]; simpl; auto. apply eqv_refl.
  - intros [a|] [b|]; simpl; auto. apply eqv_sym.
  - intros [a|] [b|] [c|]; simpl; try tauto. apply eqv_trans.
  - intros [a|] [a'|] [b|] [b'|]; simpl; try tauto; intros; try apply join_proper; auto.
  - intros [a|] [b|]; simpl; auto. apply join_comm. apply eqv_refl. apply eqv_refl.
  - intros [a|] [b|] [c|]; simpl; auto; try apply eqv_refl. apply join_assoc.
  - intros [a|]; simpl; auto. apply join_idem.
Defined.

Lemma optjoin_None_r {A : Semilattice} (x : option (car A)) : optjoin x None = x.
Proof. destruct x; reflexivity. Qed.
