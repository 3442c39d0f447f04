#!/usr/bin/env bash
# Build the Coq development and check that it is closed:
#   1. `make` builds every file listed in _CoqProject;
#   2. no .v file contains Admitted/admit/Axiom/Parameter/Hypothesis/Conjecture;
#   3. `Print Assumptions` on every Theorem and Lemma reports
#      "Closed under the global context" (no axioms, no holes).
# Needs only Coq (coqc, coq_makefile) and make.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

for tool in coqc coq_makefile make; do
  command -v "$tool" >/dev/null 2>&1 || { echo "check.sh: '$tool' not found" >&2; exit 1; }
done

# Files in build order, as listed in _CoqProject.
mapfile -t files < <(grep -E '^[^-#].*\.v$' _CoqProject)

echo "check.sh: building ${#files[@]} files"
make -s all

# 2. Forbidden vernacular (anywhere, comments included: keep the files clean).
forbidden='\b(Admitted|admit|Axiom|Axioms|Parameter|Parameters|Hypothesis|Hypotheses|Conjecture)\b'
if grep -nEH "$forbidden" -- *.v; then
  echo "check.sh: FAIL: forbidden command (Admitted/admit/Axiom/Parameter/Hypothesis/Conjecture) found above" >&2
  exit 1
fi

# 3. Every Theorem and Lemma must be closed under the global context.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

names=()
{
  printf 'From Converge Require'
  for f in "${files[@]}"; do printf ' %s' "${f%.v}"; done
  printf '.\n'
} > "$tmp/Assumptions.v"
nthm=0
nlem=0
for f in "${files[@]}"; do
  mod="${f%.v}"
  nthm=$((nthm + $(grep -cE '^[[:space:]]*Theorem[[:space:]]+' "$f" || true)))
  nlem=$((nlem + $(grep -cE '^[[:space:]]*Lemma[[:space:]]+' "$f" || true)))
  while IFS= read -r name; do
    i=${#names[@]}
    names+=("Converge.$mod.$name")
    printf 'Redirect "%s/assume_%d" Print Assumptions Converge.%s.%s.\n' "$tmp" "$i" "$mod" "$name" >> "$tmp/Assumptions.v"
  done < <(sed -nE "s/^[[:space:]]*(Theorem|Lemma)[[:space:]]+([A-Za-z0-9_']+).*/\2/p" "$f")
done

(cd "$tmp" && coqc -Q "$OLDPWD" Converge Assumptions.v) > "$tmp/coqc.log" 2>&1 || {
  cat "$tmp/coqc.log" >&2
  echo "check.sh: FAIL: coqc on the generated Assumptions.v failed" >&2
  exit 1
}

bad=0
for i in "${!names[@]}"; do
  out="$tmp/assume_$i.out"
  if ! [ -f "$out" ] || ! grep -q 'Closed under the global context' "$out"; then
    echo "check.sh: FAIL: ${names[$i]} is not closed:" >&2
    [ -f "$out" ] && sed 's/^/    /' "$out" >&2
    bad=$((bad + 1))
  fi
done

# The main theorems named in the README must exist (and were checked above).
main_theorems=(
  Stamp_lt_total HybridClock_tick_monotonic HybridClock_receive_causal
  HybridClock_monotonic_any_interleaving HybridClock_counter_overflow
  LWWRegister_merge_comm LWWRegister_merge_assoc LWWRegister_merge_idem LWWRegister_write_inflation
  CausalContext_merge_comm CausalContext_merge_assoc CausalContext_merge_idem
  ORSet_merge_wellFormed ORSet_merge_comm ORSet_merge_assoc ORSet_merge_idem
  ORSet_add_inflation ORSet_remove_inflation ORSet_add_wins
  MVRegister_merge_comm MVRegister_merge_assoc MVRegister_merge_idem MVRegister_write_inflation
  MVRegister_concurrent_writes_survive MVRegister_resolve_single
  RecordState_updateWins_merge_comm RecordState_updateWins_merge_assoc RecordState_updateWins_merge_idem
  RecordState_deleteWins_merge_comm RecordState_deleteWins_merge_assoc RecordState_deleteWins_merge_idem
  SwiftRecordState_merge_comm SwiftRecordState_merge_assoc SwiftRecordState_merge_idem
  strong_eventual_consistency strong_eventual_consistency_RecordState
  collect_record collect_replica collect_updateWins_LWW collect_replica_updateWins_LWW
  collect_deleteWins collect_replica_deleteWins
)
for t in "${main_theorems[@]}"; do
  found=0
  for n in "${names[@]}"; do
    if [ "${n##*.}" = "$t" ]; then found=1; break; fi
  done
  if [ "$found" = 0 ]; then
    echo "check.sh: FAIL: main theorem $t not found" >&2
    bad=$((bad + 1))
  fi
done

if [ "$bad" -ne 0 ]; then
  echo "check.sh: FAIL: $bad problem(s)" >&2
  exit 1
fi

echo "proofs: ${#files[@]} files, $nthm theorems + $nlem lemmas, all closed (Print Assumptions: Closed under the global context)"
