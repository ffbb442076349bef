//! Derived data of the overview's pictures that no section panel already keeps: the lens drift as plot points
//! and the top localized parts (weight swap, activation patching) as bars. The KL histogram and the weights
//! heatmap are the behaviour's and weights' views, drawn smaller.

use mdiff_core::report::headlines::describe_part;
use mdiff_core::report::{LensSection, PatchCell, Report, Site, SwapRow};

use super::layer_grid::{ShareDirection, by_share};
use super::{PatchDirection, SwapDirection};

/// Bars shown per localization method.
pub const TOP_PARTS: usize = 5;

/// The patching site that carries everything before it: `resid_pre` at a late layer recovers nearly all of the
/// divergence by construction, so the overview's bars show where it enters (`attn_out`, `mlp_out`) instead.
const CUMULATIVE_SITE: Site = Site::ResidPre;

/// What the overview draws besides the behaviour's histogram and the weights' heatmap.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OverviewView {
    /// The lens drift per layer, when the report has a lens section.
    pub drift: Option<DriftLine>,
    /// The weight swap's top parts (empty without a swap section).
    pub swap_bars: Vec<PartBar>,
    /// Activation patching's top block outputs (empty without a patching section).
    pub patch_bars: Vec<PartBar>,
}

impl OverviewView {
    /// Derives the overview's pictures from a report.
    #[must_use]
    pub fn new(report: &Report) -> Self {
        Self {
            drift: report.lens.as_ref().map(DriftLine::new),
            swap_bars: report.swap.as_ref().map(|s| swap_bars(&s.rows)).unwrap_or_default(),
            patch_bars: report
                .patching
                .as_ref()
                .map(|p| patch_bars(&p.cells))
                .unwrap_or_default(),
        }
    }
}

/// One bar: a part of the model and the share of the divergence it accounts for.
#[derive(Debug, Clone, PartialEq)]
pub struct PartBar {
    /// What the bar is (`layer 2 mlp`, `layer 2 mlp_out`).
    pub label: String,
    /// The report's name of it (`layers.2.mlp`, `blocks.2.hook_mlp_out`).
    pub name: String,
    /// The share, 1 = all of the divergence (not clamped: a swap can overshoot or make things worse).
    pub share: f64,
    /// Hover text: the report's name and both directions.
    pub details: String,
}

impl PartBar {
    /// A bar whose hover text is `name` and the share in each of the two `directions`.
    fn new(label: String, name: &str, share: f64, directions: [(&str, Option<f64>); 2]) -> Self {
        let mut details = name.to_string();
        for (direction, value) in directions {
            details.push_str(&format!("\n{direction}: {}", share_text(value)));
        }
        Self {
            label,
            name: name.to_string(),
            share,
            details,
        }
    }
}

/// The lens drift per point, ready to plot.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftLine {
    /// (point index, mean drift KL(tuned‖base)) where the mean is present.
    pub drift: Vec<[f64; 2]>,
    /// (point index, its residual-stream part).
    pub residual: Vec<[f64; 2]>,
    /// Each point's axis label: `emb`, then the layer number.
    pub labels: Vec<String>,
    /// The onset point, if any drift.
    pub onset: Option<usize>,
}

impl DriftLine {
    /// From a lens section.
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "a few dozen points")]
    pub fn new(lens: &LensSection) -> Self {
        let series = |value: &dyn Fn(usize) -> Option<f64>| -> Vec<[f64; 2]> {
            (0..lens.points.len())
                .filter_map(|i| value(i).filter(|v| v.is_finite()).map(|v| [i as f64, v]))
                .collect()
        };
        let point = |i: usize| lens.points.get(i);
        Self {
            drift: series(&|i| point(i).and_then(|p| p.drift.as_ref()).map(|d| d.mean)),
            residual: series(&|i| point(i).and_then(|p| p.residual_drift)),
            labels: lens
                .points
                .iter()
                .map(|p| p.layer.map_or_else(|| "emb".into(), |l| l.to_string()))
                .collect(),
            onset: lens.onset,
        }
    }
}

/// The swap's parts (`rows`) that remove the most divergence when swapped back (largest first, at most
/// [`TOP_PARTS`]).
#[must_use]
pub fn swap_bars(rows: &[SwapRow]) -> Vec<PartBar> {
    by_share(rows, SwapDirection::Removed)
        .into_iter()
        .filter_map(|i| rows.get(i))
        .filter_map(|row| {
            let share = row.removed.filter(|v| v.is_finite())?;
            Some(PartBar::new(
                describe_part(&row.part),
                &row.part,
                share,
                [
                    (SwapDirection::Removed.label(), row.removed),
                    (SwapDirection::Introduced.label(), row.introduced),
                ],
            ))
        })
        .take(TOP_PARTS)
        .collect()
}

/// The patching `cells` of block outputs (attention, MLP) whose patch recovers the most of KL(tuned‖base),
/// largest first, at most [`TOP_PARTS`]; `resid_pre` is left out (see [`CUMULATIVE_SITE`]).
#[must_use]
pub fn patch_bars(cells: &[PatchCell]) -> Vec<PartBar> {
    by_share(cells, PatchDirection::TunedIntoBase)
        .into_iter()
        .filter_map(|i| cells.get(i))
        .filter(|cell| cell.site != CUMULATIVE_SITE)
        .filter_map(|cell| {
            let share = cell.tuned_into_base.filter(|v| v.is_finite())?;
            Some(PartBar::new(
                format!("layer {} {}", cell.layer, cell.site),
                &cell.hook,
                share,
                [
                    (PatchDirection::TunedIntoBase.label(), cell.tuned_into_base),
                    (PatchDirection::BaseIntoTuned.label(), cell.base_into_tuned),
                ],
            ))
        })
        .take(TOP_PARTS)
        .collect()
}

fn share_text(share: Option<f64>) -> String {
    share.map_or_else(|| "–".into(), crate::ui::percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(site: &str, layer: usize, share: Option<f64>) -> PatchCell {
        PatchCell {
            hook: format!("blocks.{layer}.hook_{site}"),
            site: site.parse().unwrap(),
            layer,
            tuned_into_base: share,
            base_into_tuned: share.map(|s| s / 2.0),
        }
    }

    #[test]
    fn patch_bars_leave_out_the_cumulative_resid_pre_and_missing_shares() {
        let bars = patch_bars(&[
            cell("resid_pre", 3, Some(0.99)),
            cell("mlp_out", 2, Some(0.6)),
            cell("attn_out", 2, Some(0.1)),
            cell("attn_out", 1, None),
        ]);
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["layer 2 mlp_out", "layer 2 attn_out"]);
        assert!(bars[0].details.starts_with("blocks.2.hook_mlp_out"));
    }

    #[test]
    fn swap_bars_are_the_largest_removed_shares_first() {
        let row = |part: &str, removed: f64| SwapRow {
            part: part.into(),
            layer: None,
            component: String::new(),
            removed: Some(removed),
            introduced: None,
            kl_removed: None,
            kl_introduced: None,
        };
        let rows: Vec<SwapRow> = (0..8)
            .map(|i| row(&format!("layers.{i}.mlp"), f64::from(i) / 10.0))
            .collect();
        let bars = swap_bars(&rows);
        assert_eq!(bars.len(), TOP_PARTS);
        assert_eq!(bars[0].label, "layer 7 mlp");
        assert!((bars[0].share - 0.7).abs() < 1e-12);
        assert_eq!(bars[4].label, "layer 3 mlp");
    }
}
