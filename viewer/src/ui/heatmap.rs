//! A grid of cells drawn as one texture in a plot: it pans and zooms, labels its rows and columns (as densely as
//! they fit), says what is under the pointer, and reports clicks. The swap and patching panels use it.

use egui::{Color32, RichText, TextureId, Ui, Vec2};
use egui_plot::{AxisHints, GridInput, GridMark, HoverPosition, Plot, PlotImage, PlotPoint, Text};

/// Minimum grid spacing given to the plot, in points: with it a grid spacer can tell points per cell.
const GRID_SPACING_MIN: f32 = 8.0;
/// Width of one character of an axis label, in points (a little above the body font's average, so that labels
/// never touch).
const CHAR_WIDTH: f32 = 8.0;
/// Height of a row label, in points.
const ROW_LABEL_HEIGHT: f32 = 18.0;
/// Smallest cell, in points, that has its value written in it.
const CELL_TEXT_MIN: Vec2 = Vec2::new(48.0, 18.0);

/// The text and its colour written in a cell (row, column), if any.
pub type CellText<'a> = dyn Fn(usize, usize) -> Option<(String, Color32)> + 'a;

/// What to draw.
pub struct GridPlot<'a> {
    /// Plot id (unique in the window).
    pub id: &'a str,
    /// The cells, one texel each, row 0 at the top.
    pub texture: TextureId,
    /// Cells across.
    pub num_columns: usize,
    /// Cells down.
    pub num_rows: usize,
    /// Height of the plot, in points.
    pub height: f32,
    /// Title of the column axis.
    pub x_label: &'a str,
    /// Title of the row axis (empty for none).
    pub y_label: &'a str,
    /// Label of a column.
    pub column_label: &'a dyn Fn(usize) -> String,
    /// Label of a row.
    pub row_label: &'a dyn Fn(usize) -> String,
    /// Characters of a typical column label: how far apart column labels must be. Labels longer than the room
    /// they get are left out.
    pub column_label_chars: usize,
    /// Column labels alternate between two lines, which doubles the room of each (long token axes).
    pub stagger_columns: bool,
    /// Text shown while the pointer is over the cell (row, column).
    pub hover: &'a dyn Fn(usize, usize) -> Option<String>,
    /// Text and its colour written in the cell (row, column) when cells are large enough.
    pub cell_text: Option<&'a CellText<'a>>,
}

/// Draws the grid; returns the cell (row, column) clicked this frame.
pub fn grid_plot_ui(ui: &mut Ui, grid: &GridPlot<'_>) -> Option<(usize, usize)> {
    #[allow(clippy::cast_precision_loss, reason = "cell counts are far below 2^52")]
    let (width, height) = (grid.num_columns as f64, grid.num_rows as f64);
    let column_of = move |x: f64| index_of(x, width);
    // Row 0 is at the top: plot y = rows − 1 − row.
    let row_of = move |y: f64| index_of(height - 1.0 - y, height);
    #[allow(clippy::cast_precision_loss, reason = "a label's characters")]
    let column_label_px = grid.column_label_chars.max(1) as f32 * CHAR_WIDTH + 6.0;
    let stagger = grid.stagger_columns;
    let x_axis = AxisHints::new_x()
        .label(grid.x_label)
        .label_spacing(0.0..=1.0)
        .formatter(move |mark, _| {
            let Some(label) = column_of(mark.value).map(grid.column_label) else {
                return String::new();
            };
            // Staggered marks come every `step_size / 2`; every other one goes on the second line.
            let second_line = stagger && ((2.0 * mark.value / mark.step_size).round() as i64) % 2 == 1;
            if second_line { format!("\n{label}") } else { label }
        });
    let y_axis = AxisHints::new_y()
        .label(grid.y_label)
        .label_spacing(0.0..=1.0)
        .formatter(|mark, _| row_of(mark.value).map(grid.row_label).unwrap_or_default());
    let response = Plot::new(grid.id)
        .height(grid.height)
        .allow_scroll(false)
        .show_grid(false)
        .grid_spacing(GRID_SPACING_MIN..=300.0)
        .x_grid_spacer(move |input| {
            if stagger {
                // Each label has the room of two marks: the one beside it is on the other line.
                let mut marks = cell_marks(input, width, column_label_px / 2.0);
                for mark in &mut marks {
                    mark.step_size *= 2.0;
                }
                marks
            } else {
                cell_marks(input, width, column_label_px)
            }
        })
        .y_grid_spacer(move |input| cell_marks(input, height, ROW_LABEL_HEIGHT))
        .custom_x_axes(vec![x_axis])
        .custom_y_axes(vec![y_axis])
        .include_x(-0.5)
        .include_x(width - 0.5)
        .include_y(-0.5)
        .include_y(height - 0.5)
        .label_formatter(|hover| {
            // No item takes hover, so this is the pointer's position.
            let (HoverPosition::NearDataPoint { position, .. } | HoverPosition::Elsewhere { position }) = hover;
            (grid.hover)(row_of(position.y)?, column_of(position.x)?)
        })
        .show(ui, |plot_ui| {
            #[allow(clippy::cast_possible_truncation, reason = "cell counts fit f32")]
            let size = Vec2::new(width as f32, height as f32);
            plot_ui.image(
                PlotImage::new(
                    grid.id,
                    grid.texture,
                    PlotPoint::new((width - 1.0) / 2.0, (height - 1.0) / 2.0),
                    size,
                )
                .allow_hover(false),
            );
            let [dx, dy] = plot_ui.transform().dpos_dvalue();
            #[allow(clippy::cast_possible_truncation, reason = "points per cell")]
            let cell = Vec2::new(dx.abs() as f32, dy.abs() as f32);
            if let Some(cell_text) = grid.cell_text
                && cell.x >= CELL_TEXT_MIN.x
                && cell.y >= CELL_TEXT_MIN.y
            {
                for row in 0..grid.num_rows {
                    for column in 0..grid.num_columns {
                        let Some((text, color)) = cell_text(row, column) else {
                            continue;
                        };
                        #[allow(clippy::cast_precision_loss, reason = "small indices")]
                        let at = PlotPoint::new(column as f64, height - 1.0 - row as f64);
                        plot_ui.text(
                            Text::new(
                                "",
                                at,
                                RichText::new(text).text_style(egui::TextStyle::Body).color(color),
                            )
                            .allow_hover(false),
                        );
                    }
                }
            }
            plot_ui.pointer_coordinate()
        });
    if response.response.clicked()
        && let Some(p) = response.inner
    {
        return Some((row_of(p.y)?, column_of(p.x)?));
    }
    None
}

/// The cell index at plot coordinate `v`, when inside `0..count`.
fn index_of(v: f64, count: f64) -> Option<usize> {
    let i = v.round();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked range")]
    (i >= 0.0 && i < count).then_some(i as usize)
}

/// Grid marks at cell centres, every `stride`-th cell, where `stride` is the smallest of 1, 2, 5, 10, 20, … that
/// leaves `label_px` points between labels.
fn cell_marks(input: GridInput, count: f64, label_px: f32) -> Vec<GridMark> {
    if input.base_step_size <= 0.0 || !input.base_step_size.is_finite() {
        return Vec::new();
    }
    let points_per_cell = f64::from(GRID_SPACING_MIN) / input.base_step_size;
    let stride = nice_stride(f64::from(label_px) / points_per_cell);
    let (lo, hi) = input.bounds;
    let first = (lo.max(0.0) / stride).ceil() * stride;
    let last = hi.min(count - 1.0);
    let mut marks = Vec::new();
    let mut v = first;
    // Bounded: at most `count / stride` marks.
    while v <= last && marks.len() < 10_000 {
        marks.push(GridMark {
            value: v,
            step_size: stride,
        });
        v += stride;
    }
    marks
}

/// The smallest of 1, 2, 5, 10, 20, 50, … that is at least `cells`.
fn nice_stride(cells: f64) -> f64 {
    let mut stride = 1.0;
    for _ in 0..30 {
        for factor in [1.0, 2.0, 5.0] {
            if stride * factor >= cells {
                return stride * factor;
            }
        }
        stride *= 10.0;
    }
    stride
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_nice_and_large_enough() {
        assert!((nice_stride(0.3) - 1.0).abs() < 1e-12);
        assert!((nice_stride(1.0) - 1.0).abs() < 1e-12);
        assert!((nice_stride(1.5) - 2.0).abs() < 1e-12);
        assert!((nice_stride(3.0) - 5.0).abs() < 1e-12);
        assert!((nice_stride(11.0) - 20.0).abs() < 1e-12);
    }

    #[test]
    fn marks_sit_on_cells_inside_the_grid() {
        // 20 points per cell, labels need 30: every second cell.
        let input = GridInput {
            bounds: (-0.5, 9.5),
            base_step_size: f64::from(GRID_SPACING_MIN) / 20.0,
        };
        let values: Vec<f64> = cell_marks(input, 10.0, 30.0).iter().map(|m| m.value).collect();
        assert_eq!(values, [0.0, 2.0, 4.0, 6.0, 8.0]);
    }
}
