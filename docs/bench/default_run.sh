#!/usr/bin/env bash
# The default-run benchmark (issue #15): `mdiff compare BASE TUNED` with no flags against the reference
# `mdiff compare BASE TUNED --methods kl`, on the SmolLM2-135M-shaped pair, both on the built-in prompts, run back to
# back (kl, default, kl, default, ...) RUNS times so that a busy machine slows both alike. Prints every wall time
# and CPU time (user + system; whole process, loading included), the medians and their ratios; the target is a
# wall-time ratio of at most 6. On a shared machine the CPU-time ratio is the steadier of the two. Needs GNU time.
# DEFAULT_ARGS adds flags to the default run (to try budgets: DEFAULT_ARGS="--lens-positions 256").
# Run from the repo root after `cargo build --release -p diff-cli`:
#   docs/bench/default_run.sh [bench-data/smol]
set -euo pipefail
DATA=${1:-bench-data/smol}
RUNS=${RUNS:-3}
MDIFF=${MDIFF:-target/release/mdiff}
read -r -a EXTRA <<< "${DEFAULT_ARGS:-}"

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
# timed OUT COMMAND...: runs COMMAND with its stdout in OUT, then prints "wall cpu" in seconds.
timed() {
  local out=$1
  shift
  /usr/bin/time -f '%e %U %S' -o /tmp/mdiff-bench-time "$@" > "$out"
  awk '{printf "%s %.1f", $1, $2 + $3}' /tmp/mdiff-bench-time
}

# Inputs, made once (~1 GB; delete DATA to regenerate). make_smol.py (torch) writes the same layout.
[ -f "$DATA/tuned/model.safetensors" ] || python3 docs/bench/make_smol_numpy.py "$DATA" --seed 0
cat "$DATA"/base/model.safetensors "$DATA"/tuned/model.safetensors > /dev/null   # warm the page cache

kl=() default=() kl_cpu=() default_cpu=()
for i in $(seq "$RUNS"); do
  read -r wall cpu <<< "$(timed /dev/null "$MDIFF" compare "$DATA/base" "$DATA/tuned" --methods kl \
    -o /tmp/mdiff-bench-kl.json)"
  kl+=("$wall") kl_cpu+=("$cpu")
  read -r wall cpu <<< "$(timed /tmp/mdiff-bench-default.txt "$MDIFF" compare "$DATA/base" "$DATA/tuned" \
    "${EXTRA[@]}" -o /tmp/mdiff-bench-default.json)"
  default+=("$wall") default_cpu+=("$cpu")
  echo "run $i: kl ${kl[-1]} s wall, ${kl_cpu[-1]} s CPU; default ${default[-1]} s wall, ${default_cpu[-1]} s CPU"
done
k=$(printf '%s\n' "${kl[@]}" | median) d=$(printf '%s\n' "${default[@]}" | median)
kc=$(printf '%s\n' "${kl_cpu[@]}" | median) dc=$(printf '%s\n' "${default_cpu[@]}" | median)
echo "median wall: kl $k s, default $d s, ratio $(ratio "$d" "$k")"
echo "median CPU:  kl $kc s, default $dc s, ratio $(ratio "$dc" "$kc")"
echo "what the default ran: /tmp/mdiff-bench-default.txt (summary), /tmp/mdiff-bench-default.json (timings_ms)"
