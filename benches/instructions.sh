#!/usr/bin/env bash
# Instructions per input of fixed workloads, counted by callgrind: the speed
# regression gate that a noisy machine cannot fool (issue 15).
#
#   bash benches/instructions.sh            # measure, compare with the budget
#   bash benches/instructions.sh --update   # measure, write the budget file
#
# Each workload (benches/instructions.rs) builds its inputs, then runs them
# through a measure_* function; callgrind counts only inside those
# (--toggle-collect). A figure more than 10% above its line in
# benches/instructions-budget.txt fails (exit 1); one more than 10% below
# is reported, so the budget can be tightened. valgrind: Debian's package
# (.ci/run installs it). INPUTS (default 200000) sets the inputs per run.
set -euo pipefail
cd "$(dirname "$0")/.."
budget_file=benches/instructions-budget.txt
inputs=${INPUTS:-200000}
update=false
case "${1:-}" in
  --update) update=true ;;
  "") ;;
  *) echo "usage: bash benches/instructions.sh [--update]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "instructions: valgrind is not installed (Debian: apt-get install valgrind)" >&2; exit 2; }

# The bench target, built as `cargo bench` builds it (release, with debug
# line info, so callgrind names the functions).
exe=$(cargo build --release --locked --bench instructions --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
[ -x "$exe" ] || { echo "instructions: the bench target did not build (cargo build --release --bench instructions)" >&2; exit 2; }

workloads="replay-market-spread replay-doubler core-market-spread core-doubler decode-1k"
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
printf '%-22s %12s %12s %8s\n' workload "instr/input" budget ratio
for w in $workloads; do
  log=$(valgrind --tool=callgrind --toggle-collect='*measure_*' --callgrind-out-file=/dev/null \
    "$exe" "$w" "$inputs" 2>&1 >"$out") || { echo "$log" >&2; exit 2; }
  collected=$(echo "$log" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
  n=$(sed -n 's/^inputs \([0-9]*\)$/\1/p' "$out")
  if [ -z "$collected" ] || [ -z "$n" ] || [ "$collected" = 0 ]; then
    echo "instructions: $w: no count from callgrind (was measure_* inlined away?)" >&2
    echo "$log" >&2
    exit 2
  fi
  per=$(( collected / n ))
  if $update; then
    echo "$w $per" >> "$out.new"
    printf '%-22s %12d\n' "$w" "$per"
    continue
  fi
  budget=$(awk -v w="$w" '$1 == w { print $2 }' "$budget_file" 2>/dev/null || true)
  if [ -z "$budget" ]; then
    printf '%-22s %12d %12s\n' "$w" "$per" "none"
    echo "instructions: $w has no line in $budget_file" >&2
    failed=1
    continue
  fi
  ratio=$(awk -v a="$per" -v b="$budget" 'BEGIN { printf "%.3f", a / b }')
  printf '%-22s %12d %12d %8s\n' "$w" "$per" "$budget" "$ratio"
  if awk -v r="$ratio" 'BEGIN { exit !(r > 1.10) }'; then
    echo "instructions: $w: $per instructions per input, more than 10% above its budget of $budget" >&2
    failed=1
  elif awk -v r="$ratio" 'BEGIN { exit !(r < 0.90) }'; then
    echo "instructions: $w: $per is more than 10% below its budget of $budget: tighten it (--update)" >&2
  fi
done
if $update; then
  {
    echo "# Instructions per input (callgrind, benches/instructions.sh --update),"
    echo "# INPUTS=$inputs. CI fails when a figure is more than 10% above its line."
    cat "$out.new"
  } > "$budget_file"
  rm -f "$out.new"
  echo "instructions: wrote $budget_file"
fi
exit $failed
