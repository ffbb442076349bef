//! The logit-lens panel: drift per layer as lines, and both models' top tokens at every layer for the positions
//! where they part most.

use egui::{RichText, Ui};
use egui_plot::{Legend, Line, LineStyle, Plot, PlotPoints, VLine};
use mdiff_core::report::{LensPoint, LensPosition, LensSection, Method, TokenProb};

use super::format::{number, percent};
use super::missing_section_ui;
use crate::colors;
use crate::state::{Document, Selection};

/// Tokens of each model shown per layer in the table (the report keeps five).
const TABLE_TOKENS: usize = 3;

/// The logit-lens panel.
pub fn lens_ui(ui: &mut Ui, doc: &Document, selection: &mut Selection) {
    let Some(lens) = &doc.report.lens else {
        missing_section_ui(ui, doc, Method::Lens);
        return;
    };
    ui.heading("Logit lens");
    ui.label(format!(
        "Each model's residual stream through its own final norm and unembedding · {} positions of the first {} \
         prompts{}",
        lens.num_positions,
        lens.num_prompts,
        onset_text(lens)
    ));
    let plot_height = (ui.available_height() * 0.45).clamp(160.0, 360.0);
    drift_plot_ui(ui, lens, plot_height);
    ui.separator();
    if lens.top_positions.is_empty() {
        ui.label(RichText::new("No position had finite lenses in both models.").weak());
        return;
    }
    egui::Panel::left("lens-positions")
        .resizable(true)
        .default_size(300.0)
        .show(ui, |ui| positions_ui(ui, lens, selection));
    egui::CentralPanel::default().show(ui, |ui| {
        if let Some(position) = lens.top_positions.get(selection.lens_position) {
            egui::ScrollArea::vertical().show(ui, |ui| layer_tops_ui(ui, &lens.points, position));
        }
    });
}

fn onset_text(lens: &LensSection) -> String {
    match lens.onset.and_then(|i| lens.points.get(i)) {
        Some(point) => format!(" · the predictions part at {}", point_label(point)),
        None => " · no drift at any layer".into(),
    }
}

/// An x axis that names the points (embedding, layer L) at whole positions and nothing between them; the lens
/// panel and the overview's drift line share it.
pub(crate) fn point_axis(
    labels: Vec<String>,
) -> impl Fn(egui_plot::GridMark, &std::ops::RangeInclusive<f64>) -> String {
    move |mark, _| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked")]
        let i = mark.value.round() as usize;
        if (mark.value - mark.value.round()).abs() < 1e-6 && mark.value >= 0.0 {
            labels.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

fn point_label(point: &LensPoint) -> String {
    point.layer.map_or_else(|| "embedding".into(), |l| format!("layer {l}"))
}

/// Mean KL per point: the drift, its residual-stream part, and each model's distance to its own output.
fn drift_plot_ui(ui: &mut Ui, lens: &LensSection, height: f32) {
    #[allow(clippy::cast_precision_loss, reason = "a few dozen points")]
    let series = |value: &dyn Fn(&LensPoint) -> Option<f64>| -> Vec<[f64; 2]> {
        lens.points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| value(p).map(|v| [i as f64, v]))
            .collect()
    };
    let labels: Vec<String> = lens.points.iter().map(point_label).collect();
    Plot::new("lens-drift")
        .height(height)
        .legend(Legend::default())
        .allow_scroll(false)
        .x_axis_label("layer (residual after the block)")
        .y_axis_label("mean KL (nats)")
        .include_y(0.0)
        .x_axis_formatter(point_axis(labels))
        .show(ui, |plot| {
            plot.line(
                Line::new(
                    "drift KL(tuned‖base)",
                    PlotPoints::from(series(&|p| p.drift.as_ref().map(|d| d.mean))),
                )
                .color(colors::SELECTION)
                .width(2.5),
            );
            plot.line(
                Line::new(
                    "residual part (base readout)",
                    PlotPoints::from(series(&|p| p.residual_drift)),
                )
                .color(colors::SELECTION)
                .style(LineStyle::dashed_loose()),
            );
            plot.line(
                Line::new("base → its output", PlotPoints::from(series(&|p| p.base_to_final))).color(colors::BASE),
            );
            plot.line(
                Line::new("tuned → its output", PlotPoints::from(series(&|p| p.tuned_to_final))).color(colors::TUNED),
            );
            if let Some(onset) = lens.onset {
                #[allow(clippy::cast_precision_loss, reason = "a few dozen points")]
                plot.vline(VLine::new("onset", onset as f64).color(colors::MISSING));
            }
        });
}

/// The most divergent positions; the chosen one's layers are tabled beside.
fn positions_ui(ui: &mut Ui, lens: &LensSection, selection: &mut Selection) {
    ui.strong("Most divergent positions");
    ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
    for (i, p) in lens.top_positions.iter().enumerate() {
        let next = p.next_token.as_deref().map_or(String::new(), |n| format!(" → {n:?}"));
        let text = format!(
            "{}  prompt {} · {}: {:?}{next}",
            number(p.kl_tuned_base),
            p.prompt,
            p.position,
            p.token
        );
        if ui.selectable_label(selection.lens_position == i, text).clicked() {
            selection.lens_position = i;
        }
    }
}

/// Per layer, both models' most likely next tokens at one position.
fn layer_tops_ui(ui: &mut Ui, points: &[LensPoint], position: &LensPosition) {
    ui.strong(format!(
        "Prompt {} · position {} {:?}: the lens at every layer",
        position.prompt, position.position, position.token
    ));
    egui::Grid::new("lens-tops")
        .striped(true)
        .num_columns(3)
        .show(ui, |ui| {
            ui.label("");
            ui.label(RichText::new("Base").strong().color(colors::BASE));
            ui.label(RichText::new("Tuned").strong().color(colors::TUNED));
            ui.end_row();
            for (i, point) in points.iter().enumerate() {
                ui.label(point_label(point));
                for tops in [&position.top_base, &position.top_tuned] {
                    ui.label(RichText::new(tops.get(i).map_or_else(String::new, |t| tops_text(t))).monospace());
                }
                ui.end_row();
            }
        });
}

fn tops_text(tops: &[TokenProb]) -> String {
    tops.iter()
        .take(TABLE_TOKENS)
        .map(|t| format!("{:?} {}", t.token, percent(t.prob)))
        .collect::<Vec<_>>()
        .join("  ")
}
