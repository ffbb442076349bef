//! The prompt set packed into right-padded batches: shared by every analysis that runs both models on it, so they
//! all see the same rows in the same order.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

use super::EncodedPrompt;

/// Prompt indices grouped so that rows × longest ≤ `batch_tokens` (a longer prompt runs alone), longest first.
/// Empty prompts are left out. No batch holds prompts on both sides of a length in `switches` (where a model
/// computes every position differently past a length, as longrope does, the padded length decides for the whole
/// batch; keeping the sides apart makes each prompt's result its own).
pub(crate) fn batches(prompts: &[EncodedPrompt], batch_tokens: usize, switches: &[usize]) -> Vec<Vec<usize>> {
    let side = |i: usize| switches.iter().filter(|&&s| prompts[i].ids.len() > s).count();
    let mut order: Vec<usize> = (0..prompts.len()).filter(|&i| !prompts[i].ids.is_empty()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(prompts[i].ids.len()), i));
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match out.last_mut() {
            // Sorted longest first, so the batch's first prompt is its longest.
            Some(batch)
                if (batch.len() + 1) * prompts[batch[0]].ids.len() <= batch_tokens && side(batch[0]) == side(i) =>
            {
                batch.push(i);
            }
            _ => out.push(vec![i]),
        }
    }
    out
}

/// How many leading prompts fit in `max_positions` (at least one non-empty prompt, when there is one).
pub(crate) fn prompts_within(prompts: &[EncodedPrompt], max_positions: usize) -> usize {
    let mut total = 0;
    for (i, p) in prompts.iter().enumerate() {
        total += p.ids.len();
        if total > max_positions && total > p.ids.len() {
            return i;
        }
    }
    prompts.len()
}

/// One batch of prompts as model input, and where its real (unpadded) rows are.
pub(crate) struct PaddedBatch {
    /// Token ids `[batch, seq]`.
    pub ids: Tensor,
    /// (prompt, position) of every real row, in flattened batch order.
    pub rows: Vec<(usize, usize)>,
    /// Index of each real row in the flattened `[batch · seq]` activations.
    flat: Tensor,
    /// `batch · seq`.
    padded_rows: usize,
}

impl PaddedBatch {
    /// Pads the prompts `batch` of `prompts` to the longest one.
    pub fn new(prompts: &[EncodedPrompt], batch: &[usize], device: &Device) -> Result<Self> {
        let seq = batch.iter().map(|&i| prompts[i].ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * seq);
        let mut rows = Vec::new();
        let mut flat = Vec::new();
        for (r, &p) in batch.iter().enumerate() {
            let prompt = &prompts[p].ids;
            // Pad with the row's own last token: masked attention still multiplies 0 × value, so a pad token with
            // NaN weights would otherwise poison a clean prompt (a prompt's own tokens can only poison itself).
            let pad = prompt.last().copied().unwrap_or(0);
            ids.extend(
                prompt
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, seq - prompt.len())),
            );
            for pos in 0..prompt.len() {
                rows.push((p, pos));
                flat.push(u32::try_from(r * seq + pos).map_err(|_| Error::Internal("batch too large".into()))?);
            }
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (batch.len(), seq), device)?,
            flat: Tensor::new(flat.as_slice(), device)?,
            rows,
            padded_rows: batch.len() * seq,
        })
    }

    /// The real rows of an activation `[batch, seq, d]` as `[rows, d]`, in [`PaddedBatch::rows`] order.
    pub fn real_rows(&self, activation: &Tensor) -> Result<Tensor> {
        let width = activation.dim(2)?;
        Ok(activation
            .reshape((self.padded_rows, width))?
            .index_select(&self.flat.to_device(activation.device())?, 0)?)
    }
}
