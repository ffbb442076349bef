//! The weights panel: a layer × component heatmap of relative ‖ΔW‖, the tensors of the chosen cell in a sortable
//! table, and the singular values of the chosen tensor.

use egui::{RichText, Ui, Vec2};
use egui_extras::{Column, TableBuilder};
use egui_plot::{Bar, BarChart, Line, Plot, PlotImage, PlotPoint, PlotPoints};
use mdiff_core::report::{Component, TensorDiff, WeightsSection};

use super::format::{number, optional, percent};
use super::table::{sort_header_ui, text_cell};
use super::{legend, missing_section_ui};
use crate::colors;
use crate::state::{Document, Selection, TableSort, TensorColumn, WeightsView, heat};

/// How many of the most changed cells the panel lists beside the heatmap.
const TOP_CELLS: usize = 8;

/// The weights panel.
pub fn weights_ui(ui: &mut Ui, doc: &mut Document, selection: &mut Selection) {
    let (Some(section), Some(view)) = (&doc.report.weights, &mut doc.weights) else {
        missing_section_ui(ui, doc, mdiff_core::report::Method::Weights);
        return;
    };
    ui.heading("Weights");
    ui.label(format!(
        "Relative change ‖ΔW‖/‖W_base‖ per block and component · {} of {} tensors changed",
        section.totals.num_changed, section.totals.num_tensors
    ));
    let heat_height = (ui.available_height() * 0.4).clamp(140.0, 360.0);
    ui.horizontal(|ui| {
        ui.set_height(heat_height);
        let side = 260.0;
        ui.vertical(|ui| {
            ui.set_width((ui.available_width() - side).max(200.0));
            heatmap_ui(ui, view, selection);
        });
        ui.vertical(|ui| {
            legend_ui(ui, view.max_relative);
            ui.add_space(6.0);
            top_cells_ui(ui, view, selection);
        });
    });
    outside_ui(ui, section, view, selection);
    ui.separator();
    let rows = table_rows(section, view, selection);
    let title = match selection.weights_cell {
        Some((layer, component)) => format!("Tensors of layer {layer} · {component}"),
        None => "All tensors".to_string(),
    };
    ui.horizontal(|ui| {
        ui.strong(title);
        if selection.weights_cell.is_some() && ui.small_button("Show all").clicked() {
            selection.weights_cell = None;
        }
    });
    egui::Panel::right("spectrum")
        .resizable(true)
        .default_size((ui.available_width() * 0.35).clamp(260.0, 480.0))
        .show(ui, |ui| spectrum_ui(ui, section, selection.tensor));
    egui::CentralPanel::default().show(ui, |ui| {
        ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
        // Selectable text would take the click that selects the row.
        ui.style_mut().interaction.selectable_labels = false;
        tensor_table_ui(ui, section, &rows, selection);
    });
}

/// The heatmap: a texture in a plot, so it pans, zooms, has axes and reports the value under the pointer.
fn heatmap_ui(ui: &mut Ui, view: &mut WeightsView, selection: &mut Selection) {
    let texture = view.texture_id(ui.ctx());
    #[allow(clippy::cast_precision_loss, reason = "layer and component counts are small")]
    let (width, height) = (view.num_layers as f64, view.components.len() as f64);
    let components = view.components.clone();
    let row_of_y = move |y: f64| -> Option<usize> {
        let r = height - 1.0 - y.round();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked range")]
        (r >= 0.0 && r < height).then_some(r as usize)
    };
    let layer_of_x = move |x: f64| -> Option<usize> {
        let l = x.round();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked range")]
        (l >= 0.0 && l < width).then_some(l as usize)
    };
    let axis_components = components.clone();
    let hover_components = components.clone();
    let cells_view: &WeightsView = view;
    let hover_values: Vec<(usize, Component, Option<f64>)> = (0..cells_view.num_layers)
        .flat_map(|l| components.iter().map(move |&c| (l, c)))
        .map(|(l, c)| (l, c, cells_view.cell(l, c)))
        .collect();
    let response = Plot::new("weights-heatmap")
        .allow_scroll(false)
        .show_grid(false)
        .x_axis_label("layer")
        .include_x(-0.5)
        .include_x(width - 0.5)
        .include_y(-0.5)
        .include_y(height - 0.5)
        .x_axis_formatter(move |mark, _| {
            let v = mark.value;
            if (v - v.round()).abs() < 1e-6 && v >= 0.0 && v < width {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .y_axis_formatter(move |mark, _| {
            let v = mark.value;
            if (v - v.round()).abs() > 1e-6 {
                return String::new();
            }
            row_of_y(v)
                .and_then(|r| axis_components.get(r))
                .map(|c| c.name().to_string())
                .unwrap_or_default()
        })
        .label_formatter(move |hover| {
            let p = match hover {
                egui_plot::HoverPosition::NearDataPoint { position, .. }
                | egui_plot::HoverPosition::Elsewhere { position } => *position,
            };
            let (Some(layer), Some(row)) = (layer_of_x(p.x), row_of_y(p.y)) else {
                return None;
            };
            let component = *hover_components.get(row)?;
            let value = hover_values
                .iter()
                .find(|(l, c, _)| *l == layer && *c == component)
                .and_then(|(_, _, v)| *v);
            Some(match value {
                Some(v) => format!("layer {layer} · {component}\nrelative ‖ΔW‖ = {}", number(v)),
                None => format!("layer {layer} · {component}\nno tensors"),
            })
        })
        .show(ui, |plot_ui| {
            plot_ui.image(PlotImage::new(
                "relative ‖ΔW‖",
                texture,
                PlotPoint::new((width - 1.0) / 2.0, (height - 1.0) / 2.0),
                Vec2::new(width as f32, height as f32),
            ));
            if let Some((layer, component)) = selection.weights_cell
                && let Some(row) = components.iter().position(|c| *c == component)
            {
                #[allow(clippy::cast_precision_loss, reason = "small indices")]
                let (x, y) = (layer as f64, height - 1.0 - row as f64);
                let outline = vec![
                    [x - 0.5, y - 0.5],
                    [x + 0.5, y - 0.5],
                    [x + 0.5, y + 0.5],
                    [x - 0.5, y + 0.5],
                    [x - 0.5, y - 0.5],
                ];
                plot_ui.line(
                    Line::new("selected", PlotPoints::from(outline))
                        .color(colors::SELECTION)
                        .width(2.5),
                );
            }
            plot_ui.pointer_coordinate()
        });
    if response.response.clicked()
        && let Some(p) = response.inner
        && let (Some(layer), Some(row)) = (layer_of_x(p.x), row_of_y(p.y))
        && let Some(&component) = components.get(row)
    {
        select_cell(selection, layer, component);
    }
}

fn select_cell(selection: &mut Selection, layer: usize, component: Component) {
    selection.weights_cell = Some((layer, component));
    selection.tensor = None;
}

/// The colour bar: what the heatmap's colours mean.
fn legend_ui(ui: &mut Ui, max: f64) {
    ui.label("relative ‖ΔW‖");
    legend::color_bar(ui, Vec2::new(200.0, 14.0), |f| heat(f * max, max));
    ui.horizontal(|ui| {
        ui.label(RichText::new("0").small());
        ui.add_space(170.0);
        ui.label(RichText::new(number(max)).small());
    });
    ui.horizontal(|ui| legend::swatch(ui, colors::MISSING, "no tensors"));
}

/// The most changed cells as buttons: a keyboard- and test-friendly way into the heatmap.
fn top_cells_ui(ui: &mut Ui, view: &WeightsView, selection: &mut Selection) {
    let mut cells: Vec<(usize, Component, f64)> = (0..view.num_layers)
        .flat_map(|l| view.components.iter().map(move |&c| (l, c)))
        .filter_map(|(l, c)| view.cell(l, c).map(|v| (l, c, v)))
        .filter(|(_, _, v)| *v > 0.0)
        .collect();
    cells.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    ui.strong("Most changed");
    if cells.is_empty() {
        ui.label("No block changed.");
    }
    for (layer, component, value) in cells.into_iter().take(TOP_CELLS) {
        let label = format!("layer {layer} · {component}  {}", number(value));
        let selected = selection.weights_cell == Some((layer, component));
        if ui.selectable_label(selected, label).clicked() {
            select_cell(selection, layer, component);
        }
    }
}

/// Tensors outside the blocks (embeddings, final norm, LM head), which the heatmap has no cell for.
fn outside_ui(ui: &mut Ui, section: &WeightsSection, view: &WeightsView, selection: &mut Selection) {
    if view.outside_tensors.is_empty() {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        ui.label("Outside the blocks:");
        for &i in &view.outside_tensors {
            let Some(t) = section.tensors.get(i) else { continue };
            let value = t.relative.unwrap_or(0.0);
            let text = format!("{} {}", t.name, number(value));
            let chip = RichText::new(text).background_color(heat(value, view.max_relative.max(value)));
            let chip = chip.color(colors::text_on(heat(value, view.max_relative.max(value))));
            if ui.selectable_label(selection.tensor == Some(i), chip).clicked() {
                selection.weights_cell = None;
                selection.tensor = Some(i);
            }
        }
    });
}

/// Tensor indices the table shows, in the chosen sort order.
fn table_rows(section: &WeightsSection, view: &WeightsView, selection: &Selection) -> Vec<usize> {
    let mut rows: Vec<usize> = match selection.weights_cell {
        Some(cell) => view.cell_tensors.get(&cell).cloned().unwrap_or_default(),
        None => (0..section.tensors.len()).collect(),
    };
    let TableSort { column, descending } = selection.tensor_sort;
    let key = |t: &TensorDiff| -> f64 {
        match column {
            TensorColumn::Name => 0.0,
            TensorColumn::Relative => t.relative.unwrap_or(f64::NEG_INFINITY),
            TensorColumn::DeltaNorm => t.delta_norm,
            TensorColumn::Cosine => t.cosine.unwrap_or(f64::NEG_INFINITY),
            TensorColumn::MaxAbs => t.max_abs_delta,
            TensorColumn::Changed => t.changed_fraction,
            TensorColumn::StableRank => t.spectrum.as_ref().map_or(f64::NEG_INFINITY, |s| s.stable_rank),
            #[allow(clippy::cast_precision_loss, reason = "ranks are small")]
            TensorColumn::EffectiveRank => t
                .spectrum
                .as_ref()
                .map_or(f64::NEG_INFINITY, |s| s.effective_rank as f64),
        }
    };
    rows.sort_by(|&a, &b| {
        let (Some(ta), Some(tb)) = (section.tensors.get(a), section.tensors.get(b)) else {
            return std::cmp::Ordering::Equal;
        };
        let order = if column == TensorColumn::Name {
            ta.name.cmp(&tb.name)
        } else {
            key(ta).total_cmp(&key(tb))
        };
        if descending { order.reverse() } else { order }.then(a.cmp(&b))
    });
    rows
}

const COLUMNS: [(TensorColumn, &str); 8] = [
    (TensorColumn::Name, "Tensor"),
    (TensorColumn::Relative, "Relative"),
    (TensorColumn::DeltaNorm, "‖ΔW‖"),
    (TensorColumn::Cosine, "Cosine"),
    (TensorColumn::MaxAbs, "max |Δ|"),
    (TensorColumn::Changed, "Changed"),
    (TensorColumn::StableRank, "Stable rank"),
    (TensorColumn::EffectiveRank, "Eff. rank"),
];

fn tensor_table_ui(ui: &mut Ui, section: &WeightsSection, rows: &[usize], selection: &mut Selection) {
    let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
    TableBuilder::new(ui)
        .id_salt("tensor-table")
        .striped(true)
        .sense(egui::Sense::click())
        .column(Column::remainder().at_least(160.0).clip(true))
        .columns(Column::auto().at_least(56.0), COLUMNS.len() - 1)
        .header(row_height, |mut header| {
            for (column, title) in COLUMNS {
                header.col(|ui| {
                    let descending_first = column != TensorColumn::Name;
                    sort_header_ui(ui, title, column, descending_first, &mut selection.tensor_sort);
                });
            }
        })
        .body(|body| {
            body.rows(row_height, rows.len(), |mut row| {
                let Some(&i) = rows.get(row.index()) else { return };
                let Some(t) = section.tensors.get(i) else { return };
                row.set_selected(selection.tensor == Some(i));
                row.col(|ui| {
                    ui.label(&t.name)
                        .on_hover_text(format!("{} {:?} {}", t.name, t.shape, t.dtype_tuned));
                });
                text_cell(&mut row, optional(t.relative));
                text_cell(&mut row, number(t.delta_norm));
                text_cell(&mut row, optional(t.cosine));
                text_cell(&mut row, number(t.max_abs_delta));
                text_cell(&mut row, percent(t.changed_fraction));
                text_cell(&mut row, optional(t.spectrum.as_ref().map(|s| s.stable_rank)));
                text_cell(
                    &mut row,
                    t.spectrum
                        .as_ref()
                        .map_or_else(|| "–".into(), |s| s.effective_rank.to_string()),
                );
                if row.response().clicked() {
                    selection.tensor = Some(i);
                }
            });
        });
}

/// Singular values of the chosen tensor's ΔW as bars.
fn spectrum_ui(ui: &mut Ui, section: &WeightsSection, tensor: Option<usize>) {
    let Some(t) = tensor.and_then(|i| section.tensors.get(i)) else {
        ui.label(RichText::new("Click a tensor to see the singular values of its ΔW.").weak());
        return;
    };
    ui.strong(&t.name);
    ui.label(format!(
        "shape {:?} · {} → {} · changed {} ({} elements)",
        t.shape,
        t.dtype_base,
        t.dtype_tuned,
        percent(t.changed_fraction),
        t.num_changed
    ));
    if t.non_finite.any() {
        let nf = t.non_finite;
        ui.label(
            RichText::new(format!(
                "non-finite values: base {} NaN / {} Inf, tuned {} NaN / {} Inf",
                nf.base_nan, nf.base_inf, nf.tuned_nan, nf.tuned_inf
            ))
            .color(colors::ERROR),
        );
    }
    let Some(spectrum) = &t.spectrum else {
        ui.label("No spectrum: ΔW is zero, a vector, or was not decomposed.");
        return;
    };
    ui.label(format!(
        "stable rank {} · effective rank {} · {}",
        number(spectrum.stable_rank),
        spectrum.effective_rank,
        if spectrum.exact { "exact SVD" } else { "randomized SVD" }
    ));
    #[allow(clippy::cast_precision_loss, reason = "a handful of singular values")]
    let bars: Vec<Bar> = spectrum
        .singular_values
        .iter()
        .enumerate()
        .map(|(i, &s)| Bar::new(i as f64 + 1.0, s).width(0.7).fill(colors::TUNED))
        .collect();
    Plot::new(("spectrum", &t.name))
        .allow_scroll(false)
        .x_axis_label("index")
        .y_axis_label("σ")
        .include_y(0.0)
        .show(ui, |plot_ui| {
            plot_ui.bar_chart(BarChart::new("singular values of ΔW", bars).color(colors::TUNED));
        });
}
