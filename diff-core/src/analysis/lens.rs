//! The logit lens on both models: where along the depth their predictions part.
//!
//! Each residual-stream point (the embedding, then every block's output) of each model goes through that model's
//! final norm, recomputed on that residual, and its unembedding ([`Model::lens`]); TransformerLens's
//! `apply_ln_to_stack` without `recompute_ln` would reuse the final layer's scale instead and misread early layers.
//! Per point and position: KL(lens_tuned ‖ lens_base) (the drift), KL(cross ‖ lens_base) with cross = the tuned
//! residual through the base's readout, and each lens's KL to its own model's output. The last point *is* each
//! model's output, so the last drift equals the behaviour section's KL. Formulas: docs/methods.md, "Logit lens".

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::{HookPoint, Hooks, Model, with_f32_values};
use crate::progress::{Progress, checkpoint};
use crate::report::{LensPoint, LensPosition, LensSection, TokenProb};
use crate::stats::{RunningMean, compare_chunk, summarize, top_k};

use super::batch::{PaddedBatch, batches, prompts_within};
use super::behaviour::{distribution, token_probs};
use super::{EncodedPrompt, ModelPair};

/// Logits held per lens at once (per model and readout): bounds memory whatever the vocabulary.
const LOGIT_CHUNK_ELEMS: usize = 2 << 20;

/// A point's drift counts as begun once it reaches this share of the last point's drift.
const ONSET_SHARE: f64 = 0.1;

/// Knobs of the lens analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LensOptions {
    /// Positions to read: the first prompts of the set, whole, until their positions would pass this (at least one
    /// prompt). Every position costs three unembeddings per point.
    pub max_positions: usize,
    /// Padded tokens per batch.
    pub batch_tokens: usize,
    /// How many most divergent positions get the per-point top tokens.
    pub top_positions: usize,
    /// Tokens per model listed at each point of those positions.
    pub top_k: usize,
}

impl Default for LensOptions {
    fn default() -> Self {
        Self {
            // As `--lens-positions`: a budget that keeps the default run within a few KL runs.
            max_positions: 512,
            batch_tokens: 1024,
            top_positions: 5,
            top_k: 5,
        }
    }
}

/// The lens points of a model with `layers` blocks, in depth order.
fn lens_points(layers: usize) -> Vec<HookPoint> {
    std::iter::once(HookPoint::ResidPre(0))
        .chain((0..layers).map(HookPoint::ResidPost))
        .collect()
}

/// Runs the logit lens on both models over the first prompts of `prompts`.
///
/// # Errors
/// [`Error::Incompatible`] when the models differ in depth or vocabulary; tensor failures.
pub fn lens(
    pair: &ModelPair,
    prompts: &[EncodedPrompt],
    opts: &LensOptions,
    progress: &dyn Progress,
) -> Result<LensSection> {
    let (base, tuned) = (&pair.base, &pair.tuned);
    if base.num_layers() != tuned.num_layers() || base.config().vocab_size != tuned.config().vocab_size {
        return Err(Error::Incompatible(format!(
            "the logit lens needs models of one depth and vocabulary: the base has {} layers and {} tokens, the \
             tuned model {} and {}",
            base.num_layers(),
            base.config().vocab_size,
            tuned.num_layers(),
            tuned.config().vocab_size
        )));
    }
    let used = prompts_within(prompts, opts.max_positions);
    let points = lens_points(base.num_layers());
    let mut acc = Accumulator::new(points.len(), opts.top_positions);
    // Three steps per position (each model's pass, then the unembeddings), so the bar moves within a batch.
    let total: u64 = prompts[..used].iter().map(|p| p.ids.len() as u64).sum::<u64>() * 3;
    progress.begin("lens", total);
    for batch in batches(&prompts[..used], opts.batch_tokens, &pair.length_switches()) {
        checkpoint(progress)?;
        let padded = PaddedBatch::new(prompts, &batch, base.device())?;
        let residuals = |model: &Model| -> Result<Vec<Tensor>> {
            let rows = residual_rows(model, &padded, &points)?;
            progress.advance(padded.rows.len() as u64);
            checkpoint(progress)?;
            Ok(rows)
        };
        let (rows_base, rows_tuned) = (residuals(base)?, residuals(tuned)?);
        let vocab = base.config().vocab_size;
        let chunk = (LOGIT_CHUNK_ELEMS / vocab).max(1);
        for start in (0..padded.rows.len()).step_by(chunk) {
            let n = chunk.min(padded.rows.len() - start);
            let part =
                |rows: &[Tensor]| -> Result<Vec<Tensor>> { rows.iter().map(|r| Ok(r.narrow(0, start, n)?)).collect() };
            acc.record(
                base,
                tuned,
                &part(&rows_base)?,
                &part(&rows_tuned)?,
                &padded.rows[start..start + n],
            )?;
            progress.advance(n as u64);
            checkpoint(progress)?;
        }
    }
    progress.end();
    let top_positions = acc
        .ranked
        .iter()
        .map(|&(kl, prompt, position)| {
            top_tokens_at(pair, &prompts[prompt], position, &points, opts.top_k).map(|[top_base, top_tuned]| {
                let strings = pair.tokenizer.token_strings(&prompts[prompt].ids);
                LensPosition {
                    prompt,
                    position,
                    token: strings.get(position).cloned().unwrap_or_default(),
                    next_token: strings.get(position + 1).cloned(),
                    kl_tuned_base: kl,
                    top_base,
                    top_tuned,
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(acc.into_section(&points, used, opts.max_positions, top_positions))
}

/// Each lens point's real rows `[rows, d_model]` for one batch.
fn residual_rows(model: &Model, padded: &PaddedBatch, points: &[HookPoint]) -> Result<Vec<Tensor>> {
    let hooks = points.iter().fold(Hooks::new(), |h, &p| h.capture(p));
    let mut captured = model.forward(&padded.ids, &hooks)?.captured;
    points
        .iter()
        .map(|&p| {
            let t = captured
                .take(p)
                .ok_or_else(|| Error::Internal(format!("{p} was not captured")))?;
            padded.real_rows(&t)
        })
        .collect()
}

/// Per point running means, and the positions ranked by final KL.
struct Accumulator {
    drift: Vec<Vec<f64>>,
    residual_drift: Vec<RunningMean>,
    base_to_final: Vec<RunningMean>,
    tuned_to_final: Vec<RunningMean>,
    agree: Vec<u64>,
    non_finite: u64,
    keep: usize,
    /// (final KL, prompt, position), largest first, at most `keep`.
    ranked: Vec<(f64, usize, usize)>,
}

impl Accumulator {
    fn new(points: usize, keep: usize) -> Self {
        Self {
            drift: vec![Vec::new(); points],
            residual_drift: vec![RunningMean::new(); points],
            base_to_final: vec![RunningMean::new(); points],
            tuned_to_final: vec![RunningMean::new(); points],
            agree: vec![0; points],
            non_finite: 0,
            keep,
            ranked: Vec::new(),
        }
    }

    /// Scores one chunk of rows at every point. A position enters the statistics only if every point's three
    /// lenses are finite there, so each point averages over the same positions.
    fn record(
        &mut self,
        base: &Model,
        tuned: &Model,
        rows_base: &[Tensor],
        rows_tuned: &[Tensor],
        here: &[(usize, usize)],
    ) -> Result<()> {
        let vocab = base.config().vocab_size;
        let none = vec![None; here.len()];
        let last = rows_base.len() - 1;
        let final_base = logits(base, &rows_base[last])?;
        let final_tuned = logits(tuned, &rows_tuned[last])?;
        // Per point and row: [drift, residual drift, base→final, tuned→final] and top-1 agreement; None where a
        // lens is not finite.
        let mut per_point = Vec::with_capacity(rows_base.len());
        for (i, (rb, rt)) in rows_base.iter().zip(rows_tuned).enumerate() {
            // The last point's own lenses are the outputs computed above: not unembedded twice.
            let earlier;
            let (lb, lt): (&[f32], &[f32]) = if i == last {
                (&final_base, &final_tuned)
            } else {
                earlier = (logits(base, rb)?, logits(tuned, rt)?);
                (&earlier.0, &earlier.1)
            };
            let cross = logits(base, rt)?;
            let drift = compare_chunk(lb, lt, vocab, &none);
            let residual = compare_chunk(lb, &cross, vocab, &none);
            let base_final = compare_chunk(&final_base, lb, vocab, &none);
            let tuned_final = compare_chunk(&final_tuned, lt, vocab, &none);
            let scores: Vec<Option<([f64; 4], bool)>> = drift
                .into_iter()
                .zip(residual)
                .zip(base_final)
                .zip(tuned_final)
                .map(|(((d, r), b), t)| {
                    let (d, r, b, t) = (d.ok()?, r.ok()?, b.ok()?, t.ok()?);
                    let row = [d.kl_tuned_base, r.kl_tuned_base, b.kl_tuned_base, t.kl_tuned_base];
                    row.iter()
                        .all(|v| v.is_finite())
                        .then_some((row, d.top_base == d.top_tuned))
                })
                .collect();
            per_point.push(scores);
        }
        for (row, &(prompt, position)) in here.iter().enumerate() {
            let scores: Option<Vec<_>> = per_point.iter().map(|p| p.get(row).copied().flatten()).collect();
            let Some(scores) = scores else {
                self.non_finite += 1;
                continue;
            };
            for (i, ([drift, residual, base_final, tuned_final], agree)) in scores.iter().enumerate() {
                self.drift[i].push(*drift);
                self.residual_drift[i].push(*residual);
                self.base_to_final[i].push(*base_final);
                self.tuned_to_final[i].push(*tuned_final);
                self.agree[i] += u64::from(*agree);
            }
            if let Some(([final_kl, ..], _)) = scores.last() {
                self.rank(*final_kl, prompt, position);
            }
        }
        Ok(())
    }

    /// Keeps the `keep` largest final KLs; ties by prompt, then position, so batching cannot reorder them.
    fn rank(&mut self, kl: f64, prompt: usize, position: usize) {
        let entry = (kl, prompt, position);
        let at = self
            .ranked
            .partition_point(|&(k, p, t)| k > kl || (k == kl && (p, t) < (prompt, position)));
        if at < self.keep {
            self.ranked.insert(at, entry);
            self.ranked.truncate(self.keep);
        }
    }

    fn into_section(
        self,
        points: &[HookPoint],
        num_prompts: usize,
        max_positions: usize,
        top_positions: Vec<LensPosition>,
    ) -> LensSection {
        let n = self.drift.first().map_or(0, Vec::len) as u64;
        #[allow(clippy::cast_precision_loss, reason = "position counts are far below 2^52")]
        let share = |count: u64| if n == 0 { 0.0 } else { count as f64 / n as f64 };
        let points: Vec<LensPoint> = points
            .iter()
            .enumerate()
            .map(|(i, &point)| LensPoint {
                hook: point.to_string(),
                layer: match point {
                    HookPoint::ResidPost(l) => Some(l),
                    _ => None,
                },
                drift: summarize(&self.drift[i]).map(distribution),
                residual_drift: self.residual_drift[i].mean(),
                base_to_final: self.base_to_final[i].mean(),
                tuned_to_final: self.tuned_to_final[i].mean(),
                top1_agreement: share(self.agree[i]),
            })
            .collect();
        let mean = |p: &LensPoint| p.drift.as_ref().map_or(0.0, |d| d.mean);
        let last = points.last().map_or(0.0, mean);
        let onset = (last > 0.0)
            .then(|| points.iter().position(|p| mean(p) >= ONSET_SHARE * last))
            .flatten();
        LensSection {
            num_prompts,
            num_positions: n,
            max_positions,
            points,
            onset,
            top_positions,
            non_finite_positions: self.non_finite,
        }
    }
}

/// The f32 logits of `model`'s lens on residual rows, as one flat `[rows · vocab]` vector.
fn logits(model: &Model, rows: &Tensor) -> Result<Vec<f32>> {
    with_f32_values(&model.lens(rows)?, <[f32]>::to_vec)
}

/// One model's top tokens at each lens point.
type PerPoint = Vec<Vec<TokenProb>>;

/// Both models' top tokens at every point, at one position (its prompt runs alone: a handful of positions).
fn top_tokens_at(
    pair: &ModelPair,
    prompt: &EncodedPrompt,
    position: usize,
    points: &[HookPoint],
    k: usize,
) -> Result<[PerPoint; 2]> {
    let ids = Tensor::new(prompt.ids.as_slice(), pair.base.device())?.unsqueeze(0)?;
    let tops = |model: &Model| -> Result<Vec<Vec<TokenProb>>> {
        let hooks = points.iter().fold(Hooks::new(), |h, &p| h.capture(p));
        let mut captured = model.forward(&ids, &hooks)?.captured;
        points
            .iter()
            .map(|&p| {
                let row = captured
                    .take(p)
                    .ok_or_else(|| Error::Internal(format!("{p} was not captured")))?
                    .narrow(1, position, 1)?
                    .squeeze(0)?;
                Ok(token_probs(&pair.tokenizer, &top_k(&logits(model, &row)?, k)))
            })
            .collect()
    };
    Ok([tops(&pair.base)?, tops(&pair.tuned)?])
}
