//! `mdiff crosscoder …`: paired activation collection.

use std::fmt::Write;

use mdiff_core::analysis::crosscoder::{CollectOptions, collect as collect_activations, prepare_dir};
use mdiff_core::analysis::{PairOptions, PairPlan, prepare_prompts};
use mdiff_core::checkpoint::Checkpoint;
use mdiff_core::model::{HookPoint, parse_device, parse_dtype};
use mdiff_core::text::{builtin_prompts, read_prompt_file};

use crate::cli::CollectArgs;
use crate::format::bytes;
use crate::progress::Bar;

/// Runs `mdiff crosscoder collect`.
pub fn collect(args: &CollectArgs) -> anyhow::Result<()> {
    if let Some(threads) = args.threads {
        super::compare::rayon_threads(usize::from(threads))?;
    }
    // Flags first: a bad hook or device should not wait for the models to load.
    let hook: Option<HookPoint> = args.hook.as_deref().map(str::parse).transpose()?;
    let opts = PairOptions {
        device: parse_device(&args.run.device)?,
        dtype: parse_dtype(&args.run.dtype)?,
        config: args.run.config.clone(),
        tokenizer: args.run.tokenizer.clone(),
    };
    let base = Checkpoint::open(&args.base)?;
    let tuned = Checkpoint::open_tuned(&args.tuned, &base)?;
    let plan = PairPlan::prepare(&base, &tuned, &opts)?.map_err(mdiff_core::Error::Usage)?;
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
    prepare_dir(&args.output)?;
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
