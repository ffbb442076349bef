//! The families of issue #16 (Gemma 2, Gemma 3, Qwen3, Phi-3, OLMo-2) beyond the logits and KL goldens of
//! `runtime.rs`: hook values against transformers (TransformerLens' definitions, after the post-norms), the lens
//! through the final norm and softcap, guards that the goldens would catch a missing numerical detail, and every
//! method end to end with parts named in each family's own tensor names.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, Tensor};
use mdiff_core::checkpoint::Checkpoint;
use mdiff_core::model::{HookPoint, Hooks, Model, ModelConfig, NormStyle};
use mdiff_tests::{Sandbox, every_hook, fixture, golden_logits, ids_tensor, max_abs};
use serde_json::Value;

const FAMILIES: [&str; 5] = ["gemma2", "gemma3", "qwen3", "phi3", "olmo2"];

/// The tensors `fixtures/families.py` perturbed in every tuned twin (its golden header lists them).
const CHANGED: [&str; 2] = ["layers.1.mlp.down_proj", "layers.2.self_attn.o_proj"];

fn config(family: &str) -> (Checkpoint, ModelConfig) {
    let ck = Checkpoint::open(&fixture(&format!("tiny-{family}/base"))).unwrap();
    let config = ModelConfig::load(ck.config_path().unwrap()).unwrap();
    (ck, config)
}

fn load_with(ck: &Checkpoint, config: &ModelConfig) -> Model {
    Model::load(ck.source(), config, &Device::Cpu, DType::F32, "base").unwrap()
}

fn safetensors(rel: &str) -> BTreeMap<String, Tensor> {
    candle_core::safetensors::load(fixture(rel), &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect()
}

fn ids_of(tensors: &BTreeMap<String, Tensor>, prompt: &str) -> Vec<u32> {
    let ids: Vec<i64> = tensors[&format!("{prompt}.ids")].to_vec1().unwrap();
    ids.into_iter().map(|id| u32::try_from(id).unwrap()).collect()
}

/// The longest golden prompt of a base model: (ids, logits `[t, vocab]`).
fn longest_golden(family: &str) -> (Vec<u32>, Tensor) {
    let golden = safetensors(&format!("golden/logits/tiny-{family}-base.safetensors"));
    let prompt = golden
        .keys()
        .filter_map(|k| k.strip_suffix(".ids"))
        .max_by_key(|p| golden[&format!("{p}.ids")].dim(0).unwrap())
        .unwrap()
        .to_string();
    (ids_of(&golden, &prompt), golden[&format!("{prompt}.logits")].clone())
}

fn logits(model: &Model, ids: &[u32]) -> Tensor {
    let normalized = model.forward(&ids_tensor(ids), &Hooks::new()).unwrap().normalized;
    model.unembed(&normalized.squeeze(0).unwrap()).unwrap()
}

#[test]
fn hook_values_match_transformers() {
    for family in FAMILIES {
        let (ck, config) = config(family);
        let model = load_with(&ck, &config);
        let golden = safetensors(&format!("golden/hooks/tiny-{family}-base.safetensors"));
        let prompts: BTreeSet<&str> = golden.keys().filter_map(|k| k.strip_suffix(".ids")).collect();
        assert!(
            prompts.len() >= 2,
            "{family}: hook goldens for {} prompts",
            prompts.len()
        );
        let points = every_hook(model.num_layers());
        let hooks = points.iter().fold(Hooks::new(), |h, &p| h.capture(p));
        let mut checked = 0;
        for prompt in &prompts {
            let ids = ids_of(&golden, prompt);
            let captured = model.forward(&ids_tensor(&ids), &hooks).unwrap().captured;
            for &point in &points {
                let want = &golden[&format!("{prompt}.{point}")];
                let got = captured.get(point).unwrap().squeeze(0).unwrap();
                let scale = want
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    .max(1.0);
                let diff = max_abs(&got, want);
                assert!(
                    diff <= 1e-4 * scale,
                    "{family} {prompt} {point}: max |Δ| = {diff:e} (scale {scale})"
                );
                checked += 1;
            }
        }
        // Every golden tensor but the ids was compared.
        assert_eq!(checked, golden.len() - prompts.len(), "{family}");
    }
}

#[test]
fn the_lens_reads_through_the_final_norm_and_the_final_softcap() {
    // Gemma 2 caps logits at 8 in the fixture: every lens point, at every layer, must be capped too, and the lens
    // of the last residual stream is the model's output.
    let (ck, config) = config("gemma2");
    let cap = config.block.final_softcap.unwrap();
    let model = load_with(&ck, &config);
    let (ids, want) = longest_golden("gemma2");
    let n = model.num_layers();
    let hooks = (0..n).fold(Hooks::new(), |h, l| h.capture(HookPoint::ResidPost(l)));
    let captured = model.forward(&ids_tensor(&ids), &hooks).unwrap().captured;
    for l in 0..n {
        let lens = model
            .lens(&captured.get(HookPoint::ResidPost(l)).unwrap().squeeze(0).unwrap())
            .unwrap();
        let largest: f32 = lens.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(largest < cap as f32, "layer {l}: |lens logit| {largest} ≥ cap {cap}");
        if l + 1 == n {
            let diff = max_abs(&lens, &want);
            assert!(diff <= 1e-4, "the last lens point is the output: {diff:e}");
        }
    }
}

#[test]
fn the_goldens_would_catch_a_missing_detail() {
    // Each numerical detail, turned off, moves the logits of the longest golden prompt well past the 1e-4 the
    // golden test allows: that test cannot pass with a detail missing. The longest prompt outgrows the window.
    type Edit = fn(&mut ModelConfig);
    let details: [(&str, &str, Edit); 11] = [
        ("gemma2", "final softcap", |c| c.block.final_softcap = None),
        ("gemma2", "attention softcap", |c| c.block.attn_softcap = None),
        ("gemma2", "sliding window", |c| c.block.sliding_window = None),
        ("gemma2", "embedding scale", |c| c.block.embed_scale = false),
        ("gemma2", "query_pre_attn_scalar", |c| {
            c.block.query_pre_attn_scalar = None
        }),
        ("gemma2", "(1 + w) norms", |c| c.norm = NormStyle::F32Weight),
        ("gemma3", "local RoPE base", |c| c.local_rope = None),
        ("gemma3", "sliding window", |c| c.block.sliding_window = None),
        ("qwen3", "q/k norms", |c| c.block.qk_norm = None),
        ("phi3", "sliding window", |c| c.block.sliding_window = None),
        ("olmo2", "q/k norms", |c| c.block.qk_norm = None),
    ];
    for (family, detail, edit) in details {
        let (ck, mut config) = config(family);
        let (ids, want) = longest_golden(family);
        if let Some(window) = config.block.sliding_window {
            assert!(
                ids.len() > window,
                "{family}: the longest golden prompt must outgrow the window"
            );
        }
        let faithful = max_abs(&logits(&load_with(&ck, &config), &ids), &want);
        edit(&mut config);
        let without = max_abs(&logits(&load_with(&ck, &config), &ids), &want);
        assert!(
            faithful <= 1e-4 && without > 1e-2,
            "{family} without its {detail}: {without:e} (with it: {faithful:e})"
        );
    }
}

/// Block module names of `layer` in a checkpoint's safetensors header (`self_attn.q_proj` for
/// `model.layers.1.self_attn.q_proj.weight`).
fn block_modules(family: &str, variant: &str, layer: usize) -> BTreeSet<String> {
    let ck = Checkpoint::open(&fixture(&format!("tiny-{family}/{variant}"))).unwrap();
    let prefix = format!("model.layers.{layer}.");
    ck.source()
        .tensors()
        .keys()
        .filter_map(|name| name.strip_prefix(&prefix)?.strip_suffix(".weight").map(str::to_string))
        .collect()
}

#[test]
fn every_method_runs_on_every_family_and_names_parts_as_its_checkpoint_does() {
    let sb = Sandbox::new();
    let prompts = fixture("prompts/golden.txt");
    for family in FAMILIES {
        let (base, tuned) = (
            fixture(&format!("tiny-{family}/base")),
            fixture(&format!("tiny-{family}/tuned")),
        );
        let report = sb.compare_report(
            &base,
            &tuned,
            &[
                "--methods".as_ref(),
                "weights,kl,swap,patch,lens,crosscoder".as_ref(),
                "--swap-granularity".as_ref(),
                "tensor".as_ref(),
                "--crosscoder-steps".as_ref(),
                "30".as_ref(),
                "--prompts".as_ref(),
                prompts.as_os_str(),
            ],
            &format!("{family}.json"),
        );
        for section in ["weights", "behaviour", "swap", "patching", "lens", "crosscoder"] {
            assert!(report[section].is_object(), "{family}: no {section} section");
        }
        assert!(
            report["skipped"].as_array().is_none_or(Vec::is_empty),
            "{family}: {}",
            report["skipped"]
        );
        let rows = report["swap"]["rows"].as_array().unwrap();
        // Planted truth: exactly the two perturbed tensors carry the divergence.
        let carrying: BTreeSet<&str> = rows
            .iter()
            .filter(|r| r["removed"].as_f64().unwrap() > 1e-6)
            .map(|r| r["part"].as_str().unwrap())
            .collect();
        assert_eq!(carrying, CHANGED.into_iter().collect(), "{family}");
        // Each layer's parts are the checkpoint's own module names.
        for layer in 0..4 {
            let named: BTreeSet<String> = rows
                .iter()
                .filter_map(|r| r["part"].as_str()?.strip_prefix(&format!("layers.{layer}.")))
                .map(str::to_string)
                .collect();
            assert_eq!(named, block_modules(family, "base", layer), "{family} layer {layer}");
        }
        let lens = &report["lens"];
        assert!(lens.is_object(), "{family}: lens");
    }
}

#[test]
fn longrope_prompts_are_batched_by_their_own_length() {
    // Phi-3's longrope picks its factors by the sequence's length (16 in the fixture), and a padded batch decides
    // by its padded length: `compare` must never batch a short prompt with a long one. The prompts fit one batch
    // by size, so a mixed batch would give the 8-token prompt the long factors. Expected values: the KL between
    // transformers' own single-prompt logits of the longrope model and of the plain-RoPE model (same weights).
    let sb = Sandbox::new();
    let (base, tuned) = (fixture("tiny-phi3/base-longrope"), fixture("tiny-phi3/base"));
    let prompts = fixture("prompts/golden.txt");
    let report = sb.compare_report(
        &base,
        &tuned,
        &[
            "--methods".as_ref(),
            "kl".as_ref(),
            "--prompts".as_ref(),
            prompts.as_os_str(),
        ],
        "longrope.json",
    );
    let got = report["behaviour"]["prompts"].as_array().unwrap();
    let (long, plain) = (
        golden_logits("tiny-phi3-base-longrope"),
        golden_logits("tiny-phi3-base"),
    );
    let lengths: Vec<usize> = long.iter().map(|(ids, _)| ids.len()).collect();
    assert!(
        lengths.iter().any(|&l| l <= 16) && lengths.iter().any(|&l| l > 16),
        "{lengths:?}"
    );
    assert_eq!(got.len(), long.len());
    for (i, ((ids, b), (_, t))) in long.iter().zip(&plain).enumerate() {
        let kl = got[i]["kl_tuned_base"].as_array().unwrap();
        for (pos, (rb, rt)) in b.iter().zip(t).enumerate() {
            let want = mdiff_core::stats::compare_rows(rb, rt, ids.get(pos + 1).copied())
                .unwrap()
                .kl_tuned_base;
            let g = kl[pos].as_f64().unwrap();
            assert!(
                (g - want).abs() <= 1e-5 * want.max(1.0),
                "prompt {i} pos {pos}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn a_setting_the_runtime_lacks_gives_the_weight_diff_and_skips_the_rest() {
    // A RoPE type without an implementation makes the pair an unsupported architecture, like an unknown one:
    // the weights are still diffed, the model-running methods are skipped, exit 0.
    let sb = Sandbox::new();
    let (base, tuned) = (
        sb.copy_fixture("tiny-qwen3/base", "base"),
        sb.copy_fixture("tiny-qwen3/tuned", "tuned"),
    );
    for dir in [&base, &tuned] {
        mdiff_tests::edit_json(&dir.join("config.json"), |c| {
            c["rope_parameters"]["rope_type"] = "yarn".into();
            c["rope_parameters"]["factor"] = 4.0.into();
        });
    }
    let out = sb.join("report.json");
    let run = sb.mdiff(&[
        "compare".as_ref(),
        base.as_os_str(),
        tuned.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    run.assert_ok();
    assert_eq!(run.warnings().len(), 1, "{:?}", run.warnings());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(report["weights"].is_object());
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "kl and lens: {skipped:?}");
    for s in skipped {
        assert!(
            s["reason"]
                .as_str()
                .unwrap()
                .contains("Qwen3ForCausalLM with rope type \"yarn\""),
            "{s}"
        );
    }
}

#[test]
fn a_multimodal_gemma3_compares_with_a_text_only_fine_tune_of_its_language_model() {
    // gemma-3-*-it ship as Gemma3ForConditionalGeneration; a fine-tune may be saved as Gemma3ForCausalLM. The
    // weight diff pairs the language tower's tensors across the two layouts (the vision tower is only in the
    // base), and the models run: the per-token KL is the text pair's own (transformers' golden).
    let sb = Sandbox::new();
    let prompts = fixture("prompts/golden.txt");
    let report = sb.compare_report(
        &fixture("tiny-gemma3/base-multimodal"),
        &fixture("tiny-gemma3/tuned"),
        &[
            "--methods".as_ref(),
            "weights,kl".as_ref(),
            "--prompts".as_ref(),
            prompts.as_os_str(),
        ],
        "multimodal.json",
    );
    let weights = &report["weights"];
    let text_tensors = block_modules("gemma3", "tuned", 0).len() * 4 + 2; // blocks, embedding, final norm
    assert_eq!(
        weights["totals"]["num_tensors"].as_u64().unwrap() as usize,
        text_tensors
    );
    let changed: BTreeSet<&str> = weights["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["num_changed"].as_u64().unwrap() > 0)
        .map(|t| t["tuned_name"].as_str().unwrap())
        .collect();
    let want: BTreeSet<String> = CHANGED.iter().map(|part| format!("model.{part}.weight")).collect();
    assert_eq!(changed, want.iter().map(String::as_str).collect());
    let only_base = weights["unmatched_base"].as_array().unwrap();
    assert!(!only_base.is_empty());
    assert!(
        only_base
            .iter()
            .all(|n| !n.as_str().unwrap().starts_with("language_model.")),
        "{only_base:?}"
    );
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("golden/behaviour-tiny-gemma3-tuned.json")).unwrap())
            .unwrap();
    let got = report["behaviour"]["prompts"].as_array().unwrap();
    for (i, (g, w)) in got.iter().zip(golden["prompts"].as_array().unwrap()).enumerate() {
        for (pos, (g, w)) in g["kl_tuned_base"]
            .as_array()
            .unwrap()
            .iter()
            .zip(w["kl_tuned_base"].as_array().unwrap())
            .enumerate()
        {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-5 * w.max(1.0), "prompt {i} pos {pos}: {g} vs {w}");
        }
    }
}
