//! The example reports committed under `fixtures/reports/` (the viewer's tests read them) must be what
//! `mdiff compare` writes today for the bundled tiny Llama. Each test regenerates one report with the real binary
//! and compares it with the committed file, `timings_ms` aside; `UPDATE_FIXTURE_REPORTS=1` rewrites the files.
//!
//! The runs are deterministic (same inputs and seed → same report; checked at 1, 2 and 4 threads when these files
//! were made), so every number must match exactly. `--threads 1` all the same, so that no reduction order can
//! depend on the machine. The runs use relative paths from the repository root, so the paths in the reports are the
//! same on every machine.
//!
//! Committed layout: exactly what `mdiff compare -o` writes, except that `timings_ms` is `{}` so the files do not
//! churn.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::ffi::OsString;
use std::path::Path;

use mdiff_core::report::{parse_report, read_report, to_readable_json};
use mdiff_tests::{Sandbox, fixture, mdiff_bin, repo_root, run_in};
use serde_json::Value;

/// Set to 1 to rewrite the committed reports instead of checking them.
const UPDATE_ENV: &str = "UPDATE_FIXTURE_REPORTS";
const HOW_TO_UPDATE: &str = "if the change is intended, rerun with `UPDATE_FIXTURE_REPORTS=1 cargo test -p mdiff-tests --test fixture_reports` \
     and commit fixtures/reports/";
/// Relative to the repository root, as the reports record them.
const BASE: &str = "fixtures/tiny-llama/base";

#[test]
fn tiny_llama_full_ft_report_is_up_to_date() {
    check("tiny-llama-full-ft.json", "fixtures/tiny-llama/full-ft");
}

#[test]
fn tiny_llama_lora_report_is_up_to_date() {
    check("tiny-llama-lora.json", "fixtures/tiny-llama/lora");
}

/// Regenerates `fixtures/reports/<name>` from `compare BASE <tuned>` and checks it (or rewrites it).
fn check(name: &str, tuned: &str) {
    let path = fixture(&format!("reports/{name}"));
    let fresh_text = generate(tuned);
    let fresh = without_timings(serde_json::from_str(&fresh_text).expect("mdiff wrote JSON"));
    if std::env::var_os(UPDATE_ENV).is_some_and(|v| v == "1") {
        update(&path, &fresh_text, &fresh);
        return;
    }
    let committed_text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {HOW_TO_UPDATE}", path.display()));
    let committed: Value = serde_json::from_str(&committed_text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}; {HOW_TO_UPDATE}", path.display()));
    let mut diffs = Vec::new();
    differences(&without_timings(committed), &fresh, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{} differs from what `mdiff compare {BASE} {tuned}` writes now ({} differences; the first {}):\n  {}\n{HOW_TO_UPDATE}",
        path.display(),
        diffs.len(),
        diffs.len().min(MAX_SHOWN),
        diffs.iter().take(MAX_SHOWN).cloned().collect::<Vec<_>>().join("\n  ")
    );
    // The viewer reads the file through mdiff_core: it must be a report of the schema this build reads.
    read_report(&path).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs `mdiff compare BASE TUNED` from the repository root and returns the report it wrote.
fn generate(tuned: &str) -> String {
    let sandbox = Sandbox::new();
    let output = sandbox.join("report.json");
    // Two per-position patching sweeps, so the viewer's layer × position panel has something to show, and every
    // method, the crosscoder included, so every panel has a section.
    let mut args: Vec<OsString> = [
        "compare",
        BASE,
        tuned,
        "--threads",
        "1",
        "--patch-positions",
        "2",
        // The budget these reports were made with before the default became 512 (issue #15): a drift curve over
        // all 30 prompts for the viewer.
        "--lens-positions",
        "2048",
        "--methods",
        "weights,kl,swap,patch,lens,crosscoder",
        "-o",
    ]
    .map(OsString::from)
    .to_vec();
    args.push(output.clone().into());
    run_in(&repo_root(), mdiff_bin(), &args, &[]).assert_ok();
    std::fs::read_to_string(&output).expect("the report mdiff wrote")
}

/// Writes the report with its timings emptied, unless the file already holds exactly that text.
fn update(path: &Path, fresh_text: &str, fresh: &Value) {
    let mut report = parse_report(fresh_text.as_bytes(), path).expect("mdiff wrote a report");
    report.timings_ms.clear();
    let text = to_readable_json(&report).expect("serializing the report");
    let reparsed: Value = serde_json::from_slice(&text).expect("the layout is JSON");
    assert_eq!(
        &without_timings(reparsed),
        fresh,
        "the round trip must not change any value"
    );
    if std::fs::read(path).ok().as_deref() != Some(text.as_slice()) {
        std::fs::create_dir_all(path.parent().expect("fixtures/reports")).expect("mkdir fixtures/reports");
        std::fs::write(path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("rewrote {}", path.display());
    }
}

fn without_timings(mut report: Value) -> Value {
    if let Some(map) = report.as_object_mut() {
        map.remove("timings_ms");
    }
    report
}

/// How many differences a failure lists.
const MAX_SHOWN: usize = 10;

/// Appends one line per differing leaf (`path: committed …, now …`) to `out`.
fn differences(committed: &Value, fresh: &Value, at: &str, out: &mut Vec<String>) {
    match (committed, fresh) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => differences(value, other, &format!("{at}.{key}"), out),
                    None => out.push(format!("{at}.{key}: no longer written")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{at}.{key}: new"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{at}[{i}]"), out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            out.push(format!("{at}: {} items committed, {} now", a.len(), b.len()));
        }
        _ if committed != fresh => out.push(format!("{at}: committed {committed}, now {fresh}")),
        _ => {}
    }
}
