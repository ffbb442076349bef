//! Derived data of the `patching` section: the site × layer grid of both directions as images, the cells ordered
//! by share recovered, and per prompt of the per-position sweeps its sites, colour range and position labels.

use egui::{ColorImage, TextureHandle};
use mdiff_core::report::{PatchCell, PatchSection, PositionGrid, PositionSweep};

use super::layer_grid::{LayerGrid, ShareDirection, by_share};
use crate::colors::{self, MISSING};

/// Which run gets the other model's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PatchDirection {
    /// The base's run with the tuned model's activation: the share of KL(tuned‖base) recovered.
    #[default]
    TunedIntoBase,
    /// The tuned model's run with the base's activation: the share of KL(base‖tuned) recovered.
    BaseIntoTuned,
}

impl PatchDirection {
    /// The report's name (`tuned_into_base`, `base_into_tuned`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::TunedIntoBase => "tuned_into_base",
            Self::BaseIntoTuned => "base_into_tuned",
        }
    }
}

impl ShareDirection for PatchDirection {
    type Item = PatchCell;

    const ALL: [Self; 2] = [Self::TunedIntoBase, Self::BaseIntoTuned];

    fn share(self, cell: &PatchCell) -> Option<f64> {
        match self {
            Self::TunedIntoBase => cell.tuned_into_base,
            Self::BaseIntoTuned => cell.base_into_tuned,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::TunedIntoBase => "tuned → base",
            Self::BaseIntoTuned => "base → tuned",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::TunedIntoBase => "tuned → base: the base's run with the tuned model's activation",
            Self::BaseIntoTuned => "base → tuned: the tuned model's run with the base's activation",
        }
    }
}

/// The patching heatmaps, and what the per-position sweeps need.
pub struct PatchView {
    /// The cells on a site × layer grid, sites in forward order (`resid_pre`, `attn_out`, `mlp_out`), and the
    /// share recovered in each direction as an image.
    pub grid: LayerGrid<PatchDirection>,
    /// Cell indices by share recovered tuned → base, largest first; cells without a share last.
    pub by_recovered: Vec<usize>,
    /// One per position sweep, in report order.
    pub sweeps: Vec<SweepView>,
    /// The per-position grid on screen, made when the chosen grid or the theme changes.
    pub sweep_texture: Option<(SweepKey, TextureHandle)>,
}

/// Which per-position grid is drawn, and on which background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SweepKey {
    /// Index into the section's position sweeps.
    pub sweep: usize,
    /// Index into that sweep's [`SweepView::sites`].
    pub site: usize,
    /// Direction.
    pub direction: PatchDirection,
    /// Whether the background is dark (the diverging scale's middle follows the theme).
    pub dark: bool,
}

/// What a per-position sweep's panel needs.
pub struct SweepView {
    /// Sites that have grids, in forward order.
    pub sites: Vec<String>,
    /// Positions: the grids' width.
    pub num_positions: usize,
    /// The colour scale's half-width: the largest |share| over every grid of the prompt (at least a tiny
    /// positive number), so the sites and directions of one prompt compare.
    pub range: f64,
    /// Position axis labels: each token with visible whitespace, truncated.
    pub labels: Vec<String>,
    /// Characters of a typical label (the 80th percentile): how far apart labels must be; longer ones are left
    /// out where they do not fit.
    pub label_chars: usize,
}

/// Characters of a token shown on the position axis.
const LABEL_CHARS: usize = 6;

impl PatchView {
    /// Derives the view of a patching section.
    #[must_use]
    pub fn new(p: &PatchSection) -> Self {
        let sites = ordered_sites(p.cells.iter().map(|c| c.site.name()));
        let placed = p.cells.iter().enumerate().map(|(i, c)| (i, c.site.name(), c.layer));
        Self {
            grid: LayerGrid::new(&p.cells, sites, placed),
            by_recovered: by_share(&p.cells, PatchDirection::TunedIntoBase),
            sweeps: p.position_sweeps.iter().map(SweepView::new).collect(),
            sweep_texture: None,
        }
    }
}

impl SweepView {
    fn new(sweep: &PositionSweep) -> Self {
        let sites = ordered_sites(sweep.grids.iter().map(|g| g.site.name()));
        let num_positions = sweep
            .grids
            .iter()
            .flat_map(|g| g.recovered.iter().map(Vec::len))
            .chain(std::iter::once(sweep.tokens.len()))
            .max()
            .unwrap_or(0);
        let range = sweep
            .grids
            .iter()
            .flat_map(|g| g.recovered.iter().flatten().flatten())
            .filter(|v| v.is_finite())
            .fold(0.0_f64, |m, v| m.max(v.abs()))
            .max(1e-12);
        let labels: Vec<String> = (0..num_positions)
            .map(|i| sweep.tokens.get(i).map_or_else(|| i.to_string(), |t| axis_label(t)))
            .collect();
        let mut lengths: Vec<usize> = labels.iter().map(|l| l.chars().count()).collect();
        lengths.sort_unstable();
        let label_chars = lengths.get(lengths.len() * 4 / 5).copied().unwrap_or(1);
        Self {
            sites,
            num_positions,
            range,
            labels,
            label_chars,
        }
    }

    /// The grid of a site (index into `sites`) and direction.
    #[must_use]
    pub fn grid<'a>(
        &self,
        sweep: &'a PositionSweep,
        site: usize,
        direction: PatchDirection,
    ) -> Option<&'a PositionGrid> {
        let site = self.sites.get(site)?;
        sweep
            .grids
            .iter()
            .find(|g| g.site.name() == *site && g.direction.name() == direction.name())
    }

    /// The grid as an image: one pixel per (layer, position), layer rows top to bottom, on the diverging scale
    /// over ±`range`.
    #[must_use]
    pub fn image(&self, grid: &PositionGrid, dark: bool) -> ColorImage {
        let width = self.num_positions.max(1);
        let height = grid.recovered.len().max(1);
        let mut pixels = vec![MISSING; width * height];
        for (r, row) in grid.recovered.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                if let (Some(v), Some(pixel)) = (v, pixels.get_mut(r * width + c)) {
                    *pixel = colors::diverging(v / self.range, dark);
                }
            }
        }
        ColorImage::new([width, height], pixels)
    }
}

/// Distinct sites, the known ones in forward order, then any others in the order met.
fn ordered_sites<'a>(sites: impl Iterator<Item = &'a str>) -> Vec<String> {
    const FORWARD: [&str; 3] = ["resid_pre", "attn_out", "mlp_out"];
    let mut seen: Vec<String> = Vec::new();
    for site in sites {
        if !seen.iter().any(|s| s == site) {
            seen.push(site.to_string());
        }
    }
    let rank = |s: &String| FORWARD.iter().position(|f| f == s).unwrap_or(FORWARD.len());
    // A stable sort keeps unknown sites in the order met.
    seen.sort_by_key(rank);
    seen
}

/// A token as the position axis writes it: whitespace made visible, at most [`LABEL_CHARS`] characters.
fn axis_label(token: &str) -> String {
    let visible: String = token
        .chars()
        .map(|c| match c {
            '\n' => '↵',
            '\t' => '→',
            ' ' => '·',
            c => c,
        })
        .collect();
    if visible.is_empty() {
        return "''".into();
    }
    match visible.char_indices().nth(LABEL_CHARS) {
        Some((cut, _)) => format!("{}…", &visible[..cut]),
        None => visible,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_in_forward_order() {
        assert_eq!(
            ordered_sites(["mlp_out", "resid_pre", "other", "attn_out", "mlp_out"].into_iter()),
            ["resid_pre", "attn_out", "mlp_out", "other"]
        );
    }

    #[test]
    fn axis_labels_show_whitespace_and_are_short() {
        assert_eq!(axis_label(" you"), "·you");
        assert_eq!(axis_label("\n"), "↵");
        assert_eq!(axis_label(""), "''");
        assert_eq!(axis_label("<|assistant|>"), "<|assi…");
    }
}
