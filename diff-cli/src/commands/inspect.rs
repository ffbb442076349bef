//! `mdiff inspect CHECKPOINT`: tensors, dtypes, parameter count, architecture.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use mdiff_core::checkpoint::{Checkpoint, TensorInfo, read_config_summary};
use serde::Serialize;

use crate::cli::InspectArgs;
use crate::format::{Table, bytes, params};

/// What `inspect --json` prints.
#[derive(Serialize)]
struct Inspection {
    input: mdiff_core::report::ModelInput,
    adapter_config: Option<serde_json::Value>,
    tensors: Vec<TensorRow>,
}

#[derive(Serialize)]
struct TensorRow {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    num_elements: u64,
}

/// Runs `mdiff inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let path = mdiff_core::checkpoint::resolve_hub_id(&args.checkpoint)?;
    // An adapter directory is inspected as its weight file plus its config.
    let adapter_config_path = path.join("adapter_config.json");
    let (checkpoint, adapter_config) = if adapter_config_path.is_file() {
        let text = std::fs::read_to_string(&adapter_config_path)
            .with_context(|| format!("reading {}", adapter_config_path.display()))?;
        let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| mdiff_core::Error::InvalidAdapter {
            path: path.clone(),
            reason: format!("adapter_config.json: {e}"),
        })?;
        (Checkpoint::open_adapter_weights(&path)?, Some(config))
    } else {
        (Checkpoint::open(&path)?, None)
    };
    let tensors: BTreeMap<String, TensorInfo> = checkpoint.source().tensors().clone();
    let inspection = Inspection {
        input: checkpoint.describe(),
        adapter_config,
        tensors: tensors
            .into_iter()
            .map(|(name, info)| TensorRow {
                num_elements: info.num_elements(),
                name,
                dtype: info.dtype,
                shape: info.shape,
            })
            .collect(),
    };
    let text = if args.json {
        serde_json::to_string_pretty(&inspection).context("serializing")? + "\n"
    } else {
        render(&inspection, checkpoint.config_path())
    };
    super::print(&text)?;
    Ok(())
}

fn render(i: &Inspection, config_path: Option<&Path>) -> String {
    let mut out = String::new();
    let input = &i.input;
    let _ = writeln!(out, "{}", input.path);
    let _ = writeln!(
        out,
        "  {} tensors, {} parameters, {} on disk in {} file(s)",
        input.num_tensors,
        params(input.num_parameters),
        bytes(input.size_bytes),
        input.files.len()
    );
    let dtypes: Vec<String> = input.dtypes.iter().map(|(d, n)| format!("{d} ({n})")).collect();
    let _ = writeln!(out, "  dtypes: {}", dtypes.join(", "));
    match config_path.map(read_config_summary) {
        Some(Ok(c)) => {
            let _ = writeln!(
                out,
                "  architecture: {} (model_type {}, {} layers, hidden {}, vocab {})",
                c.architecture.as_deref().unwrap_or("?"),
                c.model_type.as_deref().unwrap_or("?"),
                c.num_layers.map_or_else(|| "?".into(), |n| n.to_string()),
                c.hidden_size.map_or_else(|| "?".into(), |n| n.to_string()),
                c.vocab_size.map_or_else(|| "?".into(), |n| n.to_string()),
            );
        }
        Some(Err(problem)) => {
            let _ = writeln!(out, "  config.json: {problem}");
        }
        None => {
            let _ = writeln!(out, "  no config.json beside the weights");
        }
    }
    if let Some(tok) = &input.tokenizer {
        let _ = writeln!(out, "  tokenizer: {tok}");
    }
    if let Some(cfg) = &i.adapter_config {
        let field = |k: &str| cfg.get(k).map_or_else(|| "-".into(), ToString::to_string);
        let _ = writeln!(
            out,
            "  PEFT adapter: peft_type {}, r {}, lora_alpha {}, target_modules {}",
            field("peft_type"),
            field("r"),
            field("lora_alpha"),
            field("target_modules")
        );
    }
    let mut table = Table::new(&["tensor", "dtype", "shape", "params"]);
    for t in &i.tensors {
        table.row(vec![
            t.name.clone(),
            t.dtype.clone(),
            format!("{:?}", t.shape),
            t.num_elements.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render("  "));
    out
}
