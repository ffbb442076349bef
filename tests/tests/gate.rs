//! `mdiff gate` and `mdiff compare --gate`, end to end: verdicts and exit codes, JUnit read back, Markdown,
//! baselines, bad policies and reports, and the determinism a baseline relies on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use mdiff_tests::{Run, Sandbox, edit_json, fixture, repo_root};
use serde_json::Value;

const POLICY: &str = "gate.toml";

fn report(name: &str) -> PathBuf {
    fixture(&format!("reports/tiny-llama-{name}.json"))
}

fn gate(sandbox: &Sandbox, report: &Path, extra: &[&OsStr]) -> Run {
    let mut args: Vec<&OsStr> = vec![OsStr::new("gate"), report.as_os_str(), OsStr::new("--policy")];
    let policy = fixture(POLICY);
    args.push(policy.as_os_str());
    args.extend_from_slice(extra);
    sandbox.mdiff(&args)
}

/// The `(name, failure message)` of every testcase of a JUnit file, checking the counts it declares.
fn read_junit(path: &Path) -> Vec<(String, Option<String>)> {
    use quick_xml::events::Event;
    let text = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut cases: Vec<(String, Option<String>)> = Vec::new();
    let mut declared = None;
    let attr = |e: &quick_xml::events::BytesStart, key: &str| -> Option<String> {
        e.attributes()
            .map(|a| a.unwrap())
            .find(|a| a.key.as_ref() == key.as_bytes())
            .map(|a| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .unwrap()
                    .into_owned()
            })
    };
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"testsuite" => {
                    let n = |k| attr(&e, k).unwrap().parse::<usize>().unwrap();
                    declared = Some((n("tests"), n("failures"), n("skipped")));
                }
                b"testcase" => cases.push((attr(&e, "name").unwrap(), None)),
                b"failure" => cases.last_mut().unwrap().1 = Some(attr(&e, "message").unwrap()),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    let (tests, failures, skipped) = declared.expect("a testsuite element");
    assert_eq!(tests, cases.len());
    assert_eq!(failures, cases.iter().filter(|c| c.1.is_some()).count());
    assert_eq!(skipped, text.matches("<skipped ").count());
    cases
}

#[test]
fn the_lora_fixture_passes_the_example_policy_and_the_full_fine_tune_fails_it() {
    let sandbox = Sandbox::new();
    let pass = gate(&sandbox, &report("lora"), &[]);
    pass.assert_ok();
    assert!(pass.stdout.contains("gate passed"), "{}", pass.stdout);
    assert!(!pass.stdout.contains("FAIL"), "{}", pass.stdout);

    let (junit, markdown) = (sandbox.join("gate.xml"), sandbox.join("gate.md"));
    let fail = gate(
        &sandbox,
        &report("full-ft"),
        &[
            OsStr::new("--junit"),
            junit.as_os_str(),
            OsStr::new("--markdown"),
            markdown.as_os_str(),
        ],
    );
    assert_eq!(fail.code, 1, "{}\n{}", fail.stdout, fail.stderr);
    assert!(!fail.stderr.contains("panicked"));
    assert!(fail.stderr.starts_with("mdiff: gate failed: "), "{}", fail.stderr);
    assert!(fail.stdout.contains("gate FAILED"), "{}", fail.stdout);
    // The full fine-tune changes MLP weights, which only the LoRA targets may.
    assert!(fail.stdout.contains("model.layers.2.mlp."), "{}", fail.stdout);

    let cases = read_junit(&junit);
    assert!(
        std::fs::read_to_string(&junit).unwrap().contains(r#"skipped="1""#),
        "the relative rule is skipped"
    );
    let table_rows = fail
        .stdout
        .lines()
        .filter(|l| [" pass", " FAIL", " skip"].iter().any(|s| l.ends_with(s)))
        .count();
    assert_eq!(cases.len(), table_rows, "one testcase per rule");
    assert!(cases.iter().any(|(_, f)| f.is_some()) && cases.iter().any(|(_, f)| f.is_none()));

    let md = std::fs::read_to_string(&markdown).unwrap();
    assert!(md.starts_with("## mdiff gate: ❌ failed"), "{md}");
    for needle in [
        "### Failing rules",
        "KL(tuned‖base) per token",
        "crosscoder latents",
        "### Most divergent prompts",
    ] {
        assert!(md.contains(needle), "{needle} not in {md}");
    }
}

#[test]
fn a_closed_stdout_neither_hides_a_failure_nor_stops_the_files() {
    let sandbox = Sandbox::new();
    let junit = sandbox.join("gate.xml");
    let mut child = std::process::Command::new(mdiff_tests::mdiff_bin())
        .arg("gate")
        .arg(report("full-ft"))
        .arg("--policy")
        .arg(fixture(POLICY))
        .arg("--junit")
        .arg(&junit)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // As `| head -0` does: the reader is gone before mdiff writes.
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(1));
    assert!(junit.is_file());
}

#[test]
fn json_output_agrees_with_the_exit_code() {
    let sandbox = Sandbox::new();
    let run = gate(
        &sandbox,
        &report("full-ft"),
        &[OsStr::new("--format"), OsStr::new("json")],
    );
    assert_eq!(run.code, 1);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["passed"], false);
    let rules = json["rules"].as_array().unwrap();
    let failed = rules.iter().filter(|r| r["status"] == "fail").count();
    assert_eq!(json["failed"].as_u64().unwrap() as usize, failed);
    assert!(failed > 0);
    assert!(rules.iter().all(|r| r["limits"].is_array() && r["message"].is_string()));
}

#[test]
fn a_rule_on_a_section_the_report_lacks_fails_with_the_methods_to_add() {
    let sandbox = Sandbox::new();
    let copy = sandbox.join("report.json");
    std::fs::copy(report("lora"), &copy).unwrap();
    edit_json(&copy, |r| {
        r.as_object_mut().unwrap().remove("crosscoder");
    });
    let run = gate(&sandbox, &copy, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("section missing: run compare with --methods crosscoder"),
        "{}",
        run.stdout
    );
}

#[test]
fn baselines_of_the_same_inputs_are_used_and_others_refused() {
    let sandbox = Sandbox::new();
    // The LoRA report is a fair baseline for the full fine-tune: same base, prompts and seed.
    let baseline = report("lora");
    let policy = sandbox.join("relative.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nmetric = \"behaviour.kl_tuned_base.tokens.mean\"\nmax_increase = 0.2\n",
    )
    .unwrap();
    let run = |report: &Path, baseline: &Path, extra: &[&str]| {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("gate"),
            report.as_os_str(),
            OsStr::new("--policy"),
            policy.as_os_str(),
            OsStr::new("--baseline"),
            baseline.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        sandbox.mdiff(&args)
    };
    // The full fine-tune drifts much further than the LoRA: more than 20% over it.
    let worse = run(&report("full-ft"), &baseline, &[]);
    assert_eq!(worse.code, 1, "{}", worse.stderr);
    assert!(worse.stdout.contains("baseline +20%"), "{}", worse.stdout);
    run(&report("lora"), &baseline, &[]).assert_ok();

    let other = sandbox.join("other-base.json");
    std::fs::copy(&baseline, &other).unwrap();
    edit_json(&other, |r| {
        r["inputs"]["base"]["files"][0]["header_sha256"] = Value::String("0".repeat(64));
        r["settings"]["seed"] = Value::from(9);
    });
    run(&report("lora"), &other, &[]).assert_fails_cleanly(
        2,
        &[
            "not a baseline for this report",
            "safetensors headers differ",
            "seed 9",
            "--allow-different-inputs",
        ],
    );
    let allowed = run(&report("lora"), &other, &["--allow-different-inputs"]);
    allowed.assert_ok();
    assert!(
        allowed.warnings().iter().any(|w| w.contains("differs")),
        "{}",
        allowed.stderr
    );
}

#[test]
fn bad_policies_and_reports_exit_2_with_one_line() {
    let sandbox = Sandbox::new();
    let write = |name: &str, text: &str| {
        let path = sandbox.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let with_policy = |policy: &Path, report: &Path| {
        sandbox.mdiff(&[
            OsStr::new("gate"),
            report.as_os_str(),
            OsStr::new("--policy"),
            policy.as_os_str(),
        ])
    };
    let good_report = report("lora");
    let unknown_key = write(
        "a.toml",
        "[[rule]]\nmetric = \"behaviour.top1_agreement\"\nminimum = 0.5\n",
    );
    with_policy(&unknown_key, &good_report).assert_fails_cleanly(2, &["a.toml", "line 3, column 1", "minimum"]);
    let wrong_type = write(
        "b.toml",
        "[[rule]]\nmetric = \"behaviour.top1_agreement\"\nmin = \"high\"\n",
    );
    with_policy(&wrong_type, &good_report).assert_fails_cleanly(2, &["line 3, column 7"]);
    let unknown_metric = write("c.toml", "[[rule]]\nmetric = \"kl\"\nmax = 1\n");
    with_policy(&unknown_metric, &good_report)
        .assert_fails_cleanly(2, &["unknown metric \"kl\"", "valid metrics:", "swap.top.score"]);
    let policy = fixture(POLICY);
    with_policy(&sandbox.join("missing.toml"), &good_report).assert_fails_cleanly(2, &["missing.toml"]);
    let latin1 = sandbox.join("latin1.toml");
    std::fs::write(
        &latin1,
        b"[[rule]]\nname = \"caf\xe9\"\nmetric = \"weights.tensors\"\nmax = 1\n",
    )
    .unwrap();
    with_policy(&latin1, &good_report).assert_fails_cleanly(2, &["latin1.toml", "line 2, column 12: not UTF-8 text"]);

    let full = std::fs::read(&good_report).unwrap();
    let truncated = sandbox.join("truncated.json");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    with_policy(&policy, &truncated).assert_fails_cleanly(2, &["truncated.json", "not an mdiff report"]);
    let newer = sandbox.join("newer.json");
    std::fs::copy(&good_report, &newer).unwrap();
    edit_json(&newer, |r| r["schema_version"] = Value::from("2.0"));
    with_policy(&policy, &newer).assert_fails_cleanly(2, &["2.0", "upgrade"]);
}

#[test]
fn compare_with_gate_runs_both_and_checks_the_policy_first() {
    let sandbox = Sandbox::new();
    let output = sandbox.join("report.json");
    let junit = sandbox.join("gate.xml");
    let policy = sandbox.join("kl.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nmetric = \"behaviour.kl_tuned_base.tokens.mean\"\ngroup = \"refusal\"\nmax = 100\n\n\
         [[rule]]\nmetric = \"weights.changed_tensors\"\nmax = 0\n",
    )
    .unwrap();
    let base = fixture("tiny-llama/base");
    let lora = fixture("tiny-llama/lora");
    // compare BASE LORA -o OUTPUT, then `extra`.
    let compare = |extra: &[&OsStr]| {
        let mut args = vec![
            OsStr::new("compare"),
            base.as_os_str(),
            lora.as_os_str(),
            OsStr::new("-o"),
            output.as_os_str(),
        ];
        args.extend_from_slice(extra);
        sandbox.mdiff(&args)
    };
    let gated = |policy: &Path| {
        compare(&[
            OsStr::new("--methods"),
            OsStr::new("weights,kl"),
            OsStr::new("--gate"),
            policy.as_os_str(),
            OsStr::new("--junit"),
            junit.as_os_str(),
        ])
    };
    let run = gated(&policy);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(output.is_file(), "the report is written whatever the verdict");
    let cases = read_junit(&junit);
    assert_eq!(cases.len(), 2);
    assert!(cases[0].1.is_none(), "refusal prompts' KL within 100: {cases:?}");
    assert!(
        cases[1].1.as_deref().unwrap().contains("is above the maximum 0"),
        "{cases:?}"
    );

    // A broken policy stops compare before it loads a model or writes anything.
    std::fs::remove_file(&output).unwrap();
    let broken = sandbox.join("broken.toml");
    std::fs::write(&broken, "[[rule]]\nmetric = \"nope\"\nmax = 1\n").unwrap();
    gated(&broken).assert_fails_cleanly(2, &["unknown metric"]);
    assert!(!output.exists());
    // So does a baseline of another seed (its base model and schema are checked before the models run too).
    let baseline = report("lora");
    compare(&[
        OsStr::new("--seed"),
        OsStr::new("5"),
        OsStr::new("--gate"),
        policy.as_os_str(),
        OsStr::new("--baseline"),
        baseline.as_os_str(),
    ])
    .assert_fails_cleanly(2, &["not a baseline for this report", "seed 0 against 5"]);
    assert!(!output.exists());
    compare(&[OsStr::new("--junit"), junit.as_os_str()]).assert_fails_cleanly(2, &["--gate"]);
    assert!(!output.exists());
}

#[test]
fn reports_are_byte_identical_across_runs_apart_from_timings() {
    let sandbox = Sandbox::new();
    let run = |name: &str| {
        let output = sandbox.join(name);
        sandbox
            .mdiff(&[
                OsStr::new("compare"),
                fixture("tiny-llama/base").as_os_str(),
                fixture("tiny-llama/lora").as_os_str(),
                OsStr::new("--methods"),
                OsStr::new("weights,kl,swap,patch,lens,crosscoder"),
                OsStr::new("--crosscoder-steps"),
                OsStr::new("60"),
                OsStr::new("--localize-positions"),
                OsStr::new("256"),
                OsStr::new("-o"),
                output.as_os_str(),
            ])
            .assert_ok();
        let mut json: Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
        let timings = json.as_object_mut().unwrap().remove("timings_ms").unwrap();
        assert!(
            timings.as_object().is_some_and(|t| !t.is_empty()),
            "timings are recorded"
        );
        json
    };
    let (first, second) = (run("first.json"), run("second.json"));
    assert_eq!(
        serde_json::to_string(&first).unwrap(),
        serde_json::to_string(&second).unwrap(),
        "two runs with the same inputs and seed differ"
    );
    // What a baseline is matched by.
    for side in ["base", "tuned"] {
        for file in first["inputs"][side]["files"].as_array().unwrap() {
            let hash = file["header_sha256"].as_str().unwrap();
            assert!(
                hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
                "{hash}"
            );
            assert!(file["size_bytes"].as_u64().unwrap() > 0);
        }
    }
    assert_eq!(first["settings"]["prompts_sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn list_metrics_prints_the_catalogue() {
    let run = Sandbox::new().mdiff(&["gate", "--list-metrics"]);
    run.assert_ok();
    for metric in mdiff_core::gate::metrics::catalogue() {
        assert!(run.stdout.contains(&metric.path), "{}", metric.path);
    }
}

#[test]
fn docs_list_every_metric_and_carry_the_policy_schema() {
    let update = std::env::var_os("UPDATE_DOCS").is_some();
    let ci = repo_root().join("docs/ci.md");
    let text = std::fs::read_to_string(&ci).unwrap();
    let (begin, end) = ("<!-- metrics:begin -->\n", "<!-- metrics:end -->");
    let start = text.find(begin).expect("docs/ci.md has the metrics markers") + begin.len();
    let stop = text.find(end).unwrap();
    let table = mdiff_core::gate::metrics::markdown_table();
    if update {
        std::fs::write(&ci, format!("{}{table}{}", &text[..start], &text[stop..])).unwrap();
    } else {
        assert!(
            text[start..stop] == table,
            "the metric table in docs/ci.md is stale; run `UPDATE_DOCS=1 cargo test -p mdiff-tests --test gate`"
        );
    }

    let schema_path = repo_root().join("docs/gate.schema.json");
    let mut schema = serde_json::to_string_pretty(&mdiff_core::gate::policy_json_schema()).unwrap();
    schema.push('\n');
    if update {
        std::fs::write(&schema_path, &schema).unwrap();
    }
    assert!(
        std::fs::read_to_string(&schema_path).unwrap_or_default() == schema,
        "docs/gate.schema.json is stale; run `UPDATE_DOCS=1 cargo test -p mdiff-tests --test gate`"
    );
}

#[test]
fn the_example_policy_parses() {
    let policy = mdiff_core::gate::Policy::read(&fixture(POLICY)).unwrap();
    assert!(!policy.rules.is_empty() && !policy.tensors.is_empty());
    assert!(
        policy.rules.iter().any(|r| r.group().is_some()),
        "the example shows a group rule"
    );
    assert!(
        policy
            .rules
            .iter()
            .any(|r| r.metric.get_ref().starts_with("crosscoder.")),
        "the example gates the crosscoder"
    );
}
