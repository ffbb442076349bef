//! The behaviour panel: prompts sorted by mean KL, the chosen prompt's tokens coloured by KL, the details of the
//! hovered or selected position, the KL histogram and the most divergent positions.
//!
//! Keys: `/` filters the prompts, ←/→ move between tokens, ↑/↓ between prompts.

use egui::{Id, Key, RichText, Ui};
use mdiff_core::report::{BehaviourSection, Method};

use super::format::{count, number, percent};
use super::histogram::kl_histogram_ui;
use super::missing_section_ui;
use super::tokens::{kl_legend_ui, position_details_ui, prompt_tokens_ui};
use crate::colors::{self, Scale};
use crate::state::{BehaviourView, Document, Selection};

/// Id of the prompt filter box, so `/` can focus it.
fn filter_id() -> Id {
    Id::unique("prompt-filter")
}

/// The behaviour panel.
pub fn behaviour_ui(ui: &mut Ui, doc: &Document, selection: &mut Selection) {
    let (Some(section), Some(view)) = (&doc.report.behaviour, &doc.behaviour) else {
        missing_section_ui(ui, doc, Method::Kl);
        return;
    };
    let filtered = view.filtered(&selection.prompt_filter);
    keyboard(ui, section, &filtered, selection);

    let width = ui.available_width();
    egui::Panel::left("prompt-list")
        .resizable(true)
        .default_size((width * 0.3).clamp(220.0, 420.0))
        .size_range(180.0..=(width * 0.6).max(200.0))
        .show(ui, |ui| {
            // Long prompts are cut at the panel's edge instead of widening it.
            ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
            prompt_list_ui(ui, section, view, &filtered, selection);
        });
    egui::Panel::bottom("behaviour-details")
        .resizable(true)
        .default_size((ui.available_height() * 0.45).max(220.0))
        .show(ui, |ui| {
            ui.columns(3, |cols| {
                if let [details, histogram, top] = cols {
                    details_ui(details, section, selection);
                    kl_histogram_ui(histogram, view, section.summary.kl_tuned_base.as_ref(), None);
                    top_positions_ui(top, section, selection);
                }
            });
        });
    egui::CentralPanel::default().show(ui, |ui| {
        ui.heading("Behaviour");
        summary_ui(ui, section);
        kl_legend_ui(ui, view.kl_range);
        ui.separator();
        let Some(prompt) = selection.prompt.and_then(|p| section.prompts.get(p)) else {
            ui.label("Choose a prompt on the left.");
            return;
        };
        ui.horizontal_wrapped(|ui| {
            ui.strong(format!("Prompt {} (line {})", prompt.index, prompt.line));
            ui.label(format!(
                "{} tokens · mean KL {} · max {} · top-1 agreement {}",
                prompt.tokens.len(),
                prompt.mean_kl_tuned_base.map_or_else(|| "–".into(), number),
                prompt.max_kl_tuned_base.map_or_else(|| "–".into(), number),
                prompt.top1_agreement.map_or_else(|| "–".into(), percent),
            ));
            if let Some(group) = &prompt.group {
                ui.label(RichText::new(format!("group {group}")).weak());
            }
            if prompt.chat_template {
                ui.label(RichText::new("chat template").weak());
            }
            if prompt.truncated_tokens > 0 {
                ui.label(
                    RichText::new(format!("{} tokens cut at the context length", prompt.truncated_tokens))
                        .color(colors::ERROR),
                );
            }
        });
        egui::ScrollArea::vertical()
            .id_salt("prompt-tokens")
            .auto_shrink(false)
            .show(ui, |ui| {
                let interaction = prompt_tokens_ui(ui, prompt, view.kl_range, selection.token);
                if let Some(t) = interaction.clicked {
                    selection.token = Some(t);
                }
                if let Some(t) = interaction.hovered {
                    ui.ctx()
                        .data_mut(|d| d.insert_temp(Id::unique("hovered-token"), Some(t)));
                } else {
                    ui.ctx()
                        .data_mut(|d| d.insert_temp::<Option<usize>>(Id::unique("hovered-token"), None));
                }
            });
    });
}

/// Arrow keys and `/`, unless a text box has the keyboard.
fn keyboard(ui: &Ui, section: &BehaviourSection, filtered: &[usize], selection: &mut Selection) {
    if ui.ctx().memory(|m| m.focused().is_some()) {
        return;
    }
    let (slash, left, right, up, down) = ui.input(|i| {
        (
            i.key_pressed(Key::Slash),
            i.key_pressed(Key::ArrowLeft),
            i.key_pressed(Key::ArrowRight),
            i.key_pressed(Key::ArrowUp),
            i.key_pressed(Key::ArrowDown),
        )
    });
    if slash {
        ui.ctx().memory_mut(|m| m.request_focus(filter_id()));
    }
    let len = selection
        .prompt
        .and_then(|p| section.prompts.get(p))
        .map_or(0, |p| p.tokens.len());
    if len > 0 && (left || right) {
        selection.token = Some(match (selection.token, right) {
            (None, true) => 0,
            (None, false) => len - 1,
            (Some(t), true) => (t + 1).min(len - 1),
            (Some(t), false) => t.saturating_sub(1),
        });
    }
    if (up || down) && !filtered.is_empty() {
        let at = selection.prompt.and_then(|p| filtered.iter().position(|&q| q == p));
        let next = match (at, down) {
            (None, _) => 0,
            (Some(i), true) => (i + 1).min(filtered.len() - 1),
            (Some(i), false) => i.saturating_sub(1),
        };
        if let Some(&p) = filtered.get(next) {
            select_prompt(selection, p);
        }
    }
}

fn select_prompt(selection: &mut Selection, prompt: usize) {
    if selection.prompt != Some(prompt) {
        selection.prompt = Some(prompt);
        selection.token = None;
    }
}

/// Headline numbers of the section.
fn summary_ui(ui: &mut Ui, section: &BehaviourSection) {
    let s = &section.summary;
    ui.horizontal_wrapped(|ui| {
        if let Some(kl) = &s.kl_tuned_base {
            ui.label(format!(
                "KL(tuned‖base): mean {} ± {} · median {} · p99 {} · max {}",
                number(kl.mean),
                number(kl.std_err),
                kl.percentiles.get("p50").map_or_else(|| "–".into(), |v| number(*v)),
                kl.percentiles.get("p99").map_or_else(|| "–".into(), |v| number(*v)),
                number(kl.max),
            ));
        }
        if let Some(a) = s.top1_agreement {
            ui.label(format!("· top-1 agreement {}", percent(a)));
        }
        ui.label(format!(
            "· {} prompts, {} positions, {}",
            count(section.num_prompts as u64),
            count(section.num_positions),
            section.dtype
        ));
    });
}

/// The filter box and the prompts, largest mean KL first; only visible rows are laid out.
fn prompt_list_ui(
    ui: &mut Ui,
    section: &BehaviourSection,
    view: &BehaviourView,
    filtered: &[usize],
    selection: &mut Selection,
) {
    ui.strong(format!("Prompts ({} of {})", filtered.len(), section.prompts.len()));
    ui.add(
        egui::TextEdit::singleline(&mut selection.prompt_filter)
            .id(filter_id())
            .hint_text("filter  ( / )")
            .desired_width(f32::INFINITY),
    );
    ui.label(RichText::new("sorted by mean KL(tuned‖base)").small().weak());
    let scale = Scale::Magma {
        dark: ui.visuals().dark_mode,
    };
    let row_height = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
    egui::ScrollArea::vertical()
        .id_salt("prompt-rows")
        .auto_shrink(false)
        .show_rows(ui, row_height, filtered.len(), |ui, rows| {
            for &p in filtered.get(rows).unwrap_or_default() {
                let Some(prompt) = section.prompts.get(p) else { continue };
                let mean = prompt.mean_kl_tuned_base;
                let swatch = mean.map_or(colors::MISSING, |m| scale.at(view.kl_range.t(m)));
                ui.horizontal(|ui| {
                    let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, row_height - 6.0), egui::Sense::hover());
                    ui.painter().rect_filled(rect, 2.0, swatch);
                    let text = format!(
                        "{:>7}  {}",
                        mean.map_or_else(|| "–".into(), number),
                        view.previews.get(p).map_or("", String::as_str)
                    );
                    let row = ui.selectable_label(selection.prompt == Some(p), RichText::new(text).monospace());
                    if row.clicked() {
                        select_prompt(selection, p);
                    }
                });
            }
        });
}

/// Details of the hovered position, else the selected one.
fn details_ui(ui: &mut Ui, section: &BehaviourSection, selection: &Selection) {
    let hovered: Option<usize> = ui.ctx().data(|d| d.get_temp(Id::unique("hovered-token"))).flatten();
    let Some(prompt) = selection.prompt.and_then(|p| section.prompts.get(p)) else {
        return;
    };
    match hovered.or(selection.token) {
        Some(position) => {
            egui::ScrollArea::vertical().id_salt("position-details").show(ui, |ui| {
                position_details_ui(ui, section, prompt, position);
            });
        }
        None => {
            ui.label(
                RichText::new("Hover or click a token (or use ← →) to see both models' next-token choices.").weak(),
            );
        }
    }
}

/// The positions where the models disagree most; a click opens the prompt at that position.
fn top_positions_ui(ui: &mut Ui, section: &BehaviourSection, selection: &mut Selection) {
    ui.strong("Most divergent positions");
    ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
    egui::ScrollArea::vertical().id_salt("top-positions").show(ui, |ui| {
        for d in &section.top_positions {
            let context = format!(
                "{}[{}]{}",
                d.context_before.concat(),
                d.token,
                d.next_token.as_deref().unwrap_or("")
            );
            let context: String = context.replace('\n', "↵");
            let text = format!("{:>7}  {context}", number(d.kl_tuned_base));
            let selected = selection.prompt == Some(d.prompt) && selection.token == Some(d.position);
            let row = ui
                .selectable_label(selected, RichText::new(text).monospace())
                .on_hover_text(format!("prompt {}, position {}", d.prompt, d.position));
            if row.clicked() {
                selection.prompt = Some(d.prompt);
                selection.token = Some(d.position);
            }
        }
    });
}
