//! What the swap and patching panels draw alike: a section's items with a share of the divergence per direction,
//! as one row × layer heatmap per direction (through [`super::heatmap`]) and as a table of the items that share the
//! most.

use egui::{RichText, Ui};

use super::format::percent;
use super::heatmap::{GridPlot, grid_plot_ui};
use super::legend;
use crate::colors::{self, Scale};
use crate::state::{LayerGrid, ShareDirection};

/// What a panel says about its directions and items.
pub trait ShareItems: ShareDirection {
    /// The items' kind, heading the table's first column (`part`, `hook`).
    const KIND: &'static str;
    /// What hovering a cell without an item says, after its layer and row.
    const EMPTY_CELL: &'static str;

    /// Plot and texture id of the direction's heatmap (unique in the window).
    fn heatmap_id(self) -> &'static str;

    /// An item's name in the table.
    fn name(item: &Self::Item) -> &str;

    /// What hovering an item says.
    fn hover_text(item: &Self::Item) -> String;
}

/// The column beside the heatmaps: the colour legend over the table of the items that share the most.
pub struct SideColumn<'a> {
    /// Width of the column, in points.
    pub width: f32,
    /// Title of the legend.
    pub legend: &'a str,
    /// Id of the table (unique in the window).
    pub id: &'a str,
    /// Title of the table.
    pub title: &'a str,
    /// Item indices, in the order the table lists them.
    pub order: &'a [usize],
    /// How many items the table lists at most.
    pub most: usize,
}

/// Both directions' heatmaps of `items` side by side, each under its title, and the side column; returns the
/// direction and cell (row, layer) clicked.
pub fn share_heatmaps_ui<D: ShareItems>(
    ui: &mut Ui,
    grid: &mut LayerGrid<D>,
    items: &[D::Item],
    height: f32,
    side: &SideColumn<'_>,
) -> Option<(D, usize, usize)> {
    let mut clicked = None;
    ui.horizontal_top(|ui| {
        let spacing = ui.spacing().item_spacing.x;
        let each = ((ui.available_width() - side.width) / 2.0 - spacing).max(160.0);
        for direction in D::ALL {
            ui.vertical(|ui| {
                ui.set_width(each);
                ui.strong(direction.title());
                if let Some((row, layer)) = share_heatmap_ui(ui, grid, items, direction, height) {
                    clicked = Some((direction, row, layer));
                }
            });
        }
        ui.vertical(|ui| {
            ui.set_width(side.width - spacing);
            legend::share_legend_ui(ui, side.legend);
            ui.add_space(6.0);
            top_shares_ui::<D>(ui, side, items);
        });
    });
    clicked
}

/// One direction's row × layer heatmap of `items` (the slice `grid` was made from), each cell's share written in
/// it when cells are large enough; returns the cell (row, layer) clicked.
fn share_heatmap_ui<D: ShareItems>(
    ui: &mut Ui,
    grid: &mut LayerGrid<D>,
    items: &[D::Item],
    direction: D,
    height: f32,
) -> Option<(usize, usize)> {
    let id = direction.heatmap_id();
    let texture = grid.image_mut(direction)?.texture_id(ui.ctx(), id);
    let grid: &LayerGrid<D> = grid;
    let column_label = |layer: usize| layer.to_string();
    let row_label = |row: usize| grid.rows.get(row).cloned().unwrap_or_default();
    let hover = |row: usize, layer: usize| {
        let name = grid.rows.get(row)?;
        Some(match grid.item(items, row, layer) {
            Some(item) => D::hover_text(item),
            None => format!("layer {layer} · {name}\n{}", D::EMPTY_CELL),
        })
    };
    let cell_text = |row: usize, layer: usize| {
        let share = grid.item(items, row, layer).and_then(|item| direction.share(item))?;
        Some((percent(share), colors::text_on(Scale::Viridis.at(share))))
    };
    grid_plot_ui(
        ui,
        &GridPlot {
            id,
            texture,
            num_columns: grid.num_layers,
            num_rows: grid.rows.len(),
            height,
            x_label: "layer",
            y_label: "",
            column_label: &column_label,
            row_label: &row_label,
            column_label_chars: grid.num_layers.saturating_sub(1).to_string().len(),
            stagger_columns: false,
            hover: &hover,
            cell_text: Some(&cell_text),
        },
    )
}

/// The first [`SideColumn::most`] items of its order with their share in each direction: the heatmaps' answer
/// in text.
fn top_shares_ui<D: ShareItems>(ui: &mut Ui, side: &SideColumn<'_>, items: &[D::Item]) {
    ui.strong(side.title);
    egui::Grid::new(side.id)
        .num_columns(1 + D::ALL.len())
        .striped(true)
        .show(ui, |ui| {
            ui.label(RichText::new(D::KIND).weak());
            for direction in D::ALL {
                ui.label(RichText::new(direction.label()).weak());
            }
            ui.end_row();
            for item in side.order.iter().filter_map(|&i| items.get(i)).take(side.most) {
                ui.label(D::name(item)).on_hover_text(D::hover_text(item));
                for direction in D::ALL {
                    ui.label(share_text(direction.share(item)));
                }
                ui.end_row();
            }
        });
}

/// A share as a percentage, `–` when there is none.
pub fn share_text(share: Option<f64>) -> String {
    share.map_or_else(|| "–".into(), percent)
}
