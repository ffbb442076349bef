//! The browser entry: starts the app on `<canvas id="the_canvas_id">`, opens `?url=` and tells the page (title,
//! console) when a report has loaded, which is what the browser test waits for.

use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;

use crate::{Startup, ViewerApp};

/// Module start: runs once when the page imports the wasm.
#[wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(async {
        if let Err(e) = run().await {
            log(&format!("mdiff-viewer: error: {e}"));
        }
    });
}

async fn run() -> Result<(), String> {
    let window = web_sys::window().ok_or("no window")?;
    let document = window.document().ok_or("no document")?;
    let canvas = document
        .get_element_by_id("the_canvas_id")
        .ok_or("the page has no <canvas id=\"the_canvas_id\">")?
        .dyn_into::<web_sys::HtmlCanvasElement>()
        .map_err(|_| "the_canvas_id is not a canvas")?;
    let url = window
        .location()
        .search()
        .ok()
        .and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok())
        .and_then(|params| params.get("url"))
        .filter(|u| !u.is_empty());
    let startup = Startup { path: None, url };
    eframe::WebRunner::new()
        .start(
            canvas,
            eframe::WebOptions::default(),
            Box::new(move |cc| Ok(Box::new(ViewerApp::new(cc, startup)))),
        )
        .await
        .map_err(|e| format!("{e:?}"))?;
    // index.html's "loading…" line; the page also removes it once init() resolves.
    if let Some(loading) = document.get_element_by_id("status") {
        loading.remove();
    }
    Ok(())
}

/// Fetches `url` (same origin) and returns the body.
pub(crate) async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response = wasm_bindgen_futures::JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("cannot fetch ({e:?})"))?;
    let response: web_sys::Response = response.dyn_into().map_err(|_| "not an HTTP response")?;
    if !response.ok() {
        return Err(format!("HTTP {} {}", response.status(), response.status_text()));
    }
    let buffer = response
        .array_buffer()
        .map_err(|e| format!("cannot read the body ({e:?})"))?;
    let buffer = wasm_bindgen_futures::JsFuture::from(buffer)
        .await
        .map_err(|e| format!("cannot read the body ({e:?})"))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Marks the page as showing `source`: the title, and a console line the browser test waits for.
pub(crate) fn announce_loaded(source: &str, title: &str) {
    if let Some(document) = web_sys::window().and_then(|w| w.document()) {
        document.set_title(title);
    }
    log(&format!("mdiff-viewer: loaded {source}"));
}

/// Logs a load error where the browser test (and a developer) can see it.
pub(crate) fn announce_error(message: &str) {
    log(&format!("mdiff-viewer: error: {message}"));
}

fn log(line: &str) {
    web_sys::console::log_1(&JsValue::from_str(line));
}
