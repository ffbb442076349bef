//! The lens section for people: drift per layer, and where it begins.

use std::fmt::Write;

use mdiff_core::report::{LensPoint, LensSection};

use crate::format::{Table, num};

/// Appends the logit-lens summary to `out`.
pub fn write(out: &mut String, lens: &LensSection) {
    let _ = writeln!(
        out,
        "\nlogit lens: {} positions of the first {} prompts (each model's residual through its own final norm and \
         unembedding)",
        lens.num_positions, lens.num_prompts
    );
    if lens.num_positions == 0 {
        let _ = writeln!(
            out,
            "  no position had finite lenses in both models; nothing to summarize"
        );
        return;
    }
    let mut table = Table::new(&[
        "point",
        "drift KL",
        "residual part",
        "base→final",
        "tuned→final",
        "top-1 agree",
    ]);
    for point in &lens.points {
        let cell = |v: Option<f64>| v.map_or_else(|| "–".into(), num);
        table.row(vec![
            label(point),
            cell(point.drift.as_ref().map(|d| d.mean)),
            cell(point.residual_drift),
            cell(point.base_to_final),
            cell(point.tuned_to_final),
            format!("{:.1}%", 100.0 * point.top1_agreement),
        ]);
    }
    out.push_str(&table.render("  "));
    match lens.onset.and_then(|i| lens.points.get(i)) {
        Some(point) => {
            let _ = writeln!(
                out,
                "  the predictions part at {} ({}): its drift is the first to reach 10% of the output's",
                label(point),
                point.hook
            );
        }
        None => {
            let _ = writeln!(out, "  no drift: both models read out the same at every layer");
        }
    }
    if lens.non_finite_positions > 0 {
        let _ = writeln!(
            out,
            "  non-finite lenses: {} positions (left out)",
            lens.non_finite_positions
        );
    }
}

fn label(point: &LensPoint) -> String {
    point.layer.map_or_else(|| "embedding".into(), |l| format!("layer {l}"))
}
