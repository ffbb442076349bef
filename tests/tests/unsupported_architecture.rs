//! Issue #16, item 4: an architecture the model runtime does not implement no longer sinks the run.
//!
//! - `compare` writes the weights section as usual (the same as a `--methods weights` run on the untouched
//!   fixtures) and lists every model-running method asked for, named or default, in `skipped` with a reason that
//!   names the architecture and the supported ones; stderr has one `warning:` line for it, not one per section;
//!   exit 0.
//! - Base and tuned naming different unsupported architectures, or one supported and one not: the same, with the
//!   reason naming each unsupported one.
//! - Only model-running methods asked for: nothing asked for can run, so exit 2 and one error line, no report.
//! - Other config errors (not JSON) stay exit 2, even beside an unsupported architecture.
//! - `mdiff gate` on such a report: a weights rule holds, a behaviour rule fails saying why compare skipped it.
//!
//! Each case edits the `config.json` of copies of `fixtures/tiny-llama/{base,full-ft}` inside a [`Sandbox`].

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mdiff_tests::{Args, Run, Sandbox, edit_json, fixture, read_f32_tensors};
use serde_json::{Value, json};

const BASE: &str = "tiny-llama/base";
const FULL_FT: &str = "tiny-llama/full-ft";
const CONFIG: &str = "config.json";
const REPORT: &str = "report.json";
/// The model-running methods, in report order.
const BEHAVIOURAL: [&str; 5] = ["kl", "swap", "patch", "lens", "crosscoder"];
/// Two of the architectures the runtime supports today; the error lists them (model/config.rs).
const SUPPORTED: [&str; 2] = ["LlamaForCausalLM", "GPT2LMHeadModel"];

/// An architecture to write into a copy's `config.json`: `architectures[0]` and `model_type`.
#[derive(Clone, Copy)]
struct Arch(&'static str, &'static str);

const BERT: Arch = Arch("BertModel", "bert");
const T5: Arch = Arch("T5ForConditionalGeneration", "t5");
/// A mixture-of-experts checkpoint: refused by the runtime (issue #16, item 2), so skipped here.
const QWEN3_MOE: Arch = Arch("Qwen3MoeForCausalLM", "qwen3_moe");

/// Copies of the base and the full fine-tune, each with `arch` written into its config when given.
fn pair(sb: &Sandbox, base: Option<Arch>, tuned: Option<Arch>) -> (PathBuf, PathBuf) {
    let dirs = (sb.copy_fixture(BASE, "base"), sb.copy_fixture(FULL_FT, "tuned"));
    for (dir, arch) in [(&dirs.0, base), (&dirs.1, tuned)] {
        if let Some(Arch(name, model_type)) = arch {
            edit_json(&dir.join(CONFIG), |c| {
                c["architectures"] = json!([name]);
                c["model_type"] = model_type.into();
            });
        }
    }
    dirs
}

/// `compare base tuned -o report.json` plus `extra`.
fn compare(sb: &Sandbox, (base, tuned): &(PathBuf, PathBuf), extra: &[&str]) -> Run {
    let mut args: Args = vec!["compare".into(), base.into(), tuned.into()];
    args.extend(extra.iter().map(OsString::from));
    args.extend(["-o".into(), sb.join(REPORT).into()]);
    sb.mdiff(&args)
}

fn report(sb: &Sandbox) -> Value {
    serde_json::from_str(&std::fs::read_to_string(sb.join(REPORT)).unwrap()).unwrap()
}

/// The weights section of a `--methods weights` run on the untouched fixtures: what every case must still write.
/// Computed once for all the tests.
fn reference_weights() -> &'static Value {
    static WEIGHTS: OnceLock<Value> = OnceLock::new();
    WEIGHTS.get_or_init(|| {
        let sb = Sandbox::new();
        let run = compare(&sb, &(fixture(BASE), fixture(FULL_FT)), &["--methods", "weights"]);
        run.assert_ok();
        report(&sb)["weights"].clone()
    })
}

/// Exit 0; the weights section as usual; each of `skipped` in the report's `skipped`, every reason holding each
/// of `needles` and the supported architectures; one warning line, holding the needles too.
fn assert_weights_only(sb: &Sandbox, run: &Run, skipped: &[&str], needles: &[String]) {
    run.assert_ok();
    let report = report(sb);
    let weights = &report["weights"];
    let tensors = read_f32_tensors(&fixture(BASE).join("model.safetensors")).len();
    assert_eq!(weights["totals"]["num_tensors"], tensors, "{}", run.stderr);
    assert_eq!(weights, reference_weights(), "the weights section is the usual one");
    let listed: Vec<&str> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["method"].as_str().unwrap())
        .collect();
    assert_eq!(listed, skipped);
    for entry in report["skipped"].as_array().unwrap() {
        let reason = entry["reason"].as_str().unwrap();
        for needle in needles.iter().map(String::as_str).chain(SUPPORTED) {
            assert!(reason.contains(needle), "{needle:?} not in {reason:?}");
        }
    }
    for method in skipped {
        let section = if *method == "kl" { "behaviour" } else { method };
        assert!(
            report.get(section).is_none_or(Value::is_null),
            "{section} is in the report"
        );
    }
    let warnings = run.warnings();
    assert_eq!(warnings.len(), 1, "one warning line: {}", run.stderr);
    for needle in needles {
        assert!(
            warnings[0].contains(needle.as_str()),
            "{needle:?} not in {:?}",
            warnings[0]
        );
    }
    assert!(
        warnings[0].starts_with(&format!("{} skipped: ", skipped.join(", "))),
        "{}",
        warnings[0]
    );
    assert!(!run.stderr.contains("mdiff: error"), "{}", run.stderr);
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn default_methods_on_an_unsupported_architecture_give_the_weight_diff_and_one_warning() {
    for json in [false, true] {
        let sb = Sandbox::new();
        let models = pair(&sb, Some(BERT), Some(BERT));
        let run = compare(&sb, &models, if json { &["--json"] } else { &[] });
        let needles = [
            shown(&models.0.join(CONFIG)),
            "BertModel".into(),
            "not supported".into(),
        ];
        assert_weights_only(&sb, &run, &["kl", "lens"], &needles);
        if json {
            let printed: Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(printed["skipped"], report(&sb)["skipped"]);
        } else {
            assert!(run.stdout.contains("\nweights: "), "{}", run.stdout);
            assert!(run.stdout.contains("skipped behaviour, lens: "), "{}", run.stdout);
        }
    }
}

/// Named methods are skipped too: no flag would make them run, and the weight diff still answers.
#[test]
fn every_named_method_that_runs_the_models_is_skipped() {
    let sb = Sandbox::new();
    let models = pair(&sb, Some(QWEN3_MOE), Some(QWEN3_MOE));
    let run = compare(&sb, &models, &["--methods", "weights,kl,swap,patch,lens,crosscoder"]);
    assert_weights_only(&sb, &run, &BEHAVIOURAL, &["Qwen3MoeForCausalLM".into()]);
}

#[test]
fn different_unsupported_architectures_are_both_named() {
    let sb = Sandbox::new();
    let models = pair(&sb, Some(BERT), Some(T5));
    let run = compare(&sb, &models, &[]);
    let needles = [
        shown(&models.0.join(CONFIG)),
        "BertModel".into(),
        shown(&models.1.join(CONFIG)),
        "T5ForConditionalGeneration".into(),
    ];
    assert_weights_only(&sb, &run, &["kl", "lens"], &needles);
}

#[test]
fn a_supported_base_with_an_unsupported_tuned_model_gives_the_weight_diff() {
    let sb = Sandbox::new();
    let models = pair(&sb, None, Some(BERT));
    let run = compare(&sb, &models, &["--methods", "weights,kl"]);
    assert_weights_only(&sb, &run, &["kl"], &[shown(&models.1.join(CONFIG)), "BertModel".into()]);
    let reason = report(&sb)["skipped"][0]["reason"].as_str().unwrap().to_string();
    assert!(
        !reason.contains(&shown(&models.0.join(CONFIG))),
        "the base is supported: {reason}"
    );
}

/// With only model-running methods asked for, nothing asked for can run: an empty report would pass for an
/// answer, so it is an error that says how to get the weight diff.
#[test]
fn only_model_running_methods_on_an_unsupported_architecture_is_an_error() {
    for methods in ["kl", "kl,lens,swap"] {
        let sb = Sandbox::new();
        let models = pair(&sb, Some(BERT), Some(BERT));
        let run = compare(&sb, &models, &["--methods", methods]);
        run.assert_fails_cleanly(2, &["cannot run", "BertModel", "LlamaForCausalLM", "--methods weights"]);
        assert!(run.warnings().is_empty(), "{}", run.stderr);
        assert!(!sb.join(REPORT).exists(), "a failed run wrote a report");
    }
}

/// Only the unsupported architecture is skipped over: a config.json that is not JSON is still an error, beside a
/// supported or an unsupported architecture.
#[test]
fn a_broken_config_is_still_an_error() {
    for base_arch in [None, Some(BERT)] {
        let sb = Sandbox::new();
        let models = pair(&sb, base_arch, None);
        std::fs::write(models.1.join(CONFIG), "{\"architectures\": [\"LlamaForCausalLM\"],").unwrap();
        let run = compare(&sb, &models, &[]);
        run.assert_fails_cleanly(2, &[&shown(&models.1.join(CONFIG)), "not valid JSON"]);
        assert!(!sb.join(REPORT).exists(), "a failed run wrote a report");
    }
}

#[test]
fn the_gate_checks_the_weights_and_fails_rules_on_skipped_sections() {
    let sb = Sandbox::new();
    let models = pair(&sb, Some(BERT), Some(BERT));
    compare(&sb, &models, &[]).assert_ok();
    let gate = |name: &str, rule: &str| {
        let policy = sb.join(name);
        std::fs::write(&policy, format!("[[rule]]\nname = \"{name}\"\n{rule}\n")).unwrap();
        let args: Args = vec!["gate".into(), sb.join(REPORT).into(), "--policy".into(), policy.into()];
        sb.mdiff(&args)
    };
    let weights = gate("weights.toml", "metric = \"weights.changed_tensors\"\nmax = 1000");
    weights.assert_ok();
    assert!(weights.stdout.contains("gate passed"), "{}", weights.stdout);
    let kl = gate("kl.toml", "metric = \"behaviour.kl_tuned_base.tokens.mean\"\nmax = 1.5");
    assert_eq!(kl.code, 1, "{}", kl.stderr);
    assert!(kl.stdout.contains("compare skipped it"), "{}", kl.stdout);
    assert!(kl.stdout.contains("BertModel"), "{}", kl.stdout);
}
