//! `mdiff crosscoder …`: paired activation collection, training and analysis.

use std::fmt::Write;

use mdiff_core::analysis::crosscoder::{
    ActivationSet, AnalyzeOptions, CollectDir, CollectOptions, Crosscoder, Sparsity, TrainOptions,
    analyze as analyze_latents, collect as collect_activations, prepare_collect_dir, train as train_crosscoder,
};
use mdiff_core::analysis::{PairOptions, PairPlan, prepare_prompts};
use mdiff_core::checkpoint::Checkpoint;
use mdiff_core::model::HookPoint;
use mdiff_core::text::{builtin_prompts, read_prompt_file};

use mdiff_core::report::ClassThresholds;
use mdiff_core::text::Tokenizer;

use crate::cli::{AnalyzeArgs, CollectArgs, TrainArgs};
use crate::format::bytes;
use crate::outputs::{ACTIVATION_FILES, CROSSCODER_FILES, Paths};
use crate::progress::Bar;

/// Runs `mdiff crosscoder collect`.
pub fn collect(args: &CollectArgs) -> anyhow::Result<()> {
    Paths::new()
        .reads_model("BASE", &args.base)
        .reads_model("TUNED", &args.tuned)
        .reads("--prompts", args.prompts.as_deref())
        .reads("--config", args.run.config.as_deref())
        .reads("--tokenizer", args.run.tokenizer.as_deref())
        .writes_dir("-o", Some(&args.output))
        .check()?;
    if let Some(threads) = args.threads {
        super::compare::rayon_threads(usize::from(threads))?;
    }
    // Flags first: a bad hook or device should not wait for the models to load.
    let hook: Option<HookPoint> = args.hook.as_deref().map(str::parse).transpose()?;
    let opts = PairOptions {
        device: args.run.device.open()?,
        dtype: args.run.dtype.dtype(),
        config: args.run.config.clone(),
        tokenizer: args.run.tokenizer.clone(),
    };
    let base = Checkpoint::open(&args.base)?;
    let tuned = Checkpoint::open_tuned(&args.tuned, &base)?;
    let plan = PairPlan::prepare(&base, &tuned, &opts)?
        .into_result()
        .map_err(mdiff_core::Error::Usage)?;
    if let Some(layer) = hook.and_then(HookPoint::layer)
        && layer >= plan.base_config().num_layers
    {
        return Err(mdiff_core::Error::Usage(format!(
            "hook {} does not exist: the models have {} layers, numbered 0 to {}",
            hook.map(|h| h.to_string()).unwrap_or_default(),
            plan.base_config().num_layers,
            plan.base_config().num_layers.saturating_sub(1)
        ))
        .into());
    }
    let set = match &args.prompts {
        Some(path) => read_prompt_file(path)?,
        None => builtin_prompts(),
    };
    let (prompts, warnings) = prepare_prompts(&set, plan.tokenizer(), plan.context_len(), plan.vocab_size())?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    if let CollectDir::Cleared(files) = prepare_collect_dir(&args.output)? {
        eprintln!(
            "note: removed {files} files of an unfinished collection from {}",
            args.output.display()
        );
    }
    let pair = plan.load(&base, &tuned, &opts)?;
    let collect_opts = CollectOptions {
        hook,
        drop_bos: !args.keep_bos,
        max_tokens: args.max_tokens,
        shard_tokens: args.shard_tokens as usize,
        batch_tokens: args.batch_tokens as usize,
        source: format!(
            "base {}, tuned {}, prompts {}",
            args.base.display(),
            args.tuned.display(),
            set.source
        ),
    };
    let manifest = collect_activations(&pair, &prompts, &collect_opts, &args.output, &Bar::new())?;
    let size: u64 = std::fs::read_dir(&args.output)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "collected {} token rows of {} (d_model {}) from {} prompts into {}: {} shards, {}{}",
        manifest.num_tokens,
        manifest.hook,
        manifest.d_model,
        manifest.num_sequences,
        args.output.display(),
        manifest.shards.len(),
        bytes(size),
        if manifest.bos_dropped {
            "; beginning-of-sequence positions left out"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "mean ‖a‖²: base {:.4}, tuned {:.4}; scales to E‖a‖² = d_model: base {:.6}, tuned {:.6}",
        manifest.base_norm.mean_sq_norm,
        manifest.tuned_norm.mean_sq_norm,
        manifest.base_norm.scale,
        manifest.tuned_norm.scale
    );
    super::print(&out)?;
    Ok(())
}

/// Runs `mdiff crosscoder train`.
pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    Paths::new()
        .reads_dir("the activations", &args.activations, ACTIVATION_FILES)
        .writes_dir("-o", Some(&args.output))
        .check()?;
    if let Some(threads) = args.threads {
        super::compare::rayon_threads(usize::from(threads))?;
    }
    let device = args.device.open()?;
    let set = ActivationSet::open(&args.activations)?;
    let d = set.manifest().d_model;
    let rows = args.steps.saturating_mul(u64::from(args.batch_size));
    let sparsity = match args.l1 {
        Some(lambda) => Sparsity::l1(lambda),
        None => {
            let sparsity = Sparsity::batch_top_k(args.k as usize, d, rows);
            match args.dead_after {
                Some(after) => sparsity.with_dead_after(after),
                None => sparsity,
            }
        }
    };
    let opts = TrainOptions {
        num_latents: args.latents.map_or(8 * d, |l| l as usize),
        sparsity,
        steps: args.steps,
        batch_size: args.batch_size as usize,
        learning_rate: args.lr,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
    };
    let config = opts.config(&set);
    let summary = train_crosscoder(&set, &config, &args.output, args.resume, &device, &Bar::new())?;
    let mut out = String::new();
    if summary.steps_this_run == 0 {
        let _ = writeln!(
            out,
            "{} already holds the finished run ({} steps); nothing to do",
            args.output.display(),
            summary.steps
        );
    } else {
        let _ = writeln!(
            out,
            "trained {} latents on {} ({} × 2 dims): {} steps of {} rows{}, {:.0} rows/s",
            config.num_latents,
            config.hook,
            d,
            summary.steps,
            config.batch_size,
            if args.resume { " (resumed)" } else { "" },
            summary.tokens_per_second
        );
        let _ = writeln!(out, "last step: {}", summary.last.describe());
    }
    let _ = writeln!(
        out,
        "crosscoder in {}; analyse it with: mdiff crosscoder analyze {} --activations {}",
        args.output.display(),
        args.output.display(),
        args.activations.display()
    );
    super::print(&out)?;
    Ok(())
}

/// Runs `mdiff crosscoder analyze`.
pub fn analyze(args: &AnalyzeArgs) -> anyhow::Result<()> {
    if let Some(threads) = args.threads {
        super::compare::rayon_threads(usize::from(threads))?;
    }
    let [shared_low, shared_high] = args.shared[..] else {
        return Err(mdiff_core::Error::Usage(format!(
            "--shared takes two numbers, LOW,HIGH (e.g. 0.4,0.6); got {} value(s)",
            args.shared.len()
        ))
        .into());
    };
    let thresholds = ClassThresholds {
        base_only: args.base_only,
        shared_low,
        shared_high,
        tuned_only: args.tuned_only,
    };
    // Flags first: bad cut-offs should not wait for the files.
    if !thresholds.is_valid() {
        return Err(mdiff_core::Error::Usage(format!(
            "class thresholds must satisfy 0 ≤ --base-only ≤ shared low < shared high ≤ --tuned-only ≤ 1 (got \
             {}, {},{}, {})",
            thresholds.base_only, thresholds.shared_low, thresholds.shared_high, thresholds.tuned_only
        ))
        .into());
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.crosscoder.join("analysis.json"));
    Paths::new()
        .reads_dir("the crosscoder", &args.crosscoder, CROSSCODER_FILES)
        .reads_dir("the activations (--activations)", &args.activations, ACTIVATION_FILES)
        .reads("--tokenizer", args.tokenizer.as_deref())
        // The default lies in the crosscoder's directory: when that is missing, loading it says so better.
        .writes(
            "-o",
            (args.output.is_some() || args.crosscoder.is_dir()).then_some(output.as_path()),
        )
        .check()?;
    let coder = Crosscoder::load(&args.crosscoder)?;
    let set = ActivationSet::open(&args.activations)?;
    let tokenizer = args.tokenizer.as_deref().map(Tokenizer::load).transpose()?;
    let opts = AnalyzeOptions {
        thresholds,
        max_tokens: args.max_tokens.unwrap_or(0),
        ..AnalyzeOptions::default()
    };
    let checkpoint = Some(args.crosscoder.display().to_string());
    let section = analyze_latents(&coder, &set, tokenizer.as_ref(), &opts, checkpoint, &Bar::new())?;
    let json = serde_json::to_vec_pretty(&section)?;
    mdiff_core::report::write_atomic(&json, &output)?;
    if args.json {
        super::print(&String::from_utf8_lossy(&json))?;
    } else {
        let mut out = String::new();
        super::crosscoder_summary::write(&mut out, &section, args.top);
        let _ = writeln!(out, "analysis written to {}", output.display());
        super::print(out.trim_start())?;
    }
    Ok(())
}
