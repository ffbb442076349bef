#!/usr/bin/env bash
# Reproduces the figures in docs/benchmarks.md. Needs the pair from make_pair.py, a release build of mdiff,
# and optionally diffai (cargo install diffai). Prints the median wall time and peak RSS of RUNS runs each.
set -euo pipefail
DATA=${1:-bench-data}
RUNS=${RUNS:-5}
MDIFF=${MDIFF:-target/release/mdiff}
DIFFAI=${DIFFAI:-$(command -v diffai || true)}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

measure() { # name, command...
  local name=$1; shift
  local times=() rss=()
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f '%e %M' -o /tmp/mdiff-bench-time "$@" > /dev/null 2>&1 || true
    read -r t m < <(tail -n 1 /tmp/mdiff-bench-time)  # diffai exits 1 when files differ
    times+=("$t"); rss+=("$m")
  done
  printf '%-44s %8s s  %8s MiB\n' "$name" \
    "$(printf '%s\n' "${times[@]}" | median)" \
    "$(printf '%s\n' "${rss[@]}" | median | awk '{printf "%.0f", $1/1024}')"
}

for tag in f32 bf16; do
  base=$DATA/$tag-base/model.safetensors tuned=$DATA/$tag-tuned/model.safetensors
  cat "$base" "$tuned" > /dev/null   # warm the page cache
  measure "$tag: cat base tuned > /dev/null (warm)" cat "$base" "$tuned"
  measure "$tag: mdiff compare --methods weights" "$MDIFF" compare "$DATA/$tag-base" "$DATA/$tag-tuned" \
    --methods weights -o /tmp/mdiff-bench.json
  measure "$tag: mdiff ... --singular-values 0" "$MDIFF" compare "$DATA/$tag-base" "$DATA/$tag-tuned" \
    --methods weights --singular-values 0 -o /tmp/mdiff-bench.json
  if [ -n "$DIFFAI" ] && [ "$tag" = f32 ]; then
    measure "$tag: diffai base tuned -o json" "$DIFFAI" "$base" "$tuned" -o json
  fi
done

# Reference: the same statistics in PyTorch on the same CPU (needs torch and safetensors).
PYTHON=${PYTHON:-python3}
if "$PYTHON" -c 'import torch, safetensors' 2>/dev/null; then
  measure "f32: PyTorch reference (docs/bench/reference.py)" "$PYTHON" docs/bench/reference.py \
    "$DATA/f32-base" "$DATA/f32-tuned"
  measure "f32: PyTorch reference --no-svd" "$PYTHON" docs/bench/reference.py \
    "$DATA/f32-base" "$DATA/f32-tuned" --no-svd
fi
