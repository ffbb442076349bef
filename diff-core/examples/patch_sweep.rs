//! Benchmark: a full per-position `resid_pre` patching sweep (every layer × every position of one prompt, both
//! ways) as `mdiff compare --methods patch` runs it, against the naive method in the same process: one full
//! forward pass per cell with the activation hooked in, every position unembedded (TransformerLens's
//! `get_act_patch_resid_pre`). Prints wall times (median of `--runs`), the work each did, and the largest
//! difference between the two grids.
//!
//! `cargo run --release -p diff-core --example patch_sweep -- BASE TUNED PROMPTS.txt [--tokens N] [--runs N]`

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mdiff_core::analysis::{
    EncodedPrompt, ModelPair, PairOptions, PairPlan, PatchOptions, PositionPrompts, Site, patch, prepare_prompts,
};
use mdiff_core::checkpoint::Checkpoint;
use mdiff_core::model::{Hooks, Model, with_f32_values};
use mdiff_core::progress::NoProgress;
use mdiff_core::stats::compare_chunk;
use mdiff_core::text::read_prompt_file;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let [base, tuned, prompts] = [0, 1, 2].map(|i| PathBuf::from(args.get(i).cloned().unwrap_or_default()));
    let (tokens, runs) = (flag("--tokens", 32), flag("--runs", 3));

    let base = Checkpoint::open(&base)?;
    let tuned = Checkpoint::open_tuned(&tuned, &base)?;
    let opts = PairOptions {
        device: Device::Cpu,
        dtype: DType::F32,
        config: None,
        tokenizer: None,
    };
    let plan = PairPlan::prepare(&base, &tuned, &opts)?.into_result()?;
    let set = read_prompt_file(&prompts)?;
    let (mut encoded, _) = prepare_prompts(&set, plan.tokenizer(), plan.context_len(), plan.vocab_size())?;
    let pair = plan.load(&base, &tuned, &opts)?;
    // One prompt of exactly `tokens` tokens: the first prompt's ids, repeated to length.
    let ids: Vec<u32> = encoded[0].ids.iter().copied().cycle().take(tokens).collect();
    encoded.truncate(1);
    encoded[0].ids = ids;

    let fast_opts = PatchOptions {
        max_positions: tokens,
        sites: vec![Site::ResidPre],
        positions: PositionPrompts::Chosen(vec![0]),
        ..PatchOptions::default()
    };
    let mut fast_ms = Vec::new();
    let mut section = None;
    for _ in 0..runs {
        let start = Instant::now();
        section = Some(patch(&pair, &encoded, &fast_opts, &NoProgress)?.into_result()?);
        fast_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let section = section.ok_or("no run")?;
    let mut naive_ms = Vec::new();
    let mut naive = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        naive = naive_sweep(&pair, &encoded[0])?;
        naive_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let sweep = &section.position_sweeps[0];
    let mut worst: f64 = 0.0;
    for (grid, naive_grid) in sweep.grids.iter().zip(&naive) {
        for (row, naive_row) in grid.recovered.iter().zip(naive_grid) {
            for (a, b) in row.iter().zip(naive_row) {
                worst = worst.max((a.unwrap_or(f64::NAN) - b).abs());
            }
        }
    }
    let n = pair.base.num_layers();
    #[allow(clippy::cast_precision_loss)]
    let (naive_layers, naive_rows) = ((2 * n * tokens * tokens * n) as f64, (2 * n * tokens * tokens) as f64);
    let w = &section.work;
    println!("prompt: {tokens} tokens; {n} layers; cells: 2 ways × {n} layers × {tokens} positions");
    println!("mdiff   median {:.0} ms  (runs: {fast_ms:.0?})", median(&mut fast_ms));
    println!("naive   median {:.0} ms  (runs: {naive_ms:.0?})", median(&mut naive_ms));
    println!(
        "time ratio {:.3}×; layer evaluations {:.0} vs naive {naive_layers:.0} ({:.3}×); unembedded rows {} vs naive \
         {naive_rows:.0} ({:.3}×); {} passes; {} identical patches skipped",
        median(&mut fast_ms) / median(&mut naive_ms),
        w.layer_evaluations,
        w.layer_evaluations / naive_layers,
        w.unembedded_rows,
        rows(w.unembedded_rows) / naive_rows,
        w.forward_passes,
        w.identical_skipped
    );
    println!("(mdiff's figures include its all-positions sweep of the same prompt: {n} cells × 2 ways)");
    println!("largest |mdiff − naive| over the grids: {worst:.2e}");
    Ok(())
}

#[allow(clippy::cast_precision_loss, reason = "row counts are far below 2^52")]
fn rows(n: u64) -> f64 {
    n as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Per way, `[layer][position]` shares recovered, one full forward per cell.
fn naive_sweep(pair: &ModelPair, prompt: &EncodedPrompt) -> Result<Vec<Vec<Vec<f64>>>, Box<dyn std::error::Error>> {
    let ids = Tensor::new(prompt.ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let n = pair.base.num_layers();
    let mut grids = Vec::new();
    for (clean, corrupt) in [(&pair.tuned, &pair.base), (&pair.base, &pair.tuned)] {
        let hooks = (0..n).fold(Hooks::new(), |h, l| {
            h.capture(mdiff_core::model::HookPoint::ResidPre(l))
        });
        let clean_run = clean.forward(&ids, &hooks)?;
        let clean_logits = logits(clean, &clean_run.normalized)?;
        let corrupt_logits = logits(corrupt, &corrupt.forward(&ids, &Hooks::new())?.normalized)?;
        let unpatched = kl_sum(&clean_logits, &corrupt_logits, clean.config().vocab_size);
        let mut grid = Vec::with_capacity(n);
        for layer in 0..n {
            let point = mdiff_core::model::HookPoint::ResidPre(layer);
            let act = clean_run.captured.get(point).ok_or("not captured")?;
            let mut row = Vec::with_capacity(prompt.ids.len());
            for p in 0..prompt.ids.len() {
                let hooks = Hooks::new().replace_positions(point, act.clone(), vec![p]);
                let out = logits(corrupt, &corrupt.forward(&ids, &hooks)?.normalized)?;
                row.push((unpatched - kl_sum(&clean_logits, &out, clean.config().vocab_size)) / unpatched);
            }
            grid.push(row);
        }
        grids.push(grid);
    }
    Ok(grids)
}

fn logits(model: &Model, normalized: &Tensor) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    Ok(with_f32_values(
        &model.unembed(&normalized.squeeze(0)?)?,
        <[f32]>::to_vec,
    )?)
}

/// Σ over positions of KL(clean‖run).
fn kl_sum(clean: &[f32], run: &[f32], vocab: usize) -> f64 {
    let rows = clean.len() / vocab;
    compare_chunk(run, clean, vocab, &vec![None; rows])
        .into_iter()
        .map(|r| r.map_or(f64::NAN, |s| s.kl_tuned_base))
        .sum()
}
