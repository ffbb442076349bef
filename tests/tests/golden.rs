//! Numbers checked against references: PEFT's `merge_and_unload` and numpy statistics written by
//! `fixtures/generate.py`, and the planted ground truth of the fixtures (issue #2).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::ffi::OsStr;

use mdiff_core::checkpoint::{Checkpoint, SafetensorsFile, TensorSource};
use mdiff_core::report::{Component, Report, TensorDiff, read_report};
use mdiff_tests::{Sandbox, fixture};
use serde_json::Value;

/// Runs `mdiff compare --methods weights` and returns the parsed report and stdout.
fn compare(base: &str, tuned: &str) -> (Report, String) {
    let sandbox = Sandbox::new();
    let (base, tuned) = (fixture(base), fixture(tuned));
    let args = ["compare", "-o", "report.json", "--methods", "weights"].map(OsStr::new);
    let run = sandbox.mdiff(&[&args[..], &[base.as_os_str(), tuned.as_os_str()]].concat());
    run.assert_ok();
    (read_report(&sandbox.join("report.json")).expect("report"), run.stdout)
}

/// The tiny Llama's PEFT adapters and their golden statistics.
const LLAMA_ADAPTERS: [(&str, &str); 2] = [
    ("tiny-llama/lora", "weights-lora.json"),
    ("tiny-llama/lora-rs", "weights-lora-rs.json"),
];

fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("golden/{name}"))).expect("golden file");
    serde_json::from_str(&text).expect("golden JSON")
}

fn by_name(report: &Report) -> BTreeMap<&str, &TensorDiff> {
    let weights = report.weights.as_ref().expect("weights section");
    weights.tensors.iter().map(|t| (t.name.as_str(), t)).collect()
}

fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
    (got - want).abs() <= abs + rel * want.abs()
}

/// Every statistic of every tensor against numpy's float64 values.
fn assert_matches_golden(report: &Report, golden: &Value, rel: f64) {
    let tensors = by_name(report);
    let expected = golden["tensors"].as_object().expect("tensors map");
    assert_eq!(tensors.len(), expected.len(), "tensor count");
    for (name, want) in expected {
        let got = tensors
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} missing from report"));
        let f = |key: &str| want[key].as_f64().unwrap_or_else(|| panic!("{name}.{key}"));
        for (what, g, w) in [
            ("base_norm", got.base_norm, f("base_norm")),
            ("delta_norm", got.delta_norm, f("delta_norm")),
            ("max_abs_delta", got.max_abs_delta, f("max_abs_delta")),
            ("mean_abs_delta", got.mean_abs_delta, f("mean_abs_delta")),
            ("relative", got.relative.unwrap_or(0.0), f("relative")),
            ("cosine", got.cosine.unwrap_or(0.0), f("cosine")),
        ] {
            assert!(close(g, w, rel, 1e-7), "{name}.{what}: {g} vs golden {w}");
        }
        assert!(
            (got.changed_fraction - f("changed_fraction")).abs() < 2e-3,
            "{name}.changed_fraction"
        );
        let want_sv: Vec<f64> = want["singular_values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        match &got.spectrum {
            Some(s) => {
                let sigma1 = want_sv.first().copied().unwrap_or(0.0);
                for (i, (g, w)) in s.singular_values.iter().zip(&want_sv).enumerate() {
                    // Values far below σ₁ are f32 rounding noise on both sides; compare them relative to σ₁.
                    assert!(
                        close(*g, *w, rel, 1e-5 * sigma1),
                        "{name} σ{}: {g} vs golden {w}",
                        i + 1
                    );
                }
                assert!(
                    close(s.stable_rank, f("stable_rank"), rel * 10.0, 1e-6),
                    "{name} stable rank"
                );
            }
            None => assert!(
                want_sv.iter().all(|&v| v == 0.0),
                "{name}: no spectrum but golden has {want_sv:?}"
            ),
        }
    }
}

#[test]
fn full_finetune_statistics_match_numpy() {
    let (report, _) = compare("tiny-llama/base", "tiny-llama/full-ft");
    assert_matches_golden(&report, &golden("weights-full-ft.json"), 1e-6);
}

#[test]
fn lora_statistics_match_numpy_on_peft_merged_weights() {
    for (adapter, golden_file) in LLAMA_ADAPTERS {
        let (report, _) = compare("tiny-llama/base", adapter);
        assert_matches_golden(&report, &golden(golden_file), 1e-4);
    }
    let (report, _) = compare("tiny-gpt2/base", "tiny-gpt2/lora");
    assert_matches_golden(&report, &golden("weights-gpt2-lora.json"), 1e-4);
}

/// W + s·B·A must equal PEFT's `merge_and_unload()` to 1e-6 on every entry of every tensor.
#[test]
fn lora_merge_equals_peft_merge_and_unload() {
    for (base_dir, adapter, merged) in [
        (
            "tiny-llama/base",
            "tiny-llama/lora",
            "tiny-llama/lora-merged/model.safetensors",
        ),
        (
            "tiny-llama/base",
            "tiny-llama/lora-rs",
            "tiny-llama/lora-rs-merged/model.safetensors",
        ),
        (
            "tiny-gpt2/base",
            "tiny-gpt2/lora",
            "tiny-gpt2/lora-merged/model.safetensors",
        ),
    ] {
        let base = Checkpoint::open(&fixture(base_dir)).expect("base");
        let tuned = Checkpoint::open_tuned(&fixture(adapter), &base).expect("adapter");
        let golden = SafetensorsFile::open(&fixture(merged)).expect("golden merged");
        assert_eq!(
            tuned.source().tensors().len(),
            golden.tensors().len(),
            "{adapter}: tensor count"
        );
        let mut changed = 0;
        for name in golden.tensors().keys() {
            let ours = tuned.source().read(name).expect("ours").into_vec();
            let theirs = golden.read(name).expect("golden").into_vec();
            let base_values = base.source().read(name).expect("base").into_vec();
            assert_eq!(ours.len(), theirs.len(), "{adapter} {name}: element count");
            // f32::max would skip a NaN error; a NaN anywhere must fail.
            let max_err = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(
                    0.0f32,
                    |m, e| {
                        if e.is_nan() || m.is_nan() { f32::NAN } else { m.max(e) }
                    },
                );
            assert!(max_err <= 1e-6, "{adapter} {name}: max |ours − PEFT| = {max_err}");
            changed += usize::from(theirs != base_values);
        }
        let adapter_info = tuned.adapter().expect("adapter info");
        assert_eq!(
            changed,
            adapter_info.summary().modules.len(),
            "{adapter}: every target changed"
        );
    }
}

/// A rank-r update shows ≤ r significant singular values exactly on the targets, and zero change elsewhere.
#[test]
fn lora_rank_is_seen_exactly_on_the_target_tensors() {
    for (adapter, golden_file) in LLAMA_ADAPTERS {
        let (report, stdout) = compare("tiny-llama/base", adapter);
        let g = golden(golden_file);
        let targets = g["header"]["ground_truth"]["targets"].as_object().expect("targets");
        for (name, t) in by_name(&report) {
            match targets.get(name) {
                Some(target) => {
                    let r = target["r"].as_u64().expect("r") as usize;
                    let s = t
                        .spectrum
                        .as_ref()
                        .unwrap_or_else(|| panic!("{name}: target without spectrum"));
                    assert!(
                        s.effective_rank >= 1 && s.effective_rank <= r,
                        "{name}: rank {} > r {r}",
                        s.effective_rank
                    );
                    assert!(
                        s.stable_rank <= r as f64 + 1e-9,
                        "{name}: stable rank {} > {r}",
                        s.stable_rank
                    );
                    let sigma1 = s.singular_values[0];
                    assert!(
                        s.singular_values[r..].iter().all(|&v| v < 1e-4 * sigma1),
                        "{name}: {:?}",
                        s.singular_values
                    );
                }
                None => {
                    assert_eq!(
                        (t.num_changed, t.delta_norm),
                        (0, 0.0),
                        "{name} changed but is not a target"
                    );
                    assert!(t.spectrum.is_none(), "{name}");
                }
            }
        }
        assert!(stdout.contains("LoRA: r=4"), "{stdout}");
    }
}

#[test]
fn full_finetune_changed_layer_tops_the_table_and_others_are_exactly_zero() {
    let (report, stdout) = compare("tiny-llama/base", "tiny-llama/full-ft");
    let g = golden("weights-full-ft.json");
    let prefixes: Vec<&str> = g["header"]["ground_truth"]["changed_prefixes"]
        .as_array()
        .expect("changed_prefixes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (name, t) in by_name(&report) {
        let planted = prefixes.iter().any(|p| name.starts_with(p));
        assert_eq!(t.num_changed > 0, planted, "{name}");
        if !planted {
            assert_eq!(
                (t.delta_norm, t.max_abs_delta, t.relative),
                (0.0, 0.0, Some(0.0)),
                "{name}"
            );
        }
    }
    let weights = report.weights.as_ref().expect("weights");
    let top = weights
        .layers
        .iter()
        .max_by(|a, b| a.stats.relative.total_cmp(&b.stats.relative))
        .expect("layers");
    assert_eq!(top.layer, 2);
    // The table's first data row under the layer heading is layer 2, and the tensor list starts in layer 2.
    let after = stdout.split("layers by relative change").nth(1).expect("layer table");
    let first_row = after.lines().nth(2).expect("first layer row");
    assert_eq!(first_row.split_whitespace().next(), Some("2"), "{stdout}");
    let tensors = stdout.split("tensors by relative change").nth(1).expect("tensor table");
    assert!(
        tensors
            .lines()
            .nth(2)
            .is_some_and(|l| l.trim_start().starts_with("layers.2.")),
        "{stdout}"
    );
}

/// The roll-ups are sums of squares over the right tensors: checked against numpy's per-tensor norms.
#[test]
fn rollups_and_totals_add_up_to_the_golden_tensor_norms() {
    let (report, _) = compare("tiny-llama/base", "tiny-llama/full-ft");
    let g = golden("weights-full-ft.json");
    let tensors = g["tensors"].as_object().expect("tensors");
    let norm_of = |pick: &dyn Fn(&str) -> bool, key: &str| {
        tensors
            .iter()
            .filter(|(n, _)| pick(n))
            .map(|(_, t)| t[key].as_f64().unwrap().powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let w = report.weights.as_ref().expect("weights");
    for layer in &w.layers {
        let prefix = format!("model.layers.{}.", layer.layer);
        let in_layer = |n: &str| n.starts_with(&prefix);
        assert!(
            close(layer.stats.delta_norm, norm_of(&in_layer, "delta_norm"), 1e-9, 1e-12),
            "layer {}",
            layer.layer
        );
        assert!(
            close(layer.stats.base_norm, norm_of(&in_layer, "base_norm"), 1e-9, 1e-12),
            "layer {}",
            layer.layer
        );
        assert_eq!(layer.stats.num_tensors, tensors.keys().filter(|n| in_layer(n)).count());
    }
    let mlp = w
        .components
        .iter()
        .find(|c| c.component == Component::Mlp)
        .expect("mlp roll-up");
    assert!(close(
        mlp.stats.delta_norm,
        norm_of(&|n: &str| n.contains(".mlp."), "delta_norm"),
        1e-9,
        1e-12
    ));
    assert!(close(
        w.totals.delta_norm,
        norm_of(&|_: &str| true, "delta_norm"),
        1e-9,
        1e-12
    ));
    let layer2_params: u64 = report
        .weights
        .iter()
        .flat_map(|w| &w.tensors)
        .filter(|t| t.layer == Some(2))
        .map(|t| t.num_elements)
        .sum();
    assert_eq!(
        w.totals.num_changed_parameters, layer2_params,
        "every entry of layer 2 moved, nothing else"
    );
}

#[test]
fn sharded_copy_pairs_everything_and_changes_nothing() {
    let (report, _) = compare("tiny-llama/base", "tiny-llama/sharded");
    let tuned = &report.inputs.tuned;
    assert!(tuned.files.len() >= 3, "{:?}", tuned.files);
    let w = report.weights.as_ref().expect("weights");
    assert_eq!(
        (w.totals.num_tensors, w.totals.num_changed),
        (report.inputs.base.num_tensors, 0)
    );
    assert!(w.unmatched_base.is_empty() && w.unmatched_tuned.is_empty());
}

#[test]
fn bf16_copy_is_diffed_as_f32_with_rounding_sized_changes() {
    let (report, _) = compare("tiny-llama/base", "tiny-llama/base-bf16");
    let w = report.weights.as_ref().expect("weights");
    assert_eq!(w.dtype_mismatches.len(), w.tensors.len());
    for t in &w.tensors {
        // Round-to-nearest bf16 keeps 8 significant bits: relative error ≤ 2⁻⁹ per entry.
        assert!(t.relative.unwrap_or(0.0) <= 1.0 / 512.0, "{}: {:?}", t.name, t.relative);
        assert!(t.max_abs_delta > 0.0, "{}", t.name);
    }
}

#[test]
fn same_inputs_and_seed_give_the_same_report_apart_from_timings() {
    let (mut a, _) = compare("tiny-llama/base", "tiny-llama/lora");
    let (mut b, _) = compare("tiny-llama/base", "tiny-llama/lora");
    a.timings_ms.clear();
    b.timings_ms.clear();
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
}

#[test]
fn default_methods_run_on_the_fixtures_and_leave_the_crosscoder_out() {
    let sandbox = Sandbox::new();
    let base = fixture("tiny-llama/base");
    let tuned = fixture("tiny-llama/full-ft");
    let run = sandbox.mdiff(&[OsStr::new("compare"), base.as_os_str(), tuned.as_os_str()]);
    run.assert_ok();
    assert_eq!(
        run.stderr, "",
        "stderr is not a terminal here: no progress bar, no noise"
    );
    #[cfg(unix)]
    {
        // The report gets the umask's mode like any file the user creates, not tempfile's private 0600.
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(sandbox.join("plain"), b"").unwrap();
        let mode = |name: &str| std::fs::metadata(sandbox.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("mdiff-report.json"), mode("plain"));
    }
    let report = read_report(&sandbox.join("mdiff-report.json")).expect("default report path");
    let sections: Vec<&str> = report.skipped.iter().map(|s| s.section.as_str()).collect();
    // The fixtures ship config.json and tokenizer.json, so every default method runs. Swap and patching (which
    // rerun the models per part) and the crosscoder (which trains a model) run only when named (issue #15).
    assert!(sections.is_empty(), "{sections:?}");
    assert!(report.crosscoder.is_none(), "the crosscoder is not a default method");
    assert!(report.behaviour.is_some(), "behaviour section");
    assert!(report.lens.is_some(), "lens section");
    assert!(
        report.swap.is_none() && report.patching.is_none(),
        "swap and patching are not default methods"
    );
    assert!(run.stdout.contains("logit lens"), "{}", run.stdout);
    assert!(run.stdout.contains("behaviour"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("not run by default: swap, patch, crosscoder (ask for them by name"),
        "{}",
        run.stdout
    );
}

#[test]
fn report_schema_in_docs_is_up_to_date() {
    let path = mdiff_tests::repo_root().join("docs/report.schema.json");
    let mut current = serde_json::to_string_pretty(&mdiff_core::report::json_schema()).unwrap();
    current.push('\n');
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/report.schema.json is stale; run `UPDATE_SCHEMA=1 cargo test -p mdiff-tests`"
    );
}

#[test]
fn inspect_lists_tensors_dtypes_and_architecture() {
    let sandbox = Sandbox::new();
    let run = sandbox.mdiff(&[OsStr::new("inspect"), fixture("tiny-llama/sharded").as_os_str()]);
    run.assert_ok();
    assert!(run.stdout.contains("LlamaForCausalLM"), "{}", run.stdout);
    assert!(
        run.stdout.contains("model.layers.3.mlp.down_proj.weight"),
        "{}",
        run.stdout
    );
    let json = sandbox.mdiff(&[
        OsStr::new("inspect"),
        fixture("tiny-llama/lora").as_os_str(),
        OsStr::new("--json"),
    ]);
    json.assert_ok();
    let v: Value = serde_json::from_str(&json.stdout).expect("inspect --json");
    assert_eq!(v["adapter_config"]["r"], 4);
    assert!(v["tensors"].as_array().is_some_and(|t| t.len() == 16));
}
