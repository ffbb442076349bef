//! `mdiff-viewer [REPORT]`: the native viewer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use mdiff_viewer::{Startup, ViewerApp};

const USAGE: &str = "\
mdiff-viewer: shows an mdiff report (weights heatmap, per-token KL, ...)

Usage: mdiff-viewer [REPORT.json] [--first-frame | --frame-stats SECONDS]

Open a report given here, with File > Open..., or by dropping it on the window.
  --first-frame          print the time from launch to the first frame that shows the report, then quit
  --frame-stats SECONDS  redraw continuously for SECONDS after the report shows, then print frame-time
                         statistics and quit (drive the window meanwhile, e.g. with xdotool; docs/benchmarks.md)

Exit codes: 0 closed, 2 bad arguments, 4 no window could be opened (no display: try `mdiff serve REPORT`).

Example:
  mdiff compare base tuned -o report.json && mdiff-viewer report.json";

/// The exit code for "no window could be opened" (`mdiff view` turns it into a pointer to `mdiff serve`).
const NO_WINDOW_EXIT: u8 = 4;

/// Why `mdiff-viewer` stopped.
enum Failure {
    /// The command line was wrong.
    Usage(anyhow::Error),
    /// eframe could not open a window (no display, no GL/Vulkan driver).
    NoWindow(anyhow::Error),
}

struct Args {
    report: Option<PathBuf>,
    bench: Option<Bench>,
}

/// The benchmark modes: they time the real window, so they live in the binary rather than in a test.
#[derive(Clone, Copy)]
enum Bench {
    FirstFrame,
    FrameStats { seconds: f64 },
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        report: None,
        bench: None,
    };
    let mut argv = std::env::args_os().skip(1);
    while let Some(arg) = argv.next() {
        match arg.to_str() {
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return Ok(None);
            }
            Some("-V" | "--version") => {
                println!("mdiff-viewer {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Some("--first-frame") => args.bench = Some(Bench::FirstFrame),
            Some("--frame-stats") => {
                let seconds = argv
                    .next()
                    .and_then(|v| v.to_str().and_then(|v| v.parse::<f64>().ok()))
                    .filter(|s| *s > 0.0 && s.is_finite())
                    .context("--frame-stats takes a number of seconds, e.g. --frame-stats 10")?;
                args.bench = Some(Bench::FrameStats { seconds });
            }
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

fn run(args: Args, launched: Instant) -> Result<(), Failure> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("mdiff")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([640.0, 400.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    let bench = args.bench;
    let startup = Startup {
        path: args.report,
        url: None,
    };
    eframe::run_native(
        "mdiff-viewer",
        options,
        Box::new(move |cc| {
            let app = ViewerApp::new(cc, startup);
            Ok(match bench {
                Some(mode) => Box::new(Timed::new(app, launched, mode)),
                None => Box::new(app),
            })
        }),
    )
    // `mdiff view` reads this line back (up to " (no display?"): keep its shape.
    .map_err(|e| {
        Failure::NoWindow(anyhow::anyhow!(
            "cannot open a window: {e} (no display? `mdiff serve REPORT` shows the report in a browser)"
        ))
    })
}

/// The app under a benchmark mode.
///
/// `--first-frame` times launch → report parsed → first frame drawn with it. `--frame-stats` redraws
/// continuously and records, per frame, the time spent building the UI (our code and egui's layout) and the
/// interval between frames (that plus tessellation, painting and presenting).
struct Timed {
    app: ViewerApp,
    mode: Bench,
    launched: Instant,
    loaded_ms: std::rc::Rc<std::cell::Cell<Option<f64>>>,
    frames_with_report: u32,
    /// When the first frame with the report started, and the start of the previous frame.
    first_report_frame: Option<Instant>,
    previous_frame: Option<Instant>,
    ui_ms: Vec<f64>,
    frame_ms: Vec<f64>,
    /// The statistics are printed once (eframe runs a frame or two after the close request).
    reported: bool,
}

impl Timed {
    fn new(mut app: ViewerApp, launched: Instant, mode: Bench) -> Self {
        let loaded_ms = std::rc::Rc::new(std::cell::Cell::new(None));
        let cell = loaded_ms.clone();
        app.set_on_loaded(move |_| cell.set(Some(launched.elapsed().as_secs_f64() * 1e3)));
        Self {
            app,
            mode,
            launched,
            loaded_ms,
            frames_with_report: 0,
            first_report_frame: None,
            previous_frame: None,
            ui_ms: Vec::new(),
            frame_ms: Vec::new(),
            reported: false,
        }
    }

    fn first_frame(&mut self, ctx: &egui::Context) {
        // The frame that first drew the report is presented before the next `ui` call starts.
        if self.frames_with_report == 2 {
            let ms = self.launched.elapsed().as_secs_f64() * 1e3;
            let loaded = self.loaded_ms.get().unwrap_or(f64::NAN);
            eprintln!("loaded_ms {loaded:.1}\nfirst_full_frame_ms {ms:.1}");
            if let Some(error) = &self.app.state.error {
                eprintln!("error {error}");
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn frame_stats(&mut self, ctx: &egui::Context, started: Instant, ui_ms: f64, seconds: f64) {
        let first = *self.first_report_frame.get_or_insert(started);
        // The first frames lay out and upload everything once; they are what --first-frame measures.
        if self.frames_with_report > 2 {
            self.ui_ms.push(ui_ms);
            if let Some(previous) = self.previous_frame {
                self.frame_ms.push(started.duration_since(previous).as_secs_f64() * 1e3);
            }
        }
        self.previous_frame = Some(started);
        if !self.reported && started.duration_since(first).as_secs_f64() >= seconds {
            self.reported = true;
            eprintln!("frames {}", self.ui_ms.len());
            print_distribution("ui_ms", &mut self.ui_ms);
            print_distribution("frame_ms", &mut self.frame_ms);
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }
}

/// `name median p95 max` of `values` on stderr.
fn print_distribution(name: &str, values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((values.len().saturating_sub(1)) as f64 * q).round() as usize;
        values.get(i).copied().unwrap_or(f64::NAN)
    };
    eprintln!("{name} median {:.2} p95 {:.2} max {:.2}", at(0.5), at(0.95), at(1.0));
}

impl eframe::App for Timed {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let started = Instant::now();
        self.app.ui(ui, frame);
        let ui_ms = started.elapsed().as_secs_f64() * 1e3;
        if self.app.state.document.is_some() || self.app.state.error.is_some() {
            self.frames_with_report += 1;
            match self.mode {
                Bench::FirstFrame => self.first_frame(ui.ctx()),
                Bench::FrameStats { seconds } => self.frame_stats(ui.ctx(), started, ui_ms, seconds),
            }
        }
        ui.ctx().request_repaint();
    }
}

fn main() -> ExitCode {
    let launched = Instant::now();
    let result = parse_args()
        .map_err(Failure::Usage)
        .and_then(|args| args.map_or(Ok(()), |a| run(a, launched)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("mdiff-viewer: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::NoWindow(e)) => {
            eprintln!("mdiff-viewer: {e:#}");
            ExitCode::from(NO_WINDOW_EXIT)
        }
    }
}
