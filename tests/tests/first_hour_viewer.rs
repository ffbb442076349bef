//! Issue #15, the viewer: `mdiff view` without a display says so in one line and offers `mdiff serve`; `mdiff
//! serve REPORT` serves the web viewer and the one report on 127.0.0.1 only, with the right Content-Types, 404s and
//! no path outside the bundle, and explains a bundle that was not built. The bundles here are stand-in files: what
//! the browser does with the real one is `viewer/web/browser-test.mjs`'s part.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mdiff_tests::{Run, Sandbox, mdiff_bin};

/// The report every case serves or views, as the user would type it (relative to the sandbox).
const REPORT: &str = "report.json";

fn with_report(sb: &Sandbox) -> PathBuf {
    sb.copy_fixture("reports/tiny-llama-lora.json", REPORT)
}

// ---- mdiff view without a display ----------------------------------------------------------------------------

/// A stand-in viewer that records that it ran (in `<path>.ran`), writes `stderr` and exits with `code`.
#[cfg(unix)]
fn fake_viewer(path: &Path, code: u8, stderr: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let script = format!(
        "#!/bin/sh\ntouch '{}.ran'\nprintf '%s\\n' '{stderr}' >&2\nexit {code}\n",
        path.display()
    );
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

#[cfg(unix)]
fn viewer_ran(viewer: &Path) -> bool {
    let mut ran = viewer.as_os_str().to_owned();
    ran.push(".ran");
    Path::new(&ran).exists()
}

/// Before #15 this started the viewer, which failed to open a window: exit 3, "internal error".
#[cfg(all(unix, not(target_os = "macos")))]
#[test]
fn view_without_a_display_exits_2_and_offers_mdiff_serve() {
    let sb = Sandbox::new();
    with_report(&sb);
    let viewer = fake_viewer(&sb.join("bin/mdiff-viewer"), 0, "");
    let env = [
        ("MDIFF_VIEWER", Some(viewer.as_os_str())),
        ("DISPLAY", None),
        ("WAYLAND_DISPLAY", None),
    ];
    let run = sb.run(mdiff_bin(), &["view", REPORT], &env);
    run.assert_fails_cleanly(
        2,
        &["no display", "DISPLAY", "WAYLAND_DISPLAY", "mdiff serve report.json"],
    );
    assert!(!viewer_ran(&viewer), "no window can open: the viewer is not started");
    // An empty DISPLAY is no display either.
    let env = [
        ("MDIFF_VIEWER", Some(viewer.as_os_str())),
        ("DISPLAY", Some(OsStr::new(""))),
        ("WAYLAND_DISPLAY", None),
    ];
    let run = sb.run(mdiff_bin(), &["view", REPORT], &env);
    run.assert_fails_cleanly(2, &["no display", "mdiff serve"]);
}

/// A display that is named but cannot be opened: the viewer exits 4 with its reason; `mdiff view` makes that one
/// line, exit 2, with the web route.
#[cfg(unix)]
#[test]
fn a_viewer_that_cannot_open_a_window_becomes_one_line_with_the_web_route() {
    let sb = Sandbox::new();
    with_report(&sb);
    let viewer = fake_viewer(
        &sb.join("bin/mdiff-viewer"),
        4,
        "mdiff-viewer: cannot open a window: failed to open X display (no display? `mdiff serve REPORT` shows it)",
    );
    let env = [
        ("MDIFF_VIEWER", Some(viewer.as_os_str())),
        ("DISPLAY", Some(OsStr::new(":mdiff-test-none"))),
    ];
    let run = sb.run(mdiff_bin(), &["view", REPORT], &env);
    run.assert_fails_cleanly(
        2,
        &[
            "could not open a window (failed to open X display)",
            "mdiff serve report.json",
        ],
    );
    assert!(viewer_ran(&viewer));
}

// ---- mdiff serve: a stand-in bundle --------------------------------------------------------------------------

/// What the stand-in bundle's files hold: distinct, so a response can be traced to its file.
const BUNDLE: [(&str, &[u8]); 4] = [
    ("index.html", b"<!DOCTYPE html><title>stand-in</title>"),
    ("mdiff_viewer.js", b"export default function init() {}"),
    ("mdiff_viewer_bg.wasm", b"\0asm\x01\0\0\0"),
    ("snippets/x/inline0.js", b"export const x = 1;"),
];

/// Writes the stand-in bundle into `dir`; beside it, a file that must never be served.
fn bundle_in(dir: &Path) -> PathBuf {
    for (name, bytes) in BUNDLE {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    std::fs::write(dir.parent().unwrap().join("secret.txt"), "not for the web").unwrap();
    dir.to_path_buf()
}

/// A running `mdiff serve` and the address it printed; killed (SIGKILL) if a test fails before stopping it.
struct Server {
    child: Child,
    port: u16,
    /// The `Open:` line's URL.
    url: String,
    /// Standard output read so far.
    printed: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mdiff serve ARGS --port 0` in `dir` and waits for the address it prints.
fn serve(dir: &Path, args: &[&OsStr], env: &[(&str, Option<&OsStr>)]) -> Server {
    let mut command = Command::new(mdiff_bin());
    command
        .arg("serve")
        .args(args)
        .args(["--port", "0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let mut child = command.spawn().expect("starting mdiff serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let mut url = None;
    for _ in 0..20 {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        printed.push_str(&line);
        if let Some(u) = line.trim().strip_prefix("Open:") {
            url = Some(u.trim().to_string());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    let Some(url) = url else {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        let _ = child.kill();
        panic!("no address printed; stdout: {printed:?}; stderr: {err:?}");
    };
    let port = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a 127.0.0.1 URL: {url}"));
    Server {
        child,
        port,
        url,
        printed,
    }
}

/// One raw HTTP/1.1 response.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method target` as written (no normalisation, as an attacker would) and reads the whole answer.
fn request(port: u16, method: &str, target: &str) -> Response {
    request_to(port, &format!("127.0.0.1:{port}"), method, target)
}

/// [`request`] with the Host header a browser would send for `host`.
fn request_to(port: u16, host: &str, method: &str, target: &str) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(stream, "{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn get(port: u16, target: &str) -> Response {
    request(port, "GET", target)
}

#[test]
fn serve_prints_the_address_and_the_tunnel_and_serves_bundle_and_report() {
    let sb = Sandbox::new();
    let report = with_report(&sb);
    let bundle = bundle_in(&sb.join("dist"));
    let server = serve(
        sb.path(),
        &[OsStr::new(REPORT), "--web-dir".as_ref(), bundle.as_os_str()],
        &[],
    );
    let port = server.port;
    assert_eq!(server.url, format!("http://127.0.0.1:{port}/?url=report.json"));
    assert!(
        server.printed.contains(&format!("ssh -L {port}:127.0.0.1:{port}")),
        "{}",
        server.printed
    );

    let index = get(port, "/");
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(index.body, BUNDLE[0].1);
    let index = get(port, "/?url=report.json");
    assert_eq!((index.status, index.body.as_slice()), (200, BUNDLE[0].1));
    let js = get(port, "/mdiff_viewer.js");
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    let wasm = get(port, "/mdiff_viewer_bg.wasm");
    assert_eq!(wasm.status, 200);
    assert_eq!(wasm.header("content-type"), Some("application/wasm"));
    assert_eq!(wasm.body, BUNDLE[2].1);
    assert_eq!(get(port, "/snippets/x/inline0.js").body, BUNDLE[3].1);

    let served = get(port, "/report.json");
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.body, std::fs::read(&report).unwrap());
    assert_eq!(
        served.header("content-length"),
        Some(served.body.len().to_string().as_str())
    );
    let head = request(port, "HEAD", "/report.json");
    assert_eq!((head.status, head.body.len()), (200, 0));

    assert_eq!(get(port, "/no-such-file.js").status, 404);
    assert_eq!(request(port, "POST", "/report.json").status, 405);
}

/// A report name with spaces and brackets: the printed address escapes it, and the report is found however the
/// browser escapes the request.
#[test]
fn serve_escapes_a_report_name_and_matches_it_decoded() {
    let sb = Sandbox::new();
    let name = "my report (v2).json";
    let report = sb.copy_fixture("reports/tiny-llama-lora.json", name);
    let bundle = bundle_in(&sb.join("dist"));
    let server = serve(
        sb.path(),
        &[OsStr::new(name), "--web-dir".as_ref(), bundle.as_os_str()],
        &[],
    );
    assert!(
        server.url.ends_with("/?url=my%20report%20%28v2%29.json"),
        "{}",
        server.url
    );
    let bytes = std::fs::read(&report).unwrap();
    for target in ["/my%20report%20%28v2%29.json", "/my%20report%20(v2).json"] {
        let response = get(server.port, target);
        assert_eq!((response.status, response.body == bytes), (200, true), "{target}");
    }
}

/// Nothing outside the bundle is served, however the path is spelled; nor any report but the one named.
#[test]
fn serve_refuses_paths_outside_the_bundle_and_other_reports() {
    let sb = Sandbox::new();
    with_report(&sb);
    let _ = sb.copy_fixture("reports/tiny-llama-full-ft.json", "other.json");
    let bundle = bundle_in(&sb.join("dist"));
    #[cfg(unix)]
    std::os::unix::fs::symlink(sb.join("secret.txt"), bundle.join("link.txt")).unwrap();
    let server = serve(
        sb.path(),
        &[OsStr::new(REPORT), "--web-dir".as_ref(), bundle.as_os_str()],
        &[],
    );
    let port = server.port;
    // DNS rebinding: a page whose own name resolves to 127.0.0.1 sends its name as Host and gets nothing; an ssh
    // tunnel on another local port (localhost:9000) is answered.
    assert_eq!(request_to(port, "evil.example:80", "GET", "/report.json").status, 403);
    assert_eq!(request_to(port, "localhost:9000", "GET", "/report.json").status, 200);
    assert_eq!(request_to(port, "[::1]:9000", "GET", "/report.json").status, 200);
    for target in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/snippets/../../secret.txt",
        "/snippets/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/link.txt",
        "/other.json",
        "/../other.json",
        "/../report.json",
        "/snippets",
        "/%zz",
        "/index.html%00.js",
    ] {
        let response = get(port, target);
        assert!(
            response.status == 404 || response.status == 400,
            "{target}: {}",
            response.status
        );
        assert!(
            !String::from_utf8_lossy(&response.body).contains("not for the web"),
            "{target} leaked a file outside the bundle"
        );
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_serve() {
    let sb = Sandbox::new();
    with_report(&sb);
    let bundle = bundle_in(&sb.join("dist"));
    let mut server = serve(
        sb.path(),
        &[OsStr::new(REPORT), "--web-dir".as_ref(), bundle.as_os_str()],
        &[],
    );
    assert_eq!(get(server.port, "/").status, 200);
    if sigint_ignored(server.child.id()) {
        // A shell's background job ignores SIGINT, and its children inherit that: no Ctrl-C reaches them, whatever
        // mdiff does. Said, not silently passed.
        eprintln!("ctrl_c_stops_serve: this test runs with SIGINT ignored (a background job); nothing to check");
        return;
    }
    let status = Command::new("kill")
        .args(["-INT", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..100 {
        if server.child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mdiff serve still runs 5 s after SIGINT");
}

/// Whether process `pid` ignores SIGINT (Linux: bit 1 of `SigIgn` in /proc/PID/status); `false` elsewhere.
#[cfg(unix)]
fn sigint_ignored(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << 1) != 0)
}

// ---- finding the bundle, and what a missing one says ---------------------------------------------------------

/// `MDIFF_WEB_DIR`, and `web/` beside the `mdiff` binary, are where a bundle is found without `--web-dir`.
#[test]
fn serve_finds_the_bundle_in_the_env_then_beside_mdiff() {
    let sb = Sandbox::new();
    with_report(&sb);
    let from_env = bundle_in(&sb.join("env-dist"));
    let server = serve(
        sb.path(),
        &[OsStr::new(REPORT)],
        &[("MDIFF_WEB_DIR", Some(from_env.as_os_str()))],
    );
    assert!(
        server.printed.contains(from_env.to_str().unwrap()),
        "{}",
        server.printed
    );
    assert_eq!(get(server.port, "/").body, BUNDLE[0].1);
    drop(server);

    // A copy of mdiff with a bundle in web/ beside it.
    let bin = sb.join("install/mdiff");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(mdiff_bin(), &bin).unwrap();
    let beside = bundle_in(&sb.join("install/web"));
    let mut command = Command::new(&bin);
    command
        .args(["serve", REPORT, "--port", "0"])
        .current_dir(sb.path())
        .env_remove("MDIFF_WEB_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains(beside.to_str().unwrap()), "{first}");
}

/// A bundle folder without the built files: one line, exit 2, the command that builds it; before #15 there was no
/// way to look at a report on a machine without a display.
#[test]
fn serve_without_a_built_bundle_says_how_to_build_it() {
    let sb = Sandbox::new();
    with_report(&sb);
    let empty = sb.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = sb.run(
        mdiff_bin(),
        &[
            OsStr::new("serve"),
            OsStr::new(REPORT),
            "--web-dir".as_ref(),
            empty.as_os_str(),
        ],
        &[],
    );
    run.assert_fails_cleanly(
        2,
        &[
            empty.to_str().unwrap(),
            "--web-dir",
            "not a built web viewer",
            "mdiff_viewer_bg.wasm",
            "viewer/build-web.sh",
        ],
    );
    let run = sb.run(
        mdiff_bin(),
        &["serve", REPORT],
        &[("MDIFF_WEB_DIR", Some(empty.as_os_str()))],
    );
    run.assert_fails_cleanly(2, &["MDIFF_WEB_DIR", "viewer/build-web.sh"]);
}

/// The report is read and parsed before anything listens.
#[test]
fn serve_checks_the_report_first() {
    let sb = Sandbox::new();
    let bundle = bundle_in(&sb.join("dist"));
    let serve_report = |name: &str| -> Run {
        sb.run(
            mdiff_bin(),
            &[
                OsStr::new("serve"),
                OsStr::new(name),
                "--web-dir".as_ref(),
                bundle.as_os_str(),
            ],
            &[],
        )
    };
    serve_report("missing.json").assert_fails_cleanly(2, &["cannot read", "missing.json"]);
    std::fs::write(sb.join("bad.json"), r#"{"schema_version": "1.1", "inputs": "#).unwrap();
    serve_report("bad.json").assert_fails_cleanly(2, &["bad.json", "not an mdiff report"]);
}

#[test]
fn serve_on_a_port_in_use_says_pick_another() {
    let sb = Sandbox::new();
    with_report(&sb);
    let bundle = bundle_in(&sb.join("dist"));
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = sb.run(
        mdiff_bin(),
        &[
            OsStr::new("serve"),
            OsStr::new(REPORT),
            "--web-dir".as_ref(),
            bundle.as_os_str(),
            "--port".as_ref(),
            port.as_ref(),
        ],
        &[],
    );
    run.assert_fails_cleanly(2, &[&format!("127.0.0.1:{port}"), "--port"]);
}

#[test]
fn serve_help_shows_examples_and_the_tunnel() {
    let run = Sandbox::new().mdiff(&["serve", "--help"]);
    run.assert_ok();
    for needle in [
        "mdiff serve mdiff-report.json",
        "--web-dir",
        "--port",
        "ssh -L",
        "viewer/build-web.sh",
    ] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
}
