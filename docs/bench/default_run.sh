#!/usr/bin/env bash
# The default-run benchmark (issue #15): `mdiff compare BASE TUNED` with no flags against the reference
# `mdiff compare BASE TUNED --methods kl`, on the SmolLM2-135M-shaped pair, both on the built-in prompts, run back to
# back (kl, default, kl, default, ...) RUNS times so that a busy machine slows both alike. Prints every wall time
# (whole process, loading included), the two medians and their ratio; the target is a ratio of at most 6.
# DEFAULT_ARGS adds flags to the default run (to try budgets: DEFAULT_ARGS="--lens-positions 256").
# Run from the repo root after `cargo build --release -p diff-cli`:
#   docs/bench/default_run.sh [bench-data/smol]
set -euo pipefail
DATA=${1:-bench-data/smol}
RUNS=${RUNS:-3}
MDIFF=${MDIFF:-target/release/mdiff}
read -r -a EXTRA <<< "${DEFAULT_ARGS:-}"

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
seconds() { local start=$1; awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}'; }

# Inputs, made once (~1 GB; delete DATA to regenerate). make_smol.py (torch) writes the same layout.
[ -f "$DATA/tuned/model.safetensors" ] || python3 docs/bench/make_smol_numpy.py "$DATA" --seed 0
cat "$DATA"/base/model.safetensors "$DATA"/tuned/model.safetensors > /dev/null   # warm the page cache

kl=() default=()
for i in $(seq "$RUNS"); do
  start=$(date +%s.%N)
  "$MDIFF" compare "$DATA/base" "$DATA/tuned" --methods kl -o /tmp/mdiff-bench-kl.json > /dev/null
  kl+=("$(seconds "$start")")
  start=$(date +%s.%N)
  "$MDIFF" compare "$DATA/base" "$DATA/tuned" "${EXTRA[@]}" -o /tmp/mdiff-bench-default.json > /tmp/mdiff-bench-default.txt
  default+=("$(seconds "$start")")
  echo "run $i: kl ${kl[-1]} s, default ${default[-1]} s"
done
k=$(printf '%s\n' "${kl[@]}" | median)
d=$(printf '%s\n' "${default[@]}" | median)
echo "median: kl $k s, default $d s, ratio $(awk -v d="$d" -v k="$k" 'BEGIN {printf "%.2f", d / k}')"
echo "what the default ran: /tmp/mdiff-bench-default.txt (summary), /tmp/mdiff-bench-default.json (timings_ms)"
