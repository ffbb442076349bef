//! Scoring a run against a reference run, position by position: the KL that weight swapping and activation
//! patching report shares of.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::{Model, with_f32_values};
use crate::stats::compare_chunk;

use super::behaviour::LOGIT_CHUNK_ELEMS;

/// Logits a reference holds at most (128 MiB of f32): the localization methods size their batches by it.
const REFERENCE_ELEMS: usize = 32 << 20;

/// Padded tokens per batch for a method that holds references of `vocab` logits per row, within `batch_tokens`.
pub(crate) fn reference_batch_tokens(batch_tokens: usize, vocab: usize) -> usize {
    batch_tokens.min(REFERENCE_ELEMS / vocab.max(1)).max(1)
}

/// Which way a KL between a run and the reference goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// KL(run ‖ reference).
    RunToReference,
    /// KL(reference ‖ run).
    ReferenceToRun,
}

/// One model's logits on a batch's real rows, kept to score other runs of the same rows against.
pub(crate) struct Reference {
    logits: Vec<f32>,
    vocab: usize,
}

impl Reference {
    /// The logits of `model` on final-normalized rows `[rows, d_model]`.
    pub fn new(model: &Model, normalized_rows: &Tensor) -> Result<Self> {
        let vocab = model.config().vocab_size;
        let rows = normalized_rows.dim(0)?;
        let mut logits = Vec::with_capacity(rows * vocab);
        for (start, n) in chunks(rows, vocab) {
            with_f32_values(&model.unembed(&normalized_rows.narrow(0, start, n)?)?, |l| {
                logits.extend_from_slice(l);
            })?;
        }
        Ok(Self { logits, vocab })
    }

    /// Per row, the KL between `model`'s outputs on final-normalized rows `[n, d_model]`, which are this
    /// reference's rows `offset..offset + n`, and the reference. NaN where either side is not a distribution.
    pub fn kl(&self, model: &Model, normalized_rows: &Tensor, offset: usize, direction: Direction) -> Result<Vec<f64>> {
        let n = normalized_rows.dim(0)?;
        self.kl_at(
            model,
            normalized_rows,
            &(offset..offset + n).collect::<Vec<_>>(),
            direction,
        )
    }

    /// [`Reference::kl`] for rows that are this reference's rows `at` (one index per row, in any order): several
    /// runs' rows scored with one unembedding.
    pub fn kl_at(
        &self,
        model: &Model,
        normalized_rows: &Tensor,
        at: &[usize],
        direction: Direction,
    ) -> Result<Vec<f64>> {
        let rows = normalized_rows.dim(0)?;
        let mut out = Vec::with_capacity(rows);
        for (start, n) in chunks(rows, self.vocab) {
            let logits = model.unembed(&normalized_rows.narrow(0, start, n)?)?;
            with_f32_values(&logits, |run| {
                out.extend(self.kl_rows(run, &at[start..start + n], direction));
            })?;
        }
        Ok(out)
    }

    /// Per row, the KL between another reference of the same rows and this one.
    pub fn kl_to(&self, run: &Reference, direction: Direction) -> Vec<f64> {
        let at: Vec<usize> = (0..run.logits.len() / self.vocab.max(1)).collect();
        self.kl_rows(&run.logits, &at, direction)
    }

    fn kl_rows(&self, run: &[f32], at: &[usize], direction: Direction) -> Vec<f64> {
        let v = self.vocab;
        let row = |i: usize| &self.logits[i * v..(i + 1) * v];
        let consecutive = at.windows(2).all(|w| w[1] == w[0] + 1);
        let gathered: Vec<f32>;
        let reference = match at.first() {
            Some(&first) if consecutive => &self.logits[first * v..(first + at.len()) * v],
            _ => {
                gathered = at.iter().flat_map(|&i| row(i).iter().copied()).collect();
                &gathered
            }
        };
        compare_chunk(reference, run, v, &vec![None; at.len()])
            .into_iter()
            .map(|r| match r {
                Ok(s) if direction == Direction::RunToReference => s.kl_tuned_base,
                Ok(s) => s.kl_base_tuned,
                Err(_) => f64::NAN,
            })
            .collect()
    }
}

/// `(start, len)` chunks of `rows` rows whose logits fit in [`LOGIT_CHUNK_ELEMS`].
fn chunks(rows: usize, vocab: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = (LOGIT_CHUNK_ELEMS / vocab.max(1)).max(1);
    (0..rows).step_by(step).map(move |s| (s, step.min(rows - s)))
}

/// A sum of per-position KLs over the scored positions; poisoned once any of them is not finite.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KlSum {
    sum: f64,
    poisoned: bool,
}

impl KlSum {
    /// Adds the values at the scored rows.
    pub fn add(&mut self, values: &[f64], scored: &[bool]) {
        for (v, _) in values.iter().zip(scored).filter(|(_, s)| **s) {
            if v.is_finite() {
                self.sum += v;
            } else {
                self.poisoned = true;
            }
        }
    }

    /// Adds one value.
    pub fn push(&mut self, v: f64) {
        if v.is_finite() {
            self.sum += v;
        } else {
            self.poisoned = true;
        }
    }

    /// Adds another sum (of other positions).
    pub fn merge(&mut self, other: KlSum) {
        self.sum += other.sum;
        self.poisoned |= other.poisoned;
    }

    /// The sum, unless a value was not finite.
    pub fn total(self) -> Option<f64> {
        (!self.poisoned).then_some(self.sum)
    }
}
