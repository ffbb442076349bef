//! The weight-swap panel: for each part of the model, the share of the divergence removed by giving the tuned
//! model the base's part and introduced by giving the base the tuned model's part, as two layer × part heatmaps;
//! the parts outside the blocks; and whole blocks swapped together from either end, as lines.

use egui::{RichText, Ui};
use egui_plot::{HoverPosition, Legend, Line, LineStyle, Plot, PlotPoints};
use mdiff_core::report::{CumulativeSwap, Method, SwapRow, SwapSection};

use super::format::{number, percent};
use super::missing_section_ui;
use super::shares::{ShareItems, SideColumn, share_heatmaps_ui, share_text};
use crate::colors::{self, Scale};
use crate::state::{Document, ShareDirection, SwapDirection, SwapView};

/// How many parts the "by share removed" table lists.
const TOP_PARTS: usize = 8;
/// Width of the column beside the heatmaps (legend and table).
const SIDE_WIDTH: f32 = 320.0;

/// The weight-swap panel.
pub fn swap_ui(ui: &mut Ui, doc: &mut Document) {
    let (Some(section), Some(view)) = (&doc.report.swap, &mut doc.swap) else {
        missing_section_ui(ui, doc, Method::Swap);
        return;
    };
    ui.heading("Weight swap");
    ui.label(format!(
        "One part swapped at a time ({} granularity) · {} positions of the first {} prompts · shares of the mean \
         KL(tuned‖base) = {} nats",
        section.granularity,
        section.num_positions,
        section.num_prompts,
        number(section.kl_tuned_base)
    ));
    if let Some(headline) = &view.headline {
        ui.label(RichText::new(headline).strong());
    }
    if let Some(line) = &view.cumulative_line {
        ui.label(line);
    }
    ui.add_space(4.0);
    let heat_height = (ui.available_height() * 0.36).clamp(120.0, 280.0);
    share_heatmaps_ui(
        ui,
        &mut view.grid,
        &section.rows,
        heat_height,
        &SideColumn {
            width: SIDE_WIDTH,
            legend: "share of the divergence",
            id: "swap-top-parts",
            title: "Parts by share removed",
            order: &view.by_removed,
            most: TOP_PARTS,
        },
    );
    outside_ui(ui, section, view);
    ui.separator();
    ui.strong("Whole blocks swapped together");
    let plot_height = (ui.available_height() - 8.0).max(140.0);
    cumulative_plot_ui(ui, &section.cumulative, plot_height);
}

impl ShareItems for SwapDirection {
    const KIND: &'static str = "part";
    const EMPTY_CELL: &'static str = "not in this block";

    fn heatmap_id(self) -> &'static str {
        match self {
            Self::Removed => "swap-removed",
            Self::Introduced => "swap-introduced",
        }
    }

    fn name(row: &SwapRow) -> &str {
        &row.part
    }

    /// A part's name, both shares and the KL each swapped model keeps.
    fn hover_text(row: &SwapRow) -> String {
        format!(
            "{}\nremoved {} · KL(tuned with base's part‖base) = {}\nintroduced {} · KL(base with tuned's part‖base) = \
             {}",
            row.part,
            share_text(row.removed),
            kl_text(row.kl_removed),
            share_text(row.introduced),
            kl_text(row.kl_introduced)
        )
    }
}

fn kl_text(kl: Option<f64>) -> String {
    kl.map_or_else(|| "–".into(), number)
}

/// The parts outside the blocks (embedding, final norm, unembedding), which the heatmaps have no cell for: each
/// with a chip per direction, coloured like the heatmaps.
fn outside_ui(ui: &mut Ui, section: &SwapSection, view: &SwapView) {
    if view.outside.is_empty() {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        ui.label("Outside the blocks (removed / introduced):");
        for row in view.outside.iter().filter_map(|&i| section.rows.get(i)) {
            ui.add_space(8.0);
            ui.label(RichText::new(&row.part).strong())
                .on_hover_text(SwapDirection::hover_text(row));
            for direction in SwapDirection::ALL {
                let share = direction.share(row);
                let background = share.map_or(colors::MISSING, |v| Scale::Viridis.at(v));
                let chip = RichText::new(share_text(share))
                    .background_color(background)
                    .color(colors::text_on(background));
                ui.label(chip).on_hover_text(SwapDirection::hover_text(row));
            }
        }
    });
}

/// One of a cumulative swap's four shares.
type Share = fn(&CumulativeSwap) -> Option<f64>;

/// Shares removed and introduced when blocks 0..=L (prefix) or L.. (suffix) are swapped together, against L.
fn cumulative_plot_ui(ui: &mut Ui, cumulative: &[CumulativeSwap], height: f32) {
    #[allow(clippy::cast_precision_loss, reason = "layer indices")]
    let series = |value: Share| -> Vec<[f64; 2]> {
        cumulative
            .iter()
            .filter_map(|c| value(c).map(|v| [c.layer as f64, v]))
            .collect()
    };
    Plot::new("swap-cumulative")
        .height(height)
        .legend(Legend::default())
        .allow_scroll(false)
        .x_axis_label("layer L")
        .y_axis_label("share of the divergence")
        .include_y(0.0)
        // Headroom above 100% for the legend.
        .include_y(1.25)
        // Steps of 20%: powers of 5.
        .y_grid_spacer(egui_plot::log_grid_spacer(5))
        .x_axis_formatter(|mark, _| {
            let v = mark.value;
            if (v - v.round()).abs() < 1e-6 && v >= 0.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .y_axis_formatter(|mark, _| percent(mark.value))
        .label_formatter(|hover| match hover {
            HoverPosition::NearDataPoint {
                plot_name, position, ..
            } => Some(format!("{plot_name}\nlayer {:.0}: {}", position.x, percent(position.y))),
            HoverPosition::Elsewhere { .. } => None,
        })
        .show(ui, |plot| {
            let lines: [(&str, Share, egui::Color32, bool); 4] = [
                (
                    "blocks 0..=L from the base: removed",
                    |c| c.prefix_removed,
                    colors::SELECTION,
                    false,
                ),
                (
                    "blocks L.. from the base: removed",
                    |c| c.suffix_removed,
                    colors::TUNED,
                    false,
                ),
                (
                    "blocks 0..=L from the tuned: introduced",
                    |c| c.prefix_introduced,
                    colors::SELECTION,
                    true,
                ),
                (
                    "blocks L.. from the tuned: introduced",
                    |c| c.suffix_introduced,
                    colors::TUNED,
                    true,
                ),
            ];
            for (name, value, color, dashed) in lines {
                let line = Line::new(name, PlotPoints::from(series(value))).color(color);
                plot.line(if dashed {
                    line.style(LineStyle::dashed_loose())
                } else {
                    line.width(2.5)
                });
            }
        });
}
