//! `mdiff view REPORT`: check the report, then open it in the native viewer.
//!
//! The viewer is a separate binary, `mdiff-viewer` (crate `viewer`), started as a child process. Linking egui into
//! `mdiff` would pull the GUI stack (winit, glow, X11/Wayland client libraries) into the binary that runs in CI and
//! on servers, and lengthen its build; a child process keeps `mdiff` headless and small.
//!
//! Without a display (a GPU server over ssh) no window can open: `mdiff view` says so in one line and points at
//! `mdiff serve`, which shows the same viewer in a browser, before or after trying the viewer.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use mdiff_core::report::read_report;

use crate::cli::ViewArgs;

/// The viewer's binary name, without the platform's executable suffix.
const VIEWER: &str = "mdiff-viewer";

/// The environment variable that names the viewer binary when `--viewer` is not given.
const VIEWER_ENV: &str = "MDIFF_VIEWER";

/// How to get a viewer, appended to every "not found" message.
const HOW_TO_GET_IT: &str = "build it with `cargo build --release -p viewer` (it lands next to mdiff), \
     install it with `cargo install --path viewer`, or set MDIFF_VIEWER to its path";

/// Runs `mdiff view`.
pub fn run(args: &ViewArgs) -> anyhow::Result<()> {
    // A missing, corrupt or too-new report fails here, with the usual one line, before any window opens.
    read_report(&args.report)?;
    // Before looking for the viewer: on a server without a display, the web route is the answer either way.
    if let Some(missing) = missing_display() {
        return Err(usage(format!("{missing}; {}", web_route(&args.report))));
    }
    let viewer = find_viewer(args.viewer.as_deref())?;
    // The viewer's stderr is held until it exits, so that a window that cannot open ends in one line (ours).
    let output = Command::new(&viewer)
        .arg(&args.report)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting {}", viewer.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(NO_WINDOW_EXIT) {
        // The viewer's line is `mdiff-viewer: cannot open a window: REASON (no display? …)`; keep REASON.
        let line = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        let reason = line.trim().trim_start_matches("mdiff-viewer: ");
        let reason = reason.trim_start_matches("cannot open a window: ");
        let reason = reason.split(" (no display?").next().unwrap_or(reason);
        return Err(usage(format!(
            "{VIEWER} could not open a window ({reason}); {}",
            web_route(&args.report)
        )));
    }
    eprint!("{stderr}");
    if output.status.success() {
        Ok(())
    } else {
        // Not an input error: the report was valid, so the viewer failed on its own (exit code 3).
        Err(anyhow::anyhow!("{VIEWER} exited with {}", output.status))
    }
}

/// The exit code with which `mdiff-viewer` says it could not open a window (see its `--help`).
const NO_WINDOW_EXIT: i32 = 4;

/// Why no window can open here, when that is known before trying: on Linux and the BSDs a window needs an X11 or
/// Wayland display, named by `DISPLAY` or `WAYLAND_DISPLAY`. macOS and Windows always have one.
fn missing_display() -> Option<&'static str> {
    if cfg!(all(unix, not(target_os = "macos"))) {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        if !set("DISPLAY") && !set("WAYLAND_DISPLAY") {
            return Some("no display to open the viewer's window on (DISPLAY and WAYLAND_DISPLAY are unset)");
        }
    }
    None
}

/// The way to see the report without a window here: the web viewer, served by `mdiff serve`.
fn web_route(report: &Path) -> String {
    format!(
        "look at it in a browser instead: `mdiff serve {}` prints the address to open (over `ssh -L` from a remote \
         machine)",
        report.display()
    )
}

/// The viewer to start: `--viewer`, else `$MDIFF_VIEWER`, else `mdiff-viewer` beside this executable, else the
/// first `mdiff-viewer` on `PATH`. A path given explicitly must exist; it is never silently replaced by another.
fn find_viewer(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let explicit = match flag {
        Some(path) => Some((path.to_path_buf(), "--viewer")),
        None => std::env::var_os(VIEWER_ENV)
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), VIEWER_ENV)),
    };
    if let Some((path, source)) = explicit {
        if path.is_file() {
            // A bare file name would make `Command` search PATH instead of running the file just checked.
            return Ok(if path.parent() == Some(Path::new("")) {
                Path::new(".").join(path)
            } else {
                path
            });
        }
        return Err(usage(format!(
            "viewer {} (from {source}) not found; check the path, or {HOW_TO_GET_IT}",
            path.display()
        )));
    }
    let name = format!("{VIEWER}{}", std::env::consts::EXE_SUFFIX);
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)));
    if let Some(path) = beside_exe.as_ref().filter(|p| is_executable(p)) {
        return Ok(path.clone());
    }
    if let Some(path) = search_path(&name, std::env::var_os("PATH")) {
        return Ok(path);
    }
    let beside = beside_exe
        .as_deref()
        .and_then(Path::parent)
        .map_or_else(String::new, |dir| format!(" in {} or", dir.display()));
    Err(usage(format!("{name} not found{beside} on PATH; {HOW_TO_GET_IT}")))
}

/// The first executable `name` in the directories of `path_var` (a `PATH` value). Empty entries, which a shell
/// reads as the current directory, are skipped: `mdiff view` should not run a binary that happens to be in `.`.
fn search_path(name: &str, path_var: Option<OsString>) -> Option<PathBuf> {
    std::env::split_paths(&path_var?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// A regular file this user may execute (on Windows, any regular file: the `.exe` suffix is in the name).
fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// An error the user fixes (exit code 2).
fn usage(message: String) -> anyhow::Error {
    mdiff_core::Error::Usage(message).into()
}
