//! Getting report bytes into the viewer: paths (native), dropped files, the file picker and `?url=` (web).
//!
//! Reading and parsing happen off the UI thread where there is one (native), so a large report never freezes the
//! window; every result comes back through one channel and is picked up by [`Loader::poll`] at the next frame.

use std::sync::mpsc::{Receiver, Sender, channel};

use egui::DroppedFileHandle;

use crate::state::Document;

/// The outcome of one load: the document, or a one-line error naming the source.
pub type LoadResult = Result<Document, String>;

/// Starts loads and collects their results.
pub struct Loader {
    tx: Sender<LoadResult>,
    rx: Receiver<LoadResult>,
}

impl Default for Loader {
    fn default() -> Self {
        let (tx, rx) = channel();
        Self { tx, rx }
    }
}

impl Loader {
    /// A finished load, if one is waiting.
    #[must_use]
    pub fn poll(&self) -> Option<LoadResult> {
        self.rx.try_recv().ok()
    }

    /// Parses bytes that are already here (a dropped file on the web, tests).
    pub fn open_bytes(&self, source: &str, bytes: &[u8]) {
        let _ = self.tx.send(Document::parse(source, bytes));
    }

    /// Reads and parses a file on a worker thread.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_path(&self, ctx: &egui::Context, path: std::path::PathBuf) {
        let (tx, ctx) = (self.tx.clone(), ctx.clone());
        std::thread::spawn(move || {
            let source = path.display().to_string();
            let result = match std::fs::read(&path) {
                Ok(bytes) => Document::parse(&source, &bytes),
                Err(e) => Err(format!("{source}: cannot read the file ({e})")),
            };
            let _ = tx.send(result);
            ctx.request_repaint();
        });
    }

    /// Opens a file dropped on the window; returns its name.
    pub fn open_dropped(&self, ctx: &egui::Context, file: &DroppedFileHandle) -> String {
        let name = file.path().display().to_string();
        #[cfg(not(target_arch = "wasm32"))]
        self.open_path(ctx, file.path().to_path_buf());
        #[cfg(target_arch = "wasm32")]
        {
            let (tx, ctx, file, source) = (self.tx.clone(), ctx.clone(), file.clone(), name.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let result = match file.bytes_async().await {
                    Ok(bytes) => Document::parse(&source, &bytes),
                    Err(e) => Err(format!("{source}: cannot read the file ({e})")),
                };
                let _ = tx.send(result);
                ctx.request_repaint();
            });
        }
        name
    }

    /// Shows the system file picker and opens the chosen report; returns the path chosen, if any (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn pick_file(&self, ctx: &egui::Context) -> Option<std::path::PathBuf> {
        // The blocking dialog runs on the UI thread, as macOS requires.
        let path = rfd::FileDialog::new()
            .set_title("Open an mdiff report")
            .add_filter("mdiff report", &["json"])
            .pick_file()?;
        self.open_path(ctx, path.clone());
        Some(path)
    }

    /// Shows the browser's file picker and opens the chosen report (web).
    #[cfg(target_arch = "wasm32")]
    pub fn pick_file(&self, ctx: &egui::Context) -> Option<std::path::PathBuf> {
        let (tx, ctx) = (self.tx.clone(), ctx.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let Some(file) = rfd::AsyncFileDialog::new()
                .add_filter("mdiff report", &["json"])
                .pick_file()
                .await
            else {
                return;
            };
            let bytes = file.read().await;
            let _ = tx.send(Document::parse(&file.file_name(), &bytes));
            ctx.request_repaint();
        });
        None
    }

    /// Fetches a report from a URL (web: `?url=`, same origin).
    #[cfg(target_arch = "wasm32")]
    pub fn open_url(&self, ctx: &egui::Context, url: String) {
        let (tx, ctx) = (self.tx.clone(), ctx.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let result = match crate::web::fetch_bytes(&url).await {
                Ok(bytes) => Document::parse(&url, &bytes),
                Err(e) => Err(format!("{url}: {e}")),
            };
            let _ = tx.send(result);
            ctx.request_repaint();
        });
    }
}
