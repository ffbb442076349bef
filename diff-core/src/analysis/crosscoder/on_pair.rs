//! `compare --methods crosscoder`: collect, train and analyse in one go, with a small default configuration.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::report::CrosscoderSection;

use super::super::{EncodedPrompt, ModelPair, Outcome};
use super::activations::ActivationSet;
use super::analyze::{AnalyzeOptions, analyze};
use super::collect::{CollectOptions, collect};
use super::dictionary::Sparsity;
use super::train::{TrainOptions, train};

/// Knobs of the end-to-end crosscoder.
#[derive(Debug, Clone, PartialEq)]
pub struct CrosscoderOptions {
    /// Where the activations (`activations/`) and the dictionary (`crosscoder/`) are kept; `None` uses a
    /// temporary directory, removed afterwards.
    pub dir: Option<PathBuf>,
    /// Latents per d_model (the dictionary has `expansion · d_model` latents).
    pub expansion: usize,
    /// Active latents per token (BatchTopK).
    pub k: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// Rows per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Seed of the initialisation and the data order.
    pub seed: u64,
    /// Rows collected at most.
    pub max_tokens: u64,
    /// The analysis.
    pub analyze: AnalyzeOptions,
}

impl Default for CrosscoderOptions {
    fn default() -> Self {
        Self {
            dir: None,
            expansion: 8,
            k: 16,
            steps: 400,
            batch_size: 256,
            learning_rate: 1e-3,
            seed: 0,
            max_tokens: 1 << 18,
            analyze: AnalyzeOptions::default(),
        }
    }
}

/// Collects the pair's activations at the middle block's output on `prompts`, trains a BatchTopK crosscoder and
/// analyses it. [`Outcome::Skipped`] when the pair cannot have one (different widths).
///
/// # Errors
/// As [`collect`], [`train`] and [`analyze`]; [`Error::Write`] for the directory.
pub fn crosscoder(
    pair: &ModelPair,
    prompts: &[EncodedPrompt],
    opts: &CrosscoderOptions,
    progress: &dyn Progress,
) -> Result<Outcome<CrosscoderSection>> {
    if let Some(reason) = super::super::layerwise_mismatch(pair.base.config(), pair.tuned.config()) {
        return Ok(Outcome::Skipped(reason));
    }
    let temp;
    let dir = match &opts.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().map_err(|source| Error::Write {
                path: std::env::temp_dir(),
                source,
            })?;
            temp.path().to_path_buf()
        }
    };
    let (acts, coder_dir) = (dir.join("activations"), dir.join("crosscoder"));
    let collect_opts = CollectOptions {
        max_tokens: opts.max_tokens,
        source: "mdiff compare".into(),
        ..CollectOptions::default()
    };
    collect(pair, prompts, &collect_opts, &acts, progress)?;
    let set = ActivationSet::open(&acts)?;
    let d = set.manifest().d_model;
    let num_latents = opts.expansion.max(1) * d;
    let sparsity = Sparsity::batch_top_k(opts.k.min(num_latents), d, opts.steps * opts.batch_size as u64);
    let train_opts = TrainOptions {
        num_latents,
        sparsity,
        steps: opts.steps,
        batch_size: opts.batch_size,
        learning_rate: opts.learning_rate,
        seed: opts.seed,
        checkpoint_every: opts.steps,
    };
    let config = train_opts.config(&set);
    let trained = train(&set, &config, &coder_dir, false, pair.base.device(), progress)?;
    let kept = opts.dir.as_ref().map(|_| coder_dir.display().to_string());
    let section = analyze(
        &trained.crosscoder,
        &set,
        Some(&pair.tokenizer),
        &opts.analyze,
        kept,
        progress,
    )?;
    Ok(Outcome::Done(section))
}
