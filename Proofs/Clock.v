(** * HybridClock (Swift [HybridClock]): hybrid logical clock in closed form.

    An [HLC] is [milliseconds * 65536 + counter] (Swift: [ms << 16 | counter]). *)

From Coq Require Import NArith Lia List Sorted.
Import ListNotations.
Open Scope N_scope.

Definition millis (t : N) : N := t / 65536.
Definition counter (t : N) : N := t mod 65536.

(** Local event (Swift [HybridClock.tick]); [pt] is the physical time in ms. *)
Definition tick (l pt : N) : N := N.max (l + 1) (pt * 65536).

(** Receive of a remote HLC [m] (Swift [HybridClock.receive]). *)
Definition receive (l m pt : N) : N := N.max (N.max l m + 1) (pt * 65536).

Theorem HybridClock_tick_monotonic (l pt : N) : l < tick l pt.
Proof. unfold tick; lia. Qed.

Theorem HybridClock_receive_monotonic (l m pt : N) : l < receive l m pt /\ m < receive l m pt.
Proof. unfold receive; lia. Qed.

(** Causality: after receiving [m], every later local event is above [m]. *)
Theorem HybridClock_receive_causal (l m pt pt' : N) : m < tick (receive l m pt) pt'.
Proof. unfold tick, receive; lia. Qed.

Lemma millis_ge (t pt : N) : pt * 65536 <= t -> pt <= millis t.
Proof.
  intros H. unfold millis.
  rewrite <- (N.div_mul pt 65536) at 1 by lia.
  apply N.div_le_mono; lia.
Qed.

(** The millisecond part of a fresh HLC is never behind physical time. *)
Theorem HybridClock_tick_physical (l pt : N) : pt <= millis (tick l pt).
Proof. apply millis_ge; unfold tick; lia. Qed.

Theorem HybridClock_receive_physical (l m pt : N) : pt <= millis (receive l m pt).
Proof. apply millis_ge; unfold receive; lia. Qed.

(** Counter overflow rolls into the next millisecond. *)
Theorem HybridClock_counter_overflow (ms pt : N) :
  pt <= ms ->
  tick (ms * 65536 + 65535) pt = (ms + 1) * 65536 /\
  millis (tick (ms * 65536 + 65535) pt) = ms + 1 /\
  counter (tick (ms * 65536 + 65535) pt) = 0.
Proof.
  intros H.
  assert (E : tick (ms * 65536 + 65535) pt = (ms + 1) * 65536) by (unfold tick; lia).
  rewrite E. unfold millis, counter. split; [reflexivity|split].
  - apply N.div_mul; lia.
  - apply N.mod_mul; lia.
Qed.

(** Any interleaving of local events and receives issues strictly increasing HLCs. *)
Inductive ClockEvent :=
| LocalEvent (pt : N)
| Receive (m pt : N).

Definition step (l : N) (e : ClockEvent) : N :=
  match e with
  | LocalEvent pt => tick l pt
  | Receive m pt => receive l m pt
  end.

Fixpoint run (l : N) (es : list ClockEvent) : list N :=
  match es with
  | [] => []
  | e :: es' => step l e :: run (step l e) es'
  end.

Lemma step_gt (l : N) (e : ClockEvent) : l < step l e.
Proof. destruct e; simpl; [apply HybridClock_tick_monotonic|apply HybridClock_receive_monotonic]. Qed.

Lemma run_sorted : forall es l, Sorted N.lt (l :: run l es).
Proof.
  induction es as [|e es IH]; intros l; simpl.
  - repeat constructor.
  - constructor. apply IH. constructor. apply step_gt.
Qed.

Theorem HybridClock_monotonic_any_interleaving (l : N) (es : list ClockEvent) :
  StronglySorted N.lt (l :: run l es).
Proof. apply Sorted_StronglySorted. exact N.lt_trans. apply run_sorted. Qed.

(** Bonus: the closed forms are Kulkarni et al.'s rules (Fig. 5) on pairs
    [(l, c)] = [(millis, counter)] with counter overflow rolling into the next
    millisecond.  Local/send event: [l' = max l pt]; [c' = c + 1] if [l' = l]
    else [0].  [encode (l, 65536) = encode (l + 1, 0)]: a counter that
    overflows rolls into the next millisecond. *)
Definition kulkarni_tick (l c pt : N) : N * N :=
  if pt <=? l then (l, c + 1) else (pt, 0).

Definition encode (lc : N * N) : N := fst lc * 65536 + snd lc.

Theorem HybridClock_tick_is_kulkarni (l c pt : N) :
  c < 65536 ->
  tick (encode (l, c)) pt = encode (kulkarni_tick l c pt).
Proof.
  intros Hc. unfold tick, encode, kulkarni_tick; simpl.
  destruct (N.leb_spec pt l); simpl; lia.
Qed.
