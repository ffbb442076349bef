//! What the viewer holds: the loaded report, what is selected, and everything derived from the report that
//! drawing needs (sort orders, histogram bins, the heatmap image). Derived data is computed once when a report
//! is loaded, never per frame. No drawing here.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

use egui::{Color32, ColorImage, TextureHandle, TextureId, TextureOptions};
use mdiff_core::report::headlines::Headlines;
use mdiff_core::report::{BehaviourSection, Component, Method, Report, WeightsSection, parse_report};

use crate::colors::Scale;

mod crosscoder;
mod layer_grid;
mod overview;
mod patching;
mod swap;

pub use crosscoder::{ClassFilter, CrosscoderSelection, CrosscoderView, LatentColumn};
pub use layer_grid::{LayerGrid, ShareDirection};
pub use overview::{DriftLine, OverviewView, PartBar, TOP_PARTS};
pub use patching::{PatchDirection, PatchView, SweepKey, SweepView};
pub use swap::{SwapDirection, SwapView, sentence};

/// A loaded report and what is derived from it.
pub struct Document {
    /// Where it came from (a path, a URL or a dropped file's name).
    pub source: String,
    /// The report itself.
    pub report: Report,
    /// Derived data of the `weights` section, when present.
    pub weights: Option<WeightsView>,
    /// Derived data of the `behaviour` section, when present.
    pub behaviour: Option<BehaviourView>,
    /// Derived data of the `swap` section, when present.
    pub swap: Option<SwapView>,
    /// Derived data of the `patching` section, when present.
    pub patching: Option<PatchView>,
    /// Derived data of the `crosscoder` section, when present.
    pub crosscoder: Option<CrosscoderView>,
    /// The overview's lens line and localization bars.
    pub overview: OverviewView,
    /// Each section's headline answer, as the CLI and the gate word it (diff-core's `report::headlines`).
    pub headlines: Headlines,
}

impl Document {
    /// Parses a report and derives what the panels need.
    ///
    /// # Errors
    /// A one-line message for corrupt or truncated JSON, a missing version or a newer major schema.
    pub fn parse(source: &str, bytes: &[u8]) -> Result<Self, String> {
        let report = parse_report(bytes, Path::new(source)).map_err(|e| e.to_string())?;
        Ok(Self::new(source.to_string(), report))
    }

    /// Derives the panels' data from a parsed report.
    #[must_use]
    pub fn new(source: String, report: Report) -> Self {
        let weights = report.weights.as_ref().map(WeightsView::new);
        let behaviour = report.behaviour.as_ref().map(BehaviourView::new);
        let swap = report.swap.as_ref().map(SwapView::new);
        let patching = report.patching.as_ref().map(PatchView::new);
        let crosscoder = report.crosscoder.as_ref().map(CrosscoderView::new);
        let overview = OverviewView::new(&report);
        let headlines = Headlines::new(&report);
        Self {
            source,
            report,
            weights,
            behaviour,
            swap,
            patching,
            crosscoder,
            overview,
            headlines,
        }
    }
}

/// The panels, one per report section, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tab {
    /// Inputs, headline numbers, skipped sections.
    Overview,
    /// A report section, shown by its method's panel.
    Section(Method),
}

impl Tab {
    /// Every tab in display order.
    #[must_use]
    pub fn all() -> Vec<Self> {
        std::iter::once(Self::Overview)
            .chain(Method::ALL.into_iter().map(Self::Section))
            .collect()
    }

    /// The tab's label (also what UI tests click).
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Overview => "Overview",
            Self::Section(Method::Weights) => "Weights",
            Self::Section(Method::Kl) => "Behaviour",
            Self::Section(Method::Swap) => "Weight swap",
            Self::Section(Method::Patch) => "Patching",
            Self::Section(Method::Lens) => "Logit lens",
            Self::Section(Method::Crosscoder) => "Crosscoder",
        }
    }
}

/// What the user has selected; survives nothing but the current report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    /// The heatmap cell (layer, component) whose tensors the table lists; `None` lists every tensor.
    pub weights_cell: Option<(usize, Component)>,
    /// Index into the report's tensors of the row whose spectrum is shown.
    pub tensor: Option<usize>,
    /// Column and direction the tensor table is sorted by.
    pub tensor_sort: TableSort<TensorColumn>,
    /// Index of the prompt shown in the behaviour panel.
    pub prompt: Option<usize>,
    /// Position selected in that prompt (click or arrow keys).
    pub token: Option<usize>,
    /// Text the prompt list is filtered by (case-insensitive substring of the prompt text).
    pub prompt_filter: String,
    /// Index into the lens section's top positions of the one whose layers are tabled.
    pub lens_position: usize,
    /// Index into the patching section's position sweeps of the one shown.
    pub patch_sweep: usize,
    /// Site of the per-position grid shown: index into that sweep's [`SweepView::sites`].
    pub patch_site: usize,
    /// Direction of the per-position grid shown.
    pub patch_direction: PatchDirection,
    /// Sort, class filter and latent chosen in the crosscoder panel.
    pub crosscoder: CrosscoderSelection,
}

/// Sort key of a table whose columns are `C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSort<C> {
    /// Column.
    pub column: C,
    /// Largest first.
    pub descending: bool,
}

/// Orders two optional values: both present by `order`, a present one before an absent one whichever way the
/// table is sorted, so rows without a value stay at the bottom.
pub fn present_first(a: Option<f64>, b: Option<f64>, order: impl FnOnce(f64, f64) -> Ordering) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => order(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

impl Default for TableSort<TensorColumn> {
    fn default() -> Self {
        Self {
            column: TensorColumn::Relative,
            descending: true,
        }
    }
}

/// Sortable columns of the tensor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorColumn {
    /// Tensor name.
    Name,
    /// ‖ΔW‖ / ‖W_base‖.
    Relative,
    /// ‖ΔW‖.
    DeltaNorm,
    /// Cosine between base and tuned.
    Cosine,
    /// Largest |Δ|.
    MaxAbs,
    /// Share of changed elements.
    Changed,
    /// Stable rank of ΔW.
    StableRank,
    /// Effective rank of ΔW.
    EffectiveRank,
}

/// The weights heatmap and indices the panel needs.
pub struct WeightsView {
    /// Heatmap columns: transformer blocks 0..num_layers.
    pub num_layers: usize,
    /// Heatmap rows, top to bottom: the components that occur inside blocks.
    pub components: Vec<Component>,
    /// Relative ‖ΔW‖ per (component row, layer), row-major; `None` where the block has no such tensors.
    pub cells: Vec<Option<f64>>,
    /// Largest cell value: the top of the colour scale.
    pub max_relative: f64,
    /// The heatmap as an image, one pixel per cell, row 0 = first component.
    pub image: ColorImage,
    /// The image uploaded to the GPU, made on first draw.
    pub texture: Option<TextureHandle>,
    /// Tensor indices per (layer, component) cell.
    pub cell_tensors: BTreeMap<(usize, Component), Vec<usize>>,
    /// Tensors outside the blocks (embeddings, final norm, LM head).
    pub outside_tensors: Vec<usize>,
}

impl WeightsView {
    fn new(w: &WeightsSection) -> Self {
        let num_layers = w.layer_components.iter().map(|c| c.layer + 1).max().unwrap_or(0);
        let components: Vec<Component> = Component::ALL
            .into_iter()
            .filter(|c| w.layer_components.iter().any(|lc| lc.component == *c))
            .collect();
        let mut cells = vec![None; components.len() * num_layers];
        for lc in &w.layer_components {
            if let Some(row) = components.iter().position(|c| *c == lc.component)
                && let Some(cell) = cells.get_mut(row * num_layers + lc.layer)
            {
                *cell = Some(lc.stats.relative);
            }
        }
        let max_relative = cells.iter().flatten().copied().fold(0.0, f64::max);
        let image = heatmap_image(&cells, num_layers, components.len(), max_relative);
        let mut cell_tensors: BTreeMap<(usize, Component), Vec<usize>> = BTreeMap::new();
        let mut outside_tensors = Vec::new();
        for (i, t) in w.tensors.iter().enumerate() {
            match t.layer {
                Some(layer) => cell_tensors.entry((layer, t.component)).or_default().push(i),
                None => outside_tensors.push(i),
            }
        }
        Self {
            num_layers,
            components,
            cells,
            max_relative,
            image,
            texture: None,
            cell_tensors,
            outside_tensors,
        }
    }

    /// The heatmap's texture, uploaded on the first call (the weights panel and the overview share it).
    pub fn texture_id(&mut self, ctx: &egui::Context) -> TextureId {
        self.texture
            .get_or_insert_with(|| ctx.load_texture("weights-heatmap", self.image.clone(), TextureOptions::NEAREST))
            .id()
    }

    /// Relative change of a cell, when it has tensors.
    #[must_use]
    pub fn cell(&self, layer: usize, component: Component) -> Option<f64> {
        let row = self.components.iter().position(|c| *c == component)?;
        if layer >= self.num_layers {
            return None;
        }
        self.cells.get(row * self.num_layers + layer).copied().flatten()
    }
}

/// A heatmap as an image, one pixel per cell, and its texture once drawn.
pub struct HeatmapImage {
    /// The cells, row 0 at the top.
    pub image: ColorImage,
    /// The image uploaded to the GPU, made on first draw.
    pub texture: Option<TextureHandle>,
}

impl HeatmapImage {
    /// An image of `width` × `height` cells (at least 1 × 1, so an empty section still makes a texture).
    #[must_use]
    pub fn new(width: usize, height: usize, pixels: Vec<Color32>) -> Self {
        let size = [width.max(1), height.max(1)];
        let image = if pixels.len() == size[0] * size[1] {
            ColorImage::new(size, pixels)
        } else {
            ColorImage::new([1, 1], vec![crate::colors::MISSING])
        };
        Self { image, texture: None }
    }

    /// The texture, uploaded on the first call.
    pub fn texture_id(&mut self, ctx: &egui::Context, name: &str) -> TextureId {
        self.texture
            .get_or_insert_with(|| ctx.load_texture(name, self.image.clone(), TextureOptions::NEAREST))
            .id()
    }
}

/// Colour of a heatmap value: its share of the largest value on viridis.
#[must_use]
pub fn heat(value: f64, max: f64) -> Color32 {
    Scale::Viridis.at(if max > 0.0 { value / max } else { 0.0 })
}

fn heatmap_image(cells: &[Option<f64>], width: usize, height: usize, max: f64) -> ColorImage {
    let pixels = cells
        .iter()
        .map(|c| c.map_or(crate::colors::MISSING, |v| heat(v, max)))
        .collect();
    ColorImage::new([width.max(1), height.max(1)], pixels)
}

/// Sort orders, search text and histogram of the behaviour section.
pub struct BehaviourView {
    /// Prompt indices by mean KL(P_tuned‖P_base), largest first; prompts without a finite position last.
    pub by_kl: Vec<usize>,
    /// Each prompt's text, lower-cased, for the filter.
    pub search_text: Vec<String>,
    /// Each prompt's first characters, for the list.
    pub previews: Vec<String>,
    /// The KL colour scale: log10 of the KL at its low and high end.
    pub kl_range: KlRange,
    /// Histogram of log10 KL(P_tuned‖P_base) over every finite position.
    pub histogram: Histogram,
    /// Index into `top_positions` by (prompt, position).
    pub divergent_at: BTreeMap<(usize, usize), usize>,
}

/// Characters of a prompt shown in the list.
const PREVIEW_CHARS: usize = 120;

impl BehaviourView {
    fn new(b: &BehaviourSection) -> Self {
        let mut by_kl: Vec<usize> = (0..b.prompts.len()).collect();
        let mean = |i: usize| b.prompts.get(i).and_then(|p| p.mean_kl_tuned_base);
        by_kl.sort_by(|&x, &y| present_first(mean(x), mean(y), |a, c| c.total_cmp(&a)).then(x.cmp(&y)));
        let texts: Vec<String> = b.prompts.iter().map(|p| p.tokens.concat()).collect();
        let previews = texts
            .iter()
            .map(|t| {
                let flat: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
                match flat.char_indices().nth(PREVIEW_CHARS) {
                    Some((cut, _)) => format!("{}…", &flat[..cut]),
                    None => flat,
                }
            })
            .collect();
        let search_text = texts.iter().map(|t| t.to_lowercase()).collect();
        let kl = b.prompts.iter().flat_map(|p| p.kl_tuned_base.iter().flatten().copied());
        let kl_range = KlRange::new(b);
        let histogram = Histogram::new(kl, kl_range);
        let divergent_at = b
            .top_positions
            .iter()
            .enumerate()
            .map(|(i, d)| ((d.prompt, d.position), i))
            .collect();
        Self {
            by_kl,
            search_text,
            previews,
            kl_range,
            histogram,
            divergent_at,
        }
    }

    /// Prompts in list order that match `filter` (case-insensitive; empty matches all).
    #[must_use]
    pub fn filtered(&self, filter: &str) -> Vec<usize> {
        let needle = filter.trim().to_lowercase();
        self.by_kl
            .iter()
            .copied()
            .filter(|&i| needle.is_empty() || self.search_text.get(i).is_some_and(|t| t.contains(&needle)))
            .collect()
    }
}

/// KL values below this are shown as "no divergence" (log scales need a floor).
pub const KL_FLOOR: f64 = 1e-6;

/// The range the KL colour scale spans, in log10 nats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlRange {
    /// log10 of the KL at the low end of the colours.
    pub lo: f64,
    /// log10 of the KL at the high end.
    pub hi: f64,
}

impl KlRange {
    /// From the 1st percentile to the maximum: the few smallest values do not stretch the scale, and the largest
    /// value still gets the top colour.
    fn new(b: &BehaviourSection) -> Self {
        let Some(d) = &b.summary.kl_tuned_base else {
            return Self { lo: -3.0, hi: 0.0 };
        };
        let lo = d.percentiles.get("p1").copied().unwrap_or(d.min).max(KL_FLOOR).log10();
        let hi = d.max.max(KL_FLOOR).log10();
        if hi - lo < 1e-9 {
            Self {
                lo: lo - 1.0,
                hi: hi + 0.1,
            }
        } else {
            Self { lo, hi }
        }
    }

    /// Where `kl` falls on the scale, in [0, 1].
    #[must_use]
    pub fn t(&self, kl: f64) -> f64 {
        ((kl.max(KL_FLOOR).log10() - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
    }
}

/// Counts of log10 KL in equal-width bins.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// log10 KL at the left edge of the first bin.
    pub start: f64,
    /// Bin width in log10 units.
    pub width: f64,
    /// Count per bin.
    pub counts: Vec<u64>,
}

/// Bins of the KL histogram.
const HISTOGRAM_BINS: usize = 60;

impl Histogram {
    fn new(values: impl Iterator<Item = f64>, range: KlRange) -> Self {
        // Floor-clamped values pile into the first bin rather than vanishing.
        let lo = range.lo.min(KL_FLOOR.log10().max(range.lo - 1.0));
        let width = (range.hi - lo) / HISTOGRAM_BINS as f64;
        if width <= 0.0 || !width.is_finite() {
            return Self::default();
        }
        let mut counts = vec![0u64; HISTOGRAM_BINS];
        for v in values {
            let x = (v.max(KL_FLOOR).log10() - lo) / width;
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "clamped to the bins"
            )]
            let bin = (x.max(0.0) as usize).min(HISTOGRAM_BINS - 1);
            if let Some(c) = counts.get_mut(bin) {
                *c += 1;
            }
        }
        Self {
            start: lo,
            width,
            counts,
        }
    }
}

/// Everything the viewer shows: the loaded document (if any), the selection, and messages.
#[derive(Default)]
pub struct ViewerState {
    /// The report on screen.
    pub document: Option<Document>,
    /// The active panel.
    pub tab: Option<Tab>,
    /// What is selected in the document.
    pub selection: Selection,
    /// The last load error, shown until dismissed or until a report loads.
    pub error: Option<String>,
    /// Name of the report being loaded, while it loads.
    pub loading: Option<String>,
}

impl ViewerState {
    /// Replaces the document, resets the selection and picks the first panel that has data.
    pub fn set_document(&mut self, document: Document) {
        self.selection = Selection {
            prompt: document.behaviour.as_ref().and_then(|b| b.by_kl.first().copied()),
            ..Selection::default()
        };
        self.error = None;
        self.loading = None;
        self.tab = Some(self.tab.unwrap_or(Tab::Overview));
        self.document = Some(document);
    }

    /// The active panel.
    #[must_use]
    pub fn active_tab(&self) -> Tab {
        self.tab.unwrap_or(Tab::Overview)
    }
}
