//! `mdiff serve REPORT`: the web viewer and one report over HTTP on 127.0.0.1, for a machine without a display
//! (a GPU server reached over ssh, the way TensorBoard is used: `ssh -L PORT:127.0.0.1:PORT host`).
//!
//! A small HTTP/1.1 server on `std::net`, GET and HEAD only, one request per connection: it serves the built web
//! bundle (`viewer/build-web.sh`) and the one report, checked before the first request, and nothing else. Paths
//! are resolved inside the bundle (no `..`, no link out of it). It binds 127.0.0.1 only: a report can name private
//! paths and prompts, so reaching it from elsewhere takes an ssh tunnel, which also authenticates.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mdiff_core::report::parse_report;

use crate::cli::ServeArgs;

/// The environment variable naming the bundle when `--web-dir` is not given.
const WEB_DIR_ENV: &str = "MDIFF_WEB_DIR";

/// The files `viewer/build-web.sh` writes; a folder without them is not a bundle.
const BUNDLE_FILES: [&str; 3] = ["index.html", "mdiff_viewer.js", "mdiff_viewer_bg.wasm"];

/// How to get a bundle, appended to every "not built" message.
const HOW_TO_BUILD: &str = "build it with `viewer/build-web.sh` in mdiff's source tree (it writes viewer/dist; \
     docs/viewer.md lists what it needs), or pass --web-dir DIR";

/// Longest request head read (request line and headers); a browser's GET is well under 2 KiB.
const MAX_HEAD_BYTES: u64 = 16 * 1024;

/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `mdiff serve`.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let report_bytes = std::fs::read(&args.report).map_err(|source| mdiff_core::Error::Read {
        path: args.report.clone(),
        source,
    })?;
    // A missing, corrupt or too-new report fails here, with the usual one line, before anything listens.
    parse_report(&report_bytes, &args.report)?;
    let bundle = find_bundle(args.web_dir.as_deref())?;
    let report_name = served_name(&args.report, &bundle);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port)).map_err(|e| {
        usage(format!(
            "cannot listen on 127.0.0.1:{} ({e}); pick another port with --port N (0 picks a free one)",
            args.port
        ))
    })?;
    let port = listener.local_addr().context("reading the bound address")?.port();
    let site = Arc::new(Site {
        bundle: bundle.clone(),
        report_name: report_name.clone(),
        report: report_bytes,
    });
    crate::commands::print(&format!(
        "Serving the mdiff viewer ({}) and {} on 127.0.0.1 only.\n\
         Open:  http://127.0.0.1:{port}/?url={}\n\
         From another machine: ssh -L {port}:127.0.0.1:{port} THIS_HOST, then open the address above there.\n\
         Ctrl-C stops.\n",
        bundle.display(),
        args.report.display(),
        percent_encode(&report_name),
    ))?;
    for stream in listener.incoming() {
        // A failed accept (the client went away, or no descriptors left) ends that connection, not the server; the
        // pause keeps a persistent failure from spinning a core.
        let Ok(stream) = stream else {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        };
        let site = Arc::clone(&site);
        std::thread::spawn(move || {
            // A client that hangs up mid-response is its own business.
            let _ = handle(stream, &site);
        });
    }
    Ok(())
}

/// The bundle: `--web-dir`, else `$MDIFF_WEB_DIR`, else `web/` beside this executable, else `viewer/dist` of the
/// source tree this binary was built from. One given explicitly must be a bundle; it is never silently replaced.
fn find_bundle(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let explicit = match flag {
        Some(dir) => Some((dir.to_path_buf(), "--web-dir")),
        None => std::env::var_os(WEB_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), WEB_DIR_ENV)),
    };
    if let Some((dir, source)) = explicit {
        return match missing_files(&dir) {
            None => Ok(dir),
            Some(missing) => Err(usage(format!(
                "{} (from {source}) is not a built web viewer: no {missing}; {HOW_TO_BUILD}",
                dir.display()
            ))),
        };
    }
    let candidates = default_candidates();
    match candidates.iter().find(|dir| missing_files(dir).is_none()) {
        Some(dir) => Ok(dir.clone()),
        None => {
            let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
            Err(usage(format!(
                "the web viewer is not built (looked in {}); {HOW_TO_BUILD}",
                looked.join(" and ")
            )))
        }
    }
}

/// Where a bundle is looked for when none is named: beside the executable (an install), then the source tree.
fn default_candidates() -> Vec<PathBuf> {
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("web")));
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../viewer/dist");
    beside_exe.into_iter().chain(std::iter::once(source_tree)).collect()
}

/// The bundle files `dir` lacks, joined for a message; `None` when it has them all.
fn missing_files(dir: &Path) -> Option<String> {
    let missing: Vec<&str> = BUNDLE_FILES.into_iter().filter(|f| !dir.join(f).is_file()).collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The name the report is served under: its file name, so the viewer's title names it, unless a bundle file has
/// that name.
fn served_name(report: &Path, bundle: &Path) -> String {
    let name = report
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && !bundle.join(n).exists());
    name.unwrap_or_else(|| "report.json".into())
}

/// What the server answers from.
struct Site {
    /// The bundle folder.
    bundle: PathBuf,
    /// The name the report is served under, at the root (`/name.json`).
    report_name: String,
    /// The report as checked at start.
    report: Vec<u8>,
}

/// One response.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n").into_bytes(),
        }
    }
}

/// Reads one request from `stream` and answers it.
fn handle(stream: TcpStream, site: &Site) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    // A client that stops reading must not hold its thread for ever.
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD_BYTES));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers are read so that the client sees its request consumed before the answer; only Host is kept.
    let mut header = String::new();
    let mut local_host = false;
    loop {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("host")
        {
            local_host = is_local_host(value.trim());
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    // Binding to 127.0.0.1 does not stop a web page from reaching the server through DNS rebinding (its own name
    // pointed at 127.0.0.1); the Host it sends then names that page's site, so only loopback names are answered.
    let response = if local_host {
        answer(site, method, target)
    } else {
        Response::text("403 Forbidden", "only requests to 127.0.0.1 or localhost are answered")
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )?;
    if method != "HEAD" {
        out.write_all(&response.body)?;
    }
    out.flush()
}

/// Whether a Host header names this machine's loopback (any port: an ssh tunnel may use another one).
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name == "127.0.0.1" || name == "::1" || name.eq_ignore_ascii_case("localhost")
}

/// The response to `method target`.
fn answer(site: &Site, method: &str, target: &str) -> Response {
    if method != "GET" && method != "HEAD" {
        return Response::text("405 Method Not Allowed", "only GET and HEAD");
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    // Compared decoded: browsers escape a name's characters differently (`(` stays, a space becomes `%20`).
    let Some(decoded) = percent_decode(path) else {
        return Response::text("400 Bad Request", "bad path");
    };
    if decoded.strip_prefix('/') == Some(site.report_name.as_str()) {
        return Response {
            status: "200 OK",
            content_type: "application/json",
            body: site.report.clone(),
        };
    }
    let relative = if decoded == "/" {
        "/index.html"
    } else {
        decoded.as_str()
    };
    match bundle_file(&site.bundle, relative) {
        Some(file) => match std::fs::read(&file) {
            Ok(body) => Response {
                status: "200 OK",
                content_type: content_type(&file),
                body,
            },
            Err(_) => Response::text("404 Not Found", "not found"),
        },
        None => Response::text("404 Not Found", "not found"),
    }
}

/// The file a URL path names inside the bundle, if it is a file there: only plain names (no `..`, no root or
/// drive, no backslash), and, links resolved, still inside the bundle. A report beside the bundle is not served.
fn bundle_file(bundle: &Path, url_path: &str) -> Option<PathBuf> {
    let relative = url_path.strip_prefix('/')?;
    if relative.contains(['\\', '\0']) {
        return None;
    }
    let relative = Path::new(relative);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let root = bundle.canonicalize().ok()?;
    let file = root.join(relative).canonicalize().ok()?;
    (file.starts_with(&root) && file.is_file()).then_some(file)
}

/// The Content-Type of a bundle file, by extension (browsers compile `.wasm` streaming only as application/wasm).
fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A file name as one URL path segment (and query value): everything but unreserved characters escaped.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An error the user fixes (exit code 2).
fn usage(message: String) -> anyhow::Error {
    mdiff_core::Error::Usage(message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_percent_encoding() {
        let name = "my report (v2) ü.json";
        let encoded = percent_encode(name);
        assert_eq!(encoded, "my%20report%20%28v2%29%20%C3%BC.json");
        assert_eq!(percent_decode(&encoded).as_deref(), Some(name));
        assert_eq!(percent_decode("/a%2"), None);
        assert_eq!(percent_decode("/a%zz"), None);
        assert_eq!(percent_decode("/%ff"), None);
    }

    #[test]
    fn bundle_paths_stay_inside_the_bundle() {
        let dir = std::env::temp_dir().join(format!("mdiff-serve-unit-{}", std::process::id()));
        let bundle = dir.join("dist");
        std::fs::create_dir_all(bundle.join("snippets")).unwrap();
        std::fs::write(bundle.join("index.html"), "i").unwrap();
        std::fs::write(bundle.join("snippets/a.js"), "a").unwrap();
        std::fs::write(dir.join("secret.txt"), "s").unwrap();
        assert!(bundle_file(&bundle, "/index.html").is_some());
        assert!(bundle_file(&bundle, "/snippets/a.js").is_some());
        for bad in [
            "/../secret.txt",
            "/snippets/../../secret.txt",
            "/./index.html",
            "//etc/passwd",
            "/snippets",
            "/nope.html",
            "index.html",
            "/..\\secret.txt",
        ] {
            assert_eq!(bundle_file(&bundle, bad), None, "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wasm_is_served_as_application_wasm() {
        assert_eq!(content_type(Path::new("x/mdiff_viewer_bg.wasm")), "application/wasm");
        assert_eq!(content_type(Path::new("index.html")), "text/html; charset=utf-8");
        assert_eq!(
            content_type(Path::new("mdiff_viewer.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("LICENSE")), "application/octet-stream");
    }
}
