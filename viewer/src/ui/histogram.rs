//! Histograms: counts of log10 KL over every position with the report's percentiles marked (behaviour), and
//! latents over the relative decoder norm with the class bands shaded (crosscoder).

use egui::{Color32, RichText, Ui};
use egui_plot::{Bar, BarChart, HoverPosition, Plot, Span, VLine};
use mdiff_core::report::{ClassThresholds, Distribution, LatentClass};

use super::crosscoder::class_label;
use super::format::number;
use crate::colors::{self, Scale};
use crate::state::{BehaviourView, KlRange};

/// Percentiles marked on the histogram.
const MARKED: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

/// The histogram of per-position KL(P_tuned‖P_base), `height` points high (default: the room there is).
pub fn kl_histogram_ui(ui: &mut Ui, view: &BehaviourView, kl: Option<&Distribution>, height: Option<f32>) {
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
    let bars = bars(h.start, h.width, &h.counts, |center| {
        scale.at(range.t(10f64.powf(center)))
    });
    let mut plot = Plot::new("kl-histogram");
    if let Some(height) = height {
        plot = plot.height(height);
    }
    plot.allow_scroll(false)
        .x_axis_label("KL (nats, log scale)")
        .y_axis_label("positions")
        .x_axis_formatter(|mark, _| number(10f64.powf(mark.value)))
        .label_formatter(|hover| Some(format!("KL ≈ {}", number(10f64.powf(hovered_x(hover))))))
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

/// The histogram of the relative decoder norm r over [0, 1] (`counts` in equal bins), each bar in the colour of
/// the class its centre falls in, and the class bands shaded and named.
pub fn relative_norm_histogram_ui(ui: &mut Ui, counts: &[u64], thresholds: &ClassThresholds, height: f32) {
    if counts.is_empty() {
        ui.label(RichText::new("No live latents.").weak());
        return;
    }
    #[allow(clippy::cast_precision_loss, reason = "a few dozen bins")]
    let width = 1.0 / counts.len() as f64;
    let bars = bars(0.0, width, counts, |center| {
        colors::latent_class(thresholds.classify(center))
    });
    let bands = [
        (LatentClass::BaseOnly, 0.0, thresholds.base_only),
        (LatentClass::Shared, thresholds.shared_low, thresholds.shared_high),
        (LatentClass::TunedOnly, thresholds.tuned_only, 1.0),
    ];
    Plot::new("relative-norm-histogram")
        .height(height)
        .allow_scroll(false)
        .x_axis_label("r = ‖d_tuned‖ / (‖d_base‖ + ‖d_tuned‖)")
        .y_axis_label("live latents")
        .label_formatter(|hover| {
            let r = hovered_x(hover);
            let class = class_label(thresholds.classify(r));
            Some(match hover {
                HoverPosition::NearDataPoint { position, .. } => {
                    format!("r ≈ {} ({class}): {:.0} latents", number(r), position.y)
                }
                HoverPosition::Elsewhere { .. } => format!("r ≈ {} ({class})", number(r)),
            })
        })
        .include_x(0.0)
        .include_x(1.0)
        .include_y(0.0)
        .show(ui, |plot_ui| {
            for (class, low, high) in bands {
                let color = colors::latent_class(class);
                plot_ui.span(
                    Span::new(class_label(class), low..=high)
                        .fill(color.gamma_multiply(0.12))
                        .border(egui::Stroke::new(1.0, color.gamma_multiply(0.6))),
                );
            }
            plot_ui.bar_chart(BarChart::new("latents", bars));
        });
}

/// Bars of equal `width` from `start`, one per count, each filled with `fill` of its centre.
#[allow(clippy::cast_precision_loss, reason = "bin indices and counts are far below 2^52")]
fn bars(start: f64, width: f64, counts: &[u64], fill: impl Fn(f64) -> Color32) -> Vec<Bar> {
    counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let center = start + (i as f64 + 0.5) * width;
            Bar::new(center, n as f64).width(width).fill(fill(center))
        })
        .collect()
}

/// The x coordinate under the pointer, near a bar or not.
fn hovered_x(hover: &HoverPosition<'_>) -> f64 {
    match hover {
        HoverPosition::NearDataPoint { position, .. } | HoverPosition::Elsewhere { position } => position.x,
    }
}
