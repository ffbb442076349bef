//! The gate's results as JUnit XML: one testcase per rule, as CI systems (GitHub, GitLab, Jenkins) display them.

use std::fmt::Write;
use std::path::Path;

use mdiff_core::gate::{Outcome, RuleResult, Status, number};

/// The JUnit document for `outcome` of the report at `report`.
pub fn render(outcome: &Outcome, report: &Path) -> String {
    let tests = outcome.rules.len();
    let counts = format!(
        r#"tests="{tests}" failures="{}" errors="0" skipped="{}""#,
        outcome.failed, outcome.skipped
    );
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, r#"<testsuites name="mdiff gate" {counts}>"#);
    let _ = writeln!(
        out,
        r#"  <testsuite name="{}" {counts}>"#,
        escape(&format!("mdiff gate: {}", report.display()))
    );
    for rule in &outcome.rules {
        let classname = rule.metric.as_deref().unwrap_or("tensors");
        let _ = write!(
            out,
            r#"    <testcase classname="mdiff.gate.{}" name="{}">"#,
            escape(classname),
            escape(&rule.name)
        );
        let detail = escape(&detail(rule));
        match rule.status {
            Status::Pass => {
                let _ = write!(out, "<system-out>{detail}</system-out>");
            }
            Status::Fail => {
                let _ = write!(
                    out,
                    r#"<failure type="gate" message="{}">{detail}</failure>"#,
                    escape(&rule.message)
                );
            }
            Status::Skip => {
                let _ = write!(out, r#"<skipped message="{}"/>"#, escape(&rule.message));
            }
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// `value 0.31; limits ≤ 0.1; group refusal; baseline 0.2; <message>`.
fn detail(rule: &RuleResult) -> String {
    let mut parts = vec![format!("value {}", rule.value.map_or_else(|| "-".into(), number))];
    let limits: Vec<String> = rule.limits.iter().map(mdiff_core::gate::Limit::describe).collect();
    parts.push(format!("limits {}", limits.join(", ")));
    if let Some(group) = &rule.group {
        parts.push(format!("group {group}"));
    }
    if let Some(baseline) = rule.baseline {
        parts.push(format!("baseline {}", number(baseline)));
    }
    if !rule.message.is_empty() {
        parts.push(rule.message.clone());
    }
    parts.join("; ")
}

/// Text safe inside XML 1.0 attributes and elements: markup escaped, characters XML forbids replaced.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if u32::from(c) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_forbidden_characters() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{1}y\nz"), "x\u{FFFD}y\nz");
    }
}
