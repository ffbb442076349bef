//! Legend pieces the panels share: a colour bar for a scale and a labelled swatch.

use egui::{Color32, RichText, Sense, Ui, Vec2};

use crate::colors::{self, Scale};

/// Cells a colour bar is drawn with: enough that no step is visible at legend sizes.
const BAR_STEPS: u16 = 64;

/// A horizontal bar of `size` coloured by `color_at(f)` for f from 0 (left) to 1 (right).
pub fn color_bar(ui: &mut Ui, size: Vec2, color_at: impl Fn(f64) -> Color32) {
    let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
    let width = rect.width() / f32::from(BAR_STEPS);
    for i in 0..BAR_STEPS {
        let left = rect.left() + width * f32::from(i);
        let cell = egui::Rect::from_min_max(egui::pos2(left, rect.top()), egui::pos2(left + width, rect.bottom()));
        ui.painter()
            .rect_filled(cell, 0.0, color_at(f64::from(i) / f64::from(BAR_STEPS - 1)));
    }
}

/// A small square of `color` followed by `text`.
pub fn swatch(ui: &mut Ui, color: Color32, text: &str) {
    let (rect, _) = ui.allocate_exact_size(Vec2::splat(12.0), Sense::hover());
    ui.painter().rect_filled(rect, 0.0, color);
    ui.label(RichText::new(text).small());
}

/// Width of the colour bars of [`share_legend_ui`] and [`signed_legend_ui`].
const LEGEND_WIDTH: f32 = 200.0;

/// The legend of a share of the divergence (swap, patching): viridis from 0 to 1. Shares below 0 or above 1
/// (a swap that makes the divergence larger, a patch that overshoots) take the end colours; the numbers shown
/// elsewhere are never clamped.
pub fn share_legend_ui(ui: &mut Ui, title: &str) {
    ui.label(title);
    color_bar(ui, Vec2::new(LEGEND_WIDTH, 14.0), |f| Scale::Viridis.at(f));
    ends_ui(ui, "0", "50%", "100%");
    ui.horizontal(|ui| swatch(ui, colors::MISSING, "not finite (no share)"));
}

/// The legend of a signed share on the diverging scale over ±`range`: blue loses, red recovers.
pub fn signed_legend_ui(ui: &mut Ui, title: &str, range: f64, dark: bool) {
    ui.label(title);
    color_bar(ui, Vec2::new(LEGEND_WIDTH, 14.0), |f| {
        colors::diverging(2.0 * f - 1.0, dark)
    });
    let end = format!("{:.2}%", range * 100.0);
    ends_ui(ui, &format!("−{end}"), "0", &format!("+{end}"));
}

/// Three small labels under a colour bar: its left end, middle and right end.
fn ends_ui(ui: &mut Ui, left: &str, middle: &str, right: &str) {
    let (rect, _) = ui.allocate_exact_size(Vec2::new(LEGEND_WIDTH, 14.0), Sense::hover());
    let font = egui::TextStyle::Small.resolve(ui.style());
    let color = ui.visuals().text_color();
    let painter = ui.painter();
    painter.text(rect.left_top(), egui::Align2::LEFT_TOP, left, font.clone(), color);
    painter.text(rect.center_top(), egui::Align2::CENTER_TOP, middle, font.clone(), color);
    painter.text(rect.right_top(), egui::Align2::RIGHT_TOP, right, font, color);
}
