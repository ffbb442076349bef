#!/usr/bin/env bash
# The viewer benchmark (docs/benchmarks.md): a ~50 MB report (172 prompts × 1024 tokens, top-5 tokens per position), then
#   1. launch → first full frame of the native viewer (median of RUNS launches, `--first-frame`);
#   2. frame times while xdotool pans the behaviour panel (`--frame-stats`): scrolls the prompt list and the
#      token view, sweeps the pointer over tokens (each hover lays out the details), steps through prompts;
#   3. the web bundle's size, if viewer/dist was built (viewer/build-web.sh).
# Needs: release builds of mdiff and mdiff-viewer, python3, an X server on $DISPLAY (e.g. `Xvfb :99 -screen 0
# 1280x800x24 &` and DISPLAY=:99) and xdotool. Run from the repo root:
#   docs/bench/viewer.sh [bench-data/viewer]
set -euo pipefail
DATA=${1:-bench-data/viewer}
RUNS=${RUNS:-5}
PROMPTS=${PROMPTS:-172}
SECONDS_PANNING=${SECONDS_PANNING:-12}
MDIFF=${MDIFF:-target/release/mdiff}
VIEWER=${VIEWER:-target/release/mdiff-viewer}
: "${DISPLAY:?needs an X display, e.g. Xvfb :99 -screen 0 1280x800x24 & export DISPLAY=:99}"
command -v xdotool >/dev/null || { echo "needs xdotool (apt-get install xdotool)" >&2; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# --- the report: the tiny Llama fixture pair with a 1024-token context, prompts cut from the corpus ----------
mkdir -p "$DATA"
report="$DATA/report.json"
if [ ! -f "$report" ]; then
  python3 - "$DATA" "$PROMPTS" <<'PY'
import json, sys
data, n = sys.argv[1], int(sys.argv[2])
config = json.load(open("fixtures/tiny-llama/base/config.json"))
config["max_position_embeddings"] = 1024   # RoPE has no learned positions: any length runs
json.dump(config, open(f"{data}/config.json", "w"), indent=2)
text = " ".join(" ".join(open(f"fixtures/corpus/{f}.txt").read().split()) for f in ("genesis", "proverbs"))
# ~6000 characters is more than 1024 tokens for this tokenizer; mdiff cuts each prompt to the context.
with open(f"{data}/prompts.txt", "w") as out:
    for i in range(n):
        start = (i * 7919) % (len(text) - 6000)
        out.write(text[start:start + 6000] + "\n")
PY
  "$MDIFF" compare fixtures/tiny-llama/base fixtures/tiny-llama/full-ft --methods weights,kl \
    --config "$DATA/config.json" --prompts "$DATA/prompts.txt" -o "$report" > /dev/null 2> "$DATA/compare.log" || {
    cat "$DATA/compare.log" >&2; exit 1; }
fi
python3 - "$report" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
b = r["behaviour"]
print(f"report: {os.path.getsize(sys.argv[1]) / 1e6:.1f} MB, {len(b['prompts'])} prompts, "
      f"{b['num_positions']} positions, top-{b['token_top_k']} tokens per position")
PY
cat "$report" > /dev/null   # warm the page cache

# --- 1. launch → first full frame -------------------------------------------------------------------------
loaded=() first=()
for _ in $(seq "$RUNS"); do
  out=$("$VIEWER" "$report" --first-frame 2>&1 >/dev/null)
  loaded+=("$(awk '/^loaded_ms/ {print $2}' <<<"$out")")
  first+=("$(awk '/^first_full_frame_ms/ {print $2}' <<<"$out")")
done
echo "launch -> report parsed: $(printf '%s\n' "${loaded[@]}" | median) ms median of $RUNS"
echo "launch -> first full frame: $(printf '%s\n' "${first[@]}" | median) ms median of $RUNS (runs: ${first[*]})"
# A reference point for the parse: Python's json.load of the same file into dicts (no window, no derived data).
py=()
for _ in $(seq "$RUNS"); do
  py+=("$(python3 -c 'import json, sys, time; t = time.perf_counter(); json.load(open(sys.argv[1])); print(f"{(time.perf_counter() - t) * 1e3:.1f}")' "$report")")
done
echo "reference, python3 json.load of the report: $(printf '%s\n' "${py[@]}" | median) ms median of $RUNS"

# --- 2. frame times while panning the behaviour panel --------------------------------------------------------
"$VIEWER" "$report" --frame-stats "$SECONDS_PANNING" 2> "$DATA/frames.log" &
viewer=$!
window=""
for _ in $(seq 100); do
  window=$(xdotool search --name '^mdiff' 2>/dev/null | head -1) && [ -n "$window" ] && break
  sleep 0.1
done
[ -n "$window" ] || { echo "the viewer window did not appear" >&2; kill "$viewer"; exit 1; }
sleep 1
xdotool windowmove "$window" 0 0 windowsize "$window" 1280 800
# The Behaviour tab is the third in the menu bar (x≈260, y≈20 at 1280×800: see viewer/tests/snapshots).
xdotool mousemove --window "$window" 260 20 click 1
sleep 0.3
end=$((SECONDS + SECONDS_PANNING))
while kill -0 "$viewer" 2>/dev/null && [ $SECONDS -lt $end ]; do
  xdotool mousemove --window "$window" 200 400 click 5 click 5 click 5 2>/dev/null || true   # prompt list
  for x in 420 520 620 720 820 920 1020 1120; do                                          # hover tokens
    xdotool mousemove --window "$window" "$x" 180 2>/dev/null || true
    sleep 0.02
  done
  xdotool mousemove --window "$window" 800 250 click 5 click 4 2>/dev/null || true          # token view
  xdotool key --window "$window" Down 2>/dev/null || true                                 # next prompt
done
wait "$viewer" || true
cat "$DATA/frames.log" | grep -E '^(frames|ui_ms|frame_ms)'

# --- 3. the web bundle ---------------------------------------------------------------------------------------
if [ -f viewer/dist/mdiff_viewer_bg.wasm ]; then
  for f in viewer/dist/mdiff_viewer_bg.wasm viewer/dist/mdiff_viewer.js; do
    printf '%s: %d bytes, gzip -9: %d bytes\n' "$f" "$(wc -c < "$f")" "$(gzip -9 -c "$f" | wc -c)"
  done
fi
