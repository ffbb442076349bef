//! `mdiff compare BASE TUNED`: run the analyses, write the report, print a summary.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use mdiff_core::analysis::{PatchOptions, PositionPrompts, SwapOptions};
use mdiff_core::checkpoint::Checkpoint;
use mdiff_core::compare::{CompareOptions, Methods, compare};
use mdiff_core::progress::Progress;
use mdiff_core::report::{CheckpointKind, Incomplete, Method, ModelInput, Report, WeightsSection, write_report};
use mdiff_core::text::{builtin_prompts, read_prompt_file};

use super::gate::Print;
use crate::cli::CompareArgs;
use crate::exit::Stopped;
use crate::format::{Table, bytes, num, params};
use crate::interrupt::{Interrupts, Signal};
use crate::progress::Bar;

/// Runs `mdiff compare`.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    // Outputs first: a wrong -o must not wait for (or lose) the analysis.
    crate::outputs::compare(args).check()?;
    if let Some(threads) = args.threads {
        rayon_threads(usize::from(threads))?;
    }
    // The policy and baseline are read before the long stages, so a typo fails in a second, not after an hour.
    let gate = match &args.gate {
        Some(policy) => Some(super::gate::Gate::load(policy, &args.gate_options)?),
        None if args.gate_options.any() => {
            return Err(mdiff_core::Error::Usage(
                "--baseline, --allow-different-inputs, --junit and --markdown belong to --gate POLICY; add it".into(),
            )
            .into());
        }
        None => None,
    };
    let methods = match &args.methods {
        Some(given) => Methods::Given(given.clone()),
        None => Methods::Default,
    };
    let base = Checkpoint::open(&args.base)?;
    if let Some(gate) = &gate {
        let runs_models = methods.list().iter().any(|m| m.runs_models());
        let prompts = match &args.prompts {
            Some(path) if runs_models => Some(read_prompt_file(path)?),
            None if runs_models => Some(builtin_prompts()),
            _ => None,
        };
        gate.check_baseline_early(&base.describe(), args.seed, prompts.map(|p| p.sha256()).as_deref())?;
    }
    let tuned = Checkpoint::open_tuned(&args.tuned, &base)?;
    let mut opts = CompareOptions {
        methods,
        seed: args.seed,
        prompts: args.prompts.clone(),
        device: args.run.device,
        dtype: args.run.dtype,
        config: args.run.config.clone(),
        tokenizer: args.run.tokenizer.clone(),
        ..CompareOptions::default()
    };
    opts.spectrum.top_k = usize::from(args.singular_values);
    opts.behaviour.batch_tokens = args.batch_tokens as usize;
    opts.behaviour.top_positions = args.top_positions;
    opts.behaviour.token_top_k = usize::from(args.token_top_k);
    opts.behaviour.score = args.score.into();
    opts.lens.max_positions = args.lens_positions as usize;
    opts.lens.batch_tokens = args.batch_tokens as usize;
    let layers = args.layers.as_ref().map(|l| l.0.clone());
    opts.swap = SwapOptions {
        granularity: args.swap_granularity,
        max_positions: args.localize_positions as usize,
        batch_tokens: args.batch_tokens as usize,
        layers: layers.clone(),
    };
    opts.patch = PatchOptions {
        max_positions: args.localize_positions as usize,
        batch_tokens: args.batch_tokens as usize,
        layers,
        sites: args.patch_sites.clone(),
        positions: match &args.patch_prompts {
            Some(chosen) => PositionPrompts::Chosen(chosen.clone()),
            None if args.patch_positions > 0 => PositionPrompts::MostDivergent(args.patch_positions),
            None => PositionPrompts::Off,
        },
    };
    opts.crosscoder.dir = args.crosscoder_dir.clone();
    opts.crosscoder.steps = args.crosscoder_steps;
    opts.crosscoder.k = args.crosscoder_k as usize;
    opts.crosscoder.seed = args.seed;
    let bar = Bar::new().stopped_by(Interrupts::install()?);
    let mut sections = SectionPrinter::new(args.json, args.top);
    let outcome = compare(&base, &tuned, &opts, &bar, &mut |method, report| {
        sections.done(method, report)
    });
    // A stage stopped by a signal never reached its own end().
    bar.end();
    let report = outcome?;
    write_report(&report, &args.output)?;
    if let Some(incomplete) = &report.incomplete {
        return Err(stopped(&report, incomplete, &args.output, bar.signal()).into());
    }
    let left_out = left_out_by_default(&opts.methods);
    let printed = if args.json {
        if let Some(line) = &left_out {
            eprintln!("note: {line}");
        }
        let text =
            String::from_utf8(mdiff_core::report::to_readable_json(&report)?).context("the report's JSON is UTF-8")?;
        super::print(&text)
    } else {
        sections.finish(&report).and_then(|mut text| {
            if let Some(line) = &left_out {
                let _ = writeln!(text, "\n{line}");
            }
            let _ = writeln!(text, "report written to {}", args.output.display());
            if gate.is_some() {
                text.push_str("\ngate\n");
            }
            super::print(&text)
        })
    };
    match gate {
        // A closed stdout (`| head`) must not skip the gate: its files and exit code are what CI reads.
        // With --json, stdout holds the report alone; the gate's table goes to stderr.
        Some(gate) => {
            let print = if args.json { Print::TableToStderr } else { Print::Table };
            gate.check(&report, &args.output, print)?;
            Ok(printed?)
        }
        None => Ok(printed?),
    }
}

/// The error a stopped run ends with, once its finished sections are written.
fn stopped(report: &Report, incomplete: &Incomplete, output: &Path, signal: Option<Signal>) -> Stopped {
    let names = |methods: &mut dyn Iterator<Item = &Method>| methods.map(|m| m.name()).collect::<Vec<_>>().join(", ");
    let finished = names(
        &mut report
            .settings
            .methods
            .iter()
            .filter(|m| !incomplete.unfinished.contains(m) && !report.skipped.iter().any(|s| s.method == **m)),
    );
    let unfinished = names(&mut incomplete.unfinished.iter());
    Stopped {
        signal: signal.unwrap_or(Signal::Int),
        message: format!(
            "{}; wrote {} marked incomplete (finished: {}; not finished: {unfinished})",
            incomplete.reason,
            output.display(),
            if finished.is_empty() { "none".into() } else { finished },
        ),
    }
}

/// What the default left out and how to ask for it, when the methods were not named.
fn left_out_by_default(methods: &Methods) -> Option<String> {
    if methods.is_given() {
        return None;
    }
    let ran = methods.list();
    let left_out: Vec<&str> = Method::ALL
        .into_iter()
        .filter(|m| !ran.contains(m))
        .map(Method::name)
        .collect();
    let all: Vec<&str> = Method::ALL.into_iter().map(Method::name).collect();
    (!left_out.is_empty()).then(|| {
        format!(
            "not run by default: {} (ask for them by name, e.g. --methods {})",
            left_out.join(", "),
            all.join(",")
        )
    })
}

/// Prints each section's summary as soon as its method is done (stdout; nothing there with `--json`), and its
/// warnings and skips on stderr.
struct SectionPrinter {
    json: bool,
    top: usize,
    /// The `base`/`tuned` lines went out.
    started: bool,
    /// stdout was closed (`| head`): stop writing to it, keep going.
    closed: Option<std::io::Error>,
    /// Skip reasons already warned about: one cause (an unsupported architecture, a missing file) is one line,
    /// however many sections it takes out.
    warned: Vec<String>,
}

impl SectionPrinter {
    fn new(json: bool, top: usize) -> Self {
        Self {
            json,
            top,
            started: false,
            closed: None,
            warned: Vec::new(),
        }
    }

    fn done(&mut self, method: Method, report: &Report) {
        if let Some(skipped) = report.skipped.iter().rev().find(|s| s.method == method)
            && !self.warned.contains(&skipped.reason)
        {
            // compare lists the skips it knows before any work from the start, so this names them all.
            let methods: Vec<&str> = report
                .skipped
                .iter()
                .filter(|s| s.reason == skipped.reason)
                .map(|s| s.method.name())
                .collect();
            eprintln!("warning: {} skipped: {}", methods.join(", "), skipped.reason);
            self.warned.push(skipped.reason.clone());
        }
        if method == Method::Kl {
            for warning in report.behaviour.iter().flat_map(|b| &b.warnings) {
                eprintln!("warning: {warning}");
            }
        }
        if self.json {
            return;
        }
        let mut text = String::new();
        if !self.started {
            text = header(report);
            self.started = true;
        }
        text.push_str(&section_summary(report, method, self.top));
        self.print(&text);
    }

    /// What is left to print after the last section: the header if no section was printed, and the skips; or
    /// the error that closed stdout on the way.
    fn finish(self, report: &Report) -> std::io::Result<String> {
        if let Some(closed) = self.closed {
            return Err(closed);
        }
        let mut text = if self.started { String::new() } else { header(report) };
        text.push_str(&skipped_summary(report));
        Ok(text)
    }

    fn print(&mut self, text: &str) {
        if self.closed.is_none()
            && let Err(e) = super::print(text)
        {
            self.closed = Some(e);
        }
    }
}

pub(crate) fn rayon_threads(threads: usize) -> anyhow::Result<()> {
    // candle sizes its matrix-product splits and its own helper pool from RAYON_NUM_THREADS (read when first
    // used), not from rayon's global pool; setting both bounds every compute thread.
    #[allow(unsafe_code)]
    // SAFETY: called first thing in `run`, before this process starts any thread, so nothing reads the
    // environment concurrently.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| mdiff_core::Error::Threads(e.to_string()).into())
}

/// The `base` and `tuned` lines.
fn header(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "base   {}", describe_input(&report.inputs.base));
    let _ = writeln!(out, "tuned  {}", describe_input(&report.inputs.tuned));
    out
}

/// The summary of the section `method` fills (empty when it was skipped).
fn section_summary(report: &Report, method: Method, top: usize) -> String {
    let mut out = String::new();
    match method {
        Method::Weights => {
            if let Some(weights) = &report.weights {
                weights_summary(&mut out, weights, report.inputs.tuned.lora.as_ref(), top);
            }
        }
        Method::Kl => {
            if let Some(behaviour) = &report.behaviour {
                super::behaviour_summary::write(&mut out, behaviour, &report.settings.device, top);
            }
        }
        Method::Swap => {
            if let Some(swap) = &report.swap {
                super::localize_summary::write_swap(&mut out, swap, top);
            }
        }
        Method::Patch => {
            if let Some(patching) = &report.patching {
                super::localize_summary::write_patch(&mut out, patching, report.behaviour.as_ref(), top);
            }
        }
        Method::Lens => {
            if let Some(lens) = &report.lens {
                super::lens_summary::write(&mut out, lens);
            }
        }
        Method::Crosscoder => {
            if let Some(crosscoder) = &report.crosscoder {
                super::crosscoder_summary::write(&mut out, crosscoder, top);
            }
        }
    }
    out
}

/// The sections left out, one line per reason: "not implemented" covers several sections at once.
fn skipped_summary(report: &Report) -> String {
    let mut out = String::new();
    let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
    for skipped in &report.skipped {
        match by_reason.iter_mut().find(|(reason, _)| *reason == skipped.reason) {
            Some((_, sections)) => sections.push(&skipped.section),
            None => by_reason.push((&skipped.reason, vec![&skipped.section])),
        }
    }
    for (reason, sections) in by_reason {
        let _ = writeln!(out, "\nskipped {}: {reason}", sections.join(", "));
    }
    out
}

fn describe_input(input: &ModelInput) -> String {
    let dtypes: Vec<String> = input.dtypes.iter().map(|(d, n)| format!("{d}×{n}")).collect();
    let arch = input
        .config
        .as_ref()
        .and_then(|c| c.architecture.clone())
        .unwrap_or_else(|| "no config.json".into());
    let kind = match (&input.kind, &input.lora) {
        (CheckpointKind::LoraAdapter, Some(lora)) => format!(
            "LoRA adapter r={} alpha={} on {} tensors{}",
            lora.r,
            lora.lora_alpha,
            lora.modules.len(),
            if lora.use_rslora { ", rsLoRA" } else { "" }
        ),
        (CheckpointKind::Sharded, _) => format!("{} shards", input.files.len()),
        _ => "safetensors".into(),
    };
    format!(
        "{}  ({kind}; {}, {} tensors, {} params, {}; {arch})",
        input.path,
        bytes(input.size_bytes),
        input.num_tensors,
        params(input.num_parameters),
        dtypes.join(" "),
    )
}

fn weights_summary(out: &mut String, w: &WeightsSection, lora: Option<&mdiff_core::report::LoraSummary>, top: usize) {
    let t = &w.totals;
    if t.num_tensors == 0 {
        let _ = writeln!(out, "\nweights: no tensor pair could be diffed; see the notes below");
    } else {
        let _ = writeln!(
            out,
            "\nweights: {} of {} tensors changed, {} of {} parameters; ‖ΔW‖/‖W‖ = {}",
            t.num_changed,
            t.num_tensors,
            params(t.num_changed_parameters),
            params(t.num_parameters),
            num(t.relative)
        );
    }

    let mut layers: Vec<_> = w.layers.iter().filter(|l| l.stats.num_changed > 0).collect();
    layers.sort_by(|a, b| b.stats.relative.total_cmp(&a.stats.relative));
    if !layers.is_empty() {
        let mut table = Table::new(&["layer", "changed", "‖ΔW‖", "‖ΔW‖/‖W‖"]);
        for l in layers.iter().take(top) {
            let s = &l.stats;
            table.row(vec![
                l.layer.to_string(),
                format!("{}/{}", s.num_changed, s.num_tensors),
                num(s.delta_norm),
                num(s.relative),
            ]);
        }
        let unchanged = match w.layers.len() - layers.len() {
            0 => String::new(),
            n => format!(" ({n} unchanged not shown)"),
        };
        let _ = writeln!(out, "\nlayers by relative change{unchanged}");
        out.push_str(&table.render("  "));
    }

    let mut tensors: Vec<_> = w.tensors.iter().filter(|t| t.num_changed > 0).collect();
    tensors.sort_by(|a, b| {
        b.relative
            .unwrap_or(f64::INFINITY)
            .total_cmp(&a.relative.unwrap_or(f64::INFINITY))
    });
    if !tensors.is_empty() {
        let mut table = Table::new(&[
            "tensor",
            "‖ΔW‖/‖W‖",
            "cosine",
            "max|Δ|",
            "changed",
            "σ1",
            "stable rank",
            "rank",
        ]);
        for t in tensors.iter().take(top) {
            let spectrum = t.spectrum.as_ref();
            table.row(vec![
                t.name.clone(),
                t.relative.map_or_else(|| "-".into(), num),
                t.cosine.map_or_else(|| "-".into(), |c| format!("{c:.6}")),
                num(t.max_abs_delta),
                format!("{:.1}%", 100.0 * t.changed_fraction),
                spectrum
                    .and_then(|s| s.singular_values.first().copied())
                    .map_or_else(|| "-".into(), num),
                spectrum.map_or_else(|| "-".into(), |s| format!("{:.2}", s.stable_rank)),
                spectrum.map_or_else(
                    || "-".into(),
                    |s| rank_cell(s.effective_rank, w.spectrum_settings.top_k),
                ),
            ]);
        }
        let _ = writeln!(
            out,
            "\ntensors by relative change (top {} of {})",
            top.min(tensors.len()),
            tensors.len()
        );
        out.push_str(&table.render("  "));
    }

    let comps: Vec<String> = w
        .components
        .iter()
        .map(|c| format!("{} {}", c.component, num(c.stats.relative)))
        .collect();
    let _ = writeln!(out, "\nby component (‖ΔW‖/‖W‖): {}", comps.join(", "));

    if let Some(lora) = lora {
        let targets: Vec<_> = w
            .tensors
            .iter()
            .filter(|t| lora.modules.iter().any(|m| m.tensor == t.base_name))
            .collect();
        let max_rank = targets
            .iter()
            .filter_map(|t| t.spectrum.as_ref())
            .map(|s| s.effective_rank)
            .max();
        let max_stable = targets
            .iter()
            .filter_map(|t| t.spectrum.as_ref())
            .map(|s| s.stable_rank)
            .fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "LoRA: r={} on {} target tensors; rank seen in ΔW: at most {} (stable rank at most {:.2})",
            lora.r,
            lora.modules.len(),
            max_rank.map_or_else(|| "-".into(), |r| rank_cell(r, w.spectrum_settings.top_k)),
            max_stable
        );
    }

    let problems = [
        (w.unmatched_base.len(), "tensors only in base"),
        (w.unmatched_tuned.len(), "tensors only in tuned"),
        (w.shape_mismatches.len(), "shape mismatches (not diffed)"),
        (
            w.dtype_mismatches.len(),
            "dtype mismatches (float pairs compared in f32)",
        ),
        (w.skipped_tensors.len(), "tensors not in F32/F16/BF16 (not diffed)"),
    ];
    for (count, what) in problems.into_iter().filter(|(c, _)| *c > 0) {
        let _ = writeln!(out, "note: {count} {what}; see the report");
    }
    for t in w.tensors.iter().filter(|t| t.non_finite.any()) {
        let n = t.non_finite;
        let _ = writeln!(
            out,
            "warning: {} has non-finite values (base: {} NaN, {} Inf; tuned: {} NaN, {} Inf), left out of its statistics",
            t.name, n.base_nan, n.base_inf, n.tuned_nan, n.tuned_inf
        );
    }
}

/// The rank of ΔW as computed: exact up to `top_k`; `top_k + 1` means more than `top_k` (see `Spectrum`).
fn rank_cell(rank: usize, top_k: usize) -> String {
    if rank > top_k {
        format!(">{top_k}")
    } else {
        rank.to_string()
    }
}
