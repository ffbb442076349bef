//! The overview: what was compared, the headline answer of each section in a line each, the same at a glance in
//! four small pictures (KL distribution, weight change per layer and component, lens drift per layer, the parts
//! that carry the change), and what was skipped. A picture whose section is missing says which `--methods` adds it.

use egui::{Grid, RichText, Ui, Vec2};
use egui_plot::{Legend, Line, LineStyle, Plot, PlotPoints, VLine};
use mdiff_core::report::{CheckpointKind, Distribution, Method, ModelInput, Report};

use super::crosscoder;
use super::format::{bytes, count, number, percent};
use super::heatmap::{GridPlot, grid_plot_ui};
use super::histogram::kl_histogram_ui;
use super::methods_with;
use crate::colors;
use crate::state::{Document, DriftLine, PartBar, sentence};

/// Height of each picture, in points: four fit one screen under the headline.
const PICTURE_HEIGHT: f32 = 190.0;
/// Width of a bar's label, in points.
const BAR_LABEL_WIDTH: f32 = 130.0;

/// The overview panel.
pub fn overview_ui(ui: &mut Ui, doc: &mut Document) {
    egui::ScrollArea::vertical().auto_shrink(false).show(ui, |ui| {
        ui.heading("Overview");
        ui.add_space(4.0);
        headline_ui(ui, doc);
        ui.add_space(12.0);
        pictures_ui(ui, doc);
        ui.add_space(12.0);
        let report = &doc.report;
        ui.columns(2, |cols| {
            if let [left, right] = cols {
                input_ui(left, "Base", &report.inputs.base);
                input_ui(right, "Tuned", &report.inputs.tuned);
            }
        });
        ui.add_space(12.0);
        skipped_ui(ui, report);
        warnings_ui(ui, report);
        ui.add_space(12.0);
        egui::CollapsingHeader::new("Run").default_open(false).show(ui, |ui| {
            run_ui(ui, report);
        });
    });
}

/// The four pictures, two by two.
fn pictures_ui(ui: &mut Ui, doc: &mut Document) {
    ui.columns(2, |cols| {
        if let [left, right] = cols {
            kl_picture_ui(left, doc);
            weights_picture_ui(right, doc);
        }
    });
    ui.add_space(8.0);
    ui.columns(2, |cols| {
        if let [left, right] = cols {
            lens_picture_ui(left, doc);
            parts_picture_ui(right, doc);
        }
    });
}

/// The distribution of per-position KL(tuned‖base), the behaviour panel's histogram.
fn kl_picture_ui(ui: &mut Ui, doc: &Document) {
    match (&doc.behaviour, &doc.report.behaviour) {
        (Some(view), Some(section)) => {
            kl_histogram_ui(ui, view, section.summary.kl_tuned_base.as_ref(), Some(PICTURE_HEIGHT));
        }
        _ => missing_picture_ui(ui, doc, "KL(tuned‖base) over all positions", Method::Kl),
    }
}

/// Relative ‖ΔW‖ per layer and component: the weights panel's heatmap texture in a smaller plot.
fn weights_picture_ui(ui: &mut Ui, doc: &mut Document) {
    let title = "Weight change ‖ΔW‖/‖W‖ per layer and component";
    let Some(view) = doc.weights.as_mut() else {
        missing_picture_ui(ui, doc, title, Method::Weights);
        return;
    };
    ui.strong(title);
    let texture = view.texture_id(ui.ctx());
    let view = &*view;
    let column_label = |layer: usize| layer.to_string();
    let row_label = |row: usize| {
        view.components
            .get(row)
            .map(|c| c.name().to_string())
            .unwrap_or_default()
    };
    let hover = |row: usize, layer: usize| {
        let component = view.components.get(row)?;
        Some(match view.cell(layer, *component) {
            Some(v) => format!("layer {layer} · {component}\nrelative ‖ΔW‖ = {}", number(v)),
            None => format!("layer {layer} · {component}\nno tensors"),
        })
    };
    grid_plot_ui(
        ui,
        &GridPlot {
            id: "overview-weights",
            texture,
            num_columns: view.num_layers,
            num_rows: view.components.len(),
            height: PICTURE_HEIGHT,
            x_label: "layer",
            y_label: "",
            column_label: &column_label,
            row_label: &row_label,
            column_label_chars: 2,
            stagger_columns: false,
            hover: &hover,
            cell_text: None,
        },
    );
    ui.label(
        RichText::new(format!(
            "dark: unchanged · yellow: {} (the largest)",
            number(view.max_relative)
        ))
        .small(),
    );
}

/// The logit lens's drift between the models, per layer.
fn lens_picture_ui(ui: &mut Ui, doc: &Document) {
    let title = "Lens drift per layer";
    let Some(line) = &doc.overview.drift else {
        missing_picture_ui(ui, doc, title, Method::Lens);
        return;
    };
    ui.strong(title);
    drift_plot_ui(ui, line);
}

fn drift_plot_ui(ui: &mut Ui, line: &DriftLine) {
    let labels = line.labels.clone();
    Plot::new("overview-lens")
        .height(PICTURE_HEIGHT)
        .legend(Legend::default())
        .allow_scroll(false)
        .x_axis_label("layer")
        .y_axis_label("mean KL (nats)")
        .include_y(0.0)
        .x_axis_formatter(super::lens::point_axis(labels))
        .show(ui, |plot| {
            plot.line(
                Line::new("drift KL(tuned‖base)", PlotPoints::from(line.drift.clone()))
                    .color(colors::SELECTION)
                    .width(2.5),
            );
            plot.line(
                Line::new("residual part", PlotPoints::from(line.residual.clone()))
                    .color(colors::SELECTION)
                    .style(LineStyle::dashed_loose()),
            );
            if let Some(onset) = line.onset {
                #[allow(clippy::cast_precision_loss, reason = "a few dozen points")]
                plot.vline(VLine::new("onset", onset as f64).color(colors::MISSING));
            }
        });
}

/// The parts that carry the change: the weight swap's top parts and activation patching's top block outputs.
fn parts_picture_ui(ui: &mut Ui, doc: &Document) {
    let title = "Where the change sits";
    let bars = &doc.overview;
    if doc.report.swap.is_none() && doc.report.patching.is_none() {
        missing_picture_ui(ui, doc, title, Method::Swap);
        return;
    }
    ui.strong(title);
    ui.allocate_ui(Vec2::new(ui.available_width(), PICTURE_HEIGHT), |ui| {
        ui.set_min_height(PICTURE_HEIGHT);
        if doc.report.swap.is_some() {
            bars_ui(
                ui,
                "Weight swap: share of KL removed by swapping the part back",
                &bars.swap_bars,
            );
        }
        if doc.report.patching.is_some() {
            ui.add_space(6.0);
            bars_ui(
                ui,
                "Activation patching: share of KL(tuned‖base) recovered by one block output",
                &bars.patch_bars,
            );
        }
    });
}

/// Horizontal bars over 0–100%, one row each: label, bar, share; hover for the report's name and both directions.
fn bars_ui(ui: &mut Ui, title: &str, bars: &[PartBar]) {
    ui.label(RichText::new(title).small());
    if bars.is_empty() {
        ui.label(RichText::new("No part has a finite share.").weak());
        return;
    }
    let row_height = ui.text_style_height(&egui::TextStyle::Body);
    let track = ui.visuals().extreme_bg_color;
    for bar in bars {
        ui.horizontal(|ui| {
            ui.allocate_ui_with_layout(
                Vec2::new(BAR_LABEL_WIDTH, row_height),
                egui::Layout::left_to_right(egui::Align::Center),
                |ui| {
                    ui.set_min_width(BAR_LABEL_WIDTH);
                    ui.add(egui::Label::new(&bar.label).truncate());
                },
            );
            let width = (ui.available_width() - 60.0).max(40.0);
            let (rect, response) = ui.allocate_exact_size(Vec2::new(width, row_height * 0.8), egui::Sense::hover());
            let painter = ui.painter();
            painter.rect_filled(rect, 2.0, track);
            #[allow(clippy::cast_possible_truncation, reason = "a share in [0, 1]")]
            let fraction = bar.share.clamp(0.0, 1.0) as f32;
            let mut filled = rect;
            filled.set_width(rect.width() * fraction);
            painter.rect_filled(filled, 2.0, colors::TUNED);
            response.on_hover_text(&bar.details);
            ui.label(percent(bar.share));
        });
    }
}

/// A picture's place when its section is not in the report: what is missing, why, and the flag that adds it.
fn missing_picture_ui(ui: &mut Ui, doc: &Document, title: &str, method: Method) {
    ui.strong(title);
    ui.allocate_ui(Vec2::new(ui.available_width(), PICTURE_HEIGHT), |ui| {
        ui.set_min_height(PICTURE_HEIGHT);
        ui.vertical_centered(|ui| {
            ui.add_space(PICTURE_HEIGHT * 0.3);
            let what = match method {
                Method::Swap | Method::Patch => "No weight swap or patching section".to_string(),
                _ => format!("No {} section", method.section()),
            };
            ui.label(RichText::new(what).weak());
            if let Some(s) = doc.report.skipped.iter().find(|s| s.method == method) {
                ui.label(RichText::new(format!("Skipped: {}", s.reason)).weak());
            }
            let methods = match method {
                Method::Swap | Method::Patch => format!(
                    "--methods {} (or {})",
                    methods_with(doc, Method::Swap),
                    methods_with(doc, Method::Patch)
                ),
                _ => format!("--methods {}", methods_with(doc, method)),
            };
            ui.label(RichText::new(format!("add it with mdiff compare … {methods}")).weak());
        });
    });
}

/// The one-glance answer, a line per section, from diff-core's headlines: the CLI's summary and the gate's
/// Markdown word the same facts with the same thresholds.
fn headline_ui(ui: &mut Ui, doc: &Document) {
    let report = &doc.report;
    let h = &doc.headlines;
    // Long answers wrap within the panel rather than widening it (and the pictures under them).
    let value_width = (ui.available_width() - 200.0).max(200.0);
    Grid::new("headline")
        .num_columns(2)
        .spacing([24.0, 6.0])
        .max_col_width(value_width)
        .show(ui, |ui| {
            if let Some(w) = &h.weights {
                ui.label("Weights changed");
                ui.add(
                    egui::Label::new(
                        RichText::new(format!(
                            "{} of {} tensors · {} of {} parameters · ‖ΔW‖/‖W‖ = {}",
                            count(w.num_changed as u64),
                            count(w.num_tensors as u64),
                            count(w.num_changed_parameters),
                            count(w.num_parameters),
                            number(w.relative)
                        ))
                        .strong(),
                    )
                    .wrap(),
                );
                ui.end_row();
                if let Some((layer, relative)) = w.top_layer {
                    row(
                        ui,
                        "Most changed layer",
                        &format!("layer {layer} (relative {})", number(relative)),
                    );
                }
            }
            if let (Some(b), Some(section)) = (&h.behaviour, &report.behaviour) {
                if let Some(kl) = &b.kl {
                    ui.label("KL(tuned‖base) per token");
                    ui.add(egui::Label::new(RichText::new(distribution_line(kl)).strong()).wrap());
                    ui.end_row();
                }
                if let Some(a) = b.top1_agreement {
                    row(ui, "Top-1 agreement", &percent(a));
                }
                if let Some(top) = &b.largest {
                    row(
                        ui,
                        "Largest divergence",
                        &format!(
                            "{} nats at {:?} (prompt {}, position {})",
                            number(top.kl_tuned_base),
                            top.token,
                            top.prompt,
                            top.position
                        ),
                    );
                }
                let folded = if b.folded_positions > 0 {
                    format!(
                        " ({} positions of repeated prompt prefixes counted once)",
                        count(b.folded_positions)
                    )
                } else {
                    String::new()
                };
                row(
                    ui,
                    "Prompts",
                    &format!(
                        "{} prompts, {} positions, from {}{folded}",
                        count(b.num_prompts as u64),
                        count(b.num_positions),
                        section.prompts_source
                    ),
                );
            }
            if let Some(s) = &h.swap {
                row(ui, "Weight swap", &sentence(&s.sentence()));
            }
            if let Some(p) = &h.patching {
                row(ui, "Activation patching", &sentence(&p.sentence()));
            }
            if let Some(l) = &h.lens {
                let text = if l.onset_hook.is_some() {
                    format!("The two models' lenses start {}.", l.onset_phrase())
                } else {
                    "The two models' lenses show no drift.".to_string()
                };
                row(ui, "Logit lens", &text);
            }
            if let Some(c) = &report.crosscoder {
                row(ui, "Crosscoder", &crosscoder::headline(c));
            }
        });
}

/// `mean ± s.e. (p50 …, p99 …, max …)`.
pub fn distribution_line(d: &Distribution) -> String {
    let p = |k: &str| d.percentiles.get(k).map_or_else(|| "–".into(), |v| number(*v));
    format!(
        "{} ± {} (median {}, p99 {}, max {})",
        number(d.mean),
        number(d.std_err),
        p("p50"),
        p("p99"),
        number(d.max)
    )
}

fn input_ui(ui: &mut Ui, title: &str, input: &ModelInput) {
    ui.strong(title);
    Grid::new(format!("input-{title}"))
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            row(ui, "Path", &input.path);
            let kind = match input.kind {
                CheckpointKind::Safetensors => "safetensors file",
                CheckpointKind::Sharded => "sharded safetensors",
                CheckpointKind::LoraAdapter => "PEFT LoRA adapter on the base",
            };
            row(ui, "Kind", kind);
            if let Some(c) = &input.config {
                if let Some(a) = c.architecture.as_deref().or(c.model_type.as_deref()) {
                    row(ui, "Architecture", a);
                }
                let dims: Vec<String> = [
                    c.num_layers.map(|n| format!("{n} layers")),
                    c.hidden_size.map(|n| format!("hidden {n}")),
                    c.vocab_size.map(|n| format!("vocab {n}")),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !dims.is_empty() {
                    row(ui, "Shape", &dims.join(" · "));
                }
            }
            if let Some(problem) = &input.config_problem {
                ui.label("config.json");
                ui.label(RichText::new(problem).color(colors::ERROR));
                ui.end_row();
            }
            row(
                ui,
                "Size",
                &format!("{} in {} file(s)", bytes(input.size_bytes), input.files.len()),
            );
            row(
                ui,
                "Parameters",
                &format!(
                    "{} in {} tensors",
                    count(input.num_parameters),
                    count(input.num_tensors as u64)
                ),
            );
            let dtypes: Vec<String> = input.dtypes.iter().map(|(d, n)| format!("{d} ×{n}")).collect();
            row(ui, "Dtypes", &dtypes.join(", "));
            if let Some(lora) = &input.lora {
                let scaling = if lora.use_rslora { "α/√r" } else { "α/r" };
                row(
                    ui,
                    "LoRA",
                    &format!(
                        "r = {}, α = {} ({scaling}), {} modules",
                        lora.r,
                        number(lora.lora_alpha),
                        lora.modules.len()
                    ),
                );
                row(ui, "Targets", &lora.target_modules.join(", "));
            }
        });
}

fn row(ui: &mut Ui, key: &str, value: &str) {
    ui.label(key);
    ui.add(egui::Label::new(value).wrap());
    ui.end_row();
}

fn skipped_ui(ui: &mut Ui, report: &Report) {
    if report.skipped.is_empty() {
        return;
    }
    ui.strong("Not in this report");
    for s in &report.skipped {
        ui.label(format!("• {} ({}): {}", s.section, s.method, s.reason));
    }
}

fn warnings_ui(ui: &mut Ui, report: &Report) {
    let warnings: Vec<&String> = report.behaviour.iter().flat_map(|b| &b.warnings).collect();
    if warnings.is_empty() {
        return;
    }
    ui.add_space(8.0);
    ui.strong("Warnings");
    for w in warnings {
        ui.label(RichText::new(format!("• {w}")).color(colors::ERROR));
    }
}

fn run_ui(ui: &mut Ui, report: &Report) {
    Grid::new("run").num_columns(2).striped(true).show(ui, |ui| {
        let methods: Vec<&str> = report.settings.methods.iter().map(|m| m.name()).collect();
        row(ui, "Methods", &methods.join(", "));
        row(ui, "Device", &report.settings.device);
        row(ui, "Seed", &report.settings.seed.to_string());
        row(ui, "mdiff", &report.mdiff_version);
        row(ui, "Schema", &report.schema_version);
        for (stage, ms) in &report.timings_ms {
            row(ui, stage, &format!("{} ms", number(*ms)));
        }
    });
}
