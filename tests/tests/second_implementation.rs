//! An independent second implementation: candle-transformers runs each family it implements on the same
//! fixture weights, and its float32 logits must agree with our hooked runtime's and with transformers' golden
//! logits, family by family.
//!
//! candle-transformers' causal-LM models return the last position's logits only, so position k is the last
//! position of a fresh pass over the prompt's first k + 1 ids (the KV cache cleared before each pass).
//! Where candle-transformers computes something differently from transformers, the comparison is limited
//! to what the difference cannot reach, or the difference is folded exactly into the weights; each family's
//! spec below says which and why.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{gemma2, gemma3, llama, olmo2, phi3, qwen2, qwen3};
use mdiff_core::checkpoint::Checkpoint;
use mdiff_core::model::{Hooks, Model, ModelConfig};
use mdiff_tests::{fixture, golden_logits, ids_tensor, max_abs_diff};
use serde_json::{Value, json};

/// Both sides are float32 implementations of the same arithmetic summed in different orders, like ours and
/// transformers: the bound our runtime meets against transformers (tests/tests/runtime.rs). Measured: at most
/// 1.6e-5 (Llama full-ft) on logits of order 10, while each difference worked around below moves them by
/// 0.8 to 12.
const LOGITS_TOLERANCE: f32 = 1e-4;

/// Last-position logits `[vocab]` of one fresh pass over `ids`.
type LastLogits = Box<dyn FnMut(&[u32]) -> Vec<f32>>;

/// How one family is compared.
struct Family {
    /// (fixture directory, golden logits file stem) of each checkpoint compared, each with its own config.json.
    checkpoints: &'static [(&'static str, &'static str)],
    /// Builds candle-transformers' model from our config.json and the (possibly folded) weights.
    build: fn(&Value, VarBuilder<'static>) -> LastLogits,
    /// Exact weight rewrites that give candle-transformers transformers' semantics (see `fold_query_scale`).
    fold: fn(&Value, &mut HashMap<String, Tensor>),
    /// Config edits for our runtime where candle-transformers lacks a feature that no weight fold can express:
    /// both then compute the same function, compared with each other at every compared position, and with the
    /// golden only where the feature cannot matter (`golden_positions`).
    ours_config: fn(&mut Value),
    /// Positions (from 0) at which candle-transformers' result can be compared with the golden; `None`: all the
    /// positions compared with ours.
    golden_positions: Option<usize>,
}

#[test]
fn llama_agrees() {
    check(&Family {
        checkpoints: &[
            ("tiny-llama/base", "tiny-llama-base"),
            ("tiny-llama/full-ft", "tiny-llama-full-ft"),
            ("tiny-llama/base-llama3", "tiny-llama-base-llama3"),
        ],
        build: build_llama,
        fold: no_fold,
        ours_config: same_config,
        golden_positions: None,
    });
}

#[test]
fn qwen2_agrees() {
    check(&Family {
        checkpoints: &[
            ("tiny-qwen2/base", "tiny-qwen2-base"),
            ("tiny-qwen2/full-ft", "tiny-qwen2-full-ft"),
        ],
        build: build_qwen2,
        fold: no_fold,
        ours_config: same_config,
        golden_positions: None,
    });
}

#[test]
fn qwen3_agrees() {
    check(&Family {
        checkpoints: &[
            ("tiny-qwen3/base", "tiny-qwen3-base"),
            ("tiny-qwen3/tuned", "tiny-qwen3-tuned"),
        ],
        build: build_qwen3,
        fold: no_fold,
        ours_config: same_config,
        golden_positions: None,
    });
}

#[test]
fn olmo2_agrees() {
    check(&Family {
        checkpoints: &[
            ("tiny-olmo2/base", "tiny-olmo2-base"),
            ("tiny-olmo2/tuned", "tiny-olmo2-tuned"),
        ],
        build: build_olmo2,
        fold: no_fold,
        ours_config: same_config,
        golden_positions: None,
    });
}

/// candle-transformers' Phi-3 has no sliding window (transformers applies Phi-3's to every layer): compared
/// below the window only (`compared_positions`).
#[test]
fn phi3_agrees() {
    check(&Family {
        checkpoints: &[
            ("tiny-phi3/base", "tiny-phi3-base"),
            ("tiny-phi3/tuned", "tiny-phi3-tuned"),
        ],
        build: build_phi3,
        fold: no_fold,
        ours_config: same_config,
        golden_positions: None,
    });
}

/// candle-transformers' Gemma 2 scales attention scores by head_dim^-½ and ignores `query_pre_attn_scalar`
/// (folded into `q_proj`), and its sliding window masks every layer and lets a query see w + 1 keys where
/// transformers lets it see w on alternate layers (compared below the window only).
#[test]
fn gemma2_agrees() {
    check(&Family {
        checkpoints: &[
            ("tiny-gemma2/base", "tiny-gemma2-base"),
            ("tiny-gemma2/tuned", "tiny-gemma2-tuned"),
        ],
        build: build_gemma2,
        fold: fold_query_scale,
        ours_config: same_config,
        golden_positions: None,
    });
}

/// candle-transformers' Gemma 3 ignores `query_pre_attn_scalar` (folded into `q_norm`), has the same w + 1
/// window as Gemma 2 (compared below the window only), and no RoPE scaling: the global layers' linear
/// factor 8 is dropped. No fold expresses that, so ours runs without it too, and the golden is compared at
/// position 0 only, where every rotation is the identity.
#[test]
fn gemma3_agrees() {
    check(&Family {
        checkpoints: &[
            ("tiny-gemma3/base", "tiny-gemma3-base"),
            ("tiny-gemma3/tuned", "tiny-gemma3-tuned"),
        ],
        build: build_gemma3,
        fold: fold_query_scale,
        ours_config: drop_global_rope_scaling,
        golden_positions: Some(1),
    });
}

/// Guards `gemma3_agrees`: the linear factor it drops changes the logits below the window, so the
/// comparison at position 0 only is needed, and ours did run without the factor there.
#[test]
fn gemma3_rope_scaling_matters_below_the_window() {
    let config = read_config("tiny-gemma3/base");
    let mut edited = config.clone();
    drop_global_rope_scaling(&mut edited);
    let scaled = ours("tiny-gemma3/base", &config);
    let unscaled = ours("tiny-gemma3/base", &edited);
    let limit = compared_positions(&config);
    let (ids, _) = golden_logits("tiny-gemma3-base").into_iter().last().unwrap();
    let a = first_rows(&run_ours(&scaled, &ids), limit);
    let b = first_rows(&run_ours(&unscaled, &ids), limit);
    assert!(
        max_abs_diff(&a, &b) > 1e-3,
        "dropping the linear factor did not change the logits"
    );
}

fn check(family: &Family) {
    for (dir, golden) in family.checkpoints {
        check_checkpoint(family, dir, golden);
    }
}

fn check_checkpoint(family: &Family, dir: &str, golden_stem: &str) {
    let config = read_config(dir);
    let mut ours_config = config.clone();
    (family.ours_config)(&mut ours_config);
    let model = ours(dir, &ours_config);

    let mut tensors = candle_core::safetensors::load(fixture(dir).join("model.safetensors"), &Device::Cpu).unwrap();
    (family.fold)(&config, &mut tensors);
    let mut second = (family.build)(&config, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu));

    let limit = compared_positions(&config);
    let golden_limit = family.golden_positions.map_or(limit, |g| g.min(limit));
    let (mut vs_ours, mut vs_golden, mut positions, mut golden_positions) = (0f32, 0f32, 0, 0);
    let prompts = golden_logits(golden_stem);
    assert!(prompts.len() >= 4, "{golden_stem}: {} golden prompts", prompts.len());
    for (i, (ids, golden)) in prompts.iter().enumerate() {
        let n = ids.len().min(limit);
        let theirs: Vec<Vec<f32>> = (1..=n).map(|k| second(&ids[..k])).collect();
        let d_ours = max_abs_diff(&theirs, &first_rows(&run_ours(&model, ids), n));
        let g = n.min(golden_limit);
        let d_golden = max_abs_diff(&theirs[..g], &golden[..g]);
        assert!(
            d_ours <= LOGITS_TOLERANCE,
            "{dir} prompt {i}: candle-transformers vs ours, max |Δlogit| = {d_ours:e} over {n} positions"
        );
        assert!(
            d_golden <= LOGITS_TOLERANCE,
            "{dir} prompt {i}: candle-transformers vs transformers, max |Δlogit| = {d_golden:e} over {g} positions"
        );
        (vs_ours, vs_golden) = (vs_ours.max(d_ours), vs_golden.max(d_golden));
        (positions, golden_positions) = (positions + n, golden_positions + g);
    }
    // The figures docs/ARCHITECTURE.md quotes; `--nocapture` shows them.
    eprintln!(
        "{dir}: max |Δlogit| vs ours {vs_ours:e} over {positions} positions, vs golden {vs_golden:e} over {golden_positions}"
    );
}

/// Positions compared in every prompt: below a configured sliding window, where a query sees its whole
/// prefix under any window convention or none.
fn compared_positions(config: &Value) -> usize {
    config["sliding_window"]
        .as_u64()
        .map_or(usize::MAX, |w| usize::try_from(w).unwrap())
}

fn read_config(dir: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(dir).join("config.json")).unwrap()).unwrap()
}

/// Our runtime on `dir`'s weights under `config` (written to a temporary config.json: it is read from a file).
fn ours(dir: &str, config: &Value) -> Model {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    std::fs::write(&path, serde_json::to_string(config).unwrap()).unwrap();
    let config = ModelConfig::load(&path).unwrap();
    let ck = Checkpoint::open(&fixture(dir)).unwrap();
    Model::load(ck.source(), &config, &Device::Cpu, DType::F32, dir).unwrap()
}

fn run_ours(model: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let t = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
    let normalized = model.forward(&t, &Hooks::new()).unwrap().normalized;
    model
        .unembed(&normalized.squeeze(0).unwrap())
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn first_rows(rows: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    rows[..n.min(rows.len())].to_vec()
}

fn no_fold(_: &Value, _: &mut HashMap<String, Tensor>) {}

fn same_config(_: &mut Value) {}

/// candle-transformers' Gemma models scale scores by head_dim^-½; transformers by query_pre_attn_scalar^-½.
/// Scaling every query by c = √(head_dim / query_pre_attn_scalar) makes up the difference exactly: RoPE is
/// linear and the score (and its softcap) sees q·k·c. Gemma 2 scales `q_proj`; Gemma 3 normalizes q after
/// `q_proj`, so its `q_norm` gain (1 + w) becomes c(1 + w).
fn fold_query_scale(config: &Value, tensors: &mut HashMap<String, Tensor>) {
    let c = (config["head_dim"].as_f64().unwrap() / config["query_pre_attn_scalar"].as_f64().unwrap()).sqrt();
    let has_q_norm = tensors.keys().any(|k| k.ends_with("self_attn.q_norm.weight"));
    let suffix = if has_q_norm {
        "self_attn.q_norm.weight"
    } else {
        "self_attn.q_proj.weight"
    };
    let mut folded = 0;
    for (_, t) in tensors.iter_mut().filter(|(k, _)| k.ends_with(suffix)) {
        *t = if has_q_norm {
            (t.affine(c, c).unwrap() - 1.0).unwrap()
        } else {
            t.affine(c, 0.0).unwrap()
        };
        folded += 1;
    }
    assert_eq!(folded, layers(config), "one query per layer folded");
}

/// Gemma 3's global layers without their RoPE scaling (what candle-transformers computes).
fn drop_global_rope_scaling(config: &mut Value) {
    let full = &mut config["rope_parameters"]["full_attention"];
    assert_eq!(full["rope_type"], "linear", "the fixture scales its global RoPE");
    *full = json!({"rope_type": "default", "rope_theta": full["rope_theta"].clone()});
}

fn layers(config: &Value) -> usize {
    usize::try_from(config["num_hidden_layers"].as_u64().unwrap()).unwrap()
}

/// candle-transformers' configs predate transformers 5's `rope_parameters`: they read a top-level `rope_theta`.
fn with_rope_theta(config: &Value) -> Value {
    let mut c = config.clone();
    c["rope_theta"] = config["rope_parameters"]["rope_theta"].clone();
    assert!(c["rope_theta"].is_number(), "rope_theta");
    c
}

fn build_llama(config: &Value, vb: VarBuilder<'static>) -> LastLogits {
    let mut c = with_rope_theta(config);
    // Llama 3.1 RoPE scaling: candle-transformers reads the same fields from `rope_scaling`.
    if config["rope_parameters"]["rope_type"] == "llama3" {
        c["rope_scaling"] = config["rope_parameters"].clone();
    }
    let cfg: llama::LlamaConfig = serde_json::from_value(c).unwrap();
    let cfg = cfg.into_config(false);
    let model = llama::Llama::load(vb, &cfg).unwrap();
    Box::new(move |ids| {
        // Without a KV cache each pass stands alone; the cache object holds RoPE tables and masks.
        let mut cache = llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu).unwrap();
        last_row(model.forward(&ids_tensor(ids), 0, &mut cache).unwrap())
    })
}

fn build_qwen2(config: &Value, vb: VarBuilder<'static>) -> LastLogits {
    let mut c = with_rope_theta(config);
    // A window no prompt reaches: candle-transformers' Qwen2 masks with it whatever `use_sliding_window` says.
    assert_eq!(c["use_sliding_window"], false);
    c["sliding_window"] = c["max_position_embeddings"].clone();
    let mut model = qwen2::ModelForCausalLM::new(&serde_json::from_value(c).unwrap(), vb).unwrap();
    Box::new(move |ids| {
        model.clear_kv_cache();
        last_row(model.forward(&ids_tensor(ids), 0).unwrap())
    })
}

fn build_qwen3(config: &Value, vb: VarBuilder<'static>) -> LastLogits {
    let cfg: qwen3::Config = serde_json::from_value(with_rope_theta(config)).unwrap();
    let mut model = qwen3::ModelForCausalLM::new(&cfg, vb).unwrap();
    Box::new(move |ids| {
        model.clear_kv_cache();
        last_row(model.forward(&ids_tensor(ids), 0).unwrap())
    })
}

fn build_olmo2(config: &Value, vb: VarBuilder<'static>) -> LastLogits {
    let cfg: olmo2::Config = serde_json::from_value(with_rope_theta(config)).unwrap();
    let mut model = olmo2::Model::new(&cfg, vb).unwrap();
    Box::new(move |ids| {
        model.clear_kv_cache();
        last_row(model.forward(&ids_tensor(ids), 0).unwrap())
    })
}

fn build_phi3(config: &Value, vb: VarBuilder<'static>) -> LastLogits {
    let mut c = with_rope_theta(config);
    // transformers 5 keeps it in `rope_parameters`; the fixture rotates whole heads.
    c["partial_rotary_factor"] = config["rope_parameters"]["partial_rotary_factor"].clone();
    let cfg: phi3::Config = serde_json::from_value(c).unwrap();
    let mut model = phi3::Model::new(&cfg, vb).unwrap();
    Box::new(move |ids| {
        model.clear_kv_cache();
        last_row(model.forward(&ids_tensor(ids), 0).unwrap())
    })
}

fn build_gemma2(config: &Value, vb: VarBuilder<'static>) -> LastLogits {
    let cfg: gemma2::Config = serde_json::from_value(with_rope_theta(config)).unwrap();
    let mut model = gemma2::Model::new(false, &cfg, vb).unwrap();
    Box::new(move |ids| {
        model.clear_kv_cache();
        last_row(model.forward(&ids_tensor(ids), 0).unwrap())
    })
}

fn build_gemma3(config: &Value, vb: VarBuilder<'static>) -> LastLogits {
    let mut c = config.clone();
    let rope = &config["rope_parameters"];
    c["rope_theta"] = rope["full_attention"]["rope_theta"].clone();
    c["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"].clone();
    // candle-transformers makes layer i global when (i + 1) % pattern == 0; `layer_types` lists them.
    let types: Vec<&str> = config["layer_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let pattern = 1 + types.iter().position(|t| *t == "full_attention").unwrap();
    for (i, t) in types.iter().enumerate() {
        assert_eq!(
            *t == "full_attention",
            (i + 1) % pattern == 0,
            "layer_types as a pattern of {pattern}"
        );
    }
    c["sliding_window_pattern"] = json!(pattern);
    let cfg: gemma3::Config = serde_json::from_value(c).unwrap();
    let mut model = gemma3::Model::new(false, &cfg, vb).unwrap();
    Box::new(move |ids| {
        // Its KV cache cannot take a multi-token pass on the CPU (`slice_set` of the non-contiguous
        // transposed values fails), so the prefix goes in one token at a time, each at its position.
        model.clear_kv_cache();
        let mut last = Vec::new();
        for (pos, id) in ids.iter().enumerate() {
            last = last_row(model.forward(&ids_tensor(&[*id]), pos).unwrap());
        }
        last
    })
}

/// The logits of a `[1, 1, vocab]` or `[1, vocab]` last-position result.
fn last_row(logits: Tensor) -> Vec<f32> {
    logits.flatten_all().unwrap().to_vec1().unwrap()
}
