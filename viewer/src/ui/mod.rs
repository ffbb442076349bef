//! Panels, one file each, as `*_ui(ui, …)` functions over [`ViewerState`]. A panel for a report section that
//! a later mdiff adds goes here as `ui/<section>.rs` and into [`section_ui`].

mod behaviour;
mod crosscoder;
mod format;
mod heatmap;
mod histogram;
mod legend;
mod lens;
mod overview;
mod patching;
mod shares;
mod swap;
mod table;
mod tokens;
mod weights;

use std::path::PathBuf;

use egui::{Align2, Color32, RichText, Ui};
use mdiff_core::report::Method;

use crate::colors;
use crate::state::{Document, Selection, Tab, ViewerState};

pub use format::{bytes, count, number, percent, signed};

/// Something a panel asks the app to do (panels never load files themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Show the file picker.
    PickFile,
    /// Open a report from disk (recent files).
    OpenPath(PathBuf),
    /// Close the window.
    Quit,
}

/// Ctrl+O (⌘O on macOS): File ▸ Open….
const OPEN_SHORTCUT: egui::KeyboardShortcut = egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::O);

/// The menu bar: File menu, theme switch and one tab per panel.
pub fn menu_bar_ui(ui: &mut Ui, state: &mut ViewerState, recent: &[PathBuf]) -> Option<Action> {
    let mut action = None;
    if ui.input_mut(|i| i.consume_shortcut(&OPEN_SHORTCUT)) {
        action = Some(Action::PickFile);
    }
    egui::MenuBar::new().ui(ui, |ui| {
        ui.menu_button("File", |ui| {
            let open = egui::Button::new("Open…").shortcut_text(ui.ctx().format_shortcut(&OPEN_SHORTCUT));
            if ui.add(open).clicked() {
                action = Some(Action::PickFile);
            }
            if !recent.is_empty() {
                ui.menu_button("Open recent", |ui| {
                    for path in recent {
                        if ui.button(path.display().to_string()).clicked() {
                            action = Some(Action::OpenPath(path.clone()));
                        }
                    }
                });
            }
            if cfg!(not(target_arch = "wasm32")) {
                ui.separator();
                if ui.button("Quit").clicked() {
                    action = Some(Action::Quit);
                }
            }
        });
        ui.menu_button("View", |ui| {
            let mut preference = ui.options(|o| o.theme_preference);
            ui.radio_value(&mut preference, egui::ThemePreference::Dark, "Dark theme");
            ui.radio_value(&mut preference, egui::ThemePreference::Light, "Light theme");
            ui.radio_value(&mut preference, egui::ThemePreference::System, "Follow the system");
            ui.ctx().set_theme(preference);
        });
        ui.separator();
        let active = state.active_tab();
        let has_document = state.document.is_some();
        ui.add_enabled_ui(has_document, |ui| {
            for tab in Tab::all() {
                if ui
                    .selectable_label(active == tab && has_document, tab.label())
                    .clicked()
                {
                    state.tab = Some(tab);
                }
            }
        });
        if let Some(doc) = &state.document {
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.label(RichText::new(&doc.source).weak()).on_hover_text(&doc.source);
            });
        }
    });
    action
}

/// The active panel, or the welcome screen; load errors and progress above it.
pub fn central_ui(ui: &mut Ui, state: &mut ViewerState) -> Option<Action> {
    let mut action = None;
    if let Some(name) = &state.loading {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!("Loading {name}…"));
        });
    }
    if let Some(error) = state.error.clone() {
        ui.horizontal(|ui| {
            ui.label(RichText::new(format!("Could not open the report: {error}")).color(colors::ERROR));
            if state.document.is_some() && ui.small_button("Dismiss").clicked() {
                state.error = None;
            }
        });
        ui.separator();
    }
    let ViewerState {
        document,
        tab,
        selection,
        ..
    } = state;
    match document {
        Some(doc) => section_ui(ui, doc, tab.unwrap_or(Tab::Overview), selection),
        None => {
            if welcome_ui(ui) {
                action = Some(Action::PickFile);
            }
        }
    }
    action
}

/// Dispatches to the panel of `tab`.
fn section_ui(ui: &mut Ui, doc: &mut Document, tab: Tab, selection: &mut Selection) {
    match tab {
        Tab::Overview => overview::overview_ui(ui, doc),
        Tab::Section(Method::Weights) => weights::weights_ui(ui, doc, selection),
        Tab::Section(Method::Kl) => behaviour::behaviour_ui(ui, doc, selection),
        Tab::Section(Method::Swap) => swap::swap_ui(ui, doc),
        Tab::Section(Method::Patch) => patching::patching_ui(ui, doc, selection),
        Tab::Section(Method::Lens) => lens::lens_ui(ui, doc, selection),
        Tab::Section(Method::Crosscoder) => crosscoder::crosscoder_ui(ui, doc, selection),
    }
}

/// What a panel shows when its section is not in the report: why, and the command that produces it.
pub fn missing_section_ui(ui: &mut Ui, doc: &Document, method: Method) {
    ui.add_space(24.0);
    ui.vertical_centered(|ui| {
        ui.heading(format!("No {} section in this report", method.section()));
        ui.add_space(8.0);
        let skipped = doc.report.skipped.iter().find(|s| s.method == method);
        if let Some(s) = skipped {
            ui.label(format!("Skipped: {}", s.reason));
        }
        ui.add_space(8.0);
        ui.label("Produce it with:");
        let command = format!("mdiff compare BASE TUNED --methods {}", methods_with(doc, method));
        ui.code(command);
    });
}

/// The methods of this report plus `method`, as a `--methods` value.
pub(crate) fn methods_with(doc: &Document, method: Method) -> String {
    let mut methods = doc.report.settings.methods.clone();
    if !methods.contains(&method) {
        methods.push(method);
    }
    methods.sort();
    methods.iter().map(|m| m.name()).collect::<Vec<_>>().join(",")
}

/// Shown before any report is open; true when the user asks for the file picker.
fn welcome_ui(ui: &mut Ui) -> bool {
    let mut pick = false;
    ui.vertical_centered(|ui| {
        ui.add_space(ui.available_height() * 0.25);
        ui.heading("mdiff viewer");
        ui.add_space(8.0);
        ui.label("Drop an mdiff report (.json) on this window, or");
        pick = ui.button("Open a report…").clicked();
        ui.add_space(16.0);
        ui.label(RichText::new("Make one with:").weak());
        ui.code("mdiff compare BASE TUNED -o report.json");
    });
    pick
}

/// Darkens the window while files are dragged over it.
pub fn file_hover_ui(ctx: &egui::Context) {
    if ctx.input(|i| i.raw.hovered_files.is_empty()) {
        return;
    }
    let painter = ctx.layer_painter(egui::LayerId::new(
        egui::Order::Foreground,
        egui::Id::unique("file_drop"),
    ));
    let rect = ctx.content_rect();
    painter.rect_filled(rect, 0.0, Color32::from_black_alpha(180));
    painter.text(
        rect.center(),
        Align2::CENTER_CENTER,
        "Drop to open the report",
        egui::TextStyle::Heading.resolve(&ctx.global_style()),
        Color32::WHITE,
    );
}
