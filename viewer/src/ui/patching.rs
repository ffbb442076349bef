//! The activation-patching panel: the share of the divergence recovered by copying one activation from one
//! model's run into the other's, as site × layer heatmaps per direction; the work the sweep did against the naive
//! method; and, for the prompts swept one position at a time, a layer × position heatmap.

use egui::{RichText, Ui};
use mdiff_core::report::{Method, PatchCell, PatchSection, PatchWork, PositionSweep};

use super::format::{count, number};
use super::heatmap::{GridPlot, grid_plot_ui};
use super::shares::{ShareItems, SideColumn, share_heatmaps_ui, share_text};
use super::{legend, missing_section_ui};
use crate::state::{Document, PatchDirection, PatchView, Selection, ShareDirection, SweepKey};

/// How many hooks the "by share recovered" table lists.
const TOP_HOOKS: usize = 6;
/// Width of the column beside the heatmaps (legend and table).
const SIDE_WIDTH: f32 = 340.0;
/// Characters of a position label at most (the token, truncated, and its ellipsis).
const POSITION_LABEL_CHARS: usize = 7;

/// The activation-patching panel.
pub fn patching_ui(ui: &mut Ui, doc: &mut Document, selection: &mut Selection) {
    let (Some(section), Some(view)) = (&doc.report.patching, &mut doc.patching) else {
        missing_section_ui(ui, doc, Method::Patch);
        return;
    };
    ui.heading("Activation patching");
    ui.label(format!(
        "Each activation copied from one model's run into the other's, at every position at once · {} positions of \
         the first {} prompts · KL(tuned‖base) = {}, KL(base‖tuned) = {} nats; a cell is the share of that \
         divergence the patch recovers",
        section.num_positions,
        section.num_prompts,
        number(section.kl_tuned_base),
        number(section.kl_base_tuned)
    ));
    if let Some(work) = work_text(&section.work) {
        ui.label(RichText::new(work).weak());
    }
    ui.add_space(4.0);
    let has_sweeps = !section.position_sweeps.is_empty();
    let heat_height = if has_sweeps {
        (ui.available_height() * 0.3).clamp(110.0, 240.0)
    } else {
        (ui.available_height() * 0.6).clamp(140.0, 420.0)
    };
    let clicked = share_heatmaps_ui(
        ui,
        &mut view.grid,
        &section.cells,
        heat_height,
        &SideColumn {
            width: SIDE_WIDTH,
            legend: "share of the divergence recovered",
            id: "patch-top-hooks",
            title: "Hooks by share recovered",
            order: &view.by_recovered,
            most: TOP_HOOKS,
        },
    );
    if let Some((direction, row, _)) = clicked {
        show_site_in_sweep(view, selection, row, direction);
    }
    if has_sweeps {
        ui.separator();
        sweep_ui(ui, section, view, selection);
    }
}

/// Patching work against the naive method (one full forward pass per cell and direction).
fn work_text(w: &PatchWork) -> Option<String> {
    if w.naive_layer_evaluations <= 0.0 {
        return None;
    }
    let mut text = format!(
        "Work: {} patched runs in {} forward passes ({} identical, not run) · {} layer evaluations, naive {} \
         ({:.3}×)",
        count(w.patched_runs),
        count(w.forward_passes),
        count(w.identical_skipped),
        evaluations(w.layer_evaluations),
        evaluations(w.naive_layer_evaluations),
        w.layer_evaluations / w.naive_layer_evaluations
    );
    if w.naive_unembedded_rows > 0 {
        #[allow(clippy::cast_precision_loss, reason = "row counts are far below 2^52")]
        let ratio = w.unembedded_rows as f64 / w.naive_unembedded_rows as f64;
        text.push_str(&format!(
            " · {} unembedded rows, naive {} ({ratio:.3}×)",
            count(w.unembedded_rows),
            count(w.naive_unembedded_rows)
        ));
    }
    Some(text)
}

/// Layer evaluations: whole numbers as counts; half blocks (½) keep one decimal.
fn evaluations(v: f64) -> String {
    if v.fract() == 0.0 && (0.0..9.0e15).contains(&v) {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a whole number in u64 range"
        )]
        count(v as u64)
    } else {
        format!("{v:.1}")
    }
}

impl ShareItems for PatchDirection {
    const KIND: &'static str = "hook";
    const EMPTY_CELL: &'static str = "not patched";

    fn heatmap_id(self) -> &'static str {
        match self {
            Self::TunedIntoBase => "patch-tuned-into-base",
            Self::BaseIntoTuned => "patch-base-into-tuned",
        }
    }

    fn name(cell: &PatchCell) -> &str {
        &cell.hook
    }

    /// The hook and what it recovers both ways.
    fn hover_text(cell: &PatchCell) -> String {
        format!(
            "{}\ntuned → base: {} recovered\nbase → tuned: {} recovered",
            cell.hook,
            share_text(cell.tuned_into_base),
            share_text(cell.base_into_tuned)
        )
    }
}

/// A click on a site × layer cell shows that site and direction in the per-position sweep.
fn show_site_in_sweep(view: &PatchView, selection: &mut Selection, row: usize, direction: PatchDirection) {
    let Some(site) = view.grid.rows.get(row) else { return };
    let Some(sweep) = view.sweeps.get(selection.patch_sweep) else {
        return;
    };
    if let Some(i) = sweep.sites.iter().position(|s| s == site) {
        selection.patch_site = i;
        selection.patch_direction = direction;
    }
}

fn sweep_label(sweep: &PositionSweep) -> String {
    format!(
        "prompt {} · {} tokens · KL {}",
        sweep.prompt,
        sweep.tokens.len(),
        number(sweep.kl_tuned_base)
    )
}

/// The per-position sweep: which prompt, site and direction, then the layer × position heatmap.
fn sweep_ui(ui: &mut Ui, section: &PatchSection, view: &mut PatchView, selection: &mut Selection) {
    if selection.patch_sweep >= section.position_sweeps.len() {
        selection.patch_sweep = 0;
    }
    let (Some(sweep), Some(sweep_view)) = (
        section.position_sweeps.get(selection.patch_sweep),
        view.sweeps.get(selection.patch_sweep),
    ) else {
        return;
    };
    if selection.patch_site >= sweep_view.sites.len() {
        selection.patch_site = 0;
    }
    ui.horizontal(|ui| {
        let title = ui.strong("One position at a time, on");
        egui::ComboBox::from_id_salt("patch-sweep")
            .selected_text(sweep_label(sweep))
            .show_ui(ui, |ui| {
                for (i, s) in section.position_sweeps.iter().enumerate() {
                    ui.selectable_value(&mut selection.patch_sweep, i, sweep_label(s));
                }
            })
            .response
            .labelled_by(title.id);
        ui.separator();
        ui.label("site");
        for (i, site) in sweep_view.sites.iter().enumerate() {
            ui.selectable_value(&mut selection.patch_site, i, site);
        }
        ui.separator();
        for direction in PatchDirection::ALL {
            ui.selectable_value(&mut selection.patch_direction, direction, direction.label());
        }
    });
    // The choice may have changed above: read it again.
    let (Some(sweep), Some(sweep_view)) = (
        section.position_sweeps.get(selection.patch_sweep),
        view.sweeps.get(selection.patch_sweep),
    ) else {
        return;
    };
    let site = selection.patch_site.min(sweep_view.sites.len().saturating_sub(1));
    let direction = selection.patch_direction;
    let site_name = sweep_view.sites.get(site).cloned().unwrap_or_default();
    ui.label(format!(
        "Prompt {} ({} tokens, mean KL(tuned‖base) = {} nats): {site_name} patched {} at one position, share of the \
         prompt's divergence recovered",
        sweep.prompt,
        sweep.tokens.len(),
        number(sweep.kl_tuned_base),
        direction.label()
    ));
    let Some(grid) = sweep_view.grid(sweep, site, direction) else {
        ui.label(RichText::new(format!("No {site_name} grid {} for this prompt.", direction.label())).weak());
        return;
    };
    let dark = ui.visuals().dark_mode;
    let key = SweepKey {
        sweep: selection.patch_sweep,
        site,
        direction,
        dark,
    };
    // Made again only when the grid or the theme changes; `sweeps` and `sweep_texture` are disjoint fields.
    let texture = match &view.sweep_texture {
        Some((k, texture)) if *k == key => texture.id(),
        _ => {
            let texture = ui.ctx().load_texture(
                "patch-sweep",
                sweep_view.image(grid, dark),
                egui::TextureOptions::NEAREST,
            );
            let id = texture.id();
            view.sweep_texture = Some((key, texture));
            id
        }
    };
    ui.horizontal_top(|ui| {
        let legend_width = 240.0;
        let height = (ui.available_height() - 8.0).max(120.0);
        ui.vertical(|ui| {
            ui.set_width((ui.available_width() - legend_width).max(200.0));
            let column_label = |position: usize| sweep_view.labels.get(position).cloned().unwrap_or_default();
            let row_label = |row: usize| grid.layers.get(row).map(ToString::to_string).unwrap_or_default();
            let hover = |row: usize, position: usize| {
                let layer = grid.layers.get(row)?;
                let token = sweep
                    .tokens
                    .get(position)
                    .map_or_else(String::new, |t| format!(" {t:?}"));
                let value = grid.recovered.get(row).and_then(|r| r.get(position)).copied().flatten();
                let value = value.map_or_else(
                    || "undefined (no divergence to recover, or not finite)".into(),
                    |v| format!("{:.2}% recovered", v * 100.0),
                );
                Some(format!(
                    "position {position}{token}\nlayer {layer} · {site_name}\n{}: {value}",
                    direction.label()
                ))
            };
            grid_plot_ui(
                ui,
                &GridPlot {
                    id: "patch-sweep",
                    texture,
                    num_columns: sweep_view.num_positions,
                    num_rows: grid.recovered.len(),
                    height,
                    x_label: "position (token)",
                    y_label: "layer",
                    column_label: &column_label,
                    row_label: &row_label,
                    column_label_chars: sweep_view.label_chars.min(POSITION_LABEL_CHARS),
                    stagger_columns: true,
                    hover: &hover,
                    cell_text: None,
                },
            );
        });
        ui.vertical(|ui| {
            legend::signed_legend_ui(ui, "recovered by patching one position", sweep_view.range, dark);
            ui.add_space(4.0);
            ui.label(
                RichText::new(
                    "The scale spans the largest |share| of this prompt's grids. Red: the patch there moves the output \
                     towards the other model; blue: away.",
                )
                .small()
                .weak(),
            );
        });
    });
}
