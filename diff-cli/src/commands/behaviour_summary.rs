//! The behaviour section for people: headline KL figures (what llama.cpp's `--kl-divergence` prints) and the
//! positions where the models part most.

use std::fmt::Write;

use mdiff_core::report::{BehaviourSection, Distribution, TokenProb};

use crate::format::{Table, num, terminal_width, wrap};

/// Appends the behaviour summary to `out`, listing at most `top` divergent positions.
pub fn write(out: &mut String, b: &BehaviourSection, device: &str, top: usize) {
    let _ = writeln!(
        out,
        "\nbehaviour: {}, {} ({}; {} chat-templated), {} on {device}",
        plural(b.num_prompts as u64, "prompt"),
        plural(b.num_positions, "position"),
        b.prompts_source,
        b.chat_templated_prompts,
        b.dtype
    );
    if b.folded_positions > 0 {
        let line = format!(
            "{} left out of the figures below: an earlier prompt has the same tokens up to them (shared template \
             prefixes count once)",
            plural(b.folded_positions, "position")
        );
        out.push_str(&wrap(&line, "  ", terminal_width()));
    }
    let s = &b.summary;
    let rows: Vec<Vec<String>> = [
        ("KL(tuned‖base)", &s.kl_tuned_base),
        ("KL(base‖tuned)", &s.kl_base_tuned),
        ("KL per prompt", &s.kl_tuned_base_per_prompt),
        ("Δp next token", &s.delta_p_next),
        ("entropy base", &s.entropy_base),
        ("entropy tuned", &s.entropy_tuned),
    ]
    .into_iter()
    .filter_map(|(label, d)| d.as_ref().map(|d| distribution_row(label, d)))
    .collect();
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "  no position had finite logits in both models; nothing to summarize"
        );
    } else {
        let mut table = Table::new(&["", "mean", "± s.e.", "p50", "p90", "p99", "max"]);
        rows.into_iter().for_each(|r| table.row(r));
        out.push_str(&table.render("  "));
    }
    if let Some(agreement) = s.top1_agreement {
        let _ = writeln!(out, "  top-1 agreement {:.2}%", 100.0 * agreement);
    }
    if !b.groups.is_empty() {
        let mut table = Table::new(&["group", "prompts", "mean KL", "p99", "top-1"]);
        for (name, g) in &b.groups {
            let kl = g.summary.kl_tuned_base.as_ref();
            table.row(vec![
                name.clone(),
                g.num_prompts.to_string(),
                kl.map_or_else(|| "-".into(), |d| num(d.mean)),
                kl.and_then(|d| d.percentiles.get("p99"))
                    .map_or_else(|| "-".into(), |v| num(*v)),
                g.summary
                    .top1_agreement
                    .map_or_else(|| "-".into(), |a| format!("{:.1}%", 100.0 * a)),
            ]);
        }
        let _ = writeln!(out, "  by prompt group (KL(tuned‖base)):");
        out.push_str(&table.render("    "));
    }
    let nf = &b.non_finite;
    if nf.base_positions + nf.tuned_positions > 0 {
        let _ = writeln!(
            out,
            "  non-finite logits: {} base, {} tuned positions (left out)",
            nf.base_positions, nf.tuned_positions
        );
    }
    if nf.infinite_kl_positions > 0 {
        let _ = writeln!(out, "  infinite KL: {} positions (left out)", nf.infinite_kl_positions);
    }
    if b.top_positions.is_empty() {
        return;
    }
    let mut table = Table::new(&["prompt", "pos", "context → next", "KL", "base top", "tuned top"]);
    for p in b.top_positions.iter().take(top) {
        let context: String = p
            .context_before
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(String::as_str)
            .collect();
        let next = p
            .next_token
            .as_deref()
            .map_or_else(String::new, |t| format!(" → {}", shown(t)));
        table.row(vec![
            b.prompt_label(p.prompt),
            p.position.to_string(),
            format!("{}[{}]{next}", shown(&context), shown(&p.token)),
            num(p.kl_tuned_base),
            best(&p.top_base),
            best(&p.top_tuned),
        ]);
    }
    let _ = writeln!(out, "\nmost divergent positions (KL(tuned‖base), nats)");
    out.push_str(&table.render("  "));
}

fn distribution_row(label: &str, d: &Distribution) -> Vec<String> {
    let pct = |key: &str| d.percentiles.get(key).copied().map_or_else(|| "-".into(), num);
    vec![
        label.into(),
        num(d.mean),
        num(d.std_err),
        pct("p50"),
        pct("p90"),
        pct("p99"),
        num(d.max),
    ]
}

/// The most likely token with its probability.
fn best(top: &[TokenProb]) -> String {
    top.first()
        .map_or_else(|| "-".into(), |t| format!("{} {:.2}", shown(&t.token), t.prob))
}

/// A token string made visible on one line (newlines and tabs escaped).
fn shown(token: &str) -> String {
    token.replace('\n', "\\n").replace('\t', "\\t").replace('\r', "\\r")
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
