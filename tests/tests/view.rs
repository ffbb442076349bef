//! `mdiff view REPORT`, end to end: the report is checked before any viewer starts, the viewer is found (flag,
//! `MDIFF_VIEWER`, beside `mdiff`, `PATH`) or a missing one is explained, and the viewer's exit status becomes
//! mdiff's. No test opens a window: the viewers here are shell scripts that record their arguments.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use mdiff_tests::{Run, Sandbox, mdiff_bin};

const VIEWER_ENV: &str = "MDIFF_VIEWER";
/// The report every case opens, as the user would type it (relative to the sandbox).
const REPORT: &str = "report.json";
/// The how-to that every "viewer not found" message ends with.
const HOW_TO: [&str; 3] = [
    "cargo build --release -p viewer",
    "cargo install --path viewer",
    "set MDIFF_VIEWER",
];

/// Copies a committed example report into the sandbox as [`REPORT`].
fn with_report(sb: &Sandbox) {
    let _ = sb.copy_fixture("reports/tiny-llama-lora.json", REPORT);
}

/// `mdiff view ARGS…` in the sandbox, with `MDIFF_VIEWER` set to `env_viewer` or removed.
fn view(sb: &Sandbox, args: &[&OsStr], env_viewer: Option<&Path>) -> Run {
    view_with(sb, mdiff_bin(), args, &[(VIEWER_ENV, env_viewer.map(Path::as_os_str))])
}

/// `bin view ARGS…` with `env`, on a display (a made-up one: the viewers here open no window), so that these cases
/// also run where there is none; `first_hour_viewer.rs` tests the case without.
fn view_with(sb: &Sandbox, bin: &Path, args: &[&OsStr], env: &[(&str, Option<&OsStr>)]) -> Run {
    let mut all: Vec<&OsStr> = vec![OsStr::new("view")];
    all.extend_from_slice(args);
    let mut with_display: Vec<(&str, Option<&OsStr>)> = vec![("DISPLAY", Some(OsStr::new(":mdiff-test")))];
    with_display.extend_from_slice(env);
    sb.run(bin, &all, &with_display)
}

/// A stand-in viewer at `path`: it writes its argument count and arguments, one per line, to `<path>.args` and
/// exits with `code`.
#[cfg(unix)]
fn fake_viewer(path: &Path, code: u8) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$#\" \"$@\" > '{}'\nexit {code}\n",
        args_file(path).display()
    );
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

fn args_file(viewer: &Path) -> PathBuf {
    let mut name = viewer.as_os_str().to_owned();
    name.push(".args");
    PathBuf::from(name)
}

/// What the stand-in viewer was started with, or `None` when it never ran.
fn viewer_args(viewer: &Path) -> Option<String> {
    std::fs::read_to_string(args_file(viewer)).ok()
}

/// What a viewer started as `<viewer> report.json` records.
const OPENED_REPORT: &str = "1\nreport.json\n";

/// A hard link to (or else a copy of) `mdiff` at `<sandbox>/<dir>/mdiff`, so that "beside mdiff" is a directory
/// the test controls.
fn mdiff_in(sb: &Sandbox, dir: &str) -> PathBuf {
    let dest = sb.join(dir).join(mdiff_bin().file_name().unwrap());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    if std::fs::hard_link(mdiff_bin(), &dest).is_err() {
        std::fs::copy(mdiff_bin(), &dest).unwrap();
    }
    dest
}

fn viewer_name() -> String {
    format!("mdiff-viewer{}", std::env::consts::EXE_SUFFIX)
}

// ---- the report is checked first -----------------------------------------------------------------------------

/// Runs `mdiff view REPORT` with a recording viewer in `MDIFF_VIEWER`, and checks that it never ran.
#[cfg(unix)]
fn view_before_viewer(sb: &Sandbox) -> Run {
    let viewer = fake_viewer(&sb.join("bin/viewer"), 0);
    let run = view(sb, &[OsStr::new(REPORT)], Some(&viewer));
    assert_eq!(viewer_args(&viewer), None, "the viewer started on a bad report");
    run
}

#[cfg(unix)]
#[test]
fn missing_report_exits_2_and_names_it() {
    let sb = Sandbox::new();
    view_before_viewer(&sb).assert_fails_cleanly(2, &["cannot read", REPORT]);
}

#[cfg(unix)]
#[test]
fn corrupt_report_exits_2() {
    let sb = Sandbox::new();
    std::fs::write(sb.join(REPORT), r#"{"schema_version": "1.1", "inputs": "#).unwrap();
    view_before_viewer(&sb).assert_fails_cleanly(2, &[REPORT, "not an mdiff report"]);
    std::fs::write(sb.join(REPORT), r#"{"schema_version": "1.1"}"#).unwrap();
    view_before_viewer(&sb).assert_fails_cleanly(2, &[REPORT, "not an mdiff report"]);
}

#[cfg(unix)]
#[test]
fn newer_schema_exits_2_and_says_upgrade() {
    let sb = Sandbox::new();
    std::fs::write(sb.join(REPORT), r#"{"schema_version": "9.0", "sections": {}}"#).unwrap();
    view_before_viewer(&sb).assert_fails_cleanly(2, &[REPORT, "9.0", "upgrade mdiff"]);
}

// ---- finding the viewer --------------------------------------------------------------------------------------

#[test]
fn viewer_flag_to_a_missing_file_exits_2_with_how_to_get_one() {
    let sb = Sandbox::new();
    with_report(&sb);
    let missing = sb.join("no-such-viewer");
    let run = view(
        &sb,
        &[OsStr::new(REPORT), "--viewer".as_ref(), missing.as_os_str()],
        None,
    );
    let needles = [&[missing.to_str().unwrap(), "--viewer", "not found"][..], &HOW_TO].concat();
    run.assert_fails_cleanly(2, &needles);
}

#[test]
fn viewer_env_to_a_missing_file_exits_2_with_how_to_get_one() {
    let sb = Sandbox::new();
    with_report(&sb);
    let missing = sb.join("no-such-viewer");
    let run = view(&sb, &[OsStr::new(REPORT)], Some(&missing));
    let needles = [&[missing.to_str().unwrap(), VIEWER_ENV, "not found"][..], &HOW_TO].concat();
    run.assert_fails_cleanly(2, &needles);
}

/// No flag, no `MDIFF_VIEWER`, nothing beside `mdiff`, nothing on `PATH`: the message says where it looked.
#[test]
fn viewer_found_nowhere_exits_2_with_how_to_get_one() {
    let sb = Sandbox::new();
    with_report(&sb);
    let mdiff = mdiff_in(&sb, "bin");
    std::fs::create_dir(sb.join("empty")).unwrap();
    let path = OsString::from(sb.join("empty"));
    let run = view_with(
        &sb,
        &mdiff,
        &[OsStr::new(REPORT)],
        &[(VIEWER_ENV, None), ("PATH", Some(&path))],
    );
    let bin_dir = sb.join("bin");
    let name = viewer_name();
    let needles = [&[&name, "not found", bin_dir.to_str().unwrap(), "PATH"][..], &HOW_TO].concat();
    run.assert_fails_cleanly(2, &needles);
}

#[cfg(unix)]
#[test]
fn viewer_from_env_or_flag_gets_the_report_path_and_exit_0() {
    let sb = Sandbox::new();
    with_report(&sb);
    let from_env = fake_viewer(&sb.join("env/viewer"), 0);
    view(&sb, &[OsStr::new(REPORT)], Some(&from_env)).assert_ok();
    assert_eq!(viewer_args(&from_env).as_deref(), Some(OPENED_REPORT));

    let from_flag = fake_viewer(&sb.join("flag/viewer"), 0);
    view(
        &sb,
        &[OsStr::new(REPORT), "--viewer".as_ref(), from_flag.as_os_str()],
        None,
    )
    .assert_ok();
    assert_eq!(viewer_args(&from_flag).as_deref(), Some(OPENED_REPORT));
}

/// `--viewer mdiff-viewer` runs the file in the current directory, as the path says, not one found on PATH.
#[cfg(unix)]
#[test]
fn viewer_given_as_a_bare_name_is_the_file_in_the_current_dir() {
    let sb = Sandbox::new();
    with_report(&sb);
    let here = fake_viewer(&sb.join("mdiff-viewer"), 0);
    let on_path = fake_viewer(&sb.join("path/mdiff-viewer"), 1);
    let path = OsString::from(sb.join("path"));
    let args = [OsStr::new(REPORT), "--viewer".as_ref(), "mdiff-viewer".as_ref()];
    view_with(&sb, mdiff_bin(), &args, &[(VIEWER_ENV, None), ("PATH", Some(&path))]).assert_ok();
    assert_eq!(viewer_args(&here).as_deref(), Some(OPENED_REPORT));
    assert_eq!(viewer_args(&on_path), None);
}

#[cfg(unix)]
#[test]
fn viewer_flag_wins_over_env() {
    let sb = Sandbox::new();
    with_report(&sb);
    let from_env = fake_viewer(&sb.join("env/viewer"), 1);
    let from_flag = fake_viewer(&sb.join("flag/viewer"), 0);
    let args = [OsStr::new(REPORT), "--viewer".as_ref(), from_flag.as_os_str()];
    view(&sb, &args, Some(&from_env)).assert_ok();
    assert_eq!(viewer_args(&from_flag).as_deref(), Some(OPENED_REPORT));
    assert_eq!(viewer_args(&from_env), None);
}

/// Without flag or `MDIFF_VIEWER`: `mdiff-viewer` beside `mdiff` first, then the first one on `PATH`.
#[cfg(unix)]
#[test]
fn viewer_beside_mdiff_then_on_path() {
    let sb = Sandbox::new();
    with_report(&sb);
    let mdiff = mdiff_in(&sb, "bin");
    let on_path = fake_viewer(&sb.join("path2").join(viewer_name()), 0);
    let shadowed = fake_viewer(&sb.join("path3").join(viewer_name()), 1);
    // path1 holds a non-executable file of that name: skipped, as a shell would.
    std::fs::create_dir(sb.join("path1")).unwrap();
    std::fs::write(sb.join("path1").join(viewer_name()), "").unwrap();
    let path = std::env::join_paths(["path1", "path2", "path3"].map(|d| sb.join(d))).unwrap();
    let env = [(VIEWER_ENV, None), ("PATH", Some(path.as_os_str()))];
    view_with(&sb, &mdiff, &[OsStr::new(REPORT)], &env).assert_ok();
    assert_eq!(viewer_args(&on_path).as_deref(), Some(OPENED_REPORT));
    assert_eq!(viewer_args(&shadowed), None);

    std::fs::remove_file(args_file(&on_path)).unwrap();
    let beside = fake_viewer(&sb.join("bin").join(viewer_name()), 0);
    view_with(&sb, &mdiff, &[OsStr::new(REPORT)], &env).assert_ok();
    assert_eq!(viewer_args(&beside).as_deref(), Some(OPENED_REPORT));
    assert_eq!(viewer_args(&on_path), None, "the viewer beside mdiff comes before PATH");
}

// ---- the viewer's exit status --------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn failing_viewer_exits_3() {
    let sb = Sandbox::new();
    with_report(&sb);
    let viewer = fake_viewer(&sb.join("bin/viewer"), 1);
    let run = view(&sb, &[OsStr::new(REPORT)], Some(&viewer));
    run.assert_fails_cleanly(3, &["mdiff-viewer exited with", "1"]);
    assert_eq!(viewer_args(&viewer).as_deref(), Some(OPENED_REPORT));
}

/// A viewer path that exists but cannot be run is the user's to fix: exit 2, naming it.
#[cfg(unix)]
#[test]
fn viewer_that_cannot_start_exits_2() {
    let sb = Sandbox::new();
    with_report(&sb);
    let not_executable = sb.join("viewer.txt");
    std::fs::write(&not_executable, "").unwrap();
    let run = view(&sb, &[OsStr::new(REPORT)], Some(&not_executable));
    run.assert_fails_cleanly(2, &["starting", not_executable.to_str().unwrap()]);
}

#[test]
fn help_shows_an_example() {
    let run = Sandbox::new().mdiff(&["view", "--help"]);
    run.assert_ok();
    assert!(run.stdout.contains("mdiff view mdiff-report.json"), "{}", run.stdout);
    assert!(run.stdout.contains("--viewer"), "{}", run.stdout);
}
