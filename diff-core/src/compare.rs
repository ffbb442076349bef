//! `compare`: runs the requested analyses on a base/tuned pair and assembles one [`Report`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::analysis::{BehaviourOptions, ModelPair, PairOptions, SectionHeader, behaviour, prepare_prompts};
use crate::checkpoint::{Checkpoint, pair_tensors};
use crate::error::{Error, Result};
use crate::model::{device_name, parse_device, parse_dtype};
use crate::progress::Progress;
use crate::report::{BehaviourSection, Inputs, Method, Report, SCHEMA_VERSION, Settings, SkippedSection};
use crate::text::{PromptSet, builtin_prompts, read_prompt_file};
use crate::weights::{SpectrumOptions, diff_weights};

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    /// Methods asked for, deduplicated and sorted.
    pub methods: Vec<Method>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Singular value settings (its `seed` is overwritten by `seed`).
    pub spectrum: SpectrumOptions,
    /// Prompt file for behavioural methods; `None` uses the built-in set.
    pub prompts: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `f32`, `bf16` or `f16`.
    pub dtype: String,
    /// `config.json` to use instead of the ones beside the weights.
    pub config: Option<PathBuf>,
    /// `tokenizer.json` to use instead of the one beside the weights.
    pub tokenizer: Option<PathBuf>,
    /// Batching and reporting knobs of the KL analysis.
    pub behaviour: BehaviourOptions,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            methods: Method::ALL.to_vec(),
            seed: 0,
            spectrum: SpectrumOptions::default(),
            prompts: None,
            device: "cpu".into(),
            dtype: "f32".into(),
            config: None,
            tokenizer: None,
            behaviour: BehaviourOptions::default(),
        }
    }
}

/// Compares `base` and `tuned`.
///
/// Methods that this version cannot compute, or that lack a file they need (`config.json`, `tokenizer.json`), are
/// listed in [`Report::skipped`] with the reason.
///
/// # Errors
/// Bad options and prompt files (checked before any work), pairing failures ([`crate::Error::NothingPaired`]),
/// unsupported or incompatible models, read errors, and internal failures.
pub fn compare(
    base: &Checkpoint,
    tuned: &Checkpoint,
    opts: &CompareOptions,
    progress: &dyn Progress,
) -> Result<Report> {
    let mut methods = opts.methods.clone();
    methods.sort();
    methods.dedup();
    let mut timings_ms = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut weights = None;
    let mut behaviour_section = None;
    // Everything the user can get wrong is checked before the long stages start.
    let device = parse_device(&opts.device)?;
    let dtype = parse_dtype(&opts.dtype)?;
    let prompts = if methods.contains(&Method::Kl) {
        Some(match &opts.prompts {
            Some(path) => read_prompt_file(path)?,
            None => builtin_prompts(),
        })
    } else {
        None
    };

    for &method in &methods {
        let started = Instant::now();
        match method {
            Method::Weights => {
                let pairing = pair_tensors(base.source().tensors(), tuned.source().tensors())?;
                let spectrum = SpectrumOptions {
                    seed: opts.seed,
                    ..opts.spectrum.clone()
                };
                weights = Some(diff_weights(
                    base.source(),
                    tuned.source(),
                    pairing,
                    &spectrum,
                    progress,
                )?);
            }
            Method::Kl => {
                let pair_opts = PairOptions {
                    device: device.clone(),
                    dtype,
                    config: opts.config.clone(),
                    tokenizer: opts.tokenizer.clone(),
                };
                match ModelPair::load(base, tuned, &pair_opts)? {
                    Ok(pair) => {
                        let prompts = prompts
                            .as_ref()
                            .ok_or_else(|| Error::Internal("prompts were not read before the KL stage".into()))?;
                        behaviour_section = Some(run_behaviour(&pair, prompts, opts, progress)?);
                    }
                    Err(reason) => skipped.push(SkippedSection {
                        section: method.section().to_string(),
                        method,
                        reason,
                    }),
                }
            }
            other => skipped.push(SkippedSection {
                section: other.section().to_string(),
                method: other,
                reason: format!("not implemented in mdiff {}", env!("CARGO_PKG_VERSION")),
            }),
        }
        timings_ms.insert(method.name().to_string(), started.elapsed().as_secs_f64() * 1e3);
    }

    Ok(Report {
        schema_version: SCHEMA_VERSION.to_string(),
        mdiff_version: env!("CARGO_PKG_VERSION").to_string(),
        inputs: Inputs {
            base: base.describe(),
            tuned: tuned.describe(),
        },
        settings: Settings {
            seed: opts.seed,
            methods,
            device: device_name(&device),
        },
        weights,
        behaviour: behaviour_section,
        skipped,
        timings_ms,
    })
}

fn run_behaviour(
    pair: &ModelPair,
    prompts: &PromptSet,
    opts: &CompareOptions,
    progress: &dyn Progress,
) -> Result<BehaviourSection> {
    let config = pair.base.config();
    let (encoded, mut warnings) = prepare_prompts(prompts, &pair.tokenizer, config.context_len, config.vocab_size)?;
    warnings.splice(0..0, pair.warnings.iter().cloned());
    let header = SectionHeader {
        prompts_source: prompts.source.to_string(),
        dtype: pair.base.dtype().as_str().to_string(),
        warnings,
    };
    behaviour(pair, &encoded, &opts.behaviour, header, progress)
}
