//! Derived data of the `swap` section: the layer × part grid of both directions as images, the parts outside the
//! blocks, the parts ordered by share removed, and the one-line answer.

use mdiff_core::report::headlines::SwapHeadline;
use mdiff_core::report::{SwapRow, SwapSection};

use super::layer_grid::{LayerGrid, ShareDirection, by_share};

/// A swap direction: which model gets the other's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapDirection {
    /// The tuned model with the base's part: the share of the divergence removed.
    Removed,
    /// The base with the tuned model's part: the share of the divergence introduced.
    Introduced,
}

impl ShareDirection for SwapDirection {
    type Item = SwapRow;

    const ALL: [Self; 2] = [Self::Removed, Self::Introduced];

    fn share(self, row: &SwapRow) -> Option<f64> {
        match self {
            Self::Removed => row.removed,
            Self::Introduced => row.introduced,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::Introduced => "introduced",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Removed => "removed: the tuned model with the base's part",
            Self::Introduced => "introduced: the base with the tuned model's part",
        }
    }
}

/// The swap heatmaps and orders the panel needs.
pub struct SwapView {
    /// The block parts on a part × layer grid, parts in depth order (`attn`, `mlp`; at tensor granularity the
    /// module names after `layers.L.`, such as `self_attn.q_proj`), and each direction's share as an image.
    pub grid: LayerGrid<SwapDirection>,
    /// Rows of the parts outside the blocks (`embed`, `ln_final`, `lm_head`), in depth order.
    pub outside: Vec<usize>,
    /// Row indices by share removed, largest first; rows without a share last.
    pub by_removed: Vec<usize>,
    /// Where the change sits, in one line (as `mdiff compare` prints it); `None` when no part has a share.
    pub headline: Option<String>,
    /// How many blocks from the first one, swapped together, remove half of the divergence.
    pub cumulative_line: Option<String>,
}

impl SwapView {
    /// Derives the view of a swap section.
    #[must_use]
    pub fn new(s: &SwapSection) -> Self {
        let mut placed = Vec::new();
        let mut outside = Vec::new();
        for (i, row) in s.rows.iter().enumerate() {
            match row.layer {
                Some(layer) => placed.push((i, block_part(row, layer), layer)),
                None => outside.push(i),
            }
        }
        let mut parts: Vec<String> = Vec::new();
        for (_, part, _) in &placed {
            if !parts.contains(part) {
                parts.push(part.clone());
            }
        }
        let by_removed = by_share(&s.rows, SwapDirection::Removed);
        // The answer and its thresholds are diff-core's (`report::headlines`), shared with the CLI and the gate.
        let answer = SwapHeadline::new(s);
        let headline = answer.as_ref().map(|h| sentence(&h.sentence()));
        let cumulative_line = answer
            .as_ref()
            .and_then(SwapHeadline::cumulative_sentence)
            .map(|c| sentence(&c));
        Self {
            grid: LayerGrid::new(&s.rows, parts, placed),
            outside,
            by_removed,
            headline,
            cumulative_line,
        }
    }
}

/// A block part's heatmap row: the part name after `layers.{layer}.`, else its component.
fn block_part(row: &SwapRow, layer: usize) -> String {
    let prefix = format!("layers.{layer}.");
    match row.part.find(&prefix) {
        Some(at) => row.part[at + prefix.len()..].to_string(),
        None => row.component.clone(),
    }
}

/// A headline phrase as a sentence: capital first letter, full stop.
pub fn sentence(phrase: &str) -> String {
    let mut chars = phrase.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdiff_core::report::CumulativeSwap;

    fn row(part: &str, layer: Option<usize>, component: &str, removed: f64) -> SwapRow {
        SwapRow {
            part: part.into(),
            layer,
            component: component.into(),
            removed: Some(removed),
            introduced: Some(removed / 2.0),
            kl_removed: Some(1.0 - removed),
            kl_introduced: Some(removed / 2.0),
        }
    }

    fn section(rows: Vec<SwapRow>) -> SwapSection {
        SwapSection {
            num_prompts: 1,
            num_positions: 10,
            max_positions: 10,
            granularity: mdiff_core::report::Granularity::Tensor,
            kl_tuned_base: 1.0,
            rows,
            cumulative: vec![CumulativeSwap {
                layer: 0,
                prefix_removed: Some(0.2),
                suffix_removed: Some(0.9),
                prefix_introduced: None,
                suffix_introduced: None,
            }],
        }
    }

    #[test]
    fn tensor_granularity_rows_are_module_names_in_depth_order() {
        let view = SwapView::new(&section(vec![
            row("embed", None, "embed", 0.0),
            row("layers.0.self_attn.q_proj", Some(0), "attn", 0.1),
            row("layers.0.mlp.up_proj", Some(0), "mlp", 0.3),
            row("layers.1.self_attn.q_proj", Some(1), "attn", 0.2),
            row("lm_head", None, "lm_head", 0.05),
        ]));
        assert_eq!(view.grid.rows, ["self_attn.q_proj", "mlp.up_proj"]);
        assert_eq!(view.grid.num_layers, 2);
        assert_eq!(view.grid.cell(0, 1), Some(3));
        assert_eq!(view.grid.cell(1, 1), None);
        assert_eq!(view.outside, [0, 4]);
        assert_eq!(view.by_removed.first(), Some(&2));
        assert_eq!(
            view.headline.as_deref(),
            Some(
                "The change is spread out: no single part removes half of the KL (at most 30.0%, layer 0 mlp.up_proj)."
            )
        );
        assert_eq!(view.cumulative_line, None);
    }

    #[test]
    fn a_part_removing_half_is_named() {
        let view = SwapView::new(&section(vec![
            row("layers.0.attn", Some(0), "attn", 0.1),
            row("layers.0.mlp", Some(0), "mlp", 0.658),
        ]));
        assert_eq!(
            view.headline.as_deref(),
            Some("Most of the change sits in layer 0 mlp: swapping it back removes 65.8% of the KL.")
        );
    }
}
