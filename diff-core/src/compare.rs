//! `compare`: runs the requested analyses on a base/tuned pair and assembles one [`Report`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::analysis::crosscoder::{CrosscoderOptions, check_new_or_empty, crosscoder};
use crate::analysis::{
    BehaviourOptions, EncodedPrompt, LensOptions, ModelPair, PairOptions, PairPlan, PatchOptions, SectionHeader,
    SwapOptions, behaviour, layerwise_mismatch, lens, patch, prepare_prompts, selected_layers, swap,
};
use crate::checkpoint::{Checkpoint, pair_tensors};
use crate::error::{Error, Result};
use crate::model::{device_name, parse_device, parse_dtype};
use crate::progress::Progress;
use crate::report::{Inputs, Method, Report, SCHEMA_VERSION, Settings, SkippedSection};
use crate::text::{builtin_prompts, read_prompt_file};
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
    /// Knobs of the logit lens.
    pub lens: LensOptions,
    /// Knobs of weight swapping.
    pub swap: SwapOptions,
    /// Knobs of activation patching.
    pub patch: PatchOptions,
    /// Knobs of the crosscoder.
    pub crosscoder: CrosscoderOptions,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            methods: Method::DEFAULT.to_vec(),
            seed: 0,
            spectrum: SpectrumOptions::default(),
            prompts: None,
            device: "cpu".into(),
            dtype: "f32".into(),
            config: None,
            tokenizer: None,
            behaviour: BehaviourOptions::default(),
            lens: LensOptions::default(),
            swap: SwapOptions::default(),
            patch: PatchOptions::default(),
            crosscoder: CrosscoderOptions::default(),
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
    let mut lens_section = None;
    let mut swap_section = None;
    let mut patch_section = None;
    let mut crosscoder_section = None;
    // Everything the user can get wrong is checked before the long stages start.
    let device = parse_device(&opts.device)?;
    let dtype = parse_dtype(&opts.dtype)?;
    let pair_opts = PairOptions {
        device: device.clone(),
        dtype,
        config: opts.config.clone(),
        tokenizer: opts.tokenizer.clone(),
    };
    let runs_models = |m: &Method| {
        matches!(
            m,
            Method::Kl | Method::Lens | Method::Swap | Method::Patch | Method::Crosscoder
        )
    };
    let mut behavioural = if methods.iter().any(runs_models) {
        Behavioural::prepare(base, tuned, opts, &methods, &pair_opts)?
    } else {
        if opts.prompts.is_some() {
            return Err(Error::Usage(
                "--prompts is only used by the methods that run the models; add kl, swap, patch, lens or crosscoder \
                 to --methods"
                    .into(),
            ));
        }
        Behavioural::NotAsked
    };
    // Loaded by the first method that runs the models, then shared.
    let mut pair: Option<ModelPair> = None;

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
            Method::Kl | Method::Lens | Method::Swap | Method::Patch | Method::Crosscoder => match &mut behavioural {
                Behavioural::Ready(prepared) => {
                    if method != Method::Kl
                        && let Some(reason) = &prepared.layerwise_mismatch
                    {
                        skipped.push(SkippedSection::new(method, reason.clone()));
                        continue;
                    }
                    if pair.is_none() {
                        let plan = prepared
                            .plan
                            .take()
                            .ok_or_else(|| Error::Internal("the model plan was used twice".into()))?;
                        let loading = Instant::now();
                        pair = Some(plan.load(base, tuned, &pair_opts)?);
                        // Reported apart so throughput can be read off the report.
                        timings_ms.insert("load_models".into(), loading.elapsed().as_secs_f64() * 1e3);
                    }
                    let pair = pair
                        .as_ref()
                        .ok_or_else(|| Error::Internal("models not loaded".into()))?;
                    let prompts = &prepared.prompts;
                    match method {
                        Method::Kl => {
                            let header = prepared.header.clone();
                            behaviour_section = Some(behaviour(pair, prompts, &opts.behaviour, header, progress)?);
                        }
                        Method::Swap => match swap(pair, prompts, &opts.swap, progress)? {
                            Ok(section) => swap_section = Some(section),
                            Err(reason) => skipped.push(SkippedSection::new(method, reason)),
                        },
                        Method::Patch => match patch(pair, prompts, &opts.patch, progress)? {
                            Ok(section) => patch_section = Some(section),
                            Err(reason) => skipped.push(SkippedSection::new(method, reason)),
                        },
                        Method::Crosscoder => match crosscoder(pair, prompts, &opts.crosscoder, progress)? {
                            Ok(section) => crosscoder_section = Some(section),
                            Err(reason) => skipped.push(SkippedSection::new(method, reason)),
                        },
                        _ => lens_section = Some(lens(pair, prompts, &opts.lens, progress)?),
                    }
                }
                Behavioural::Missing(reason) => skipped.push(SkippedSection::new(method, reason.clone())),
                Behavioural::NotAsked => return Err(Error::Internal("behavioural inputs were not prepared".into())),
            },
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
            prompts_sha256: match &behavioural {
                Behavioural::Ready(prepared) => Some(prepared.prompts_sha256.clone()),
                _ => None,
            },
        },
        weights,
        behaviour: behaviour_section,
        swap: swap_section,
        patching: patch_section,
        lens: lens_section,
        crosscoder: crosscoder_section,
        skipped,
        timings_ms,
    })
}

/// The inputs of the behavioural methods, checked up front.
enum Behavioural {
    /// No behavioural method was asked for.
    NotAsked,
    /// A file they need is missing; the reason says which flag supplies it.
    Missing(String),
    /// Configs and tokenizer checked, prompts encoded.
    Ready(Box<Prepared>),
}

/// What the behavioural methods run on, once checked.
struct Prepared {
    /// Taken when the models are loaded.
    plan: Option<PairPlan>,
    prompts: Vec<EncodedPrompt>,
    /// Describes the prompts in the section.
    header: SectionHeader,
    /// [`crate::text::PromptSet::sha256`] of the prompts.
    prompts_sha256: String,
    /// Why lens, swap and patching cannot run on this pair, if they cannot.
    layerwise_mismatch: Option<String>,
}

impl Behavioural {
    fn prepare(
        base: &Checkpoint,
        tuned: &Checkpoint,
        opts: &CompareOptions,
        methods: &[Method],
        pair_opts: &PairOptions,
    ) -> Result<Self> {
        let prompts = match &opts.prompts {
            Some(path) => read_prompt_file(path)?,
            None => builtin_prompts(),
        };
        let plan = match PairPlan::prepare(base, tuned, pair_opts)? {
            Ok(plan) => plan,
            Err(reason) => return Ok(Self::Missing(reason)),
        };
        let (encoded, mut warnings) =
            prepare_prompts(&prompts, plan.tokenizer(), plan.context_len(), plan.vocab_size())?;
        warnings.splice(0..0, plan.warnings().iter().cloned());
        plan.check_fit(base, tuned)?;
        let mismatch = layerwise_mismatch(plan.base_config(), plan.tuned_config());
        let localizes = methods.iter().any(|m| matches!(m, Method::Swap | Method::Patch));
        if localizes && mismatch.is_none() {
            // Flags that name layers or prompts are checked now, not after the models load.
            let depth = plan.base_config().num_layers;
            selected_layers(opts.swap.layers.as_deref(), depth)?;
            selected_layers(opts.patch.layers.as_deref(), depth)?;
            opts.patch.positions.check(encoded.len())?;
        }
        if methods.contains(&Method::Crosscoder)
            && let Some(dir) = &opts.crosscoder.dir
        {
            check_new_or_empty(dir).map_err(|e| match e {
                Error::Usage(reason) => Error::Usage(format!("--crosscoder-dir {reason}")),
                other => other,
            })?;
        }
        let header = SectionHeader {
            prompts_source: prompts.source.to_string(),
            dtype: pair_opts.dtype.as_str().to_string(),
            warnings,
        };
        Ok(Self::Ready(Box::new(Prepared {
            plan: Some(plan),
            prompts: encoded,
            header,
            prompts_sha256: prompts.sha256(),
            layerwise_mismatch: mismatch,
        })))
    }
}
