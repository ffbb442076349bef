//! The metrics a gate rule can address: stable dotted paths into a report.
//!
//! A section that adds numbers worth gating adds them here; `mdiff gate --list-metrics` and the table in
//! `docs/ci.md` are generated from this list.

use std::sync::OnceLock;

use crate::report::{BehaviourSummary, Distribution, Method, Report, Spectrum};

/// One metric: where it lives and how to read it.
#[derive(Debug)]
pub struct Metric {
    /// Dotted path, e.g. `behaviour.kl_tuned_base.tokens.mean`.
    pub path: String,
    /// What the number is, for humans.
    pub about: String,
    /// The method whose section holds it.
    pub method: Method,
    read: Read,
}

#[derive(Debug, Clone, Copy)]
enum Read {
    /// A number of the report, read once its section is known to be there.
    Report(fn(&Report) -> Option<f64>),
    /// A number of a behaviour summary: the whole prompt set's, or one group's.
    Behaviour(fn(&BehaviourSummary) -> Option<f64>),
    /// A statistic of one of a behaviour summary's distributions.
    Distribution(PickDistribution, Stat),
}

/// Picks one distribution of a behaviour summary.
type PickDistribution = fn(&BehaviourSummary) -> Option<&Distribution>;

/// A statistic of a [`Distribution`].
#[derive(Debug, Clone, Copy)]
enum Stat {
    Mean,
    Min,
    Median,
    P90,
    P95,
    P99,
    Max,
}

impl Stat {
    const ALL: [Self; 7] = [
        Self::Mean,
        Self::Median,
        Self::P90,
        Self::P95,
        Self::P99,
        Self::Min,
        Self::Max,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Min => "min",
            Self::Median => "median",
            Self::P90 => "p90",
            Self::P95 => "p95",
            Self::P99 => "p99",
            Self::Max => "max",
        }
    }

    fn of(self, d: &Distribution) -> Option<f64> {
        let percentile = |key: &str| d.percentiles.get(key).copied();
        match self {
            Self::Mean => Some(d.mean),
            Self::Min => Some(d.min),
            Self::Max => Some(d.max),
            Self::Median => percentile("p50"),
            Self::P90 => percentile("p90"),
            Self::P95 => percentile("p95"),
            Self::P99 => percentile("p99"),
        }
    }
}

/// What a metric's lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The value.
    Value(f64),
    /// The report has no section for the metric's method; `skipped` is the report's reason, if it gave one.
    SectionMissing {
        /// The method to add to `--methods`.
        method: Method,
        /// Why compare skipped the section, when it did.
        skipped: Option<String>,
    },
    /// The report's prompts have no such group; the groups they do have.
    GroupMissing(Vec<String>),
    /// The section is there but the number is not defined (no finite position, no swap row with a share, ...).
    Undefined,
}

impl Metric {
    /// Whether the metric has a value per prompt group.
    #[must_use]
    pub fn per_group(&self) -> bool {
        matches!(self.read, Read::Behaviour(_) | Read::Distribution(..))
    }

    /// The metric's value in `report`, on the prompts of `group` when given.
    #[must_use]
    pub fn lookup(&self, report: &Report, group: Option<&str>) -> Lookup {
        if let Some(missing) = missing_section(report, self.method) {
            return missing;
        }
        let value = match self.read {
            Read::Report(read) => read(report),
            Read::Behaviour(_) | Read::Distribution(..) => {
                let Some(behaviour) = &report.behaviour else {
                    return Lookup::Undefined;
                };
                let summary = match group {
                    None => &behaviour.summary,
                    Some(name) => match behaviour.groups.get(name) {
                        Some(g) => &g.summary,
                        None => return Lookup::GroupMissing(behaviour.groups.keys().cloned().collect()),
                    },
                };
                match self.read {
                    Read::Behaviour(read) => read(summary),
                    Read::Distribution(pick, stat) => pick(summary).and_then(|d| stat.of(d)),
                    Read::Report(_) => None,
                }
            }
        };
        value.filter(|v| v.is_finite()).map_or(Lookup::Undefined, Lookup::Value)
    }
}

/// [`Lookup::SectionMissing`] when `report` has no section for `method`, with compare's reason if it gave one.
#[must_use]
pub fn missing_section(report: &Report, method: Method) -> Option<Lookup> {
    let present = match method {
        Method::Weights => report.weights.is_some(),
        Method::Kl => report.behaviour.is_some(),
        Method::Swap => report.swap.is_some(),
        Method::Patch => report.patching.is_some(),
        Method::Lens => report.lens.is_some(),
        Method::Crosscoder => report.crosscoder.is_some(),
    };
    (!present).then(|| Lookup::SectionMissing {
        method,
        skipped: report
            .skipped
            .iter()
            .find(|s| s.method == method)
            .map(|s| s.reason.clone()),
    })
}

/// The metric at `path`.
#[must_use]
pub fn find(path: &str) -> Option<&'static Metric> {
    catalogue().iter().find(|m| m.path == path)
}

/// Every metric, in section order.
#[must_use]
pub fn catalogue() -> &'static [Metric] {
    static CATALOGUE: OnceLock<Vec<Metric>> = OnceLock::new();
    CATALOGUE.get_or_init(build)
}

#[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn build() -> Vec<Metric> {
    let mut all = Vec::new();
    let mut report = |path: &str, method: Method, about: &str, read: fn(&Report) -> Option<f64>| {
        all.push(Metric {
            path: path.into(),
            about: about.into(),
            method,
            read: Read::Report(read),
        });
    };

    use Method::{Crosscoder, Kl, Lens, Patch, Swap, Weights};
    report("weights.tensors", Weights, "tensors diffed", |r| {
        r.weights.as_ref().map(|w| w.totals.num_tensors as f64)
    });
    report(
        "weights.changed_tensors",
        Weights,
        "tensors with at least one changed entry",
        |r| r.weights.as_ref().map(|w| w.totals.num_changed as f64),
    );
    report("weights.changed_parameters", Weights, "scalars that changed", |r| {
        r.weights.as_ref().map(|w| w.totals.num_changed_parameters as f64)
    });
    report(
        "weights.changed_parameter_share",
        Weights,
        "changed scalars over scalars diffed",
        |r| {
            let t = &r.weights.as_ref()?.totals;
            (t.num_parameters > 0).then(|| t.num_changed_parameters as f64 / t.num_parameters as f64)
        },
    );
    report(
        "weights.relative_change",
        Weights,
        "‖ΔW‖/‖W‖ over all tensors",
        |r| r.weights.as_ref().map(|w| w.totals.relative),
    );
    report(
        "weights.max_tensor_relative_change",
        Weights,
        "largest ‖ΔW‖/‖W‖ of one tensor",
        |r| {
            let w = r.weights.as_ref()?;
            Some(w.tensors.iter().filter_map(|t| t.relative).fold(0.0, f64::max))
        },
    );
    report(
        "weights.max_stable_rank",
        Weights,
        "largest stable rank ‖ΔW‖²_F/σ₁² of one matrix (0 when none changed)",
        |r| max_over_spectra(r, |s| s.stable_rank),
    );
    report(
        "weights.max_effective_rank",
        Weights,
        "largest number of singular values of ΔW above the rank tolerance (exact up to --singular-values; one more means more than that)",
        |r| max_over_spectra(r, |s| s.effective_rank as f64),
    );
    report(
        "weights.unmatched_tensors",
        Weights,
        "tensors only one model has",
        |r| {
            r.weights
                .as_ref()
                .map(|w| (w.unmatched_base.len() + w.unmatched_tuned.len()) as f64)
        },
    );
    report(
        "weights.shape_mismatches",
        Weights,
        "paired tensors whose shapes differ",
        |r| r.weights.as_ref().map(|w| w.shape_mismatches.len() as f64),
    );
    report(
        "weights.non_finite_tensors",
        Weights,
        "tensors holding NaN or ±Inf in either model",
        |r| {
            r.weights
                .as_ref()
                .map(|w| w.tensors.iter().filter(|t| t.non_finite.any()).count() as f64)
        },
    );

    report(
        "behaviour.non_finite_positions",
        Kl,
        "positions left out for NaN/infinite logits or an infinite KL",
        |r| {
            // Counted from the per-prompt rows, which keep every position: the summary leaves out folded prefixes
            // and, with --score, other roles' tokens by design, and the per-side counts overlap.
            let b = r.behaviour.as_ref()?;
            let count = b
                .prompts
                .iter()
                .flat_map(|p| &p.kl_tuned_base)
                .filter(|kl| !kl.is_some_and(f64::is_finite))
                .count();
            Some(count as f64)
        },
    );
    report(
        "swap.top.score",
        Swap,
        "largest share of the divergence removed by putting one part of the base back",
        |r| {
            r.swap
                .as_ref()?
                .rows
                .iter()
                .filter_map(|row| row.removed)
                .reduce(f64::max)
        },
    );
    report(
        "swap.top.introduced",
        Swap,
        "largest share of the divergence introduced by giving the base one tuned part",
        |r| {
            r.swap
                .as_ref()?
                .rows
                .iter()
                .filter_map(|row| row.introduced)
                .reduce(f64::max)
        },
    );
    report(
        "swap.kl_tuned_base",
        Swap,
        "mean KL(tuned‖base) on the positions swap scored",
        |r| r.swap.as_ref().map(|s| s.kl_tuned_base),
    );
    report(
        "patching.top.tuned_into_base",
        Patch,
        "largest share recovered by one tuned activation patched into the base run",
        |r| {
            r.patching
                .as_ref()?
                .cells
                .iter()
                .filter_map(|c| c.tuned_into_base)
                .reduce(f64::max)
        },
    );
    report(
        "patching.top.base_into_tuned",
        Patch,
        "largest share recovered by one base activation patched into the tuned run",
        |r| {
            r.patching
                .as_ref()?
                .cells
                .iter()
                .filter_map(|c| c.base_into_tuned)
                .reduce(f64::max)
        },
    );
    report(
        "lens.final_drift",
        Lens,
        "mean logit-lens KL(tuned‖base) at the last block's output",
        |r| r.lens.as_ref()?.points.last()?.drift.as_ref().map(|d| d.mean),
    );
    report(
        "lens.max_drift",
        Lens,
        "largest mean logit-lens KL(tuned‖base) over the layers",
        |r| {
            r.lens
                .as_ref()?
                .points
                .iter()
                .filter_map(|p| p.drift.as_ref())
                .map(|d| d.mean)
                .reduce(f64::max)
        },
    );
    report(
        "lens.min_top1_agreement",
        Lens,
        "smallest share of positions where both lenses' top tokens agree, over the layers",
        |r| {
            r.lens
                .as_ref()?
                .points
                .iter()
                .map(|p| p.top1_agreement)
                .reduce(f64::min)
        },
    );
    report(
        "crosscoder.classes.tuned_only",
        Crosscoder,
        "live tuned-only latents (r > tuned_only)",
        |r| r.crosscoder.as_ref().map(|c| c.classes.tuned_only as f64),
    );
    report(
        "crosscoder.classes.base_only",
        Crosscoder,
        "live base-only latents (r < base_only)",
        |r| r.crosscoder.as_ref().map(|c| c.classes.base_only as f64),
    );
    report("crosscoder.classes.shared", Crosscoder, "live shared latents", |r| {
        r.crosscoder.as_ref().map(|c| c.classes.shared as f64)
    });
    report(
        "crosscoder.classes.other",
        Crosscoder,
        "live latents in no class",
        |r| r.crosscoder.as_ref().map(|c| c.classes.other as f64),
    );
    report(
        "crosscoder.tuned_only_share",
        Crosscoder,
        "tuned-only latents over live latents",
        |r| r.crosscoder.as_ref().map(|c| c.tuned_only_share),
    );
    report(
        "crosscoder.fvu_base",
        Crosscoder,
        "variance of the base's activations left unexplained",
        |r| r.crosscoder.as_ref().map(|c| c.fvu_base),
    );
    report(
        "crosscoder.fvu_tuned",
        Crosscoder,
        "variance of the tuned model's activations left unexplained",
        |r| r.crosscoder.as_ref().map(|c| c.fvu_tuned),
    );
    report("crosscoder.l0", Crosscoder, "mean active latents per token", |r| {
        r.crosscoder.as_ref().map(|c| c.l0)
    });
    report(
        "crosscoder.dead_fraction",
        Crosscoder,
        "share of latents that never fired",
        |r| r.crosscoder.as_ref().map(|c| c.dead_fraction),
    );
    let behaviour_distributions: [(&str, &str, PickDistribution); 7] = [
        (
            "kl_tuned_base.tokens",
            "KL(P_tuned‖P_base) over positions, nats",
            |s| s.kl_tuned_base.as_ref(),
        ),
        (
            "kl_base_tuned.tokens",
            "KL(P_base‖P_tuned) over positions, nats",
            |s| s.kl_base_tuned.as_ref(),
        ),
        (
            "kl_tuned_base.prompts",
            "per-prompt mean KL(P_tuned‖P_base) over prompts, nats",
            |s| s.kl_tuned_base_per_prompt.as_ref(),
        ),
        ("delta_p_next", "p_tuned − p_base of the token that comes next", |s| {
            s.delta_p_next.as_ref()
        }),
        (
            "delta_p_base_top",
            "p_tuned − p_base of the base's most likely token",
            |s| s.delta_p_base_top.as_ref(),
        ),
        (
            "entropy_base",
            "entropy of the base's next-token distribution, nats",
            |s| s.entropy_base.as_ref(),
        ),
        (
            "entropy_tuned",
            "entropy of the tuned model's next-token distribution, nats",
            |s| s.entropy_tuned.as_ref(),
        ),
    ];
    all.push(Metric {
        path: "behaviour.top1_agreement".into(),
        about: "share of positions where both models' most likely token is the same".into(),
        method: Kl,
        read: Read::Behaviour(|s| s.top1_agreement),
    });
    for (name, about, pick) in behaviour_distributions {
        for stat in Stat::ALL {
            all.push(Metric {
                path: format!("behaviour.{name}.{}", stat.name()),
                about: format!("{} of {about}", stat.name()),
                method: Kl,
                read: Read::Distribution(pick, stat),
            });
        }
    }

    // Stable: each section keeps the order written above.
    all.sort_by_key(|m| m.method);
    all
}

/// The largest `f` over the spectra of changed matrices: 0 when none changed, undefined when the report computed no
/// spectrum (`--singular-values 0`), so a rank limit never passes on numbers that were not computed.
#[allow(clippy::cast_precision_loss, reason = "ranks are small")]
fn max_over_spectra(report: &Report, f: fn(&Spectrum) -> f64) -> Option<f64> {
    let w = report.weights.as_ref()?;
    (w.spectrum_settings.top_k > 0).then(|| {
        w.tensors
            .iter()
            .filter_map(|t| t.spectrum.as_ref())
            .map(f)
            .fold(0.0, f64::max)
    })
}

/// The catalogue as a Markdown table (for `docs/ci.md`).
#[must_use]
pub fn markdown_table() -> String {
    let mut out = String::from("| metric | per group | method | what |\n| --- | --- | --- | --- |\n");
    for m in catalogue() {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.path,
            if m.per_group() { "yes" } else { "" },
            m.method,
            m.about
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_dotted() {
        let mut paths: Vec<&str> = catalogue().iter().map(|m| m.path.as_str()).collect();
        let n = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), n, "duplicate metric paths");
        for m in catalogue() {
            assert!(
                m.path.starts_with(crate::report::Method::section(m.method)),
                "{}",
                m.path
            );
            assert!(m.path.split('.').all(|p| !p.is_empty()), "{}", m.path);
        }
        for path in [
            "behaviour.kl_tuned_base.tokens.mean",
            "behaviour.top1_agreement",
            "weights.changed_tensors",
            "swap.top.score",
            "crosscoder.classes.tuned_only",
            "crosscoder.tuned_only_share",
        ] {
            assert!(find(path).is_some(), "{path}");
        }
    }
}
