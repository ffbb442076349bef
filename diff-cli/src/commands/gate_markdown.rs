//! The gate's results as Markdown for a pull request: verdict, headline numbers, failing rules, every rule, and
//! the prompts where the models diverge most. Fit for `$GITHUB_STEP_SUMMARY` or a PR comment.

use std::fmt::Write;

use mdiff_core::gate::{Outcome, RuleResult, Status, number};
use mdiff_core::report::Report;
use mdiff_core::report::headlines::{Headlines, percent};

/// How many prompts the divergent-prompt table lists.
const PROMPTS: usize = 5;
/// Characters of a prompt's text the table shows.
const PROMPT_CHARS: usize = 90;

/// The Markdown summary of `outcome` on `report`.
pub fn render(outcome: &Outcome, report: &Report) -> String {
    let mut out = String::new();
    let total = outcome.rules.len();
    let _ = if outcome.passed {
        writeln!(out, "## mdiff gate: ✅ passed ({total} rules)\n")
    } else {
        writeln!(out, "## mdiff gate: ❌ failed ({} of {total} rules)\n", outcome.failed)
    };
    let _ = writeln!(
        out,
        "base `{}` → tuned `{}`\n",
        code(&report.inputs.base.path),
        code(&report.inputs.tuned.path)
    );
    headline(&mut out, report);

    let failing: Vec<&RuleResult> = outcome.rules.iter().filter(|r| r.status == Status::Fail).collect();
    if !failing.is_empty() {
        out.push_str("### Failing rules\n\n| rule | value | limit | why |\n| --- | ---: | --- | --- |\n");
        for rule in failing {
            rule_row(&mut out, rule, &cell(&rule.message));
        }
        out.push('\n');
    }
    out.push_str(
        "<details><summary>All rules</summary>\n\n| rule | value | limit | result |\n| --- | ---: | --- | --- |\n",
    );
    for rule in &outcome.rules {
        rule_row(&mut out, rule, rule.status.label());
    }
    out.push_str("\n</details>\n");
    divergent_prompts(&mut out, report);
    out
}

/// A table row: the rule, its value and limits, then `last` (why it failed, or its result).
fn rule_row(out: &mut String, rule: &RuleResult, last: &str) {
    let _ = writeln!(
        out,
        "| {} | {} | {} | {last} |",
        cell(&rule.name),
        value(rule),
        cell(&limits(rule))
    );
}

fn value(rule: &RuleResult) -> String {
    rule.value.map_or_else(|| "–".into(), number)
}

fn limits(rule: &RuleResult) -> String {
    let limits: Vec<String> = rule.limits.iter().map(mdiff_core::gate::Limit::describe).collect();
    limits.join(", ")
}

/// The numbers a reviewer looks at first: the report's headlines ([`Headlines`]), as the CLI and the viewer show
/// them.
fn headline(out: &mut String, report: &Report) {
    let h = Headlines::new(report);
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(w) = &h.weights {
        rows.push((
            "changed tensors".into(),
            format!(
                "{} of {} (‖ΔW‖/‖W‖ = {})",
                w.num_changed,
                w.num_tensors,
                number(w.relative)
            ),
        ));
        if let Some((layer, relative)) = w.top_layer {
            rows.push((
                "most changed layer".into(),
                format!("{layer} (‖ΔW‖/‖W‖ = {})", number(relative)),
            ));
        }
        if let Some((name, relative)) = &w.top_tensor {
            let relative = relative.map_or_else(|| "–".into(), number);
            rows.push((
                "most changed tensor".into(),
                format!("`{}` (‖ΔW‖/‖W‖ = {relative})", code(name)),
            ));
        }
    }
    if let Some(b) = &h.behaviour {
        if let Some(kl) = b.kl_phrase() {
            let folded = if b.folded_positions > 0 {
                format!(" ({} positions of shared prefixes counted once)", b.folded_positions)
            } else {
                String::new()
            };
            rows.push(("KL(tuned‖base) per token".into(), format!("{kl}{folded}")));
        }
        if let Some(agreement) = b.top1_agreement {
            rows.push(("top-1 agreement".into(), percent(agreement)));
        }
    }
    if let Some(behaviour) = &report.behaviour {
        for (name, group) in &behaviour.groups {
            if let Some(kl) = &group.summary.kl_tuned_base {
                rows.push((
                    format!("KL in group `{}`", code(name)),
                    format!("mean {} nats over {} prompts", number(kl.mean), group.num_prompts),
                ));
            }
        }
    }
    if let Some(swap) = &h.swap {
        rows.push(("weight swap".into(), cell(&swap.sentence())));
    }
    if let Some(patching) = &h.patching {
        rows.push(("activation patching".into(), cell(&patching.sentence())));
    }
    if let Some(lens) = &h.lens
        && let Some(drift) = lens.final_drift
    {
        rows.push((
            "logit-lens drift".into(),
            format!(
                "{} nats at the last layer, {}",
                number(drift),
                cell(&lens.onset_phrase())
            ),
        ));
    }
    if let Some(cc) = &h.crosscoder {
        rows.push(("crosscoder latents".into(), cc.classes_phrase()));
    }
    if rows.is_empty() {
        return;
    }
    out.push_str("| | |\n| --- | --- |\n");
    for (what, value) in rows {
        let _ = writeln!(out, "| {what} | {value} |");
    }
    out.push('\n');
}

fn divergent_prompts(out: &mut String, report: &Report) {
    let Some(behaviour) = &report.behaviour else {
        return;
    };
    let mut prompts: Vec<_> = behaviour
        .prompts
        .iter()
        .filter(|p| p.mean_kl_tuned_base.is_some())
        .collect();
    prompts.sort_by(|a, b| {
        b.mean_kl_tuned_base
            .unwrap_or(0.0)
            .total_cmp(&a.mean_kl_tuned_base.unwrap_or(0.0))
            .then(a.index.cmp(&b.index))
    });
    if prompts.is_empty() {
        return;
    }
    out.push_str("\n### Most divergent prompts\n\n| prompt | group | mean KL | max KL | text |\n| --- | --- | ---: | ---: | --- |\n");
    for p in prompts.into_iter().take(PROMPTS) {
        // The part other prompts share (a template's system prompt) would make every row read the same.
        let skipped = p.shared_prefix_tokens.min(p.tokens.len());
        let text: String = p.tokens.iter().skip(skipped).map(String::as_str).collect();
        let mut shown: String = if skipped > 0 { "…".into() } else { String::new() };
        shown.extend(text.chars().take(PROMPT_CHARS));
        if text.chars().count() > PROMPT_CHARS {
            shown.push('…');
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(&behaviour.prompt_label(p.index)),
            p.group.as_deref().map_or_else(String::new, cell),
            number(p.mean_kl_tuned_base.unwrap_or(0.0)),
            p.max_kl_tuned_base.map_or_else(|| "–".into(), number),
            cell(&shown)
        );
    }
}

/// Text safe in a table cell: pipes escaped, line breaks and Markdown/HTML markup neutralised.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text safe inside a code span: backticks and line breaks removed, pipes escaped (tables).
fn code(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '`')
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc <x> *y*"), "a\\|b c &lt;x&gt; \\*y\\*");
        assert_eq!(code("a`b|c"), "ab\\|c");
    }
}
