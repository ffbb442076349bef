//! The top level: loads reports, keeps the recent-files list, lays out the menu bar, the tabs and the active
//! panel. Everything inside a panel lives in `ui/`.

use egui::Ui;

use crate::loading::{LoadResult, Loader};
use crate::state::{Document, ViewerState};
use crate::ui;

/// How many recent files File ▸ Open recent remembers.
#[cfg(not(target_arch = "wasm32"))]
const MAX_RECENT: usize = 10;
/// Storage key of the recent-files list.
#[cfg(not(target_arch = "wasm32"))]
const RECENT_KEY: &str = "mdiff-viewer.recent";

/// A callback run when a report has loaded.
type LoadedHook = Box<dyn FnMut(&Document)>;

/// What to open at start.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    /// A report path given on the command line (native).
    pub path: Option<std::path::PathBuf>,
    /// A report URL from `?url=` (web).
    pub url: Option<String>,
}

/// The viewer application.
pub struct ViewerApp {
    /// Loaded report, selection and messages.
    pub state: ViewerState,
    loader: Loader,
    /// Recently opened report paths, newest first (native; the web has no paths to remember).
    recent: Vec<std::path::PathBuf>,
    /// Called with the document each time a report finishes loading (the benchmark's hook).
    on_loaded: Option<LoadedHook>,
    /// Whether the fonts have been set up on the current context.
    styled: bool,
}

impl ViewerApp {
    /// Creates the app inside eframe: restores the recent files and starts loading the startup report.
    #[must_use]
    pub fn new(cc: &eframe::CreationContext<'_>, startup: Startup) -> Self {
        let mut app = Self::empty();
        install_fonts(&cc.egui_ctx);
        app.styled = true;
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(storage) = cc.storage {
            app.recent = eframe::get_value(storage, RECENT_KEY).unwrap_or_default();
        }
        app.start(&cc.egui_ctx, startup);
        app
    }

    /// An app with nothing loaded.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            state: ViewerState::default(),
            loader: Loader::default(),
            recent: Vec::new(),
            on_loaded: None,
            styled: false,
        }
    }

    /// An app showing `document` (UI tests, benchmarks).
    #[must_use]
    pub fn with_document(document: Document) -> Self {
        let mut app = Self::empty();
        app.state.set_document(document);
        app
    }

    /// Runs `hook` every time a report finishes loading.
    pub fn set_on_loaded(&mut self, hook: impl FnMut(&Document) + 'static) {
        self.on_loaded = Some(Box::new(hook));
    }

    fn start(&mut self, ctx: &egui::Context, startup: Startup) {
        let Startup { path, url } = startup;
        // Each target uses one of the two.
        let _ = (&path, &url);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(path) = path {
            self.state.loading = Some(path.display().to_string());
            self.loader.open_path(ctx, path);
        }
        #[cfg(target_arch = "wasm32")]
        if let Some(url) = url {
            self.state.loading = Some(url.clone());
            self.loader.open_url(ctx, url);
        }
    }

    /// Loads a report from bytes already in memory (what a web drop or a test does).
    pub fn open_bytes(&mut self, source: &str, bytes: &[u8]) {
        self.loader.open_bytes(source, bytes);
    }

    /// Draws the whole viewer into `ui`: the part shared by eframe, the web and the UI tests.
    pub fn ui_root(&mut self, ui: &mut Ui) {
        if !self.styled {
            install_fonts(ui.ctx());
            self.styled = true;
        }
        while let Some(result) = self.loader.poll() {
            self.finish_load(ui.ctx(), result);
        }
        self.take_dropped_files(ui.ctx());

        egui::Panel::top("menu").show(ui, |ui| {
            let action = ui::menu_bar_ui(ui, &mut self.state, &self.recent);
            self.run(ui.ctx(), action);
        });
        egui::CentralPanel::default().show(ui, |ui| {
            let action = ui::central_ui(ui, &mut self.state);
            self.run(ui.ctx(), action);
        });
        ui::file_hover_ui(ui.ctx());
    }

    fn run(&mut self, ctx: &egui::Context, action: Option<ui::Action>) {
        match action {
            Some(ui::Action::PickFile) => {
                if let Some(path) = self.loader.pick_file(ctx) {
                    self.state.loading = Some(path.display().to_string());
                }
            }
            #[cfg(not(target_arch = "wasm32"))]
            Some(ui::Action::OpenPath(path)) => {
                self.state.loading = Some(path.display().to_string());
                self.loader.open_path(ctx, path);
            }
            #[cfg(target_arch = "wasm32")]
            Some(ui::Action::OpenPath(_)) => {}
            Some(ui::Action::Quit) => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
            None => {}
        }
    }

    fn finish_load(&mut self, ctx: &egui::Context, result: LoadResult) {
        match result {
            Ok(document) => {
                let title = format!("mdiff — {}", document.source);
                #[cfg(target_arch = "wasm32")]
                crate::web::announce_loaded(&document.source, &title);
                #[cfg(not(target_arch = "wasm32"))]
                self.remember(&document.source);
                ctx.send_viewport_cmd(egui::ViewportCommand::Title(title));
                if let Some(hook) = &mut self.on_loaded {
                    hook(&document);
                }
                self.state.set_document(document);
            }
            Err(message) => {
                #[cfg(target_arch = "wasm32")]
                crate::web::announce_error(&message);
                self.state.loading = None;
                self.state.error = Some(message);
            }
        }
    }

    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input_mut(|i| std::mem::take(&mut i.raw.dropped_files));
        // One report at a time: the first file wins.
        if let Some(file) = dropped.first() {
            let name = self.loader.open_dropped(ctx, file);
            self.state.loading = Some(name);
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn remember(&mut self, source: &str) {
        let path = std::path::PathBuf::from(source);
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        self.recent.retain(|p| *p != path);
        self.recent.insert(0, path);
        self.recent.truncate(MAX_RECENT);
    }
}

/// Adds the bundled monospace font (Hack) as a fallback of the proportional one, whose Ubuntu face lacks the
/// arrows, ‖ and ↵ the panels use.
pub fn install_fonts(ctx: &egui::Context) {
    let mut fonts = egui::FontDefinitions::default();
    let hack = fonts
        .families
        .get(&egui::FontFamily::Monospace)
        .and_then(|f| f.first())
        .cloned();
    if let (Some(hack), Some(proportional)) = (hack, fonts.families.get_mut(&egui::FontFamily::Proportional)) {
        proportional.push(hack);
    }
    ctx.set_fonts(fonts);
}

impl eframe::App for ViewerApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.ui_root(ui);
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, RECENT_KEY, &self.recent);
    }
}
