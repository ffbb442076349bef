#!/usr/bin/env bash
# The behaviour (forward + per-token KL) benchmark: a SmolLM2-135M-shaped random pair, 64 prompts of ~128 tokens,
# PyTorch reference vs `mdiff compare --methods kl`, both on THREADS CPU threads. Needs torch + transformers
# (PYTHON), a release build of mdiff and GNU time (/usr/bin/time; Debian/Ubuntu package `time`).
# Prints the reference's JSON line, then mdiff's median wall time and peak RSS over RUNS runs. Run from the repo root:
#   docs/bench/run_behaviour.sh [bench-data/smol]
set -euo pipefail
DATA=${1:-bench-data/smol}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
PYTHON=${PYTHON:-python3}
MDIFF=${MDIFF:-target/release/mdiff}
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# Inputs, made once: ~1 GB of weights, so reuse them if present (delete DATA to regenerate).
[ -f "$DATA/tuned/model.safetensors" ] || "$PYTHON" docs/bench/make_smol.py "$DATA" --seed 0
[ -f "$DATA/prompts.txt" ] || "$PYTHON" docs/bench/behaviour_prompts.py "$DATA/prompts.txt" --n 64 --tokens 128
cat "$DATA"/base/model.safetensors "$DATA"/tuned/model.safetensors > /dev/null   # warm the page cache

# Reference: takes its own median of RUNS timed loops (loading excluded) and reports tokens/s, mean KL, peak RSS.
"$PYTHON" docs/bench/behaviour_reference.py "$DATA/base" "$DATA/tuned" "$DATA/prompts.txt" \
  --threads "$THREADS" --batch-size 8 --repeat "$RUNS" | tee /tmp/mdiff-bench-reference.json

# mdiff: whole-process wall time (loading included) and max RSS from `time -v`, median of RUNS runs.
times=() rss=()
for _ in $(seq "$RUNS"); do
  /usr/bin/time -v -o /tmp/mdiff-bench-time "$MDIFF" compare "$DATA/base" "$DATA/tuned" \
    --prompts "$DATA/prompts.txt" --methods kl --threads "$THREADS" -o /tmp/r.json > /dev/null
  # "Elapsed (wall clock) time (h:mm:ss or m:ss): 1:02.34" -> seconds
  times+=("$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' /tmp/mdiff-bench-time)")
  rss+=("$(awk -F': ' '/Maximum resident set size/ {print $2}' /tmp/mdiff-bench-time)")  # KiB
done
tokens=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["tokens"])' /tmp/mdiff-bench-reference.json)
wall=$(printf '%s\n' "${times[@]}" | median)
printf 'mdiff compare --methods kl: %s s median wall (loading included), %s MiB max RSS, %s tokens/s end to end\n' \
  "$wall" "$(printf '%s\n' "${rss[@]}" | median | awk '{printf "%.0f", $1/1024}')" \
  "$(awk -v n="$tokens" -v t="$wall" 'BEGIN {printf "%.1f", n / t}')"
echo "mdiff's report: /tmp/r.json (compare its mean KL with the reference's mean_kl above)"
