//! The KL histogram: counts of log10 KL over every position, with the report's percentiles marked.

use egui::{RichText, Ui};
use egui_plot::{Bar, BarChart, Plot, VLine};
use mdiff_core::report::Distribution;

use super::format::number;
use crate::colors::Scale;
use crate::state::{BehaviourView, KlRange};

/// Percentiles marked on the histogram.
const MARKED: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

/// The histogram of per-position KL(P_tuned‖P_base).
pub fn kl_histogram_ui(ui: &mut Ui, view: &BehaviourView, kl: Option<&Distribution>) {
    ui.strong("KL(tuned‖base) over all positions");
    let h = &view.histogram;
    if h.counts.is_empty() {
        ui.label(RichText::new("No finite positions.").weak());
        return;
    }
    let scale = Scale::Magma {
        dark: ui.visuals().dark_mode,
    };
    let range: KlRange = view.kl_range;
    #[allow(clippy::cast_precision_loss, reason = "bin indices and counts are far below 2^52")]
    let bars: Vec<Bar> = h
        .counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let center = h.start + (i as f64 + 0.5) * h.width;
            Bar::new(center, n as f64)
                .width(h.width)
                .fill(scale.at(range.t(10f64.powf(center))))
        })
        .collect();
    Plot::new("kl-histogram")
        .allow_scroll(false)
        .x_axis_label("KL (nats, log scale)")
        .y_axis_label("positions")
        .x_axis_formatter(|mark, _| number(10f64.powf(mark.value)))
        .label_formatter(|hover| {
            let p = match hover {
                egui_plot::HoverPosition::NearDataPoint { position, .. }
                | egui_plot::HoverPosition::Elsewhere { position } => *position,
            };
            Some(format!("KL ≈ {}", number(10f64.powf(p.x))))
        })
        .include_y(0.0)
        .show(ui, |plot_ui| {
            plot_ui.bar_chart(BarChart::new("positions", bars));
            if let Some(d) = kl {
                for key in MARKED {
                    if let Some(&v) = d.percentiles.get(key)
                        && v > 0.0
                    {
                        plot_ui.vline(VLine::new(format!("{key} = {}", number(v)), v.log10()).width(1.5));
                    }
                }
                if d.mean > 0.0 {
                    plot_ui.vline(
                        VLine::new(format!("mean = {}", number(d.mean)), d.mean.log10())
                            .style(egui_plot::LineStyle::dashed_loose()),
                    );
                }
            }
        });
}
