//! The example reports committed under `fixtures/reports/` (the viewer's tests read them) must be what
//! `mdiff compare` writes today for the bundled tiny Llama. Each test regenerates one report with the real binary
//! and compares it with the committed file, `timings_ms` aside; `UPDATE_FIXTURE_REPORTS=1` rewrites the files.
//!
//! The runs are deterministic (same inputs and seed → same report; checked at 1, 2 and 4 threads when these files
//! were made), so every number must match exactly. `--threads 1` all the same, so that no reduction order can
//! depend on the machine. The runs use relative paths from the repository root, so the paths in the reports are the
//! same on every machine.
//!
//! Committed layout: what `mdiff compare -o` writes (same key order, same number text), except that `timings_ms`
//! is `{}` so the files do not churn, and arrays that hold no object and nest at most two deep (per-token rows,
//! top-k lists) take one line each: pretty JSON puts every number on its own line, 3.3 MB per report instead of
//! 1.1 MB (the same idea as the `golden/behaviour-*.json` rows).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::ffi::OsString;
use std::path::Path;

use mdiff_core::report::read_report;
use mdiff_tests::{Sandbox, fixture, mdiff_bin, repo_root, run_in};
use serde_json::Value;

/// Set to 1 to rewrite the committed reports instead of checking them.
const UPDATE_ENV: &str = "UPDATE_FIXTURE_REPORTS";
const HOW_TO_UPDATE: &str = "if the change is intended, rerun with `UPDATE_FIXTURE_REPORTS=1 cargo test -p mdiff-tests --test fixture_reports` \
     and commit fixtures/reports/";
/// Relative to the repository root, as the reports record them.
const BASE: &str = "fixtures/tiny-llama/base";

#[test]
fn tiny_llama_full_ft_report_is_up_to_date() {
    check("tiny-llama-full-ft.json", "fixtures/tiny-llama/full-ft");
}

#[test]
fn tiny_llama_lora_report_is_up_to_date() {
    check("tiny-llama-lora.json", "fixtures/tiny-llama/lora");
}

/// Regenerates `fixtures/reports/<name>` from `compare BASE <tuned>` and checks it (or rewrites it).
fn check(name: &str, tuned: &str) {
    let path = fixture(&format!("reports/{name}"));
    let fresh_text = generate(tuned);
    let fresh = without_timings(serde_json::from_str(&fresh_text).expect("mdiff wrote JSON"));
    if std::env::var_os(UPDATE_ENV).is_some_and(|v| v == "1") {
        update(&path, &fresh_text, &fresh);
        return;
    }
    let committed_text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {HOW_TO_UPDATE}", path.display()));
    let committed: Value = serde_json::from_str(&committed_text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}; {HOW_TO_UPDATE}", path.display()));
    let mut diffs = Vec::new();
    differences(&without_timings(committed), &fresh, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{} differs from what `mdiff compare {BASE} {tuned}` writes now ({} differences; the first {}):\n  {}\n{HOW_TO_UPDATE}",
        path.display(),
        diffs.len(),
        diffs.len().min(MAX_SHOWN),
        diffs.iter().take(MAX_SHOWN).cloned().collect::<Vec<_>>().join("\n  ")
    );
    // The viewer reads the file through mdiff_core: it must be a report of the schema this build reads.
    read_report(&path).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs `mdiff compare BASE TUNED` from the repository root and returns the report it wrote.
fn generate(tuned: &str) -> String {
    let sandbox = Sandbox::new();
    let output = sandbox.join("report.json");
    let mut args: Vec<OsString> = ["compare", BASE, tuned, "--threads", "1", "-o"]
        .map(OsString::from)
        .to_vec();
    args.push(output.clone().into());
    run_in(&repo_root(), mdiff_bin(), &args, &[]).assert_ok();
    std::fs::read_to_string(&output).expect("the report mdiff wrote")
}

/// Writes the report in the committed layout, unless the file already holds exactly that text.
fn update(path: &Path, fresh_text: &str, fresh: &Value) {
    let text = committed_layout(fresh_text);
    let reparsed: Value = serde_json::from_str(&text).expect("the layout is JSON");
    assert_eq!(
        &without_timings(reparsed),
        fresh,
        "the layout must not change any value"
    );
    if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
        std::fs::create_dir_all(path.parent().expect("fixtures/reports")).expect("mkdir fixtures/reports");
        std::fs::write(path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("rewrote {}", path.display());
    }
}

fn without_timings(mut report: Value) -> Value {
    if let Some(map) = report.as_object_mut() {
        map.remove("timings_ms");
    }
    report
}

/// How many differences a failure lists.
const MAX_SHOWN: usize = 10;

/// Appends one line per differing leaf (`path: committed …, now …`) to `out`.
fn differences(committed: &Value, fresh: &Value, at: &str, out: &mut Vec<String>) {
    match (committed, fresh) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => differences(value, other, &format!("{at}.{key}"), out),
                    None => out.push(format!("{at}.{key}: no longer written")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{at}.{key}: new"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{at}[{i}]"), out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            out.push(format!("{at}: {} items committed, {} now", a.len(), b.len()));
        }
        _ if committed != fresh => out.push(format!("{at}: committed {committed}, now {fresh}")),
        _ => {}
    }
}

// ---- the committed layout ----------------------------------------------------------------------------------

/// A JSON value as slices of its text, in document order (`serde_json::Value` would sort the keys and re-print
/// the numbers).
enum Node<'a> {
    /// A string, number, `true`, `false` or `null`, as written.
    Leaf(&'a str),
    Array(Vec<Node<'a>>),
    /// Keys keep their quotes and escapes.
    Object(Vec<(&'a str, Node<'a>)>),
}

/// Re-lays out the report `mdiff` wrote (valid JSON): `timings_ms` emptied, small arrays on one line, the rest
/// indented by two spaces per level as `serde_json::to_string_pretty` does.
fn committed_layout(report: &str) -> String {
    let mut root = Parser { text: report, pos: 0 }.value();
    if let Node::Object(members) = &mut root {
        for (key, value) in members.iter_mut() {
            if *key == "\"timings_ms\"" {
                *value = Node::Object(Vec::new());
            }
        }
    }
    let mut out = String::with_capacity(report.len() / 2);
    write_node(&root, 0, &mut out);
    out.push('\n');
    out
}

/// Nesting depth of arrays (a leaf is 0), or `None` when the value holds an object.
fn array_depth(node: &Node<'_>) -> Option<usize> {
    match node {
        Node::Leaf(_) => Some(0),
        Node::Array(items) => items
            .iter()
            .try_fold(0, |deepest, item| Some(deepest.max(array_depth(item)?)))
            .map(|d| d + 1),
        Node::Object(_) => None,
    }
}

fn write_node(node: &Node<'_>, indent: usize, out: &mut String) {
    let pad = |out: &mut String, level: usize| out.extend(std::iter::repeat_n("  ", level));
    match node {
        Node::Leaf(text) => out.push_str(text),
        Node::Array(items) if items.is_empty() => out.push_str("[]"),
        Node::Object(members) if members.is_empty() => out.push_str("{}"),
        Node::Array(items) if array_depth(node).is_some_and(|d| d <= 2) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_node(item, indent, out);
            }
            out.push(']');
        }
        Node::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(out, indent + 1);
                write_node(item, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push(']');
        }
        Node::Object(members) => {
            out.push_str("{\n");
            for (i, (key, value)) in members.iter().enumerate() {
                pad(out, indent + 1);
                out.push_str(key);
                out.push_str(": ");
                write_node(value, indent + 1, out);
                out.push_str(if i + 1 < members.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push('}');
        }
    }
}

/// A minimal reader for JSON that `serde_json` has already accepted: it only finds where values start and end.
/// Scanning bytes is safe on UTF-8 text, since every byte it looks for is ASCII and never part of another character.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> u8 {
        *self.text.as_bytes().get(self.pos).expect("complete JSON")
    }

    fn skip_whitespace(&mut self) {
        while self.pos < self.text.len() && self.peek().is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    /// Skips `byte` (and the whitespace before it) when it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let found = self.peek() == byte;
        if found {
            self.pos += 1;
        }
        found
    }

    fn value(&mut self) -> Node<'a> {
        self.skip_whitespace();
        if self.eat(b'{') {
            let mut members = Vec::new();
            while !self.eat(b'}') {
                self.skip_whitespace();
                let key = self.string();
                assert!(self.eat(b':'), "':' after a key at byte {}", self.pos);
                members.push((key, self.value()));
                self.eat(b',');
            }
            Node::Object(members)
        } else if self.eat(b'[') {
            let mut items = Vec::new();
            while !self.eat(b']') {
                items.push(self.value());
                self.eat(b',');
            }
            Node::Array(items)
        } else if self.peek() == b'"' {
            Node::Leaf(self.string())
        } else {
            let start = self.pos;
            while self.pos < self.text.len()
                && !matches!(self.peek(), b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t')
            {
                self.pos += 1;
            }
            Node::Leaf(&self.text[start..self.pos])
        }
    }

    /// A string literal starting at `pos`, quotes and escapes included.
    fn string(&mut self) -> &'a str {
        let start = self.pos;
        assert_eq!(self.peek(), b'"', "a string at byte {start}");
        self.pos += 1;
        loop {
            match self.peek() {
                b'\\' => self.pos += 2,
                b'"' => break,
                _ => self.pos += 1,
            }
        }
        self.pos += 1;
        &self.text[start..self.pos]
    }
}

#[test]
fn layout_keeps_order_and_text_and_folds_small_arrays() {
    let text = r#"{
  "schema_version": "1.1",
  "rows": [
    [
      [1, 0.5],
      [2, 2.5e-7]
    ]
  ],
  "tokens": ["a\"b", "é,]"],
  "empty": [],
  "objects": [{"k": {}}],
  "timings_ms": {"kl": 3.0}
}"#;
    let want = r#"{
  "schema_version": "1.1",
  "rows": [
    [[1, 0.5], [2, 2.5e-7]]
  ],
  "tokens": ["a\"b", "é,]"],
  "empty": [],
  "objects": [
    {
      "k": {}
    }
  ],
  "timings_ms": {}
}
"#;
    assert_eq!(committed_layout(text), want);
}
