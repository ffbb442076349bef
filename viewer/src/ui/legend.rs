//! Legend pieces the panels share: a colour bar for a scale and a labelled swatch.

use egui::{Color32, RichText, Sense, Ui, Vec2};

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
