//! `mdiff-viewer [REPORT]`: the native viewer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use mdiff_viewer::{Startup, ViewerApp};

const USAGE: &str = "\
mdiff-viewer: shows an mdiff report (weights heatmap, per-token KL, ...)

Usage: mdiff-viewer [REPORT.json] [--first-frame]

Open a report given here, with File > Open..., or by dropping it on the window.
  --first-frame   print the time from launch to the first frame that shows the report, then quit (benchmark)

Example:
  mdiff compare base tuned -o report.json && mdiff-viewer report.json";

struct Args {
    report: Option<PathBuf>,
    first_frame: bool,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        report: None,
        first_frame: false,
    };
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return Ok(None);
            }
            Some("-V" | "--version") => {
                println!("mdiff-viewer {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Some("--first-frame") => args.first_frame = true,
            Some(flag) if flag.starts_with('-') => bail!("unknown option {flag}; see mdiff-viewer --help"),
            _ if args.report.is_some() => bail!("one report at a time; see mdiff-viewer --help"),
            _ => args.report = Some(PathBuf::from(arg)),
        }
    }
    if let Some(path) = &args.report
        && !path.is_file()
    {
        bail!(
            "{}: no such file; pass the report `mdiff compare -o` wrote",
            path.display()
        );
    }
    Ok(Some(args))
}

fn run(args: Args, launched: Instant) -> Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("mdiff")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([640.0, 400.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    let first_frame = args.first_frame;
    let startup = Startup {
        path: args.report,
        url: None,
    };
    eframe::run_native(
        "mdiff-viewer",
        options,
        Box::new(move |cc| {
            let app = ViewerApp::new(cc, startup);
            Ok(if first_frame {
                Box::new(FirstFrame::new(app, launched))
            } else {
                Box::new(app)
            })
        }),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("cannot open a window (is a display available? see docs/viewer.md)")
}

/// `--first-frame`: times launch → report parsed → first frame drawn with it, prints the figures, then quits.
struct FirstFrame {
    app: ViewerApp,
    launched: Instant,
    frames_with_report: u32,
    loaded_ms: std::rc::Rc<std::cell::Cell<Option<f64>>>,
}

impl FirstFrame {
    fn new(mut app: ViewerApp, launched: Instant) -> Self {
        let loaded_ms = std::rc::Rc::new(std::cell::Cell::new(None));
        let cell = loaded_ms.clone();
        app.set_on_loaded(move |_| cell.set(Some(launched.elapsed().as_secs_f64() * 1e3)));
        Self {
            app,
            launched,
            frames_with_report: 0,
            loaded_ms,
        }
    }
}

impl eframe::App for FirstFrame {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.app.ui(ui, frame);
        if self.app.state.document.is_some() || self.app.state.error.is_some() {
            self.frames_with_report += 1;
            // The frame that first drew the report is presented before the next `ui` call starts.
            if self.frames_with_report == 2 {
                let ms = self.launched.elapsed().as_secs_f64() * 1e3;
                let loaded = self.loaded_ms.get().unwrap_or(f64::NAN);
                eprintln!("loaded_ms {loaded:.1}\nfirst_full_frame_ms {ms:.1}");
                if let Some(error) = &self.app.state.error {
                    eprintln!("error {error}");
                }
                ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
            }
        }
        ui.ctx().request_repaint();
    }
}

fn main() -> ExitCode {
    let launched = Instant::now();
    match parse_args().and_then(|args| args.map_or(Ok(()), |a| run(a, launched))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mdiff-viewer: {e:#}");
            ExitCode::from(2)
        }
    }
}
