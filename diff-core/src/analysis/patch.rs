//! Activation patching: one model's run with an activation copied in from the other model's run on the same
//! tokens, scored by the share of the divergence it recovers.
//!
//! Exact, and cheaper than one full forward per cell (TransformerLens's `get_act_patch_*`): everything before the
//! patched site is the corrupt run's own, so each patched run resumes from the corrupt run's cached residual there
//! ([`Model::resume`]); patches that share a starting point run as one batch; a patch that copies an activation
//! equal to the one it replaces is scored without running; and a per-position patch at `p` leaves positions before
//! `p` unchanged, so only positions from `p` on are unembedded. [`PatchWork`] counts the work against the naive
//! method. Formulas: docs/methods.md, "Activation patching".

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::{HookPoint, Hooks, KvCache, Model, Stage};
use crate::progress::{Progress, checkpoint};
use crate::report::{PatchCell, PatchDirection, PatchSection, PatchWork, PositionGrid, PositionSweep, Site};

use super::batch::{PaddedBatch, batches, prompts_within};
use super::scoring::{Direction, KlSum, Reference, reference_batch_tokens};
use super::{EncodedPrompt, ModelPair, Outcome};

// `Site` is a report type (the viewer reads it without candle); what it means for a forward pass is here.
impl Site {
    /// The hook point at `layer`.
    #[must_use]
    pub fn hook(self, layer: usize) -> HookPoint {
        match self {
            Self::ResidPre => HookPoint::ResidPre(layer),
            Self::AttnOut => HookPoint::AttnOut(layer),
            Self::MlpOut => HookPoint::MlpOut(layer),
        }
    }

    /// Where a run patched here resumes: the residual stream the patched activation first reaches.
    fn stage(self, layer: usize) -> Stage {
        match self {
            Self::ResidPre => Stage::Pre(layer),
            Self::AttnOut => Stage::Mid(layer),
            Self::MlpOut => Stage::Pre(layer + 1),
        }
    }
}

/// Which prompts get the per-position sweep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PositionPrompts {
    /// None.
    #[default]
    Off,
    /// The `n` prompts with the largest mean KL(tuned‖base) among those scored.
    MostDivergent(usize),
    /// These prompt indices.
    Chosen(Vec<usize>),
}

impl PositionPrompts {
    /// Refuses chosen prompts past a set of `num_prompts`.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the first index out of range.
    pub fn check(&self, num_prompts: usize) -> Result<()> {
        match self {
            Self::Chosen(chosen) => match chosen.iter().find(|&&p| p >= num_prompts) {
                Some(bad) => Err(Error::Usage(format!(
                    "--patch-prompts {bad} is out of range: the prompt set has {num_prompts} prompts, numbered from 0"
                ))),
                None => Ok(()),
            },
            Self::Off | Self::MostDivergent(_) => Ok(()),
        }
    }
}

/// Knobs of the patching analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOptions {
    /// Positions to score: the first prompts of the set, whole, until their positions would pass this.
    pub max_positions: usize,
    /// Padded tokens per batch (lowered for large vocabularies: both models' logits are held per batch).
    pub batch_tokens: usize,
    /// Layers to patch; `None` for all.
    pub layers: Option<Vec<usize>>,
    /// Sites to patch, in forward order.
    pub sites: Vec<Site>,
    /// Per-position sweeps.
    pub positions: PositionPrompts,
}

impl Default for PatchOptions {
    fn default() -> Self {
        Self {
            max_positions: 2048,
            batch_tokens: 1024,
            layers: None,
            sites: Site::ALL.to_vec(),
            positions: PositionPrompts::Off,
        }
    }
}

/// Which model's activations go into which model's run.
type Way = PatchDirection;

/// One cell of a sweep: a site at a layer.
type Cell = (usize, Site);

/// Patches every selected site and layer, both ways, over the first prompts of `prompts`; then the per-position
/// sweeps. Or says ([`Outcome::Skipped`]) why there is nothing to recover: the models agree everywhere, or no
/// position is finite.
///
/// # Errors
/// [`Error::Incompatible`] for models of different shapes; [`Error::Usage`] for layers or prompts out of range;
/// [`Error::Interrupted`] when `progress` says stop; tensor failures.
pub fn patch(
    pair: &ModelPair,
    prompts: &[EncodedPrompt],
    opts: &PatchOptions,
    progress: &dyn Progress,
) -> Result<Outcome<PatchSection>> {
    let (base, tuned) = (&pair.base, &pair.tuned);
    super::check_same_shape(base, tuned)?;
    let n = base.num_layers();
    let layers = super::selected_layers(opts.layers.as_deref(), n)?;
    let mut sites = opts.sites.clone();
    sites.sort_unstable();
    sites.dedup();
    let cells: Vec<Cell> = layers
        .iter()
        .flat_map(|&l| sites.iter().map(move |&s| (l, s)))
        .collect();
    opts.positions.check(prompts.len())?;
    let used = prompts_within(prompts, opts.max_positions);
    let batch_tokens = reference_batch_tokens(opts.batch_tokens, base.config().vocab_size);
    let mut sweep = Sweep {
        base,
        tuned,
        cells: &cells,
        work: PatchWork::default(),
    };
    let mut divergence = [KlSum::default(); 2];
    let mut patched = vec![[KlSum::default(); 2]; cells.len()];
    let mut scored_positions = 0u64;
    let mut per_prompt: BTreeMap<usize, (f64, u64)> = BTreeMap::new();
    // One step per position for the clean runs and one per position, cell and way for the patched runs, so the
    // bar moves within a batch.
    let steps_per_position = 1 + 2 * cells.len() as u64;
    let total: u64 = prompts[..used].iter().map(|p| p.ids.len() as u64).sum::<u64>() * steps_per_position;
    progress.begin("patching", total);
    for batch in batches(&prompts[..used], batch_tokens, &pair.length_switches()) {
        checkpoint(progress)?;
        let padded = PaddedBatch::new(prompts, &batch, base.device())?;
        let runs = Runs::new(&sweep, &padded.ids, &cells, false)?;
        let refs = [
            Reference::new(tuned, &padded.real_rows(&runs.tuned.normalized)?)?,
            Reference::new(base, &padded.real_rows(&runs.base.normalized)?)?,
        ];
        // KL(clean‖corrupt) per position, per way; a position is scored when both are finite.
        let kl = [
            refs[0].kl_to(&refs[1], Direction::ReferenceToRun),
            refs[1].kl_to(&refs[0], Direction::ReferenceToRun),
        ];
        let scored: Vec<bool> = kl[0]
            .iter()
            .zip(&kl[1])
            .map(|(a, b)| a.is_finite() && b.is_finite())
            .collect();
        scored_positions += scored.iter().filter(|s| **s).count() as u64;
        for ((&(prompt, _), &s), &v) in padded.rows.iter().zip(&scored).zip(&kl[0]) {
            if s {
                let entry = per_prompt.entry(prompt).or_default();
                *entry = (entry.0 + v, entry.1 + 1);
            }
        }
        let batch_positions: u64 = batch.iter().map(|&i| prompts[i].ids.len() as u64).sum();
        progress.advance(batch_positions);
        let cell_done = |cells: usize| progress.advance(batch_positions * cells as u64);
        for (w, way) in Way::BOTH.into_iter().enumerate() {
            divergence[w].add(&kl[w], &scored);
            let sums = sweep.all_positions(way, &runs, &padded, &refs[w], &kl[w], &scored, progress, &cell_done)?;
            for (cell, sum) in patched.iter_mut().zip(sums) {
                cell[w].merge(sum);
            }
        }
    }
    progress.end();
    let denominators = divergence.map(|d| d.total().filter(|t| *t > 0.0));
    let [Some(d_tb), Some(d_bt)] = denominators else {
        return Ok(Outcome::Skipped(super::no_divergence(scored_positions)));
    };
    let recovered = |sum: KlSum, total: f64| sum.total().map(|s| (total - s) / total);
    let report_cells = cells
        .iter()
        .zip(&patched)
        .map(|(&(layer, site), [tb, bt])| PatchCell {
            hook: site.hook(layer).to_string(),
            site,
            layer,
            tuned_into_base: recovered(*tb, d_tb),
            base_into_tuned: recovered(*bt, d_bt),
        })
        .collect();
    let chosen = match &opts.positions {
        PositionPrompts::Off => Vec::new(),
        PositionPrompts::Chosen(chosen) => chosen.clone(),
        PositionPrompts::MostDivergent(k) => most_divergent(&per_prompt, *k),
    };
    let mut position_sweeps = Vec::with_capacity(chosen.len());
    if !chosen.is_empty() {
        // One step per prompt, site, way and layer: a row of the per-position grid.
        progress.begin("positions", (chosen.len() * sites.len() * 2 * layers.len()) as u64);
        for prompt in chosen {
            let swept = sweep.per_position(pair, prompts, prompt, &layers, &sites, opts.batch_tokens, progress)?;
            position_sweeps.push(swept);
        }
        progress.end();
    }
    #[allow(clippy::cast_precision_loss, reason = "position counts are far below 2^52")]
    let mean = |t: f64| t / scored_positions.max(1) as f64;
    Ok(Outcome::Done(PatchSection {
        num_prompts: used,
        num_positions: scored_positions,
        max_positions: opts.max_positions,
        kl_tuned_base: mean(d_tb),
        kl_base_tuned: mean(d_bt),
        cells: report_cells,
        position_sweeps,
        work: sweep.work,
    }))
}

/// The `k` prompts with the largest mean KL(tuned‖base), largest first (ties: lower index first).
fn most_divergent(per_prompt: &BTreeMap<usize, (f64, u64)>, k: usize) -> Vec<usize> {
    #[allow(clippy::cast_precision_loss, reason = "position counts are far below 2^52")]
    let mut ranked: Vec<(f64, usize)> = per_prompt
        .iter()
        .filter(|(_, (_, n))| *n > 0)
        .map(|(&p, &(sum, n))| (sum / n as f64, p))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().take(k).map(|(_, p)| p).collect()
}

/// Both models' runs on one batch, with the activations at every selected cell.
struct Runs {
    base: Cached,
    tuned: Cached,
}

/// One model's run: final-normalized output, the residual and sublayer outputs per layer, and (for per-position
/// sweeps) the attention keys and values a pass resumed after a position attends to.
struct Cached {
    normalized: Tensor,
    acts: BTreeMap<HookPoint, Tensor>,
    kv: Option<KvCache>,
}

impl Cached {
    fn new(model: &Model, ids: &Tensor, cells: &[Cell], keep_kv: bool) -> Result<Self> {
        // Every site's patched run starts from the residual at its block's entry, plus the attention output for
        // sites after it.
        let points: Vec<HookPoint> = cells
            .iter()
            .flat_map(|&(l, _)| [HookPoint::ResidPre(l), HookPoint::AttnOut(l), HookPoint::MlpOut(l)])
            .collect();
        let hooks = points.iter().fold(Hooks::new(), |h, &p| h.capture(p));
        let (forward, kv) = if keep_kv {
            let (forward, kv) = model.forward_keeping_kv(ids, &hooks)?;
            (forward, Some(kv))
        } else {
            (model.forward(ids, &hooks)?, None)
        };
        Ok(Self {
            normalized: forward.normalized,
            acts: forward.captured.iter().map(|(p, t)| (*p, t.clone())).collect(),
            kv,
        })
    }

    fn get(&self, point: HookPoint) -> Result<&Tensor> {
        self.acts
            .get(&point)
            .ok_or_else(|| Error::Internal(format!("{point} was not captured")))
    }

    /// The residual stream a run patched at `site` of `layer` resumes from, given the patched activation there
    /// (`[batch, seq, d]`, any batch the cached tensors broadcast to). The sums are the ones the forward pass
    /// computes, so the result is the full patched pass's, bit for bit.
    fn resume_input(&self, layer: usize, site: Site, patched: &Tensor) -> Result<Tensor> {
        let pre = self.get(HookPoint::ResidPre(layer))?;
        Ok(match site {
            Site::ResidPre => patched.clone(),
            Site::AttnOut => pre.broadcast_add(patched)?,
            Site::MlpOut => pre.add(self.get(HookPoint::AttnOut(layer))?)?.broadcast_add(patched)?,
        })
    }
}

impl Runs {
    fn new(sweep: &Sweep<'_>, ids: &Tensor, cells: &[Cell], keep_kv: bool) -> Result<Self> {
        Ok(Self {
            base: Cached::new(sweep.base, ids, cells, keep_kv)?,
            tuned: Cached::new(sweep.tuned, ids, cells, keep_kv)?,
        })
    }

    /// (clean, corrupt) for a way.
    fn sides(&self, way: Way) -> (&Cached, &Cached) {
        match way {
            Way::TunedIntoBase => (&self.tuned, &self.base),
            Way::BaseIntoTuned => (&self.base, &self.tuned),
        }
    }
}

/// The sweep's models and cells, and the work counted so far.
struct Sweep<'a> {
    base: &'a Model,
    tuned: &'a Model,
    cells: &'a [Cell],
    work: PatchWork,
}

impl<'a> Sweep<'a> {
    fn corrupt(&self, way: Way) -> &'a Model {
        match way {
            Way::TunedIntoBase => self.base,
            Way::BaseIntoTuned => self.tuned,
        }
    }

    /// Per cell, Σ KL(clean‖patched) over the scored positions, every position patched at once. Calls
    /// `cells_done` with the number of cells finished after each pass, and stops between passes when `progress`
    /// says so.
    #[allow(
        clippy::too_many_arguments,
        reason = "one batch's runs, references and scores, plus the observers"
    )]
    fn all_positions(
        &mut self,
        way: Way,
        runs: &Runs,
        padded: &PaddedBatch,
        reference: &Reference,
        unpatched: &[f64],
        scored: &[bool],
        progress: &dyn Progress,
        cells_done: &dyn Fn(usize),
    ) -> Result<Vec<KlSum>> {
        let (clean, corrupt) = runs.sides(way);
        let model = self.corrupt(way);
        let n = model.num_layers();
        let (batch, seq) = padded.ids.dims2()?;
        let rows = padded.rows.len() as u64;
        let mut sums = vec![KlSum::default(); self.cells.len()];
        // Cells that resume at the same stage run as one batch.
        let mut by_stage: BTreeMap<Stage, Vec<usize>> = BTreeMap::new();
        for (i, &(layer, site)) in self.cells.iter().enumerate() {
            self.work.patched_runs += 1;
            self.work.naive_layer_evaluations += (batch * seq * n) as f64;
            self.work.naive_unembedded_rows += rows;
            let point = site.hook(layer);
            if identical(clean.get(point)?, corrupt.get(point)?)? {
                // Copying an equal activation changes nothing: the patched run is the corrupt run.
                self.work.identical_skipped += 1;
                sums[i].add(unpatched, scored);
                cells_done(1);
            } else {
                by_stage.entry(site.stage(layer)).or_default().push(i);
            }
        }
        for (stage, members) in by_stage {
            checkpoint(progress)?;
            let inputs = members
                .iter()
                .map(|&i| {
                    let (layer, site) = self.cells[i];
                    corrupt.resume_input(layer, site, clean.get(site.hook(layer))?)
                })
                .collect::<Result<Vec<_>>>()?;
            let out = model
                .resume(stage, &Tensor::cat(&inputs, 0)?, &Hooks::new())?
                .normalized;
            count_pass(&mut self.work, stage, n, members.len() * batch * seq);
            for (k, &i) in members.iter().enumerate() {
                let rows_k = padded.real_rows(&out.narrow(0, k * batch, batch)?)?;
                let kl = reference.kl(model, &rows_k, 0, Direction::ReferenceToRun)?;
                self.work.unembedded_rows += rows;
                sums[i].add(&kl, scored);
            }
            cells_done(members.len());
        }
        Ok(sums)
    }

    /// Every selected site × layer × position of one prompt, one position at a time, both ways; one `progress`
    /// step per layer row.
    #[allow(
        clippy::too_many_arguments,
        reason = "the prompt, the grid's axes and the batch size, plus progress"
    )]
    fn per_position(
        &mut self,
        pair: &ModelPair,
        prompts: &[EncodedPrompt],
        prompt: usize,
        layers: &[usize],
        sites: &[Site],
        batch_tokens: usize,
        progress: &dyn Progress,
    ) -> Result<PositionSweep> {
        let ids_vec = &prompts[prompt].ids;
        let seq = ids_vec.len();
        let ids = Tensor::new(ids_vec.as_slice(), self.base.device())?.unsqueeze(0)?;
        let runs = Runs::new(self, &ids, self.cells, true)?;
        let rows = |c: &Cached| -> Result<Tensor> { Ok(c.normalized.squeeze(0)?) };
        let refs = [
            Reference::new(self.tuned, &rows(&runs.tuned)?)?,
            Reference::new(self.base, &rows(&runs.base)?)?,
        ];
        let unpatched = [
            refs[0].kl_to(&refs[1], Direction::ReferenceToRun),
            refs[1].kl_to(&refs[0], Direction::ReferenceToRun),
        ];
        let mut grids = Vec::new();
        for &site in sites {
            for (w, way) in Way::BOTH.into_iter().enumerate() {
                let (clean, corrupt) = runs.sides(way);
                let model = self.corrupt(way);
                let kl = &unpatched[w];
                let total: f64 = kl.iter().sum();
                // Σ over positions before p of the unpatched KL: those positions do not see a patch at p.
                let before: Vec<f64> = std::iter::once(0.0)
                    .chain(kl.iter().scan(0.0, |acc, v| {
                        *acc += v;
                        Some(*acc)
                    }))
                    .collect();
                let mut grid = Vec::with_capacity(layers.len());
                for &layer in layers {
                    checkpoint(progress)?;
                    let point = site.hook(layer);
                    let (clean_act, corrupt_act) = (clean.get(point)?, corrupt.get(point)?);
                    let differs = differing_positions(clean_act, corrupt_act)?;
                    let mut row = vec![None; seq];
                    let defined = total.is_finite() && total > 0.0;
                    for (p, d) in differs.iter().enumerate() {
                        self.work.patched_runs += 1;
                        self.work.naive_layer_evaluations += (seq * self.base.num_layers()) as f64;
                        self.work.naive_unembedded_rows += seq as u64;
                        if !d {
                            self.work.identical_skipped += 1;
                            row[p] = defined.then_some(0.0);
                        }
                    }
                    let todo: Vec<usize> = (0..seq).filter(|&p| differs[p]).collect();
                    let kv = corrupt
                        .kv
                        .as_ref()
                        .ok_or_else(|| Error::Internal("no cached keys for a per-position sweep".into()))?;
                    for group in position_groups(&todo, seq, batch_tokens) {
                        // Every cell of the group is computed from its first position on: earlier positions are
                        // the corrupt run's, whose keys and values the pass attends to.
                        let first = group[0];
                        let rows = seq - first;
                        let patched = patch_one_position_each(clean_act, corrupt_act, group)?;
                        let input = corrupt.resume_input(layer, site, &patched)?.narrow(1, first, rows)?;
                        let stage = site.stage(layer);
                        let out = model.resume_after(stage, first, &input, kv, &Hooks::new())?.normalized;
                        count_pass(&mut self.work, stage, model.num_layers(), group.len() * rows);
                        // Positions before p do not see the patch: only p.. are unembedded, every cell's in one
                        // product.
                        let (mut flat, mut at) = (Vec::new(), Vec::new());
                        for (k, &p) in group.iter().enumerate() {
                            for pos in p..seq {
                                flat.push(
                                    u32::try_from(k * rows + pos - first)
                                        .map_err(|_| Error::Internal("per-position pass too large".into()))?,
                                );
                                at.push(pos);
                            }
                        }
                        let width = out.dim(2)?;
                        let flat = Tensor::new(flat.as_slice(), out.device())?;
                        let tails = out.reshape((group.len() * rows, width))?.index_select(&flat, 0)?;
                        let kl = refs[w].kl_at(model, &tails, &at, Direction::ReferenceToRun)?;
                        self.work.unembedded_rows += at.len() as u64;
                        let mut kl = kl.as_slice();
                        for &p in group {
                            let (tail, rest) = kl.split_at(seq - p);
                            kl = rest;
                            let mut sum = KlSum::default();
                            sum.push(before[p]);
                            tail.iter().for_each(|v| sum.push(*v));
                            row[p] = sum.total().filter(|_| defined).map(|s| (total - s) / total);
                        }
                    }
                    grid.push(row);
                    progress.advance(1);
                }
                grids.push(PositionGrid {
                    site,
                    direction: way,
                    layers: layers.to_vec(),
                    recovered: grid,
                });
            }
        }
        #[allow(clippy::cast_precision_loss, reason = "prompt lengths are far below 2^52")]
        let kl_tuned_base = unpatched[0].iter().sum::<f64>() / seq.max(1) as f64;
        Ok(PositionSweep {
            prompt,
            tokens: pair.tokenizer.token_strings(ids_vec),
            kl_tuned_base,
            grids,
        })
    }
}

/// `positions` (ascending) in runs of consecutive entries, each computed in one pass from the run's first position
/// to the end of a `seq`-token prompt. A run of g cells recomputes g(g − 1)/2 rows that a pass per cell would not,
/// so runs hold at most an eighth of the rows left (≈ 6% extra work), and fit `batch_tokens` rows.
fn position_groups(positions: &[usize], seq: usize, batch_tokens: usize) -> Vec<&[usize]> {
    let mut groups = Vec::new();
    let mut rest = positions;
    while let Some(&first) = rest.first() {
        let rows = (seq - first).max(1);
        let take = (rows / 8).min(batch_tokens / rows).clamp(1, rest.len());
        let (group, tail) = rest.split_at(take);
        groups.push(group);
        rest = tail;
    }
    groups
}

/// Counts one resumed pass of `token_rows` rows from `stage` through a model of `n` blocks.
fn count_pass(work: &mut PatchWork, stage: Stage, n: usize, token_rows: usize) {
    work.forward_passes += 1;
    #[allow(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let evaluations = token_rows as f64 * stage.sublayers_left(n) as f64 / 2.0;
    work.layer_evaluations += evaluations;
}

/// Whether two activations are equal everywhere (NaN counts as different).
fn identical(a: &Tensor, b: &Tensor) -> Result<bool> {
    // `ne`, not a max of |a − b|: a max reduction skips NaN, and NaN != NaN.
    Ok(a.ne(b)?.max_all()?.to_scalar::<u8>()? == 0)
}

/// Per position of a one-prompt activation `[1, seq, d]`: whether the two differ there (NaN counts as different).
fn differing_positions(a: &Tensor, b: &Tensor) -> Result<Vec<bool>> {
    let differs: Vec<u8> = a.ne(b)?.max_keepdim(2)?.flatten_all()?.to_vec1()?;
    Ok(differs.into_iter().map(|d| d != 0).collect())
}

/// `[k, seq, d]`: copy `i` is `corrupt` with position `positions[i]` taken from `clean` (both `[1, seq, d]`).
fn patch_one_position_each(clean: &Tensor, corrupt: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (_, seq, d) = clean.dims3()?;
    let k = positions.len();
    let mut mask = vec![0u8; k * seq];
    for (i, &p) in positions.iter().enumerate() {
        mask[i * seq + p] = 1;
    }
    let mask = Tensor::from_vec(mask, (k, seq, 1), clean.device())?.broadcast_as((k, seq, d))?;
    Ok(mask.where_cond(&clean.broadcast_as((k, seq, d))?, &corrupt.broadcast_as((k, seq, d))?)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{differing_positions, identical};

    #[test]
    fn a_nan_makes_activations_differ() {
        let t = |v: &[f32]| Tensor::from_slice(v, (1, 2, 2), &Device::Cpu).unwrap();
        let a = t(&[1.0, 2.0, 3.0, 4.0]);
        assert!(identical(&a, &a.clone()).unwrap());
        let nan = t(&[1.0, 2.0, f32::NAN, 4.0]);
        // A max of |a − b| would skip the NaN and call these equal; the patch would then not be run.
        assert!(!identical(&a, &nan).unwrap());
        assert!(!identical(&nan, &nan).unwrap());
        assert_eq!(differing_positions(&a, &nan).unwrap(), vec![false, true]);
        assert_eq!(
            differing_positions(&a, &t(&[1.0, 2.5, 3.0, 4.0])).unwrap(),
            vec![true, false]
        );
    }
}
