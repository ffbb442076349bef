//! The headline answer of each section, computed once from a [`Report`].
//!
//! The CLI's summary, the gate's Markdown and the viewer's overview render these: one place picks the top layer,
//! tensor, swap part and patching cells and applies the thresholds below, so the three cannot disagree.
//! The rules are in docs/methods.md ("Headlines").

use super::{
    CrosscoderSection, Distribution, LensSection, PatchCell, PatchSection, Report, Site, SwapRow, SwapSection,
    WeightsSection,
};
use crate::units::significant;

/// A swapped part "carries most of the change" when putting the base's part back removes at least this share of
/// the divergence; below it the change is called spread out.
pub const CONCENTRATED_SHARE: f64 = 0.5;

/// The divergence has "entered" the residual stream at the first `resid_pre` whose patch (tuned into base)
/// recovers at least this share: every later `resid_pre` recovers about as much by construction (the last one
/// carries nearly everything), so the earliest one is what locates the change.
pub const ENTRY_SHARE: f64 = 0.5;

/// How many `attn_out`/`mlp_out` cells the patching headline names.
pub const TOP_OUTPUTS: usize = 2;

/// The headline of every section the report has.
#[derive(Debug, Clone, PartialEq)]
pub struct Headlines {
    /// How much the weights moved, and where most.
    pub weights: Option<WeightsHeadline>,
    /// How much behaviour moved.
    pub behaviour: Option<BehaviourHeadline>,
    /// The part whose swap removes the most.
    pub swap: Option<SwapHeadline>,
    /// Where the divergence enters the residual stream.
    pub patching: Option<PatchHeadline>,
    /// Where the logit lens sees the predictions part.
    pub lens: Option<LensHeadline>,
    /// The crosscoder's latent classes.
    pub crosscoder: Option<CrosscoderHeadline>,
}

impl Headlines {
    /// The headlines of `report`'s sections.
    #[must_use]
    pub fn new(report: &Report) -> Self {
        Self {
            weights: report.weights.as_ref().map(WeightsHeadline::new),
            behaviour: report.behaviour.as_ref().map(BehaviourHeadline::new),
            swap: report.swap.as_ref().and_then(SwapHeadline::new),
            patching: report.patching.as_ref().and_then(PatchHeadline::new),
            lens: report.lens.as_ref().map(LensHeadline::new),
            crosscoder: report.crosscoder.as_ref().map(CrosscoderHeadline::new),
        }
    }
}

/// A share as a percentage with one decimal (`65.8%`).
#[must_use]
pub fn percent(share: f64) -> String {
    format!("{:.1}%", 100.0 * share)
}

/// The weights section in brief.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsHeadline {
    /// Tensors with a changed entry.
    pub num_changed: usize,
    /// Tensors diffed.
    pub num_tensors: usize,
    /// Scalars that changed.
    pub num_changed_parameters: u64,
    /// Scalars diffed.
    pub num_parameters: u64,
    /// ‖ΔW‖/‖W‖ over the whole model.
    pub relative: f64,
    /// The block with the largest relative change, when one changed: (layer, ‖ΔW‖/‖W‖).
    pub top_layer: Option<(usize, f64)>,
    /// The changed tensor with the largest relative change (`None` relative: a zero base, ranked first).
    pub top_tensor: Option<(String, Option<f64>)>,
}

impl WeightsHeadline {
    /// The headline of a weights section.
    #[must_use]
    pub fn new(w: &WeightsSection) -> Self {
        let t = &w.totals;
        let top_layer = w
            .layers
            .iter()
            .filter(|l| l.stats.num_changed > 0)
            .max_by(|a, b| {
                a.stats
                    .relative
                    .total_cmp(&b.stats.relative)
                    .then(b.layer.cmp(&a.layer))
            })
            .map(|l| (l.layer, l.stats.relative));
        let top_tensor = w
            .tensors
            .iter()
            .filter(|t| t.num_changed > 0)
            .max_by(|a, b| {
                let key = |r: Option<f64>| r.unwrap_or(f64::INFINITY);
                key(a.relative).total_cmp(&key(b.relative)).then(b.name.cmp(&a.name))
            })
            .map(|t| (t.name.clone(), t.relative));
        Self {
            num_changed: t.num_changed,
            num_tensors: t.num_tensors,
            num_changed_parameters: t.num_changed_parameters,
            num_parameters: t.num_parameters,
            relative: t.relative,
            top_layer,
            top_tensor,
        }
    }
}

/// The behaviour section in brief.
#[derive(Debug, Clone, PartialEq)]
pub struct BehaviourHeadline {
    /// KL(tuned‖base) per position, each distinct token prefix counted once.
    pub kl: Option<Distribution>,
    /// Share of positions where both models' top token agrees.
    pub top1_agreement: Option<f64>,
    /// Prompts scored.
    pub num_prompts: usize,
    /// Positions scored.
    pub num_positions: u64,
    /// Positions left out of the headline figures because an earlier prompt had the same token prefix.
    pub folded_positions: u64,
    /// The single most divergent position.
    pub largest: Option<LargestDivergence>,
}

/// The position where the models part most.
#[derive(Debug, Clone, PartialEq)]
pub struct LargestDivergence {
    /// The prompt's id (or its index when the prompt file gives none).
    pub prompt: String,
    /// Token position in the prompt.
    pub position: usize,
    /// The token there.
    pub token: String,
    /// KL(tuned‖base) there.
    pub kl_tuned_base: f64,
}

impl BehaviourHeadline {
    /// The headline of a behaviour section.
    #[must_use]
    pub fn new(b: &super::BehaviourSection) -> Self {
        Self {
            kl: b.summary.kl_tuned_base.clone(),
            top1_agreement: b.summary.top1_agreement,
            num_prompts: b.num_prompts,
            num_positions: b.num_positions,
            folded_positions: b.folded_positions,
            largest: b.top_positions.first().map(|p| LargestDivergence {
                prompt: b.prompt_label(p.prompt),
                position: p.position,
                token: p.token.clone(),
                kl_tuned_base: p.kl_tuned_base,
            }),
        }
    }

    /// The 99th percentile of the KL, when there is one.
    #[must_use]
    pub fn kl_p99(&self) -> Option<f64> {
        self.kl.as_ref().and_then(|d| d.percentiles.get("p99").copied())
    }

    /// `mean 0.1234 nats, p99 0.5678, max 1.234`: the KL in one phrase.
    #[must_use]
    pub fn kl_phrase(&self) -> Option<String> {
        let kl = self.kl.as_ref()?;
        Some(format!(
            "mean {} nats, p99 {}, max {}",
            significant(kl.mean),
            self.kl_p99().map_or_else(|| "–".into(), significant),
            significant(kl.max)
        ))
    }
}

/// The weight-swap section in brief.
#[derive(Debug, Clone, PartialEq)]
pub struct SwapHeadline {
    /// The part whose swap removes the most (`layers.3.mlp`).
    pub part: String,
    /// The part as people read it (`layer 3 mlp`).
    pub label: String,
    /// The share of the divergence swapping it back removes.
    pub removed: f64,
    /// Whether that share reaches [`CONCENTRATED_SHARE`].
    pub concentrated: bool,
    /// The first layer L such that blocks 0..=L swapped together remove [`CONCENTRATED_SHARE`], with that share.
    pub half_prefix: Option<(usize, f64)>,
    /// The share all blocks swapped together remove.
    pub all_blocks_removed: Option<f64>,
}

impl SwapHeadline {
    /// The headline of a swap section; `None` when no part has a finite share.
    #[must_use]
    pub fn new(s: &SwapSection) -> Option<Self> {
        let best: &SwapRow = s
            .rows
            .iter()
            .filter(|r| r.removed.is_some_and(f64::is_finite))
            // Ties go to the earlier part, as the report lists parts in depth order.
            .rev()
            .max_by(|a, b| a.removed.unwrap_or(0.0).total_cmp(&b.removed.unwrap_or(0.0)))?;
        let removed = best.removed?;
        Some(Self {
            part: best.part.clone(),
            label: describe_part(&best.part),
            removed,
            concentrated: removed >= CONCENTRATED_SHARE,
            half_prefix: s.cumulative.iter().find_map(|c| {
                c.prefix_removed
                    .filter(|r| *r >= CONCENTRATED_SHARE)
                    .map(|r| (c.layer, r))
            }),
            all_blocks_removed: s.cumulative.first().and_then(|c| c.suffix_removed),
        })
    }

    /// Where the change sits, as a sentence (no final full stop).
    #[must_use]
    pub fn sentence(&self) -> String {
        if self.concentrated {
            format!(
                "most of the change sits in {}: swapping it back removes {} of the KL",
                self.label,
                percent(self.removed)
            )
        } else {
            format!(
                "the change is spread out: no single part removes half of the KL (at most {}, {})",
                percent(self.removed),
                self.label
            )
        }
    }

    /// How many blocks from the first one remove half the divergence together, as a sentence.
    #[must_use]
    pub fn cumulative_sentence(&self) -> Option<String> {
        let (layer, removed) = self.half_prefix?;
        Some(format!(
            "blocks 0–{layer} swapped together remove {}; all blocks remove {}",
            percent(removed),
            self.all_blocks_removed.map_or_else(|| "–".into(), percent)
        ))
    }
}

/// `layers.3.mlp` → `layer 3 mlp`; other names as they are.
#[must_use]
pub fn describe_part(part: &str) -> String {
    match part.strip_prefix("layers.").and_then(|rest| rest.split_once('.')) {
        Some((layer, piece)) => format!("layer {layer} {piece}"),
        None => part.to_string(),
    }
}

/// One patched activation and the share it recovers (tuned into base).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchShare {
    /// TransformerLens name (`blocks.11.hook_mlp_out`).
    pub hook: String,
    /// The block.
    pub layer: usize,
    /// Share of KL(tuned‖base) recovered.
    pub recovered: f64,
}

impl PatchShare {
    fn of(cell: &PatchCell) -> Option<Self> {
        Some(Self {
            hook: cell.hook.clone(),
            layer: cell.layer,
            recovered: cell.tuned_into_base.filter(|r| r.is_finite())?,
        })
    }
}

/// The patching section in brief: where the divergence enters the residual stream, and the block outputs that
/// carry the most of it on their own (docs/methods.md, "Headlines").
#[derive(Debug, Clone, PartialEq)]
pub struct PatchHeadline {
    /// The first `resid_pre` recovering at least [`ENTRY_SHARE`]; `None` when none does (or none was patched).
    pub entry: Option<PatchShare>,
    /// The patched `resid_pre` just before `entry`, to show the step.
    pub before_entry: Option<PatchShare>,
    /// The `attn_out`/`mlp_out` cells with the largest shares, largest first (at most [`TOP_OUTPUTS`]).
    pub top_outputs: Vec<PatchShare>,
    /// The largest share any `resid_pre` recovers, when `entry` is `None`.
    pub best_resid: Option<PatchShare>,
}

impl PatchHeadline {
    /// The headline of a patching section; `None` when no cell has a finite share.
    #[must_use]
    pub fn new(p: &PatchSection) -> Option<Self> {
        let mut resid: Vec<PatchShare> = p
            .cells
            .iter()
            .filter(|c| c.site == Site::ResidPre)
            .filter_map(PatchShare::of)
            .collect();
        resid.sort_by_key(|s| s.layer);
        let entry_at = resid.iter().position(|s| s.recovered >= ENTRY_SHARE);
        let entry = entry_at.and_then(|i| resid.get(i)).cloned();
        let before_entry = entry_at
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| resid.get(i))
            .cloned();
        let best_resid = if entry.is_some() {
            None
        } else {
            resid
                .iter()
                .rev()
                .max_by(|a, b| a.recovered.total_cmp(&b.recovered))
                .cloned()
        };
        let mut outputs: Vec<PatchShare> = p
            .cells
            .iter()
            .filter(|c| matches!(c.site, Site::AttnOut | Site::MlpOut))
            .filter_map(PatchShare::of)
            .collect();
        // Largest first; equal shares in forward order.
        outputs.sort_by(|a, b| b.recovered.total_cmp(&a.recovered));
        outputs.truncate(TOP_OUTPUTS);
        if entry.is_none() && best_resid.is_none() && outputs.is_empty() {
            return None;
        }
        Some(Self {
            entry,
            before_entry,
            top_outputs: outputs,
            best_resid,
        })
    }

    /// Where the divergence enters, as a sentence (no final full stop).
    #[must_use]
    pub fn sentence(&self) -> String {
        let mut parts = Vec::new();
        match (&self.entry, &self.best_resid) {
            (Some(entry), _) => {
                let step = self
                    .before_entry
                    .as_ref()
                    .map_or_else(String::new, |b| format!(" ({}: {})", b.hook, percent(b.recovered)));
                let after = match entry.layer.checked_sub(1) {
                    Some(block) => format!("block {block}"),
                    None => "the embedding".into(),
                };
                parts.push(format!(
                    "most of the divergence is in the residual stream after {after}: {} recovers {}{step}",
                    entry.hook,
                    percent(entry.recovered)
                ));
            }
            (None, Some(best)) => parts.push(format!(
                "no resid_pre recovers {} of the divergence (at most {}, {})",
                percent(ENTRY_SHARE),
                percent(best.recovered),
                best.hook
            )),
            (None, None) => {}
        }
        if !self.top_outputs.is_empty() {
            let outputs: Vec<String> = self
                .top_outputs
                .iter()
                .map(|o| format!("{} {}", o.hook, percent(o.recovered)))
                .collect();
            parts.push(format!("largest block outputs on their own: {}", outputs.join(", ")));
        }
        parts.join("; ")
    }
}

/// The lens section in brief.
#[derive(Debug, Clone, PartialEq)]
pub struct LensHeadline {
    /// The point where the predictions start to part (`blocks.5.hook_resid_post`), when they part.
    pub onset_hook: Option<String>,
    /// Its block; `None` for the embedding (or no onset).
    pub onset_layer: Option<usize>,
    /// Mean drift at the last point.
    pub final_drift: Option<f64>,
}

impl LensHeadline {
    /// The headline of a lens section.
    #[must_use]
    pub fn new(lens: &LensSection) -> Self {
        let onset = lens.onset.and_then(|i| lens.points.get(i));
        Self {
            onset_hook: onset.map(|p| p.hook.clone()),
            onset_layer: onset.and_then(|p| p.layer),
            final_drift: lens.points.last().and_then(|p| p.drift.as_ref()).map(|d| d.mean),
        }
    }

    /// `parting at blocks.5.hook_resid_post (layer 5)`, or that the lenses agree, as a phrase.
    #[must_use]
    pub fn onset_phrase(&self) -> String {
        match (&self.onset_hook, self.onset_layer) {
            (Some(hook), Some(layer)) => format!("parting at layer {layer} ({hook})"),
            (Some(hook), None) => format!("parting at the embedding ({hook})"),
            (None, _) => "no drift".into(),
        }
    }
}

/// The crosscoder section in brief.
#[derive(Debug, Clone, PartialEq)]
pub struct CrosscoderHeadline {
    /// The hook it was trained on.
    pub hook: String,
    /// Live latents only the tuned model uses.
    pub tuned_only: usize,
    /// Live latents only the base uses.
    pub base_only: usize,
    /// Live latents both use.
    pub shared: usize,
    /// Live latents in none of the three classes.
    pub other: usize,
    /// `tuned_only` over the live latents.
    pub tuned_only_share: f64,
    /// Fraction of variance unexplained, base.
    pub fvu_base: f64,
    /// Fraction of variance unexplained, tuned.
    pub fvu_tuned: f64,
}

impl CrosscoderHeadline {
    /// The headline of a crosscoder section.
    #[must_use]
    pub fn new(c: &CrosscoderSection) -> Self {
        Self {
            hook: c.hook.clone(),
            tuned_only: c.classes.tuned_only,
            base_only: c.classes.base_only,
            shared: c.classes.shared,
            other: c.classes.other,
            tuned_only_share: c.tuned_only_share,
            fvu_base: c.fvu_base,
            fvu_tuned: c.fvu_tuned,
        }
    }

    /// `3 tuned-only (1.2% of live), 1 base-only, 200 shared`.
    #[must_use]
    pub fn classes_phrase(&self) -> String {
        format!(
            "{} tuned-only ({} of live), {} base-only, {} shared",
            self.tuned_only,
            percent(self.tuned_only_share),
            self.base_only,
            self.shared
        )
    }
}

#[cfg(test)]
#[path = "headlines_tests.rs"]
mod tests;
