//! Bad inputs for weight swapping and activation patching, end to end.
//!
//! - Flags naming layers or prompts the models or the prompt set do not have end with exit code 2 and one
//!   `mdiff: error:` line, before any long stage, and leave no report.
//! - Models of different depths: the layer-by-layer methods, when named, end with exit code 2 and one line; as
//!   defaults, they are skipped with a warning while weights and KL run.
//! - Pairs the two methods cannot localize (identical outputs, no finite position) skip the sections with the
//!   reason (exit 0), while the weights and KL sections still run.

#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use mdiff_tests::{Args, Sandbox, edit_f32_tensors, edit_json, fails_with, run_case, tensor_values_mut};
use serde_json::Value;

const REPORT: &str = "report.json";

/// `mdiff compare base tuned --methods weights,kl,swap,patch,lens --prompts (two short prompts) -o report.json`,
/// with copies of `base` and `tuned` in the sandbox, plus `extra`.
fn compare(sb: &Sandbox, base: &str, tuned: &str, extra: &[&str]) -> Args {
    let base = sb.copy_fixture(base, "base");
    let tuned = sb.copy_fixture(tuned, "tuned");
    let prompts = sb.join("prompts.txt");
    std::fs::write(&prompts, "And God said\nMy son, hear the instruction of thy father\n").unwrap();
    let mut args: Args = vec!["compare".into(), base.into(), tuned.into()];
    for a in ["--methods", "weights,kl,swap,patch,lens", "--prompts"] {
        args.push(a.into());
    }
    args.push(prompts.into());
    args.extend(extra.iter().map(Into::into));
    args.extend(["-o".into(), sb.join(REPORT).into()]);
    args
}

fn no_report(sb: &Sandbox) {
    assert!(!sb.join(REPORT).exists(), "a failed run wrote a report");
}

#[test]
fn layers_out_of_range_fail_before_the_weight_diff() {
    let sb = fails_with(
        |sb| compare(sb, "tiny-llama/base", "tiny-llama/full-ft", &["--layers", "2,9"]),
        |_| vec!["--layers 9 is out of range".into(), "4 layers".into(), "0 to 3".into()],
    );
    no_report(&sb);
}

#[test]
fn malformed_layer_lists_are_usage_errors() {
    for bad in ["3-1", "x", "1,,2"] {
        let (_, run) = run_case_with(&["--layers", bad]);
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("not a layer list"), "{bad}: {}", run.stderr);
    }
}

fn run_case_with(extra: &[&str]) -> (Sandbox, mdiff_tests::Run) {
    let sb = Sandbox::new();
    let args = compare(&sb, "tiny-llama/base", "tiny-llama/full-ft", extra);
    let run = sb.mdiff(&args);
    (sb, run)
}

#[test]
fn patch_prompts_out_of_range_fail_before_the_weight_diff() {
    let sb = fails_with(
        |sb| compare(sb, "tiny-llama/base", "tiny-llama/full-ft", &["--patch-prompts", "0,2"]),
        |_| vec!["--patch-prompts 2 is out of range".into(), "2 prompts".into()],
    );
    no_report(&sb);
}

/// A tuned model one block shallower: the base without its last block.
fn shallower_tuned(sb: &Sandbox) -> Args {
    let args = compare(sb, "tiny-llama/base", "tiny-llama/base", &[]);
    let tuned = sb.join("tuned");
    edit_json(&tuned.join("config.json"), |c| c["num_hidden_layers"] = 3.into());
    edit_f32_tensors(&tuned.join("model.safetensors"), |tensors| {
        tensors.retain(|(name, ..)| !name.starts_with("model.layers.3."));
        // Some change in the remaining blocks, so KL has something to measure.
        for v in tensor_values_mut(tensors, "model.layers.1.mlp.down_proj.weight").iter_mut() {
            *v *= 1.5;
        }
    });
    args
}

fn report(sb: &Sandbox) -> Value {
    serde_json::from_str(&std::fs::read_to_string(sb.join(REPORT)).unwrap()).unwrap()
}

fn skipped(report: &Value) -> Vec<(String, String)> {
    report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["section"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Issue #15: swap, patch and lens named in --methods cannot run on models of different depths: an error that
/// says why and what to drop, before any work.
#[test]
fn different_depths_fail_the_named_layerwise_methods() {
    let (sb, run) = run_case(shallower_tuned);
    run.assert_fails_cleanly(
        2,
        &[
            "--methods swap cannot run",
            "base 4 layers",
            "tuned 3",
            "leave swap out of --methods",
        ],
    );
    no_report(&sb);
}

/// Without --methods, the layer-by-layer default (lens) is skipped with a warning, while weights and KL run.
#[test]
fn different_depths_skip_the_default_lens_and_keep_weights_and_kl() {
    let (sb, run) = run_case(|sb| {
        let mut args = shallower_tuned(sb);
        let at = args.iter().position(|a| a == "--methods").unwrap();
        args.drain(at..at + 2);
        args
    });
    run.assert_ok();
    let report = report(&sb);
    assert!(report["weights"]["tensors"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(
        report["behaviour"]["summary"]["kl_tuned_base"]["mean"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let skipped = skipped(&report);
    let sections: Vec<&str> = skipped.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sections, ["lens"]);
    assert!(
        skipped[0].1.contains("base 4 layers") && skipped[0].1.contains("tuned 3"),
        "{skipped:?}"
    );
    assert!(
        run.stdout.contains("skipped lens: the models differ in shape"),
        "{}",
        run.stdout
    );
    let warnings = run.warnings();
    assert!(
        warnings.len() == 1 && warnings[0].starts_with("lens skipped: the models differ in shape"),
        "{}",
        run.stderr
    );
}

#[test]
fn identical_outputs_leave_nothing_to_localize() {
    let (sb, run) = run_case(|sb| compare(sb, "tiny-llama/base", "tiny-llama/base", &[]));
    run.assert_ok();
    let report = report(&sb);
    assert!(report["behaviour"].is_object() && report["lens"].is_object());
    let skipped = skipped(&report);
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    for (section, reason) in &skipped {
        assert!(section == "swap" || section == "patching");
        assert!(
            reason.contains("agree at all") && reason.contains("no divergence"),
            "{reason}"
        );
    }
}

#[test]
fn no_finite_position_leaves_nothing_to_localize() {
    let (sb, run) = run_case(|sb| {
        let args = compare(sb, "tiny-llama/base", "tiny-llama/full-ft", &[]);
        edit_f32_tensors(&sb.join("tuned/model.safetensors"), |t| {
            tensor_values_mut(t, "model.norm.weight").fill(f32::NAN);
        });
        args
    });
    run.assert_ok();
    let skipped = skipped(&report(&sb));
    let localize: Vec<_> = skipped.iter().filter(|(s, _)| s == "swap" || s == "patching").collect();
    assert_eq!(localize.len(), 2, "{skipped:?}");
    assert!(
        localize.iter().all(|(_, r)| r.contains("no scored position")),
        "{skipped:?}"
    );
}
