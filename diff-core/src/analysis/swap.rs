//! Weight swapping: the tuned model with one part put back to the base's (and the base with the tuned model's
//! part), scored by how much of the divergence from the base goes away (or comes in).
//!
//! A hybrid shares every tensor but the swapped ones with its host ([`Model::transplant`]), and it computes the
//! same residual stream as the host up to the swapped block, so its pass resumes from the host's cached residual
//! there. Formulas: docs/methods.md, "Weight swap".

use std::cell::RefCell;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::{Captured, Family, HookPoint, Hooks, Model, Part, Piece, Stage};
use crate::progress::{Progress, checkpoint};
use crate::report::{CumulativeSwap, Granularity, SwapRow, SwapSection};

use super::batch::{PaddedBatch, batches, prompts_within};
use super::scoring::{Direction, KlSum, Reference, reference_batch_tokens};
use super::{EncodedPrompt, ModelPair, Outcome};

/// Knobs of the swap analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapOptions {
    /// Parts per row.
    pub granularity: Granularity,
    /// Positions to score: the first prompts of the set, whole, until their positions would pass this.
    pub max_positions: usize,
    /// Padded tokens per batch (lowered for large vocabularies: the base's logits are held per batch).
    pub batch_tokens: usize,
    /// Layers to swap; `None` for all. The embedding, final norm and unembedding rows are always scored.
    pub layers: Option<Vec<usize>>,
}

impl Default for SwapOptions {
    fn default() -> Self {
        Self {
            granularity: Granularity::Component,
            max_positions: 2048,
            batch_tokens: 1024,
            layers: None,
        }
    }
}

/// Which model receives the other's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// The tuned model with the base's parts: divergence removed.
    Remove,
    /// The base with the tuned model's parts: divergence introduced.
    Introduce,
}

const WAYS: [Way; 2] = [Way::Remove, Way::Introduce];

/// One swapped run: a part, or blocks `0..=L` / `L..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swapped {
    Part(Part),
    Prefix(usize),
    Suffix(usize),
}

/// Swaps every part (and the cumulative block ranges) both ways over the first prompts of `prompts`; or says
/// ([`Outcome::Skipped`]) why there is nothing to share out: the models agree everywhere, or no position is finite.
///
/// # Errors
/// [`Error::Incompatible`] for models of different shapes; [`Error::Usage`] for layers out of range;
/// [`Error::Interrupted`] when `progress` says stop; tensor failures.
pub fn swap(
    pair: &ModelPair,
    prompts: &[EncodedPrompt],
    opts: &SwapOptions,
    progress: &dyn Progress,
) -> Result<Outcome<SwapSection>> {
    let (base, tuned) = (&pair.base, &pair.tuned);
    super::check_same_shape(base, tuned)?;
    let n = base.num_layers();
    let layers = super::selected_layers(opts.layers.as_deref(), n)?;
    let family = base.config().family;
    let runs = swapped_runs(family, &layers, opts.granularity);
    let used = prompts_within(prompts, opts.max_positions);
    let batch_tokens = reference_batch_tokens(opts.batch_tokens, base.config().vocab_size);
    let mut divergence = KlSum::default();
    let mut scored_positions = 0u64;
    let mut sums = vec![[KlSum::default(); 2]; runs.len()];
    // One step per position and swapped run (plus the hosts' own runs), so the bar moves within a batch.
    let steps_per_position = runs.len() as u64 + 1;
    let total: u64 = prompts[..used].iter().map(|p| p.ids.len() as u64).sum::<u64>() * steps_per_position;
    progress.begin("swap", total);
    for batch in batches(&prompts[..used], batch_tokens, &pair.length_switches()) {
        checkpoint(progress)?;
        let padded = PaddedBatch::new(prompts, &batch, base.device())?;
        let hosts = [Host::run(tuned, base, &padded)?, Host::run(base, tuned, &padded)?];
        let reference = Reference::new(base, &padded.real_rows(&hosts[1].normalized)?)?;
        let kl = reference.kl(
            tuned,
            &padded.real_rows(&hosts[0].normalized)?,
            0,
            Direction::RunToReference,
        )?;
        // Positions where the models' own divergence is not finite cannot be shared out: left out of every sum.
        let scored: Vec<bool> = kl.iter().map(|v| v.is_finite()).collect();
        scored_positions += scored.iter().filter(|s| **s).count() as u64;
        divergence.add(&kl, &scored);
        let batch_positions: u64 = batch.iter().map(|&i| prompts[i].ids.len() as u64).sum();
        progress.advance(batch_positions);
        for (run, sum) in runs.iter().zip(&mut sums) {
            checkpoint(progress)?;
            for (way, host) in WAYS.iter().zip(&hosts) {
                let (model, out) = host.swapped(*run, &padded.ids)?;
                let kl = reference.kl(&model, &padded.real_rows(&out)?, 0, Direction::RunToReference)?;
                sum[*way as usize].add(&kl, &scored);
            }
            progress.advance(batch_positions);
        }
    }
    progress.end();
    #[allow(clippy::cast_precision_loss, reason = "position counts are far below 2^52")]
    let mean = |s: KlSum| s.total().map(|t| t / scored_positions.max(1) as f64);
    let Some(d) = mean(divergence).filter(|d| *d > 0.0) else {
        return Ok(Outcome::Skipped(super::no_divergence(scored_positions)));
    };
    let share = |s: KlSum, way: Way| {
        mean(s).map(|kl| match way {
            Way::Remove => 1.0 - kl / d,
            Way::Introduce => kl / d,
        })
    };
    let mut rows = Vec::new();
    let mut cumulative: Vec<CumulativeSwap> = layers
        .iter()
        .map(|&layer| CumulativeSwap {
            layer,
            prefix_removed: None,
            suffix_removed: None,
            prefix_introduced: None,
            suffix_introduced: None,
        })
        .collect();
    for (run, [removed, introduced]) in runs.iter().zip(sums) {
        match *run {
            Swapped::Part(part) => rows.push(SwapRow {
                part: part.name(family),
                layer: part.layer(),
                component: match part {
                    Part::Block { piece, .. } => piece.component().to_string(),
                    other => other.name(family),
                },
                removed: share(removed, Way::Remove),
                introduced: share(introduced, Way::Introduce),
                kl_removed: mean(removed),
                kl_introduced: mean(introduced),
            }),
            Swapped::Prefix(layer) | Swapped::Suffix(layer) => {
                let row = cumulative
                    .iter_mut()
                    .find(|c| c.layer == layer)
                    .ok_or_else(|| Error::Internal(format!("no cumulative row for layer {layer}")))?;
                if matches!(run, Swapped::Prefix(_)) {
                    row.prefix_removed = share(removed, Way::Remove);
                    row.prefix_introduced = share(introduced, Way::Introduce);
                } else {
                    row.suffix_removed = share(removed, Way::Remove);
                    row.suffix_introduced = share(introduced, Way::Introduce);
                }
            }
        }
    }
    Ok(Outcome::Done(SwapSection {
        num_prompts: used,
        num_positions: scored_positions,
        max_positions: opts.max_positions,
        granularity: opts.granularity,
        kl_tuned_base: d,
        rows,
        cumulative,
    }))
}

/// The runs of one sweep, in report order: embedding, each layer's parts, final norm, unembedding, then the
/// cumulative ranges.
fn swapped_runs(family: Family, layers: &[usize], granularity: Granularity) -> Vec<Swapped> {
    let pieces = match granularity {
        Granularity::Component => vec![Piece::Attn, Piece::Mlp],
        Granularity::Tensor => family.pieces(),
    };
    let mut runs = vec![Swapped::Part(Part::Embed)];
    for &layer in layers {
        runs.extend(pieces.iter().map(|&piece| Swapped::Part(Part::Block { layer, piece })));
    }
    runs.extend([Swapped::Part(Part::FinalNorm), Swapped::Part(Part::Unembed)]);
    for &layer in layers {
        runs.extend([Swapped::Prefix(layer), Swapped::Suffix(layer)]);
    }
    runs
}

/// A model that receives parts, with its residual stream on the batch cached at every block's entry.
struct Host<'a> {
    model: &'a Model,
    donor: &'a Model,
    /// `blocks.{L}.hook_resid_pre` for every L, then the last block's output.
    resid: Vec<Tensor>,
    /// Its own final-normalized output.
    normalized: Tensor,
    /// The residual stream after the donor's first blocks on the host's embedding: (blocks run, residual). The
    /// prefix runs come in increasing layer order, so each extends the last by the blocks in between.
    prefix: RefCell<(usize, Tensor)>,
}

impl<'a> Host<'a> {
    fn run(model: &'a Model, donor: &'a Model, padded: &PaddedBatch) -> Result<Self> {
        let n = model.num_layers();
        let points: Vec<HookPoint> = (0..n)
            .map(HookPoint::ResidPre)
            .chain(n.checked_sub(1).map(HookPoint::ResidPost))
            .collect();
        let hooks = points.iter().fold(Hooks::new(), |h, &p| h.capture(p));
        let mut forward = model.forward(&padded.ids, &hooks)?;
        let resid = points
            .iter()
            .map(|&p| {
                forward
                    .captured
                    .take(p)
                    .ok_or_else(|| Error::Internal(format!("{p} was not captured")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            model,
            donor,
            prefix: RefCell::new((0, resid[0].clone())),
            resid,
            normalized: forward.normalized,
        })
    }

    /// The model a run scores (whose unembedding reads the output) and its final-normalized output.
    fn swapped(&self, run: Swapped, ids: &Tensor) -> Result<(Model, Tensor)> {
        let n = self.model.num_layers();
        let none = Hooks::new();
        Ok(match run {
            Swapped::Part(Part::Embed) => {
                let hybrid = self.model.transplant(self.donor, Part::Embed)?;
                let out = hybrid.forward(ids, &none)?.normalized;
                (hybrid, out)
            }
            Swapped::Part(part) => {
                // Blocks before the part's are the host's own: resume from its residual there.
                let layer = part.layer().unwrap_or(n);
                let hybrid = self.model.transplant(self.donor, part)?;
                let out = hybrid.resume(Stage::Pre(layer), &self.resid[layer], &none)?.normalized;
                (hybrid, out)
            }
            Swapped::Prefix(layer) => {
                let mut prefix = self.prefix.borrow_mut();
                if prefix.0 > layer + 1 {
                    *prefix = (0, self.resid[0].clone());
                }
                let resid = self.donor.run_layers(
                    Stage::Pre(prefix.0),
                    layer + 1,
                    &prefix.1,
                    &none,
                    &mut Captured::default(),
                )?;
                *prefix = (layer + 1, resid.clone());
                let out = self.model.resume(Stage::Pre(layer + 1), &resid, &none)?.normalized;
                (self.model.clone(), out)
            }
            Swapped::Suffix(layer) => {
                let resid = self.donor.run_layers(
                    Stage::Pre(layer),
                    n,
                    &self.resid[layer],
                    &none,
                    &mut Captured::default(),
                )?;
                let out = self.model.resume(Stage::Pre(n), &resid, &none)?.normalized;
                (self.model.clone(), out)
            }
        })
    }
}
