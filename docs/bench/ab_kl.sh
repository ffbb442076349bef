#!/usr/bin/env bash
# Two mdiff binaries back to back on the KL benchmark (`compare --methods kl`, the SmolLM2-135M-shaped pair of
# run_behaviour.sh), interleaved A, B, A, B, ... so that drift in the machine's speed hits both alike. Prints each
# run's wall time and peak RSS, then the medians. Run from the repo root:
#   RUNS=5 docs/bench/ab_kl.sh /tmp/mdiff-before target/release/mdiff [bench-data/smol]
set -euo pipefail
A=$1 B=$2 DATA=${3:-bench-data/smol}
RUNS=${RUNS:-5}
THREADS=${THREADS:-2}
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
cat "$DATA"/base/model.safetensors "$DATA"/tuned/model.safetensors > /dev/null   # warm the page cache
for _ in $(seq "$RUNS"); do
  for bin in "$A" "$B"; do
    /usr/bin/time -f "%e %M" -o /tmp/mdiff-ab-time "$bin" compare "$DATA/base" "$DATA/tuned" \
      --prompts "$DATA/prompts.txt" --methods kl --threads "$THREADS" -o /tmp/mdiff-ab.json > /dev/null
    read -r wall rss < /tmp/mdiff-ab-time
    echo "$bin $wall s $((rss / 1024)) MiB"
  done
done | tee /tmp/mdiff-ab.log
for bin in "$A" "$B"; do
  echo "$bin: median $(grep "^$bin " /tmp/mdiff-ab.log | awk '{print $2}' | median) s," \
    "peak RSS $(grep "^$bin " /tmp/mdiff-ab.log | awk '{print $4}' | median) MiB"
done
