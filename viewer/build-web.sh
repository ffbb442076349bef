#!/usr/bin/env bash
# Build the web viewer into viewer/dist: index.html, mdiff_viewer.js, mdiff_viewer_bg.wasm.
#
#   viewer/build-web.sh                  # from anywhere
#   python3 -m http.server -d viewer/dist 8080 --bind 127.0.0.1
#
# Needs: the wasm32-unknown-unknown target, wasm-bindgen-cli at the version of the
# `wasm-bindgen` crate in Cargo.lock, and (optional, makes the bundle smaller)
# wasm-opt from npm's binaryen (`npm ci --prefix viewer/web`).
#
# Environment:
#   CARGO_TARGET_DIR    respected (as cargo does)
#   MDIFF_WEB_PROFILE   cargo profile, default `web` (see the workspace Cargo.toml); `dev` for a quick build
#   MDIFF_WEB_DIST      output folder, default viewer/dist
#   WASM_OPT            wasm-opt binary, default viewer/web/node_modules/.bin/wasm-opt, then wasm-opt on PATH
#   WASM_OPT_LEVEL      default -O2 (-Oz is ~2% smaller and many times slower); `none` skips wasm-opt
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# Resolve a relative CARGO_TARGET_DIR or MDIFF_WEB_DIST against the caller's directory, before the cd.
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  mkdir -p "$CARGO_TARGET_DIR"
  CARGO_TARGET_DIR="$(cd "$CARGO_TARGET_DIR" && pwd)"
  export CARGO_TARGET_DIR
fi
dist="${MDIFF_WEB_DIST:-$here/dist}"
mkdir -p "$dist"
dist="$(cd "$dist" && pwd)"
cd "$root"

profile="${MDIFF_WEB_PROFILE:-web}"
opt_level="${WASM_OPT_LEVEL:--O2}"
target=wasm32-unknown-unknown
start_all=$SECONDS

say() { printf 'build-web: %s\n' "$*"; }
die() { printf 'build-web: error: %s\n' "$*" >&2; exit 1; }
size_line() { # file -> "N bytes (X MB), gzip -9: M bytes (Y MB)"
  local raw gz
  raw=$(wc -c <"$1")
  gz=$(gzip -9 -c "$1" | wc -c)
  awk -v r="$raw" -v g="$gz" 'BEGIN { printf "%d bytes (%.2f MB), gzip -9: %d bytes (%.2f MB)", r, r/1e6, g, g/1e6 }'
}

# --- wasm-bindgen CLI must match the crate exactly --------------------------------------------
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[[ -n "$want" ]] || die "no wasm-bindgen crate in Cargo.lock (does the viewer depend on wasm-bindgen?)"
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [[ "$have" != "$want" ]]; then
  die "wasm-bindgen CLI ${have:-not found}, but Cargo.lock has wasm-bindgen $want. Install the matching CLI (~9 min):
    cargo install wasm-bindgen-cli --version $want
  (without --locked: its own lockfile pins a crate the index lacks)"
fi
rustup target list --installed 2>/dev/null | grep -qx "$target" \
  || die "the $target target is missing: rustup target add $target"

# --- cargo ----------------------------------------------------------------------------------
say "cargo build --profile $profile --lib -p viewer --target $target"
t=$SECONDS
cargo build --profile "$profile" --lib -p viewer --target "$target"
cargo_s=$((SECONDS - t))

target_dir=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
case "$profile" in dev | test) profile_dir=debug ;; bench) profile_dir=release ;; *) profile_dir=$profile ;; esac
wasm="$target_dir/$target/$profile_dir/mdiff_viewer.wasm"
[[ -f "$wasm" ]] || die "cargo built, but $wasm is missing"

# --- wasm-bindgen ---------------------------------------------------------------------------
say "wasm-bindgen --target web -> $dist"
# Remove what an earlier build wrote (only that: MDIFF_WEB_DIST may be a folder with other files).
rm -rf "$dist/snippets" "$dist/mdiff_viewer.js" "$dist/mdiff_viewer_bg.wasm" "$dist/mdiff_viewer_bg.wasm.opt" "$dist/index.html"
wasm-bindgen --target web --no-typescript --out-dir "$dist" "$wasm"
out="$dist/mdiff_viewer_bg.wasm"
[[ -f "$out" && -f "$dist/mdiff_viewer.js" ]] || die "wasm-bindgen did not write mdiff_viewer.js / mdiff_viewer_bg.wasm"
bindgen_size=$(size_line "$out")

# --- wasm-opt (optional) --------------------------------------------------------------------
# Debian's binaryen (108) writes a module Chromium rejects; use npm's binaryen (132).
wasm_opt="${WASM_OPT:-}"
if [[ -z "$wasm_opt" ]]; then
  if [[ -x "$here/web/node_modules/.bin/wasm-opt" ]]; then
    wasm_opt="$here/web/node_modules/.bin/wasm-opt"
  elif command -v wasm-opt >/dev/null; then
    wasm_opt=wasm-opt
  fi
fi
opt_size=""
opt_s=0
if [[ "$opt_level" == none ]]; then
  say "wasm-opt skipped (WASM_OPT_LEVEL=none)"
elif [[ -z "$wasm_opt" ]]; then
  say "wasm-opt not found, skipped (npm ci --prefix viewer/web installs binaryen 132)"
else
  v=$("$wasm_opt" --version | grep -oE '[0-9]+' | head -1)
  if [[ -z "$v" || "$v" -lt 116 ]]; then
    say "wasm-opt $("$wasm_opt" --version) is too old (Chromium rejects its output), skipped; use npm's binaryen 132"
  else
    say "wasm-opt $opt_level (binaryen $v)"
    t=$SECONDS
    # The features rustc enables by default for wasm32-unknown-unknown; all are in every current browser.
    "$wasm_opt" "$opt_level" --strip-debug --strip-producers \
      --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
      --enable-mutable-globals --enable-reference-types --enable-multivalue \
      -o "$out.opt" "$out"
    mv "$out.opt" "$out"
    opt_s=$((SECONDS - t))
    opt_size=$(size_line "$out")
  fi
fi

cp "$here/web/index.html" "$dist/index.html"

say "done in $((SECONDS - start_all)) s (cargo $cargo_s s, wasm-opt $opt_s s)"
say "after wasm-bindgen: $bindgen_size"
[[ -n "$opt_size" ]] && say "after wasm-opt:     $opt_size"
say "mdiff_viewer.js: $(size_line "$dist/mdiff_viewer.js")"
say "serve: python3 -m http.server -d ${dist#"$root"/} 8080 --bind 127.0.0.1  ->  http://127.0.0.1:8080/?url=report.json"
