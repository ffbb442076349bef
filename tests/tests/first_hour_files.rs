//! Issue #15, the files of the first hour: outputs checked before any work and never onto an input, stale temporary
//! files cleaned, activation manifests confined to their folder, a killed collect recoverable as advised, reports
//! and usage errors named in the user's terms, and a gate whose documented example passes and whose failures read
//! right. Every case runs the real binary on fixtures copied into a temp dir, and checks that no input changed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mdiff_tests::{Run, Sandbox, edit_json, fixture, repo_root};

/// Every file under `dir` (recursively) with its bytes, to show that a run changed none of them.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// The id of a process that has exited (no process runs under it until the system reuses it).
fn dead_process() -> u32 {
    let mut child = std::process::Command::new(mdiff_tests::mdiff_bin())
        .arg("--version")
        .spawn()
        .unwrap();
    let id = child.id();
    child.wait().unwrap();
    id
}

/// A sandbox with the tiny Llama base and LoRA and a report of them.
fn models() -> Sandbox {
    let sb = Sandbox::new();
    let _ = sb.copy_fixture("tiny-llama/base", "base");
    let _ = sb.copy_fixture("tiny-llama/full-ft", "tuned");
    let _ = sb.copy_fixture("reports/tiny-llama-lora.json", "report.json");
    let _ = sb.copy_fixture("gate.toml", "gate.toml");
    sb
}

/// Runs `mdiff args` in `sb`, and asserts it exits 2 with one `mdiff: error:` line holding `needles`, quickly, having
/// changed nothing in the sandbox.
fn refused_fast(sb: &Sandbox, args: &[&str], needles: &[&str]) -> Run {
    let before = snapshot(sb.path());
    let started = Instant::now();
    let run = sb.mdiff(args);
    let took = started.elapsed();
    run.assert_fails_cleanly(2, needles);
    // The compare behind it runs the models for many seconds in a debug build; a refusal takes milliseconds.
    assert!(took < Duration::from_secs(2), "{args:?} took {took:?}");
    assert_eq!(snapshot(sb.path()), before, "{args:?} changed the sandbox");
    run
}

#[test]
fn bad_outputs_are_refused_before_any_work_and_inputs_stay_as_they_were() {
    let sb = models();
    std::fs::create_dir(sb.join("out")).unwrap();
    let compare = |extra: &[&str], needles: &[&str]| {
        let mut args = vec!["compare", "base", "tuned", "--methods", "weights,kl,swap,patch,lens"];
        args.extend_from_slice(extra);
        refused_fast(&sb, &args, needles)
    };
    // The checkpoint itself, a folder that does not exist, a directory, one of the inputs.
    compare(
        &["-o", "tuned/model.safetensors"],
        &["-o tuned/model.safetensors", "a file of TUNED", "nothing was written"],
    );
    compare(
        &["-o", "missing/report.json"],
        &["-o missing/report.json", "does not exist"],
    );
    compare(&["-o", "out"], &["-o out", "is a directory"]);
    compare(&["-o", "base/config.json"], &["a file of BASE"]);
    // The gate's files of compare --gate: never the policy, never the baseline, never -o.
    compare(
        &["--gate", "gate.toml", "--markdown", "gate.toml"],
        &["--markdown gate.toml", "is the policy"],
    );
    compare(
        &[
            "--gate",
            "gate.toml",
            "--baseline",
            "report.json",
            "--junit",
            "report.json",
        ],
        &["--junit report.json", "is the baseline"],
    );
    compare(
        &["-o", "r.json", "--gate", "gate.toml", "--junit", "./r.json"],
        &["--junit ./r.json", "-o names the same file"],
    );
    compare(
        &["--crosscoder-dir", "report.json"],
        &["--crosscoder-dir report.json", "is a file"],
    );
    // Before any work means before the models are even opened: with none there, the output is still what is named.
    refused_fast(
        &sb,
        &["compare", "no-base", "no-tuned", "-o", "missing/report.json"],
        &["-o missing/report.json", "does not exist"],
    );
    // Through a symbolic link and a hard link: the same file by identity, not by name.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(sb.join("tuned/model.safetensors"), sb.join("weights-link")).unwrap();
        compare(&["-o", "weights-link"], &["a file of TUNED"]);
        std::fs::hard_link(sb.join("base/tokenizer.json"), sb.join("hard.json")).unwrap();
        compare(&["-o", "hard.json"], &["a file of BASE"]);
        // A folder that takes no new files is found at once too (root writes anywhere: skip it there).
        let locked = sb.join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
        if std::fs::write(locked.join("probe"), "").is_err() {
            compare(&["-o", "locked/report.json"], &["cannot create files in locked"]);
        }
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
}

/// Issue #15: `gate --junit report.json` deleted the report it was asked to gate, then could not read it; `--junit`
/// onto the baseline or `--markdown` onto the policy replaced them.
#[test]
fn the_gate_never_writes_over_what_it_reads() {
    let sb = models();
    let gate = |extra: &[&str], needles: &[&str]| {
        let mut args = vec!["gate", "report.json", "--policy", "gate.toml"];
        args.extend_from_slice(extra);
        refused_fast(&sb, &args, needles)
    };
    gate(
        &["--junit", "report.json"],
        &["--junit report.json", "is the report to check"],
    );
    gate(
        &["--markdown", "report.json"],
        &["--markdown report.json", "is the report to check"],
    );
    gate(&["--markdown", "gate.toml"], &["is the policy"]);
    gate(
        &[
            "--baseline",
            "report.json",
            "--allow-different-inputs",
            "--junit",
            "report.json",
        ],
        &["--junit report.json"],
    );
    gate(
        &["--junit", "g.xml", "--markdown", "g.xml"],
        &["--markdown g.xml", "--junit names the same file"],
    );
    // The same command with good paths writes both; the report it checks is untouched throughout.
    let run = sb.mdiff(&[
        "gate",
        "report.json",
        "--policy",
        "gate.toml",
        "--junit",
        "g.xml",
        "--markdown",
        "g.md",
    ]);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    assert!(sb.join("g.xml").is_file() && sb.join("g.md").is_file());
}

#[test]
fn crosscoder_commands_check_their_outputs_first() {
    let sb = models();
    let _ = sb.copy_fixture("tiny-llama/base", "acts");
    std::fs::write(sb.join("acts/activations.json"), "{}").unwrap();
    refused_fast(
        &sb,
        &["crosscoder", "collect", "base", "tuned", "-o", "report.json"],
        &["-o report.json", "is a file"],
    );
    refused_fast(
        &sb,
        &["crosscoder", "train", "acts", "-o", "acts"],
        &["-o acts", "is the activations"],
    );
    refused_fast(
        &sb,
        &[
            "crosscoder",
            "analyze",
            "acts",
            "--activations",
            "acts",
            "-o",
            "acts/activations.json",
        ],
        &["-o acts/activations.json", "the activations"],
    );
}

/// A killed run leaves `.NAME.mdiff-tmp-PID-N` beside its output; the next run writing there removes those of
/// processes that are gone, and leaves a running one's alone.
#[test]
#[cfg(target_os = "linux")]
fn stale_temporary_files_of_a_killed_run_are_cleaned_by_the_next() {
    let sb = models();
    let dead = dead_process();
    let stale = sb.join(&format!(".g.xml.mdiff-tmp-{dead}-0"));
    let running = sb.join(&format!(".g.xml.mdiff-tmp-{}-3", std::process::id()));
    std::fs::write(&stale, "half a file").unwrap();
    std::fs::write(&running, "being written").unwrap();
    // Older than any write takes: younger ones may belong to a writer this /proc cannot see.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for path in [&stale, &running] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    let run = sb.mdiff(&["gate", "report.json", "--policy", "gate.toml", "--junit", "g.xml"]);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    assert!(!stale.exists(), "the dead run's temporary file is removed");
    assert!(running.exists(), "a running process's file is kept");
    let left: Vec<String> = std::fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".mdiff-tmp-"))
        .collect();
    assert_eq!(left.len(), 1, "only the running process's file: {left:?}");
}

/// A manifest is checked before anything is read: scales that can multiply activations, shards inside the folder.
#[test]
fn activation_manifests_with_bad_scales_or_escaping_shards_are_refused() {
    let sb = Sandbox::new();
    let acts = sb.join("acts");
    let run = sb.mdiff(&[
        "crosscoder",
        "collect",
        fixture("tiny-llama/base").to_str().unwrap(),
        fixture("tiny-llama/full-ft").to_str().unwrap(),
        "--prompts",
        fixture("prompts/golden.txt").to_str().unwrap(),
        "--max-tokens",
        "64",
        "-o",
        acts.to_str().unwrap(),
    ]);
    run.assert_ok();
    let manifest = acts.join("activations.json");
    let good = std::fs::read(&manifest).unwrap();
    std::fs::write(
        sb.join("outside.safetensors"),
        std::fs::read(acts.join("shard-00000.safetensors")).unwrap(),
    )
    .unwrap();
    let outside = sb.join("outside.safetensors").to_str().unwrap().to_string();
    let cases: [(&str, serde_json::Value, &str); 6] = [
        ("/base_norm/scale", 0.0.into(), "base_norm.scale is 0"),
        ("/tuned_norm/scale", (-2.0).into(), "tuned_norm.scale is -2"),
        ("/base_norm/scale", (-0.0).into(), "base_norm.scale is -0"),
        (
            "/shards/0/file",
            "../outside.safetensors".into(),
            "not a path inside the directory",
        ),
        (
            "/shards/0/file",
            outside.clone().into(),
            "not a path inside the directory",
        ),
        ("/d_model", 0.into(), "d_model is 0"),
    ];
    for (pointer, value, needle) in cases {
        std::fs::write(&manifest, &good).unwrap();
        edit_json(&manifest, |m| *m.pointer_mut(pointer).unwrap() = value.clone());
        let run = sb.mdiff(&["crosscoder", "train", "acts", "-o", "cc", "--steps", "1"]);
        run.assert_fails_cleanly(2, &["activations.json", needle]);
        assert!(!sb.join("cc").exists(), "{pointer}: nothing trained");
    }
}

/// Issue #15: a killed collect advised collecting again, into a folder it then refused as not empty. (Linux: that
/// is where a process's end can be seen; elsewhere a marker counts as running for a day.)
#[test]
#[cfg(target_os = "linux")]
fn a_killed_collect_is_collected_again_into_the_same_folder_as_advised() {
    let sb = Sandbox::new();
    let collect = |sb: &Sandbox| {
        sb.mdiff(&[
            "crosscoder",
            "collect",
            fixture("tiny-llama/base").to_str().unwrap(),
            fixture("tiny-llama/full-ft").to_str().unwrap(),
            "--prompts",
            fixture("prompts/golden.txt").to_str().unwrap(),
            "--max-tokens",
            "64",
            "--shard-tokens",
            "16",
            "-o",
            "acts",
        ])
    };
    collect(&sb).assert_ok();
    // What a kill before the manifest leaves: shards, a temporary file, the marker of a process that is gone.
    let dead = dead_process();
    let temp = sb.join(&format!("acts/.shard-00004.safetensors.mdiff-tmp-{dead}-0"));
    std::fs::remove_file(sb.join("acts/activations.json")).unwrap();
    std::fs::write(&temp, "half").unwrap();
    std::fs::write(sb.join("acts/.mdiff-collecting"), dead.to_string()).unwrap();
    let run = sb.mdiff(&["crosscoder", "train", "acts", "-o", "cc"]);
    run.assert_fails_cleanly(2, &["did not finish", "collecting again with `-o acts`"]);

    let again = collect(&sb);
    again.assert_ok();
    assert!(again.stderr.contains("removed"), "{}", again.stderr);
    assert!(sb.join("acts/activations.json").is_file());
    assert!(!sb.join("acts/.mdiff-collecting").exists());
    assert!(!temp.exists());

    // A collection still running (this test's own process stands in for it) is not cleared under its feet.
    std::fs::remove_file(sb.join("acts/activations.json")).unwrap();
    std::fs::write(sb.join("acts/.mdiff-collecting"), std::process::id().to_string()).unwrap();
    collect(&sb).assert_fails_cleanly(2, &["being written by another collection"]);
    assert!(sb.join("acts/shard-00000.safetensors").is_file());
    std::fs::remove_file(sb.join("acts/.mdiff-collecting")).unwrap();
    collect(&sb).assert_ok();

    // Other files, or a finished set, are never removed.
    std::fs::write(sb.join("acts/notes.txt"), "mine").unwrap();
    std::fs::remove_file(sb.join("acts/activations.json")).unwrap();
    collect(&sb).assert_fails_cleanly(2, &["acts is not empty"]);
    assert!(sb.join("acts/notes.txt").is_file());
}

#[test]
fn non_reports_are_named_in_json_terms() {
    let sb = Sandbox::new();
    let policy = sb.copy_fixture("gate.toml", "gate.toml");
    for (text, needle) in [
        ("[]", "expected a JSON object with a schema_version, found an array"),
        (r#"{"schema_version": 1.5}"#, "schema_version must be a string like"),
        ("\"report\"", "found a string"),
    ] {
        std::fs::write(sb.join("r.json"), text).unwrap();
        let run = sb.mdiff(&["gate", "r.json", "--policy", policy.to_str().unwrap()]);
        run.assert_fails_cleanly(2, &["r.json: not an mdiff report", needle]);
        assert!(
            !run.stderr.contains("Version") && !run.stderr.contains("missing"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn usage_errors_are_one_line_with_the_prefix_and_where_to_look() {
    let sb = Sandbox::new();
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["compare", "a", "b", "--frobnicate"],
            &["unknown argument '--frobnicate'", "mdiff compare --help"],
        ),
        (
            &["compare", "a", "b", "--seed", "-1"],
            &["--seed", "'-1'", "whole number", "mdiff compare --help"],
        ),
        (
            &["compare", "a", "b", "--methods", "kl,magic"],
            &["--methods", "unknown method", "mdiff compare --help"],
        ),
        (&["compare", "a"], &["missing", "<TUNED>", "mdiff compare --help"]),
        (
            &["comapre", "a", "b"],
            &["unknown command 'comapre'", "compare", "mdiff --help"],
        ),
        (
            &["crosscoder", "train", "acts"],
            &["missing", "--output", "mdiff crosscoder train --help"],
        ),
    ];
    for (args, needles) in cases {
        let run = sb.mdiff(args);
        run.assert_fails_cleanly(2, needles);
        assert!(
            !run.stderr.contains("tip:") && !run.stderr.contains("Usage:"),
            "{}",
            run.stderr
        );
    }
    for args in [&["--help"][..], &["compare", "--help"], &["--version"]] {
        let run = sb.mdiff(args);
        run.assert_ok();
        assert!(!run.stdout.is_empty() && run.stderr.is_empty(), "{args:?}");
    }
}

/// The first TOML block of docs/ci.md's "The policy": the annotated example.
fn documented_policy() -> String {
    let text = std::fs::read_to_string(repo_root().join("docs/ci.md")).unwrap();
    let section = &text[text.find("## The policy").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_string()
}

/// Issue #15: docs/ci.md's own example failed on the bundled models (`*lm_head*` on a model that ties its head to
/// the embedding). It now passes on the LoRA it is written for, in one compare --gate step.
#[test]
fn the_documented_example_policy_passes_on_the_bundled_lora() {
    let sb = Sandbox::new();
    std::fs::write(sb.join("policy.toml"), documented_policy()).unwrap();
    let (base, lora) = (fixture("tiny-llama/base"), fixture("tiny-llama/lora"));
    let run = sb.mdiff(&[
        "compare",
        base.to_str().unwrap(),
        lora.to_str().unwrap(),
        "--methods",
        "weights,kl",
        "-o",
        "report.json",
        "--gate",
        "policy.toml",
    ]);
    run.assert_ok();
    assert!(run.stdout.contains("gate passed"), "{}", run.stdout);
    // The head rule is evaluated (the tied head is the embedding), not skipped or failed.
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("embeddings and head frozen"))
        .unwrap();
    assert!(row.ends_with("pass"), "{row}");
}

/// Failure lines say which limit broke, and a rule that cannot count has no value rather than "0 ≤ 0 FAIL".
#[test]
fn failed_rules_read_right() {
    let sb = models();
    std::fs::write(
        sb.join("strict.toml"),
        "[[rule]]\nname = \"kl\"\nmetric = \"behaviour.kl_tuned_base.tokens.mean\"\nmax = 0.5\n\
         [[rule]]\nname = \"agreement\"\nmetric = \"behaviour.top1_agreement\"\nmin = 0.9\n\
         [[tensors]]\nname = \"typo\"\nforbid = [\"*embed_tokenz*\"]\n",
    )
    .unwrap();
    let run = sb.mdiff(&["gate", "report.json", "--policy", "strict.toml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.contains("FAIL kl: 1.258 is above the maximum 0.5"), "{out}");
    assert!(out.contains("FAIL agreement: 0.3338 is below the minimum 0.9"), "{out}");
    let typo = out.lines().find(|l| l.starts_with("typo ")).unwrap();
    let cells: Vec<&str> = typo.split_whitespace().collect();
    assert_eq!(cells, ["typo", "-", "≤", "0", "FAIL"], "{typo}");
    assert!(out.contains("\"*embed_tokenz*\" match no tensor"), "{out}");
}

/// Issue #15: an r = 8 LoRA showed rank "≥8" with 8 singular values computed. With as many values as the rank
/// (the LoRA fixture's r = 4, four values), the rank column is exact.
#[test]
fn the_rank_column_is_exact_when_it_equals_the_values_shown() {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny-llama/lora/adapter_config.json")).unwrap())
            .unwrap();
    let r = config["r"].as_u64().unwrap();
    let sb = Sandbox::new();
    let (base, lora, full) = (
        fixture("tiny-llama/base"),
        fixture("tiny-llama/lora"),
        fixture("tiny-llama/full-ft"),
    );
    let rank_column = |tuned: &Path| {
        let run = sb.mdiff(&[
            "compare",
            base.to_str().unwrap(),
            tuned.to_str().unwrap(),
            "--methods",
            "weights",
            "--singular-values",
            &r.to_string(),
            "-o",
            "r.json",
        ]);
        run.assert_ok();
        let lines: Vec<String> = run.stdout.lines().map(|l| l.trim().to_string()).collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("tensor ") && l.ends_with("rank"))
            .unwrap();
        lines[header + 1..]
            .iter()
            // Tensor paths print without their `model.` prefix (tables fit the terminal).
            .take_while(|l| l.starts_with("layers.") || l.starts_with("model."))
            .map(|l| l.split_whitespace().last().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let lora_ranks = rank_column(&lora);
    assert!(!lora_ranks.is_empty());
    assert!(lora_ranks.iter().all(|c| *c == r.to_string()), "{lora_ranks:?}");
    // A full fine-tune's 64 × 64 changes have more: the column says so.
    let full_ranks = rank_column(&full);
    assert!(full_ranks.iter().any(|c| *c == format!(">{r}")), "{full_ranks:?}");
}
