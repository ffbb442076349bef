//! Paired activation collection: both models on the same tokens, one hook, streamed to shards on disk.

use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::{HookPoint, Hooks, with_f32_values};
use crate::progress::{Progress, checkpoint};

use super::super::batch::{PaddedBatch, batches};
use super::super::{EncodedPrompt, ModelPair};
use super::activations::{ActivationWriter, Manifest};

/// Knobs of the collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectOptions {
    /// The hook read in both models; `None` for the middle block's output (`blocks.{n/2}.hook_resid_post`).
    pub hook: Option<HookPoint>,
    /// Leave out positions holding the beginning-of-sequence token.
    pub drop_bos: bool,
    /// Stop after this many rows.
    pub max_tokens: u64,
    /// Rows per shard file.
    pub shard_tokens: usize,
    /// Padded tokens per forward batch.
    pub batch_tokens: usize,
    /// Where the activations came from, for the manifest.
    pub source: String,
}

impl Default for CollectOptions {
    fn default() -> Self {
        Self {
            hook: None,
            drop_bos: true,
            max_tokens: 1 << 20,
            shard_tokens: 1 << 16,
            batch_tokens: 2048,
            source: String::new(),
        }
    }
}

/// Runs both models of `pair` on `prompts` and writes their activations at one hook to `out` (a new or empty
/// directory), [`super::activations`]' format. Memory holds one batch and one shard, whatever the prompt count.
///
/// # Errors
/// [`Error::Usage`] for a hook the models lack or an `out` that already holds files; [`Error::InvalidActivations`]
/// when an activation is not finite (naming the prompt and position); write and tensor failures.
pub fn collect(
    pair: &ModelPair,
    prompts: &[EncodedPrompt],
    opts: &CollectOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let (base, tuned) = (&pair.base, &pair.tuned);
    super::super::check_same_shape(base, tuned)?;
    let hook = opts.hook.unwrap_or(HookPoint::ResidPost(base.num_layers() / 2));
    let d = base.config().hidden_size;
    let bos = if opts.drop_bos { pair.tokenizer.bos_id() } else { None };
    let mut writer = ActivationWriter::create(out, &hook.to_string(), d, opts.shard_tokens)?;
    let total: u64 = prompts.iter().map(|p| p.ids.len() as u64).sum();
    progress.begin("collect", total);
    'batches: for batch in batches(prompts, opts.batch_tokens, &pair.length_switches()) {
        let padded = PaddedBatch::new(prompts, &batch, base.device())?;
        let rows = |model: &crate::model::Model| -> Result<Vec<f32>> {
            let mut captured = match hook.layer() {
                // Blocks above the hook are not needed.
                Some(layer) => model.capture_until(&padded.ids, layer + 1, &Hooks::new().capture(hook))?,
                None => model.forward(&padded.ids, &Hooks::new().capture(hook))?.captured,
            };
            let act: Tensor = captured
                .take(hook)
                .ok_or_else(|| Error::Internal(format!("{hook} was not captured")))?;
            with_f32_values(&padded.real_rows(&act)?, <[f32]>::to_vec)
        };
        let (rows_base, rows_tuned) = (rows(base)?, rows(tuned)?);
        for (i, &(prompt, position)) in padded.rows.iter().enumerate() {
            let token = prompts[prompt].ids[position];
            if Some(token) == bos {
                continue;
            }
            writer.push(
                &rows_base[i * d..(i + 1) * d],
                &rows_tuned[i * d..(i + 1) * d],
                token,
                prompt,
                position,
            )?;
            if writer.written() >= opts.max_tokens {
                break 'batches;
            }
        }
        progress.advance(batch.iter().map(|&i| prompts[i].ids.len() as u64).sum());
        checkpoint(progress)?;
    }
    progress.end();
    let sequences: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    writer.finish(&sequences, bos.is_some(), &opts.source)
}

/// Checks that `dir` is new or an empty directory: the crosscoder's commands never overwrite files. Callers
/// check it before loading the models, so that a wrong directory is found at once.
///
/// # Errors
/// [`Error::Usage`] when `dir` holds files; [`Error::Read`] when it is not a readable directory.
pub fn check_new_or_empty(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    if entries.next().is_some() {
        return Err(Error::Usage(format!(
            "{} is not empty; give a new or empty directory (nothing there was changed)",
            dir.display()
        )));
    }
    Ok(())
}

/// Creates `out`, or accepts it empty ([`check_new_or_empty`]).
///
/// # Errors
/// As [`check_new_or_empty`]; [`Error::Write`].
pub fn prepare_dir(out: &Path) -> Result<()> {
    check_new_or_empty(out)?;
    std::fs::create_dir_all(out).map_err(|source| Error::Write {
        path: out.to_path_buf(),
        source,
    })
}
