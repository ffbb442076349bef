//! Per-token KL: both models on the same token ids, compared position by position.
//!
//! Prompts are grouped into length-bucketed, right-padded batches. For each batch both models run to their final
//! normalized residual stream; its real (unpadded) rows are unembedded a chunk at a time, so at most
//! [`LOGIT_CHUNK_ELEMS`] logits per model exist at once, and each chunk is reduced to [`PositionStats`] and
//! dropped. Formulas and conventions: docs/methods.md, "Per-token KL".

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{Hooks, Model, with_f32_values};
use crate::progress::{Progress, checkpoint};
use crate::report::{
    BehaviourSection, BehaviourSummary, Distribution, DivergentPosition, GroupBehaviour, NonFiniteLogits,
    PromptBehaviour, Score, TokenProb,
};
use crate::stats::{
    PositionStats, RunningMean, Summary, compare_chunk, percentile_label, shared_prefix_lengths, summarize, top_k,
};
use crate::text::Tokenizer;

use super::batch::{PaddedBatch, batches};
use super::{EncodedPrompt, ModelPair};

/// Logits held per model at once (16 MiB of f32): bounds memory whatever the vocabulary and batch.
pub const LOGIT_CHUNK_ELEMS: usize = 4 << 20;

/// How many examples of non-finite positions the report lists.
const NON_FINITE_EXAMPLES: usize = 10;

/// Knobs of the behaviour analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BehaviourOptions {
    /// Padded tokens per batch (rows × longest prompt in the batch).
    pub batch_tokens: usize,
    /// How many most-divergent positions to report.
    pub top_positions: usize,
    /// Tokens of each model listed at those positions.
    pub top_k: usize,
    /// Tokens of context shown on each side of those positions.
    pub context_tokens: usize,
    /// Most likely next tokens of each model stored for every position (what the viewer shows on hover); 0 stores
    /// none, which keeps reports of very long prompt sets small.
    pub token_top_k: usize,
    /// Whose tokens the summaries score (applied by [`prepare_scored_prompts`](super::prepare_scored_prompts),
    /// which marks [`EncodedPrompt::scored`]).
    pub score: Score,
}

impl Default for BehaviourOptions {
    fn default() -> Self {
        Self {
            batch_tokens: 2048,
            top_positions: 20,
            top_k: 5,
            context_tokens: 8,
            token_top_k: 5,
            score: Score::All,
        }
    }
}

/// Runs `base` and `tuned` on `prompts` and compares their next-token distributions at every position.
///
/// # Errors
/// [`Error::Incompatible`] when the two models' vocabularies differ; tensor failures.
pub fn behaviour(
    pair: &ModelPair,
    prompts: &[EncodedPrompt],
    opts: &BehaviourOptions,
    header: SectionHeader,
    progress: &dyn Progress,
) -> Result<BehaviourSection> {
    let (base, tuned, tokenizer) = (&pair.base, &pair.tuned, &pair.tokenizer);
    let vocab = base.config().vocab_size;
    if tuned.config().vocab_size != vocab {
        return Err(Error::Incompatible(format!(
            "the base has a vocabulary of {vocab} tokens and the tuned model {}",
            tuned.config().vocab_size
        )));
    }
    let mut collected = Collected::new(prompts, opts.top_positions);
    // Three steps per position (the base's pass, the tuned model's, the comparison), so the bar moves within a
    // batch.
    let total: u64 = prompts.iter().map(|p| p.ids.len() as u64).sum::<u64>() * 3;
    progress.begin("behaviour", total);
    for batch in batches(prompts, opts.batch_tokens, &pair.length_switches()) {
        checkpoint(progress)?;
        run_batch(base, tuned, tokenizer, prompts, &batch, opts, &mut collected, progress)?;
    }
    progress.end();
    Ok(collected.into_section(prompts, tokenizer, opts, header))
}

#[allow(
    clippy::too_many_arguments,
    reason = "the models, the batch and where its results and progress go"
)]
fn run_batch(
    base: &Model,
    tuned: &Model,
    tokenizer: &Tokenizer,
    prompts: &[EncodedPrompt],
    batch: &[usize],
    opts: &BehaviourOptions,
    out: &mut Collected,
    progress: &dyn Progress,
) -> Result<()> {
    let padded = PaddedBatch::new(prompts, batch, base.device())?;
    let rows = &padded.rows;
    let real_rows = |model: &Model| -> Result<Tensor> {
        let normalized = padded.real_rows(&model.forward(&padded.ids, &Hooks::new())?.normalized)?;
        progress.advance(rows.len() as u64);
        checkpoint(progress)?;
        Ok(normalized)
    };
    let (base_rows, tuned_rows) = (real_rows(base)?, real_rows(tuned)?);

    let vocab = base.config().vocab_size;
    let chunk = (LOGIT_CHUNK_ELEMS / vocab).max(1);
    for start in (0..rows.len()).step_by(chunk) {
        let n = chunk.min(rows.len() - start);
        let here = &rows[start..start + n];
        let next: Vec<Option<u32>> = here
            .iter()
            .map(|&(p, pos)| prompts[p].ids.get(pos + 1).copied())
            .collect();
        let lb = base.unembed(&base_rows.narrow(0, start, n)?)?;
        let lt = tuned.unembed(&tuned_rows.narrow(0, start, n)?)?;
        with_f32_values(&lb, |lb| {
            with_f32_values(&lt, |lt| {
                let chunk = Chunk {
                    base: lb,
                    tuned: lt,
                    vocab,
                    here,
                    next: &next,
                };
                chunk.record(tokenizer, opts, out);
            })
        })??;
        progress.advance(n as u64);
    }
    Ok(())
}

/// One chunk of logit rows of both models, with the (prompt, position) and next token of each row.
struct Chunk<'a> {
    base: &'a [f32],
    tuned: &'a [f32],
    vocab: usize,
    here: &'a [(usize, usize)],
    next: &'a [Option<u32>],
}

impl Chunk<'_> {
    fn record(&self, tokenizer: &Tokenizer, opts: &BehaviourOptions, out: &mut Collected) {
        let vocab = self.vocab;
        let results = compare_chunk(self.base, self.tuned, vocab, self.next);
        let tops = self.token_tops(opts.token_top_k);
        for (j, ((stats, &(p, pos)), tops)) in results.into_iter().zip(self.here).zip(tops).enumerate() {
            let stats = match stats {
                // An infinite KL (one model gives p = 0 to a token the other uses) cannot be averaged or written
                // to JSON; it is counted with the non-finite positions.
                Ok(s) if !(s.kl_tuned_base.is_finite() && s.kl_base_tuned.is_finite()) => {
                    out.record_non_finite(p, pos, None);
                    continue;
                }
                Ok(s) => s,
                Err(side) => {
                    out.record_non_finite(p, pos, Some(side));
                    continue;
                }
            };
            out.positions[p][pos] = Some(stats);
            out.tops[p][pos] = tops;
            // A position an earlier prompt already has (same tokens up to it) would list the same values again;
            // one `--score` leaves out is not ranked either.
            if out.is_summarized(p, pos) && out.would_rank(stats.kl_tuned_base, p, pos) {
                let top = |l: &[f32]| token_probs(tokenizer, &top_k(&l[j * vocab..(j + 1) * vocab], opts.top_k));
                out.rank(Ranked {
                    kl: stats.kl_tuned_base,
                    prompt: p,
                    position: pos,
                    top_base: top(self.base),
                    top_tuned: top(self.tuned),
                });
            }
        }
    }
}

impl Chunk<'_> {
    /// The `k` most likely tokens of both models at every row of the chunk (empty lists when `k` is 0).
    fn token_tops(&self, k: usize) -> Vec<TopTokens> {
        let rows = self.here.len();
        if k == 0 {
            return vec![TopTokens::default(); rows];
        }
        let row = |logits: &[f32], j: usize| top_k(&logits[j * self.vocab..(j + 1) * self.vocab], k);
        (0..rows)
            .into_par_iter()
            .map(|j| TopTokens {
                base: row(self.base, j),
                tuned: row(self.tuned, j),
            })
            .collect()
    }
}

/// (id, probability) of each model's most likely next tokens at one position, most likely first.
#[derive(Debug, Clone, Default)]
struct TopTokens {
    base: Vec<(u32, f32)>,
    tuned: Vec<(u32, f32)>,
}

pub(crate) fn token_probs(tokenizer: &Tokenizer, top: &[(u32, f32)]) -> Vec<TokenProb> {
    let ids: Vec<u32> = top.iter().map(|&(id, _)| id).collect();
    tokenizer
        .token_strings(&ids)
        .into_iter()
        .zip(top)
        .map(|(token, &(id, p))| TokenProb {
            id,
            token,
            prob: f64::from(p),
        })
        .collect()
}

/// A candidate for the most-divergent list.
#[derive(Debug, Clone)]
struct Ranked {
    kl: f64,
    prompt: usize,
    position: usize,
    top_base: Vec<TokenProb>,
    top_tuned: Vec<TokenProb>,
}

/// Largest KL first; ties by prompt then position, so the list does not depend on batch order.
fn rank_order(a: (f64, usize, usize), b: (f64, usize, usize)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
}

/// Everything gathered while the batches run, indexed by prompt and position.
#[derive(Debug)]
struct Collected {
    positions: Vec<Vec<Option<PositionStats>>>,
    tops: Vec<Vec<TopTokens>>,
    non_finite: NonFiniteLogits,
    non_finite_at: Vec<(usize, usize)>,
    ranked: Vec<Ranked>,
    keep: usize,
    /// Per prompt, the leading positions an earlier prompt shares ([`shared_prefix_lengths`]).
    shared: Vec<usize>,
    /// Per prompt, the positions `--score` keeps ([`EncodedPrompt::scored`]).
    scored: Vec<Vec<bool>>,
}

impl Collected {
    fn new(prompts: &[EncodedPrompt], keep: usize) -> Self {
        Self {
            shared: shared_prefixes(prompts.iter()),
            positions: prompts.iter().map(|p| vec![None; p.ids.len()]).collect(),
            tops: prompts
                .iter()
                .map(|p| vec![TopTokens::default(); p.ids.len()])
                .collect(),
            non_finite: NonFiniteLogits::default(),
            non_finite_at: Vec::new(),
            ranked: Vec::new(),
            keep,
            scored: prompts.iter().map(|p| p.scored.clone()).collect(),
        }
    }

    fn record_non_finite(&mut self, prompt: usize, position: usize, side: Option<crate::stats::NonFiniteSide>) {
        use crate::stats::NonFiniteSide::{Base, Both, Tuned};
        if matches!(side, Some(Base | Both)) {
            self.non_finite.base_positions += 1;
        }
        if matches!(side, Some(Tuned | Both)) {
            self.non_finite.tuned_positions += 1;
        }
        if side.is_none() {
            self.non_finite.infinite_kl_positions += 1;
        }
        self.non_finite_at.push((prompt, position));
    }

    /// Whether position `position` of prompt `prompt` counts in the summaries: `--score` keeps it and it does not
    /// repeat an earlier prompt's.
    fn is_summarized(&self, prompt: usize, position: usize) -> bool {
        let folded = self.shared.get(prompt).is_some_and(|&shared| position < shared);
        let scored = self
            .scored
            .get(prompt)
            .and_then(|s| s.get(position))
            .is_some_and(|&s| s);
        scored && !folded
    }

    fn would_rank(&self, kl: f64, prompt: usize, position: usize) -> bool {
        self.keep > 0
            && (self.ranked.len() < self.keep
                || self.ranked.last().is_some_and(|last| {
                    rank_order((kl, prompt, position), (last.kl, last.prompt, last.position)) == Ordering::Less
                }))
    }

    fn rank(&mut self, candidate: Ranked) {
        let key = |r: &Ranked| (r.kl, r.prompt, r.position);
        let at = self
            .ranked
            .partition_point(|r| rank_order(key(r), key(&candidate)) == Ordering::Less);
        self.ranked.insert(at, candidate);
        self.ranked.truncate(self.keep);
    }

    fn into_section(
        mut self,
        prompts: &[EncodedPrompt],
        tokenizer: &Tokenizer,
        opts: &BehaviourOptions,
        header: SectionHeader,
    ) -> BehaviourSection {
        let tokens: Vec<Vec<String>> = prompts.iter().map(|p| tokenizer.token_strings(&p.ids)).collect();
        let tops = std::mem::take(&mut self.tops);
        let mut rows: Vec<PromptBehaviour> = prompts
            .iter()
            .zip(&self.positions)
            .zip(&tokens)
            .enumerate()
            .map(|(index, ((prompt, stats), tokens))| prompt_row(index, prompt, stats, tokens))
            .collect();
        for (row, &shared) in rows.iter_mut().zip(&self.shared) {
            row.shared_prefix_tokens = shared;
        }
        let token_strings = attach_tops(&mut rows, tops, tokenizer, opts.token_top_k);
        let all_prompts: Vec<usize> = (0..prompts.len()).collect();
        let (summary, folded_positions) = summary_of(&all_prompts, prompts, &self.positions);
        let mut members = BTreeMap::<&str, Vec<usize>>::new();
        for (index, prompt) in prompts.iter().enumerate() {
            if let Some(group) = &prompt.group {
                members.entry(group).or_default().push(index);
            }
        }
        let groups = members
            .into_iter()
            .map(|(name, indices)| {
                let (summary, folded_positions) = summary_of(&indices, prompts, &self.positions);
                let group = GroupBehaviour {
                    num_prompts: indices.len(),
                    num_positions: indices.iter().map(|&i| self.positions[i].len() as u64).sum(),
                    summary,
                    folded_positions,
                };
                (name.to_string(), group)
            })
            .collect();
        let all_finite = self.positions.iter().flatten().flatten().count() as u64;
        self.non_finite_at.sort_unstable();
        self.non_finite.examples = self.non_finite_at.iter().take(NON_FINITE_EXAMPLES).copied().collect();
        let mut warnings = header.warnings;
        if !self.non_finite_at.is_empty() {
            warnings.push(format!(
                "{} positions had NaN or infinite logits (base: {}, tuned: {}) or an infinite KL ({}) and were left \
                 out of every statistic; check the weights for NaN (mdiff compare --methods weights counts them)",
                self.non_finite_at.len(),
                self.non_finite.base_positions,
                self.non_finite.tuned_positions,
                self.non_finite.infinite_kl_positions
            ));
        }
        let top_positions = self
            .ranked
            .into_iter()
            .map(|r| {
                let prompt_tokens = &tokens[r.prompt];
                divergent(r, prompt_tokens, &self.positions, opts.context_tokens)
            })
            .collect();
        BehaviourSection {
            prompts_source: header.prompts_source,
            num_prompts: prompts.len(),
            num_positions: all_finite + self.non_finite_at.len() as u64,
            dtype: header.dtype,
            chat_templated_prompts: prompts.iter().filter(|p| p.chat_template).count(),
            summary,
            groups,
            prompts: rows,
            top_positions,
            non_finite: self.non_finite,
            warnings,
            token_top_k: opts.token_top_k,
            token_strings,
            folded_positions,
        }
    }
}

/// Moves the per-position top tokens into the prompt rows and returns the display string of every id they name,
/// so each string is written once rather than at every position that lists it.
fn attach_tops(
    rows: &mut [PromptBehaviour],
    tops: Vec<Vec<TopTokens>>,
    tokenizer: &Tokenizer,
    k: usize,
) -> BTreeMap<u32, String> {
    if k == 0 {
        return BTreeMap::new();
    }
    let mut ids = BTreeSet::new();
    for (row, tops) in rows.iter_mut().zip(tops) {
        (row.top_base, row.top_tuned) = tops.into_iter().map(|t| (t.base, t.tuned)).unzip();
        ids.extend(row.top_base.iter().chain(&row.top_tuned).flatten().map(|&(id, _)| id));
    }
    let ids: Vec<u32> = ids.into_iter().collect();
    ids.iter().copied().zip(tokenizer.token_strings(&ids)).collect()
}

/// What the caller knows about the run that the statistics do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    /// Prompt file path or `built-in prompts`.
    pub prompts_source: String,
    /// `f32`, `bf16` or `f16`.
    pub dtype: String,
    /// Warnings from preparing the prompts (truncation, empty prompts).
    pub warnings: Vec<String>,
}

pub(crate) fn distribution(s: Summary) -> Distribution {
    Distribution {
        n: s.n,
        mean: s.mean,
        std_err: s.std_err,
        min: s.min,
        max: s.max,
        percentiles: s
            .percentiles
            .into_iter()
            .map(|(p, v)| (percentile_label(p), v))
            .collect(),
    }
}

/// Per prompt, how many leading positions repeat an earlier prompt's ([`shared_prefix_lengths`]). A position is
/// keyed by its token and whether `--score` keeps it, so a repeat is folded only where its earlier copy was counted
/// (a template's text is the user's in one prompt and nobody's in another).
fn shared_prefixes<'a>(prompts: impl Iterator<Item = &'a EncodedPrompt>) -> Vec<usize> {
    let keyed: Vec<Vec<(u32, bool)>> = prompts
        .map(|p| {
            p.ids
                .iter()
                .copied()
                .zip(p.scored.iter().copied().chain(std::iter::repeat(false)))
                .collect()
        })
        .collect();
    shared_prefix_lengths(keyed.iter().map(Vec::as_slice))
}

/// The headline statistics over the finite positions `--score` keeps of the prompts `indices` (all of them, or one
/// group), each distinct token prefix among them counted once; with the number of positions the prefixes left out.
fn summary_of(
    indices: &[usize],
    prompts: &[EncodedPrompt],
    positions: &[Vec<Option<PositionStats>>],
) -> (BehaviourSummary, u64) {
    let shared = shared_prefixes(indices.iter().map(|&i| &prompts[i]));
    // Only the positions the summary would otherwise have counted: --score's other roles were never in it.
    let folded = indices
        .iter()
        .zip(&shared)
        .map(|(&i, &n)| prompts[i].scored.iter().take(n).filter(|&&k| k).count() as u64)
        .sum();
    // The finite scored positions of prompt i from position `from` on.
    let kept = |i: usize, from: usize| {
        positions[i]
            .iter()
            .zip(&prompts[i].scored)
            .skip(from)
            .filter_map(|(s, &k)| s.filter(|_| k))
    };
    let all: Vec<PositionStats> = indices
        .iter()
        .zip(&shared)
        .flat_map(|(&i, &shared)| kept(i, shared))
        .collect();
    let values = |f: &dyn Fn(&PositionStats) -> Option<f64>| -> Option<Distribution> {
        summarize(&all.iter().filter_map(f).collect::<Vec<_>>()).map(distribution)
    };
    // Each prompt's mean over its scored positions: the row's own mean when every position is scored.
    let per_prompt: Vec<f64> = indices
        .iter()
        .filter_map(|&i| kept(i, 0).map(|s| s.kl_tuned_base).collect::<RunningMean>().mean())
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let agreement =
        (!all.is_empty()).then(|| all.iter().filter(|s| s.top_base == s.top_tuned).count() as f64 / all.len() as f64);
    let summary = BehaviourSummary {
        kl_tuned_base: values(&|s| Some(s.kl_tuned_base)),
        kl_base_tuned: values(&|s| Some(s.kl_base_tuned)),
        kl_tuned_base_per_prompt: summarize(&per_prompt).map(distribution),
        top1_agreement: agreement,
        delta_p_next: values(&|s| s.next.map(|n| n.p_tuned - n.p_base)),
        delta_p_base_top: values(&|s| Some(s.p_tuned_of_base_top - s.p_base_of_base_top)),
        entropy_base: values(&|s| Some(s.entropy_base)),
        entropy_tuned: values(&|s| Some(s.entropy_tuned)),
    };
    (summary, folded)
}

fn prompt_row(
    index: usize,
    prompt: &EncodedPrompt,
    stats: &[Option<PositionStats>],
    tokens: &[String],
) -> PromptBehaviour {
    let kl_tb: Vec<Option<f64>> = stats.iter().map(|s| s.map(|s| s.kl_tuned_base)).collect();
    let kl_bt: Vec<Option<f64>> = stats.iter().map(|s| s.map(|s| s.kl_base_tuned)).collect();
    let delta_p_next = stats
        .iter()
        .map(|s| s.and_then(|s| s.next).map(|n| n.p_tuned - n.p_base))
        .collect();
    let mean = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<RunningMean>().mean();
    let finite: Vec<&PositionStats> = stats.iter().flatten().collect();
    #[allow(clippy::cast_precision_loss)]
    let agreement = (!finite.is_empty())
        .then(|| finite.iter().filter(|s| s.top_base == s.top_tuned).count() as f64 / finite.len() as f64);
    PromptBehaviour {
        index,
        line: prompt.line,
        id: prompt.id.clone(),
        shared_prefix_tokens: 0,
        group: prompt.group.clone(),
        chat_template: prompt.chat_template,
        tokens: tokens.to_vec(),
        mean_kl_tuned_base: mean(&kl_tb),
        mean_kl_base_tuned: mean(&kl_bt),
        max_kl_tuned_base: kl_tb.iter().flatten().copied().max_by(f64::total_cmp),
        top1_agreement: agreement,
        kl_tuned_base: kl_tb,
        kl_base_tuned: kl_bt,
        delta_p_next,
        top_base: Vec::new(),
        top_tuned: Vec::new(),
        truncated_tokens: prompt.truncated_tokens,
    }
}

fn divergent(
    r: Ranked,
    tokens: &[String],
    positions: &[Vec<Option<PositionStats>>],
    context: usize,
) -> DivergentPosition {
    let p = r.position;
    let kl_base_tuned = positions[r.prompt][p].map_or(f64::NAN, |s| s.kl_base_tuned);
    DivergentPosition {
        prompt: r.prompt,
        position: p,
        token: tokens[p].clone(),
        next_token: tokens.get(p + 1).cloned(),
        kl_tuned_base: r.kl,
        kl_base_tuned,
        context_before: tokens[p.saturating_sub(context)..p].to_vec(),
        context_after: tokens[(p + 1).min(tokens.len())..(p + 1 + context).min(tokens.len())].to_vec(),
        top_base: r.top_base,
        top_tuned: r.top_tuned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(len: usize) -> EncodedPrompt {
        EncodedPrompt {
            line: 1,
            chat_template: false,
            ids: vec![1; len],
            truncated_tokens: 0,
            group: None,
            id: None,
            scored: vec![true; len],
        }
    }

    /// A repeated prefix is folded only where its earlier copy was counted: with `--score`, a position that was
    /// nobody's in the first prompt and is scored in the second counts once, in the second.
    #[test]
    fn a_prefix_is_folded_only_where_its_earlier_copy_counted() {
        let mut first = prompt(4);
        first.scored = vec![true, false, false, false];
        let mut second = prompt(5);
        second.scored = vec![true, false, true, true, true];
        let third = EncodedPrompt {
            scored: second.scored.clone(),
            ..prompt(5)
        };
        let prompts = [first, second, third];
        // The second shares the ids 1 1 1 1 but is scored where the first was not: only two positions repeat.
        // The third repeats the second whole.
        assert_eq!(shared_prefixes(prompts.iter()), [0, 2, 5]);
        let stats = |len: usize| {
            (0..len)
                .map(|t| {
                    Some(PositionStats {
                        kl_tuned_base: t as f64,
                        kl_base_tuned: t as f64,
                        entropy_base: 1.0,
                        entropy_tuned: 1.0,
                        top_base: 0,
                        top_tuned: 0,
                        p_base_of_base_top: 0.5,
                        p_tuned_of_base_top: 0.5,
                        next: None,
                    })
                })
                .collect::<Vec<_>>()
        };
        let positions: Vec<_> = prompts.iter().map(|p| stats(p.ids.len())).collect();
        let (summary, folded) = summary_of(&[0, 1, 2], &prompts, &positions);
        // Counted: the first's position 0, the second's 2, 3, 4; folded: the second's position 0 (scored in the
        // first) and the third's four scored positions.
        assert_eq!(summary.kl_tuned_base.map(|d| d.n), Some(4));
        assert_eq!(folded, 5);
    }

    #[test]
    fn batches_respect_the_token_budget_and_cover_every_prompt_once() {
        let prompts: Vec<EncodedPrompt> = [5, 9, 0, 3, 9, 12, 1].into_iter().map(prompt).collect();
        let b = batches(&prompts, 20, &[]);
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 3, 4, 5, 6], "empty prompts are not run");
        for batch in &b {
            let longest = batch.iter().map(|&i| prompts[i].ids.len()).max().unwrap();
            assert!(batch.len() == 1 || batch.len() * longest <= 20, "{b:?}");
        }
        assert_eq!(b[0], vec![5], "12 tokens leave no room for another 9");
        // A length switch at 4 (longrope's): prompts of 5 and 3 tokens never share a batch, however much room.
        let b = batches(&prompts, 1000, &[4]);
        assert_eq!(b, vec![vec![5, 1, 4, 0], vec![3, 6]]);
    }

    #[test]
    fn ranking_keeps_the_largest_and_breaks_ties_by_position() {
        let mut c = Collected::new(&[prompt(4), prompt(4)], 2);
        for (kl, p, pos) in [(0.5, 1, 0), (0.9, 0, 3), (0.5, 0, 2), (0.1, 0, 0)] {
            if c.would_rank(kl, p, pos) {
                c.rank(Ranked {
                    kl,
                    prompt: p,
                    position: pos,
                    top_base: vec![],
                    top_tuned: vec![],
                });
            }
        }
        let got: Vec<(f64, usize, usize)> = c.ranked.iter().map(|r| (r.kl, r.prompt, r.position)).collect();
        assert_eq!(got, vec![(0.9, 0, 3), (0.5, 0, 2)]);
    }
}
