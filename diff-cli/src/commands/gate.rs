//! `mdiff gate REPORT --policy gate.toml`, and the gate step of `mdiff compare --gate`.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use mdiff_core::gate::{Outcome, Policy, Status, baseline, evaluate, metrics, number};
use mdiff_core::report::{ModelInput, Report, SCHEMA_VERSION, read_report, write_atomic};

use crate::cli::{GateArgs, GateOptions};
use crate::exit::GateFailed;
use crate::format::Table;

/// Runs `mdiff gate`.
pub fn run(args: &GateArgs) -> anyhow::Result<()> {
    if args.list_metrics {
        return Ok(super::print(&metric_list())?);
    }
    let (Some(report_path), Some(policy_path)) = (&args.report, &args.policy) else {
        return Err(mdiff_core::Error::Usage("mdiff gate needs a REPORT and --policy FILE".into()).into());
    };
    // Before Gate::load removes the old JUnit and Markdown files: they must not be the report or the policy.
    crate::outputs::Paths::new()
        .reads("the report to check (REPORT)", Some(report_path))
        .reads("the policy (--policy)", Some(policy_path))
        .reads("the baseline (--baseline)", args.options.baseline.as_deref())
        .writes("--junit", args.options.junit.as_deref())
        .writes("--markdown", args.options.markdown.as_deref())
        .check()?;
    let gate = Gate::load(policy_path, &args.options)?;
    let report = read_complete_report(report_path)?;
    let print = if args.format == "json" {
        Print::Json
    } else {
        Print::Table
    };
    gate.check(&report, report_path, print)
}

/// Reads a report, refusing one whose run was stopped: its missing sections would read as rules that fail for
/// the wrong reason.
fn read_complete_report(path: &Path) -> anyhow::Result<Report> {
    let report = read_report(path)?;
    if let Some(incomplete) = &report.incomplete {
        let unfinished: Vec<&str> = incomplete.unfinished.iter().map(|m| m.name()).collect();
        return Err(mdiff_core::Error::IncompleteReport {
            path: path.to_path_buf(),
            reason: incomplete.reason.clone(),
            unfinished: unfinished.join(", "),
        }
        .into());
    }
    Ok(report)
}

/// Where the results go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Print {
    /// A table on stdout.
    Table,
    /// The results as JSON on stdout.
    Json,
    /// A table on stderr (stdout holds something else, such as the report).
    TableToStderr,
}

/// A policy and baseline, read and checked before any report exists (so `compare --gate` fails fast).
pub struct Gate<'a> {
    policy: Policy,
    baseline: Option<(PathBuf, Report)>,
    options: &'a GateOptions,
}

impl<'a> Gate<'a> {
    /// Reads the policy and the baseline report, and removes the JUnit and Markdown files of an earlier run. The
    /// caller has checked those paths first ([`crate::outputs`]): none of them is an input.
    ///
    /// # Errors
    /// Unreadable or invalid policy and baseline files.
    pub fn load(policy: &Path, options: &'a GateOptions) -> anyhow::Result<Self> {
        let policy = Policy::read(policy)?;
        let baseline = match &options.baseline {
            Some(path) => Some((path.clone(), read_complete_report(path)?)),
            None => None,
        };
        // Files from an earlier run must not pass for this run's when it stops with an error.
        for path in options.junit.iter().chain(&options.markdown) {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(mdiff_core::Error::Write {
                        path: path.clone(),
                        source: e,
                    }
                    .into());
                }
                _ => {}
            }
        }
        Ok(Self {
            policy,
            baseline,
            options,
        })
    }

    /// Refuses, before compare runs, a baseline whose schema version, base model, seed or prompt set (its hash, when
    /// the models will run on prompts) cannot match the report about to be computed. Nothing is refused with
    /// `--allow-different-inputs`.
    ///
    /// # Errors
    /// [`mdiff_core::Error::BaselineMismatch`].
    pub fn check_baseline_early(
        &self,
        base: &ModelInput,
        seed: u64,
        prompts_sha256: Option<&str>,
    ) -> anyhow::Result<()> {
        if let Some((path, baseline)) = &self.baseline
            && !self.options.allow_different_inputs
        {
            let differences = baseline::known_before_compare(SCHEMA_VERSION, base, seed, prompts_sha256, baseline);
            if !differences.is_empty() {
                return Err(mismatch(path, &differences));
            }
        }
        Ok(())
    }

    /// Evaluates the policy on `report`, prints the results as `print` says and writes the JUnit and Markdown
    /// files asked for.
    ///
    /// # Errors
    /// [`mdiff_core::Error::BaselineMismatch`] for a baseline of other inputs (unless allowed), write errors, and
    /// [`GateFailed`] when a rule failed.
    pub fn check(&self, report: &Report, report_path: &Path, print: Print) -> anyhow::Result<()> {
        let baseline = match &self.baseline {
            Some((path, baseline)) => {
                let differences = baseline::differences(report, baseline);
                if !differences.is_empty() {
                    if !self.options.allow_different_inputs {
                        return Err(mismatch(path, &differences));
                    }
                    eprintln!(
                        "warning: the baseline {} differs from the report ({}); compared anyway \
                         (--allow-different-inputs)",
                        path.display(),
                        differences.join("; ")
                    );
                }
                Some(baseline)
            }
            None => None,
        };
        let outcome = evaluate(report, &self.policy, baseline);
        // The verdict is printed before the files are written, so it shows even when a path is wrong; and a closed
        // stdout (`| head`) neither stops the files nor hides a failure.
        let printed = print_outcome(&outcome, print);
        if let Some(path) = &self.options.junit {
            write_atomic(super::gate_junit::render(&outcome, report_path).as_bytes(), path)?;
        }
        if let Some(path) = &self.options.markdown {
            write_atomic(super::gate_markdown::render(&outcome, report).as_bytes(), path)?;
        }
        if !outcome.passed {
            return Err(GateFailed {
                failed: outcome.failed,
                total: outcome.rules.len(),
            }
            .into());
        }
        printed
    }
}

fn print_outcome(outcome: &Outcome, print: Print) -> anyhow::Result<()> {
    match print {
        Print::Table => super::print(&table(outcome))?,
        Print::Json => {
            let mut text = serde_json::to_string_pretty(outcome)?;
            text.push('\n');
            super::print(&text)?;
        }
        Print::TableToStderr => eprint!("{}", table(outcome)),
    }
    Ok(())
}

fn mismatch(path: &Path, differences: &[String]) -> anyhow::Error {
    mdiff_core::Error::BaselineMismatch {
        path: path.to_path_buf(),
        reason: differences.join("; "),
    }
    .into()
}

/// One row per rule, then each failure's reason.
pub fn table(outcome: &Outcome) -> String {
    let mut table = Table::new(&["rule", "value", "limit", "result"]);
    for rule in &outcome.rules {
        let limits: Vec<String> = rule.limits.iter().map(mdiff_core::gate::Limit::describe).collect();
        table.row(vec![
            rule.name.clone(),
            rule.value.map_or_else(|| "-".into(), number),
            limits.join(", "),
            rule.status.label().into(),
        ]);
    }
    let mut out = table.render("");
    for rule in outcome.rules.iter().filter(|r| r.status != Status::Pass) {
        let _ = writeln!(out, "{} {}: {}", rule.status.label(), rule.name, rule.message);
    }
    let total = outcome.rules.len();
    let skipped = match outcome.skipped {
        0 => String::new(),
        n => format!(", {n} skipped"),
    };
    let _ = if outcome.passed {
        writeln!(
            out,
            "gate passed: {} of {total} rules hold{skipped}",
            total - outcome.skipped
        )
    } else {
        writeln!(
            out,
            "gate FAILED: {} of {total} rules do not hold{skipped}",
            outcome.failed
        )
    };
    out
}

/// `--list-metrics`: every metric path, whether it takes a group, and what it is.
fn metric_list() -> String {
    let mut table = Table::new(&["metric", "per group", "method", "what"]);
    for m in metrics::catalogue() {
        table.row(vec![
            m.path.clone(),
            if m.per_group() { "yes" } else { "" }.into(),
            m.method.to_string(),
            m.about.clone(),
        ]);
    }
    table.render("")
}
