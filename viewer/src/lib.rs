//! mdiff's report viewer: one egui app that runs natively (`mdiff-viewer report.json`, `mdiff view`) and in the
//! browser (see `build-web.sh`). It only reads reports: the types come from `mdiff_core::report`, built without
//! the compute stack so the wasm bundle carries no candle, tokenizers or threads.
//!
//! `app` lays out the window, `state` holds the report and everything derived from it, `ui/` has one file per
//! panel, `colors` the palette, `loading` gets report bytes in, `web` is the browser entry.

pub mod app;
pub mod colors;
pub mod loading;
pub mod state;
pub mod ui;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use app::{Startup, ViewerApp};
pub use state::{Document, Tab};
