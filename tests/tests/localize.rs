//! Weight swap and activation patching: the fast paths (resumed passes, batched cells, skipped identical patches,
//! unembedding only the affected positions) against the naive method (one full forward per cell with a hook, a
//! full hybrid model per swap), on the LoRA pair, where every layer differs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "test code: a failed unwrap is a failed test"
)]

use candle_core::{DType, Device, Tensor};
use mdiff_core::analysis::{
    EncodedPrompt, Granularity, ModelPair, PairOptions, PairPlan, PatchOptions, PositionPrompts, SwapOptions, patch,
    swap,
};
use mdiff_core::checkpoint::Checkpoint;
use mdiff_core::model::{HookPoint, Hooks, Model, Part, Piece, Stage};
use mdiff_core::progress::NoProgress;
use mdiff_core::report::PatchDirection;
use mdiff_tests::fixture;

fn load(tuned: &str) -> (ModelPair, Vec<EncodedPrompt>) {
    mdiff_tests::load_golden_pair("tiny-llama/base", tuned)
}

/// Per position, log-softmax of a model's output on one prompt, in f64.
fn log_probs(model: &Model, normalized: &Tensor) -> Vec<Vec<f64>> {
    let logits: Vec<Vec<f32>> = model
        .unembed(&normalized.squeeze(0).unwrap())
        .unwrap()
        .to_vec2()
        .unwrap();
    logits
        .iter()
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
            row.iter().map(|&x| f64::from(x - max) - sum.ln()).collect()
        })
        .collect()
}

/// Σ over positions of KL(p‖q).
fn kl_sum(p: &[Vec<f64>], q: &[Vec<f64>]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(lp, lq)| lp.iter().zip(lq).map(|(a, b)| a.exp() * (a - b)).sum::<f64>())
        .sum()
}

fn ids(prompt: &EncodedPrompt) -> Tensor {
    Tensor::new(prompt.ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn close(fast: f64, naive: f64, what: &str) {
    assert!(
        (fast - naive).abs() <= 1e-6 * (1.0 + naive.abs()),
        "{what}: fast {fast} vs naive {naive}"
    );
}

#[test]
fn patching_equals_one_full_forward_per_cell() {
    let (pair, prompts) = load("tiny-llama/lora");
    // A small token budget: the per-position cells then run in groups that start after the prompt's first
    // positions, attending to the corrupt run's cached keys and values.
    let opts = PatchOptions {
        positions: PositionPrompts::Chosen(vec![1]),
        batch_tokens: 24,
        ..PatchOptions::default()
    };
    let section = patch(&pair, &prompts, &opts, &NoProgress)
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(section.num_prompts, prompts.len());
    let n = pair.base.num_layers();
    assert_eq!(section.cells.len(), 3 * n);
    // Naive: each prompt alone, the corrupt model run in full with the clean activation hooked in.
    let sides = [(&pair.tuned, &pair.base), (&pair.base, &pair.tuned)];
    for cell in &section.cells {
        let site = cell.site;
        let point = site.hook(cell.layer);
        for (way, (clean, corrupt)) in sides.iter().enumerate() {
            let (mut unpatched, mut patched) = (0.0, 0.0);
            for prompt in &prompts {
                let ids = ids(prompt);
                let clean_run = clean.forward(&ids, &Hooks::new().capture(point)).unwrap();
                let clean_lp = log_probs(clean, &clean_run.normalized);
                let corrupt_lp = log_probs(corrupt, &corrupt.forward(&ids, &Hooks::new()).unwrap().normalized);
                let act = clean_run.captured.get(point).unwrap().clone();
                let run = corrupt.forward(&ids, &Hooks::new().replace(point, act)).unwrap();
                unpatched += kl_sum(&clean_lp, &corrupt_lp);
                patched += kl_sum(&clean_lp, &log_probs(corrupt, &run.normalized));
            }
            let naive = (unpatched - patched) / unpatched;
            let fast = if way == 0 {
                cell.tuned_into_base
            } else {
                cell.base_into_tuned
            };
            close(fast.unwrap(), naive, &format!("{} way {way}", cell.hook));
        }
    }
    // The per-position sweep, against hooks that replace one position.
    let sweep = &section.position_sweeps[0];
    let prompt = &prompts[sweep.prompt];
    let ids = ids(prompt);
    for grid in &sweep.grids {
        let site = grid.site;
        let (clean, corrupt) = if grid.direction == PatchDirection::TunedIntoBase {
            sides[0]
        } else {
            sides[1]
        };
        for (row, &layer) in grid.recovered.iter().zip(&grid.layers) {
            let point = site.hook(layer);
            let clean_run = clean.forward(&ids, &Hooks::new().capture(point)).unwrap();
            let clean_lp = log_probs(clean, &clean_run.normalized);
            let corrupt_lp = log_probs(corrupt, &corrupt.forward(&ids, &Hooks::new()).unwrap().normalized);
            let unpatched = kl_sum(&clean_lp, &corrupt_lp);
            let act = clean_run.captured.get(point).unwrap().clone();
            for (p, fast) in row.iter().enumerate() {
                let hooks = Hooks::new().replace_positions(point, act.clone(), vec![p]);
                let run = corrupt.forward(&ids, &hooks).unwrap();
                let naive = (unpatched - kl_sum(&clean_lp, &log_probs(corrupt, &run.normalized))) / unpatched;
                close(
                    fast.unwrap(),
                    naive,
                    &format!("{} {} layer {layer} position {p}", grid.site, grid.direction),
                );
            }
        }
    }
    // Every layer of the LoRA pair differs, so the fast path ran (and saved work) instead of skipping.
    let w = &section.work;
    assert!(w.forward_passes > 0 && w.identical_skipped < w.patched_runs);
    assert!(w.layer_evaluations < 0.75 * w.naive_layer_evaluations, "{w:?}");
    assert!(w.unembedded_rows < w.naive_unembedded_rows, "{w:?}");
}

#[test]
fn a_pass_resumed_after_a_position_equals_the_full_pass_there() {
    for family in ["tiny-llama", "tiny-gpt2", "tiny-qwen2"] {
        let base = Checkpoint::open(&fixture(&format!("{family}/base"))).unwrap();
        let opts = PairOptions {
            device: Device::Cpu,
            dtype: DType::F32,
            config: None,
            tokenizer: None,
        };
        let plan = PairPlan::prepare(&base, &base, &opts).unwrap().into_result().unwrap();
        let pair = plan.load(&base, &base, &opts).unwrap();
        let model = &pair.base;
        let ids = Tensor::new(&[5u32, 80, 17, 300, 42, 7, 99, 12, 64, 3][..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let points = [HookPoint::ResidPre(1), HookPoint::ResidMid(1)];
        let hooks = points.iter().fold(Hooks::new(), |h, &p| h.capture(p));
        let (full, kv) = model.forward_keeping_kv(&ids, &hooks).unwrap();
        for (point, stage) in points.iter().zip([Stage::Pre(1), Stage::Mid(1)]) {
            for offset in [1, 4, 9] {
                let resid = full
                    .captured
                    .get(*point)
                    .unwrap()
                    .narrow(1, offset, 10 - offset)
                    .unwrap();
                let tail = model
                    .resume_after(stage, offset, &resid, &kv, &Hooks::new())
                    .unwrap()
                    .normalized;
                let want = full.normalized.narrow(1, offset, 10 - offset).unwrap();
                let diff: f32 = (tail - want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert!(diff < 1e-5, "{family} {stage:?} offset {offset}: {diff}");
            }
        }
    }
}

#[test]
fn swapping_equals_a_full_hybrid_forward() {
    let (pair, prompts) = load("tiny-llama/lora");
    for granularity in [Granularity::Component, Granularity::Tensor] {
        // Several batches per sweep: the sums must add up across them.
        let opts = SwapOptions {
            granularity,
            batch_tokens: 48,
            ..SwapOptions::default()
        };
        let section = swap(&pair, &prompts, &opts, &NoProgress)
            .unwrap()
            .into_result()
            .unwrap();
        let n = pair.base.num_layers();
        let per_layer = if granularity == Granularity::Component { 2 } else { 9 };
        assert_eq!(section.rows.len(), 3 + per_layer * n);
        assert_eq!(section.cumulative.len(), n);
        let pieces: Vec<Piece> = match granularity {
            Granularity::Component => vec![Piece::Attn, Piece::Mlp],
            Granularity::Tensor => pair.base.config().family.pieces(),
        };
        let parts: Vec<Part> = std::iter::once(Part::Embed)
            .chain((0..n).flat_map(|layer| pieces.iter().map(move |&piece| Part::Block { layer, piece })))
            .chain([Part::FinalNorm, Part::Unembed])
            .collect();
        // Naive: the whole hybrid model run from the tokens, every prompt alone.
        let mean_kl = |model: &Model| -> f64 {
            let mut sum = 0.0;
            let mut count = 0;
            for prompt in &prompts {
                let ids = ids(prompt);
                let base_lp = log_probs(&pair.base, &pair.base.forward(&ids, &Hooks::new()).unwrap().normalized);
                sum += kl_sum(
                    &log_probs(model, &model.forward(&ids, &Hooks::new()).unwrap().normalized),
                    &base_lp,
                );
                count += prompt.ids.len();
            }
            sum / count as f64
        };
        let d = mean_kl(&pair.tuned);
        close(section.kl_tuned_base, d, "KL(tuned‖base)");
        for (row, part) in section.rows.iter().zip(parts) {
            assert_eq!(row.part, part.name(pair.base.config().family));
            let removed = 1.0 - mean_kl(&pair.tuned.transplant(&pair.base, part).unwrap()) / d;
            let introduced = mean_kl(&pair.base.transplant(&pair.tuned, part).unwrap()) / d;
            close(row.removed.unwrap(), removed, &format!("{} removed", row.part));
            close(row.introduced.unwrap(), introduced, &format!("{} introduced", row.part));
        }
        if granularity == Granularity::Component {
            // Cumulative ranges: hybrids built from whole-block swaps.
            let blocks = |host: &Model, donor: &Model, range: std::ops::Range<usize>| {
                range.fold(host.clone(), |m, layer| {
                    [Piece::Attn, Piece::Mlp]
                        .into_iter()
                        .fold(m, |m, piece| m.transplant(donor, Part::Block { layer, piece }).unwrap())
                })
            };
            for c in &section.cumulative {
                let l = c.layer;
                let prefix = 1.0 - mean_kl(&blocks(&pair.tuned, &pair.base, 0..l + 1)) / d;
                let suffix = mean_kl(&blocks(&pair.base, &pair.tuned, l..n)) / d;
                close(c.prefix_removed.unwrap(), prefix, &format!("prefix {l}"));
                close(c.suffix_introduced.unwrap(), suffix, &format!("suffix {l}"));
            }
            // All blocks from the base leave only the LoRA-free parts: nothing of the change remains.
            close(section.cumulative[0].suffix_removed.unwrap(), 1.0, "all blocks");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Against PyTorch (fixtures/golden/localization-*.json, written by fixtures/generate.py with transformers hooks)
// and planted ground truth.

/// Runs `mdiff compare base tuned --methods swap,patch` on golden.txt and returns the report.
fn localize(sb: &mdiff_tests::Sandbox, base: &str, tuned: &str, extra: &[&str]) -> serde_json::Value {
    let out = sb.join(&format!("{}.json", tuned.replace('/', "-")));
    let (base, tuned, prompts) = (fixture(base), fixture(tuned), fixture("prompts/golden.txt"));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "compare".as_ref(),
        base.as_os_str(),
        tuned.as_os_str(),
        "--methods".as_ref(),
        "swap,patch".as_ref(),
        "--prompts".as_ref(),
        prompts.as_os_str(),
        "--patch-prompts".as_ref(),
        "0".as_ref(),
        "--patch-sites".as_ref(),
        "resid_pre,attn_out,mlp_out".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    sb.mdiff(&args).assert_ok();
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

fn golden(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(&format!("golden/localization-{name}.json"))).unwrap())
        .unwrap()
}

/// Float32 forwards in two implementations: shares agree to this.
const SHARE_TOLERANCE: f64 = 2e-5;

fn near(ours: &serde_json::Value, theirs: &serde_json::Value, what: &str) {
    let (a, b) = (ours.as_f64().unwrap(), theirs.as_f64().unwrap());
    assert!(
        (a - b).abs() <= SHARE_TOLERANCE * (1.0 + b.abs()),
        "{what}: mdiff {a} vs transformers {b}"
    );
}

fn check_against_golden(base: &str, tuned: &str, name: &str) {
    let sb = mdiff_tests::Sandbox::new();
    let report = localize(&sb, base, tuned, &[]);
    let gold = golden(name);
    let (swap, patching) = (&report["swap"], &report["patching"]);
    assert_eq!(swap["num_positions"], gold["num_positions"], "{name}");
    near(&swap["kl_tuned_base"], &gold["d_tb"], "d_tb");
    near(&patching["kl_tuned_base"], &gold["d_tb"], "patching d_tb");
    near(&patching["kl_base_tuned"], &gold["d_bt"], "patching d_bt");
    let rows = swap["rows"].as_array().unwrap();
    let gold_rows = gold["swap"].as_array().unwrap();
    assert_eq!(rows.len(), gold_rows.len(), "{name}: swap rows");
    for (ours, theirs) in rows.iter().zip(gold_rows) {
        assert_eq!(ours["part"], theirs["part"]);
        for key in ["removed", "introduced", "kl_removed", "kl_introduced"] {
            near(&ours[key], &theirs[key], &format!("{name} {} {key}", theirs["part"]));
        }
    }
    for (ours, theirs) in swap["cumulative"]
        .as_array()
        .unwrap()
        .iter()
        .zip(gold["cumulative"].as_array().unwrap())
    {
        for key in [
            "prefix_removed",
            "suffix_removed",
            "prefix_introduced",
            "suffix_introduced",
        ] {
            near(
                &ours[key],
                &theirs[key],
                &format!("{name} cumulative {} {key}", theirs["layer"]),
            );
        }
    }
    let cells = patching["cells"].as_array().unwrap();
    assert_eq!(cells.len(), gold["patch"].as_array().unwrap().len());
    for theirs in gold["patch"].as_array().unwrap() {
        let ours = cells
            .iter()
            .find(|c| c["site"] == theirs["hook"] && c["layer"] == theirs["layer"])
            .unwrap_or_else(|| panic!("{name}: no cell {theirs}"));
        for key in ["tuned_into_base", "base_into_tuned"] {
            near(&ours[key], &theirs[key], &format!("{name} {} {key}", ours["hook"]));
        }
    }
    let sweep = &patching["position_sweeps"][0];
    let gold_sweep = &gold["patch_positions"];
    assert_eq!(sweep["prompt"], gold_sweep["prompt"]);
    for direction in ["tuned_into_base", "base_into_tuned"] {
        let grid = sweep["grids"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["site"] == "resid_pre" && g["direction"] == direction)
            .unwrap();
        for (layer, (ours, theirs)) in grid["recovered"]
            .as_array()
            .unwrap()
            .iter()
            .zip(gold_sweep[direction].as_array().unwrap())
            .enumerate()
        {
            for (p, (a, b)) in ours
                .as_array()
                .unwrap()
                .iter()
                .zip(theirs.as_array().unwrap())
                .enumerate()
            {
                near(a, b, &format!("{name} {direction} layer {layer} position {p}"));
            }
        }
    }
}

#[test]
fn llama_full_ft_matches_transformers() {
    check_against_golden("tiny-llama/base", "tiny-llama/full-ft", "tiny-llama-full-ft");
}

#[test]
fn llama_lora_adapter_matches_transformers_on_the_merged_copy() {
    check_against_golden("tiny-llama/base", "tiny-llama/lora", "tiny-llama-lora-merged");
}

#[test]
fn llama_mlp_ft_matches_transformers() {
    check_against_golden("tiny-llama/base", "tiny-llama/mlp-ft", "tiny-llama-mlp-ft");
}

#[test]
fn llama_attn_ft_matches_transformers() {
    check_against_golden("tiny-llama/base", "tiny-llama/attn-ft", "tiny-llama-attn-ft");
}

#[test]
fn gpt2_full_ft_matches_transformers() {
    check_against_golden("tiny-gpt2/base", "tiny-gpt2/full-ft", "tiny-gpt2-full-ft");
}

/// Only one block's MLP (or attention) was trained: swap ranks exactly that part first with a share ≥ 0.95, every
/// other part ≤ 0.05; patching that sublayer's output recovers most of the divergence; nothing before it does.
fn planted(tuned: &str, layer: usize, component: &str, site: &str) {
    let sb = mdiff_tests::Sandbox::new();
    let report = localize(&sb, "tiny-llama/base", tuned, &["--methods", "swap,patch,lens"]);
    let mut rows: Vec<&serde_json::Value> = report["swap"]["rows"].as_array().unwrap().iter().collect();
    rows.sort_by(|a, b| {
        b["removed"]
            .as_f64()
            .unwrap()
            .total_cmp(&a["removed"].as_f64().unwrap())
    });
    let part = format!("layers.{layer}.{component}");
    assert_eq!(rows[0]["part"], part.as_str(), "{tuned}: top row");
    for key in ["removed", "introduced"] {
        assert!(
            rows[0][key].as_f64().unwrap() >= 0.95,
            "{tuned}: {part} {key} {}",
            rows[0][key]
        );
        for other in &rows[1..] {
            let v = other[key].as_f64().unwrap();
            assert!(v.abs() <= 0.05, "{tuned}: {} {key} {v}", other["part"]);
        }
    }
    let cells = report["patching"]["cells"].as_array().unwrap();
    let cell = |s: &str, l: usize| cells.iter().find(|c| c["site"] == s && c["layer"] == l).unwrap();
    for key in ["tuned_into_base", "base_into_tuned"] {
        assert!(
            cell(site, layer)[key].as_f64().unwrap() >= 0.9,
            "{tuned}: {site} {layer} {key}"
        );
        for l in 0..=layer {
            assert_eq!(
                cell("resid_pre", l)[key].as_f64().unwrap(),
                0.0,
                "{tuned}: resid_pre {l} before the change"
            );
        }
    }
    // Every patch up to the planted layer copies an equal activation: scored without running.
    assert!(report["patching"]["work"]["identical_skipped"].as_u64().unwrap() > 0);
    // The lens: no drift before the changed block's output, drift from it on (point 0 is the embedding).
    let points = report["lens"]["points"].as_array().unwrap();
    for (i, point) in points.iter().enumerate() {
        let drift = point["drift"]["mean"].as_f64().unwrap();
        if i <= layer {
            assert!(drift.abs() < 1e-9, "{tuned}: lens drift {drift} at point {i}");
        } else {
            assert!(drift > 1e-3, "{tuned}: lens drift {drift} at point {i}");
        }
    }
    assert_eq!(report["lens"]["onset"], layer + 1);
}

#[test]
fn only_mlp_changed_is_found_in_that_mlp() {
    planted("tiny-llama/mlp-ft", 1, "mlp", "mlp_out");
}

#[test]
fn only_attention_changed_is_found_in_that_attention() {
    planted("tiny-llama/attn-ft", 2, "attn", "attn_out");
}
