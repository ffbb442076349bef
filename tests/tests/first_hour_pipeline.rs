//! Issue #15, the `compare` pipeline, end to end:
//!
//! - a method named in `--methods` that cannot run is an error (exit 2, one line naming the flag that fixes it),
//!   `--json` or not; a default method that cannot run is skipped and listed in the report, with one `warning:`
//!   line per cause;
//! - a run without `--methods` says what the default left out and how to ask for it;
//! - SIGINT or SIGTERM after the first section writes that section as a report marked incomplete, names the
//!   unfinished methods, and exits 130 or 143; the gate refuses such a report in one line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::ffi::OsString;
use std::path::PathBuf;

use mdiff_core::report::{Method, read_report};
use mdiff_tests::{Args, Run, Sandbox, fixture};

const REPORT: &str = "report.json";

/// Copies of the base and the fully fine-tuned fixture, without their `tokenizer.json`.
fn pair_without_tokenizer(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let base = sb.copy_fixture("tiny-llama/base", "base");
    let tuned = sb.copy_fixture("tiny-llama/full-ft", "tuned");
    for dir in [&base, &tuned] {
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    }
    (base, tuned)
}

/// `compare base tuned -o report.json` plus `extra`.
fn compare_args(sb: &Sandbox, base: PathBuf, tuned: PathBuf, extra: &[&str]) -> Args {
    let mut args: Args = vec!["compare".into(), base.into(), tuned.into()];
    args.extend(extra.iter().map(OsString::from));
    args.extend(["-o".into(), sb.join(REPORT).into()]);
    args
}

#[test]
fn a_named_method_that_cannot_run_is_an_error_with_or_without_json() {
    for json in [false, true] {
        let sb = Sandbox::new();
        let (base, tuned) = pair_without_tokenizer(&sb);
        let extra: &[&str] = if json {
            &["--methods", "kl", "--json"]
        } else {
            &["--methods", "kl"]
        };
        let run = sb.mdiff(&compare_args(&sb, base, tuned, extra));
        run.assert_fails_cleanly(2, &["--methods kl cannot run", "tokenizer.json", "--tokenizer"]);
        assert_eq!(run.stdout, "", "json={json}");
        assert!(!sb.join(REPORT).exists(), "json={json}: a failed run wrote a report");
    }
}

#[test]
fn default_methods_that_cannot_run_are_skipped_with_a_warning_with_or_without_json() {
    for json in [false, true] {
        let sb = Sandbox::new();
        let (base, tuned) = pair_without_tokenizer(&sb);
        let extra: &[&str] = if json { &["--json"] } else { &[] };
        let run = sb.mdiff(&compare_args(&sb, base, tuned, extra));
        run.assert_ok();
        // One cause, one line, naming every section it takes out (issue #16).
        let warnings = run.warnings();
        assert_eq!(warnings.len(), 1, "json={json}: {}", run.stderr);
        assert!(
            warnings[0].starts_with("kl, lens skipped: no tokenizer.json"),
            "{}",
            run.stderr
        );
        assert!(warnings[0].contains("--tokenizer"), "{}", run.stderr);
        let report = read_report(&sb.join(REPORT)).unwrap();
        let skipped: Vec<Method> = report.skipped.iter().map(|s| s.method).collect();
        assert_eq!(skipped, [Method::Kl, Method::Lens], "json={json}");
        assert!(report.weights.is_some() && report.incomplete.is_none());
        if json {
            // stdout holds the report alone; what the default left out goes to stderr.
            let printed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(printed["skipped"].as_array().unwrap().len(), 2);
            assert!(
                run.stderr.contains("note: not run by default: swap, patch, crosscoder"),
                "{}",
                run.stderr
            );
        } else {
            assert!(
                run.stdout.contains("not run by default: swap, patch, crosscoder"),
                "{}",
                run.stdout
            );
        }
    }
}

#[test]
fn named_methods_print_nothing_about_the_default() {
    let sb = Sandbox::new();
    let args = compare_args(
        &sb,
        fixture("tiny-llama/base"),
        fixture("tiny-llama/full-ft"),
        &["--methods", "weights"],
    );
    let run = sb.mdiff(&args);
    run.assert_ok();
    assert!(!run.stdout.contains("not run by default"), "{}", run.stdout);
    assert_eq!(run.stderr, "");
}

#[cfg(unix)]
mod interrupts {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    /// Runs `compare --methods weights,swap` with tensor-granularity swapping over thousands of prompts (minutes
    /// of work on the fixtures), sends `signal` once the weights section is printed, and returns the run.
    fn interrupted_after_the_weights(sb: &Sandbox, signal: &str) -> Run {
        let prompts = sb.join("prompts.txt");
        let text: String = (0..4000)
            .map(|i| format!("And God said, let there be light, for the {i}th time\n"))
            .collect();
        std::fs::write(&prompts, text).unwrap();
        let prompts = prompts.to_str().unwrap().to_owned();
        let args = compare_args(
            sb,
            fixture("tiny-llama/base"),
            fixture("tiny-llama/full-ft"),
            &[
                "--methods",
                "weights,swap",
                "--swap-granularity",
                "tensor",
                "--localize-positions",
                "1000000",
                "--prompts",
                &prompts,
            ],
        );
        let mut child = Command::new(mdiff_tests::mdiff_bin())
            .args(&args)
            .current_dir(sb.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            stderr.read_to_string(&mut text).unwrap();
            text
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut printed = String::new();
        // The weights summary is printed as soon as that section is done, long before swap ends.
        while !printed.contains("weights: ") {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "mdiff ended before printing the weights section: {printed}");
            printed.push_str(&line);
        }
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
        let started = Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("mdiff did not stop within 2 minutes of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        stdout.read_to_string(&mut printed).unwrap();
        Run {
            code,
            stdout: printed,
            stderr: stderr.join().unwrap(),
        }
    }

    fn assert_partial_report(sb: &Sandbox, run: &Run, code: i32, signal: &str) {
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert_eq!(run.code, code, "stderr: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        for needle in [
            &format!("interrupted by {signal}") as &str,
            "marked incomplete",
            "finished: weights",
            "not finished: swap",
        ] {
            assert!(lines[0].contains(needle), "{needle:?} not in {:?}", lines[0]);
        }
        // The finished section is on disk, the unfinished one is named, and the report reads as any other
        // (the viewer and the gate use this reader).
        let report = read_report(&sb.join(REPORT)).expect("the partial report");
        let incomplete = report.incomplete.as_ref().expect("marked incomplete");
        assert_eq!(incomplete.unfinished, [Method::Swap]);
        assert_eq!(incomplete.reason, format!("interrupted by {signal}"));
        assert!(report.weights.as_ref().is_some_and(|w| !w.tensors.is_empty()));
        assert!(report.swap.is_none());
        assert!(report.timings_ms.contains_key("weights") && !report.timings_ms.contains_key("swap"));
        assert_eq!(report.schema_version, mdiff_core::report::SCHEMA_VERSION);
        let leftovers: Vec<_> = std::fs::read_dir(sb.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn sigint_after_the_first_section_writes_it_marked_incomplete_and_exits_130() {
        let sb = Sandbox::new();
        let run = interrupted_after_the_weights(&sb, "INT");
        assert_partial_report(&sb, &run, 130, "SIGINT");

        // The gate refuses it in one line instead of failing rules on the missing sections.
        let policy = fixture("gate.toml");
        let gate = sb.mdiff(&[
            OsString::from("gate"),
            sb.join(REPORT).into(),
            "--policy".into(),
            policy.into(),
        ]);
        gate.assert_fails_cleanly(2, &["incomplete report", "interrupted by SIGINT", "not finished: swap"]);
    }

    #[test]
    fn sigterm_after_the_first_section_writes_it_marked_incomplete_and_exits_143() {
        let sb = Sandbox::new();
        let run = interrupted_after_the_weights(&sb, "TERM");
        assert_partial_report(&sb, &run, 143, "SIGTERM");
    }
}
