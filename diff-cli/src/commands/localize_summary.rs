//! The swap and patching sections for people: the parts and activations that carry the change.

use std::fmt::Write;

use mdiff_core::report::headlines::{PatchHeadline, SwapHeadline, percent};
use mdiff_core::report::{BehaviourSection, PatchSection, SwapSection};

use crate::format::{Table, num, terminal_width, wrap};

/// A share as a percentage, or a dash when undefined.
fn pct(share: Option<f64>) -> String {
    share.map_or_else(|| "–".into(), percent)
}

/// Appends the weight-swap summary to `out`: the parts whose swap removes the most divergence.
pub fn write_swap(out: &mut String, swap: &SwapSection, top: usize) {
    let _ = writeln!(
        out,
        "\nweight swap ({}): {} positions of the first {} prompts; KL(tuned‖base) = {}",
        swap.granularity,
        swap.num_positions,
        swap.num_prompts,
        num(swap.kl_tuned_base)
    );
    let mut rows: Vec<_> = swap.rows.iter().collect();
    rows.sort_by(|a, b| {
        b.removed
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&a.removed.unwrap_or(f64::NEG_INFINITY))
    });
    let mut table = Table::new(&["part", "removed", "introduced"]);
    for row in rows.iter().take(top) {
        table.row(vec![row.part.clone(), pct(row.removed), pct(row.introduced)]);
    }
    let _ = writeln!(
        out,
        "  removed: the tuned model with the base's part; introduced: the base with the tuned model's part"
    );
    out.push_str(&table.render("  "));
    if let Some(headline) = SwapHeadline::new(swap) {
        out.push_str(&wrap(&headline.sentence(), "  ", terminal_width()));
        if let Some(line) = headline.cumulative_sentence() {
            out.push_str(&wrap(&line, "  ", terminal_width()));
        }
    }
}

/// Appends the activation-patching summary to `out`: where the divergence enters, the cells that recover the most,
/// and the work saved. `behaviour` names the swept prompts by their ids.
pub fn write_patch(out: &mut String, patch: &PatchSection, behaviour: Option<&BehaviourSection>, top: usize) {
    let _ = writeln!(
        out,
        "\nactivation patching: {} positions of the first {} prompts; KL(tuned‖base) = {}, KL(base‖tuned) = {}",
        patch.num_positions,
        patch.num_prompts,
        num(patch.kl_tuned_base),
        num(patch.kl_base_tuned)
    );
    let mut cells: Vec<_> = patch.cells.iter().collect();
    let key = |c: &&mdiff_core::report::PatchCell| c.tuned_into_base.unwrap_or(f64::NEG_INFINITY);
    cells.sort_by(|a, b| key(b).total_cmp(&key(a)));
    out.push_str(&wrap(
        "share of the divergence recovered (late resid_pre cells carry nearly all of it by construction); \
         tuned→base: the tuned activation in the base's run, base→tuned: the reverse",
        "  ",
        terminal_width(),
    ));
    let mut table = Table::new(&["hook", "tuned→base", "base→tuned"]);
    for cell in cells.iter().take(top) {
        table.row(vec![
            cell.hook.clone(),
            pct(cell.tuned_into_base),
            pct(cell.base_into_tuned),
        ]);
    }
    out.push_str(&table.render("  "));
    if let Some(headline) = PatchHeadline::new(patch) {
        out.push_str(&wrap(&headline.sentence(), "  ", terminal_width()));
    }
    for sweep in &patch.position_sweeps {
        let _ = writeln!(
            out,
            "  per-position sweep on prompt {} ({} tokens, {} grids): see the report or the viewer",
            behaviour.map_or_else(|| sweep.prompt.to_string(), |b| b.prompt_label(sweep.prompt)),
            sweep.tokens.len(),
            sweep.grids.len()
        );
    }
    let w = &patch.work;
    if w.naive_layer_evaluations > 0.0 {
        let _ = writeln!(
            out,
            "  work: {} patched runs in {} passes ({} unchanged patches not run); {} of the naive method's layer \
             evaluations, {} of its unembedded rows",
            w.patched_runs,
            w.forward_passes,
            w.identical_skipped,
            ratio(w.layer_evaluations, w.naive_layer_evaluations),
            ratio(rows(w.unembedded_rows), rows(w.naive_unembedded_rows))
        );
    }
}

#[allow(clippy::cast_precision_loss, reason = "row counts are far below 2^52")]
fn rows(n: u64) -> f64 {
    n as f64
}

fn ratio(done: f64, naive: f64) -> String {
    if naive > 0.0 {
        format!("{:.2}×", done / naive)
    } else {
        "–".into()
    }
}
