//! `compare`: runs the requested analyses on a base/tuned pair and assembles one [`Report`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::analysis::crosscoder::{CrosscoderOptions, check_new_or_empty, crosscoder};
use crate::analysis::{
    BehaviourOptions, EncodedPrompt, LensOptions, ModelPair, Outcome, PairOptions, PairPlan, PairReadiness,
    PatchOptions, SectionHeader, SwapOptions, behaviour, check_score_methods, check_scored_positions,
    layerwise_mismatch, lens, patch, prepare_scored_prompts, selected_layers, swap,
};
use crate::checkpoint::{Checkpoint, pair_tensors};
use crate::error::{Error, Result};
use crate::model::{DeviceSpec, RunDtype, device_name};
use crate::progress::{Progress, checkpoint};
use crate::report::{Incomplete, Inputs, Method, Report, SCHEMA_VERSION, Settings, SkippedSection};
use crate::text::{builtin_prompts, read_prompt_file};
use crate::weights::{SpectrumOptions, diff_weights};

/// Which methods to run: the defaults, or the ones the user named.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Methods {
    /// [`Method::DEFAULT`]: one that cannot run on these inputs is skipped and listed in [`Report::skipped`].
    #[default]
    Default,
    /// Named by the user: one that cannot run is an error ([`Error::MethodUnavailable`]).
    Given(Vec<Method>),
}

impl Methods {
    /// The methods, deduplicated, in run order.
    #[must_use]
    pub fn list(&self) -> Vec<Method> {
        let mut methods = match self {
            Self::Default => Method::DEFAULT.to_vec(),
            Self::Given(given) => given.clone(),
        };
        methods.sort();
        methods.dedup();
        methods
    }

    /// Whether the user named them.
    #[must_use]
    pub fn is_given(&self) -> bool {
        matches!(self, Self::Given(_))
    }
}

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    /// Methods to run.
    pub methods: Methods,
    /// Seed of every random choice.
    pub seed: u64,
    /// Singular value settings (its `seed` is overwritten by `seed`).
    pub spectrum: SpectrumOptions,
    /// Prompt file for behavioural methods; `None` uses the built-in set.
    pub prompts: Option<PathBuf>,
    /// Where the models run.
    pub device: DeviceSpec,
    /// Dtype of weights and activations while the models run.
    pub dtype: RunDtype,
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
            methods: Methods::Default,
            seed: 0,
            spectrum: SpectrumOptions::default(),
            prompts: None,
            device: DeviceSpec::Cpu,
            dtype: RunDtype::F32,
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

/// Compares `base` and `tuned`, calling `on_section` with the report so far as each method finishes (or is
/// skipped), so a caller can show each section at once.
///
/// A default method that cannot run on these inputs (a missing `config.json` or `tokenizer.json`, models of
/// different shapes for the layer-by-layer methods) is listed in [`Report::skipped`] with the reason; a named one
/// is an error, raised before any work. An architecture the runtime does not implement skips the methods that run
/// the models even when named, since no flag fixes it and the weight diff still answers; only when nothing else was
/// asked for is it an error. Swap, patching and the crosscoder also skip when there is nothing to localize (the
/// models agree everywhere). Skips known before any work are in [`Report::skipped`] from the first `on_section`
/// call on, so a caller can say each cause once, with all the sections it takes out.
///
/// When `progress` asks to stop ([`Progress::cancelled`]), the report of the finished methods comes back with
/// [`Report::incomplete`] naming the others.
///
/// # Errors
/// Bad options and prompt files (checked before any work), [`Error::MethodUnavailable`], pairing failures
/// ([`crate::Error::NothingPaired`]), unsupported or incompatible models, read errors, and internal failures.
pub fn compare(
    base: &Checkpoint,
    tuned: &Checkpoint,
    opts: &CompareOptions,
    progress: &dyn Progress,
    on_section: &mut dyn FnMut(Method, &Report),
) -> Result<Report> {
    let methods = opts.methods.list();
    // Everything the user can get wrong is checked before the long stages start.
    let device = opts.device.open()?;
    let pair_opts = PairOptions {
        device: device.clone(),
        dtype: opts.dtype.dtype(),
        config: opts.config.clone(),
        tokenizer: opts.tokenizer.clone(),
    };
    let mut behavioural = if methods.iter().any(|m| m.runs_models()) {
        Behavioural::prepare(base, tuned, opts, &methods, &pair_opts)?
    } else {
        if opts.prompts.is_some() {
            return Err(Error::Usage(
                "--prompts is only used by the methods that run the models; add kl, swap, patch, lens or crosscoder \
                 to --methods"
                    .into(),
            ));
        }
        check_score_methods(opts.behaviour.score, &methods, true)?;
        Behavioural::NotAsked
    };
    let unavailable: Vec<Option<String>> = methods.iter().map(|&m| behavioural.unavailable(m)).collect();
    if behavioural.stops_named(&methods)
        && opts.methods.is_given()
        && let Some((method, reason)) = methods
            .iter()
            .zip(&unavailable)
            .find_map(|(m, r)| Some((m, r.as_ref()?)))
    {
        return Err(Error::MethodUnavailable {
            method: method.name().to_string(),
            reason: match behavioural {
                Behavioural::Unsupported(_) => format!("{reason}; the weight diff still runs with --methods weights"),
                _ => reason.clone(),
            },
        });
    }

    let mut report = Report {
        schema_version: SCHEMA_VERSION.to_string(),
        mdiff_version: env!("CARGO_PKG_VERSION").to_string(),
        inputs: Inputs {
            base: base.describe(),
            tuned: tuned.describe(),
        },
        settings: Settings {
            seed: opts.seed,
            methods: methods.clone(),
            device: device_name(&device),
            prompts_sha256: match &behavioural {
                Behavioural::Ready(prepared) => Some(prepared.prompts_sha256.clone()),
                Behavioural::NotAsked | Behavioural::Missing(_) | Behavioural::Unsupported(_) => None,
            },
            score: opts.behaviour.score,
        },
        weights: None,
        behaviour: None,
        swap: None,
        patching: None,
        lens: None,
        crosscoder: None,
        skipped: methods
            .iter()
            .zip(&unavailable)
            .filter_map(|(&method, reason)| Some(SkippedSection::new(method, reason.clone()?)))
            .collect(),
        timings_ms: BTreeMap::new(),
        incomplete: None,
    };
    // Loaded by the first method that runs the models, then shared.
    let mut pair: Option<ModelPair> = None;
    for (i, (&method, skip_reason)) in methods.iter().zip(&unavailable).enumerate() {
        if skip_reason.is_some() {
            // Already in `report.skipped`.
            on_section(method, &report);
            continue;
        }
        let started = Instant::now();
        let outcome = checkpoint(progress).and_then(|()| {
            let mut step = Step {
                base,
                tuned,
                opts,
                pair_opts: &pair_opts,
                progress,
                behavioural: &mut behavioural,
                pair: &mut pair,
                report: &mut report,
            };
            step.run(method)
        });
        if !matches!(outcome, Err(Error::Interrupted { .. })) {
            report
                .timings_ms
                .insert(method.name().to_string(), started.elapsed().as_secs_f64() * 1e3);
        }
        match outcome {
            Ok(Outcome::Done(())) => {}
            Ok(Outcome::Skipped(reason)) => report.skipped.push(SkippedSection::new(method, reason)),
            Err(Error::Interrupted { reason }) => {
                report.incomplete = Some(Incomplete {
                    // The ones skipped up front were never to run.
                    unfinished: methods
                        .iter()
                        .zip(&unavailable)
                        .skip(i)
                        .filter(|(_, skipped)| skipped.is_none())
                        .map(|(&method, _)| method)
                        .collect(),
                    reason,
                });
                return Ok(report);
            }
            Err(other) => return Err(other),
        }
        on_section(method, &report);
    }
    Ok(report)
}

/// One method's run: what it reads and the report it fills.
struct Step<'a> {
    base: &'a Checkpoint,
    tuned: &'a Checkpoint,
    opts: &'a CompareOptions,
    pair_opts: &'a PairOptions,
    progress: &'a dyn Progress,
    behavioural: &'a mut Behavioural,
    pair: &'a mut Option<ModelPair>,
    report: &'a mut Report,
}

impl Step<'_> {
    /// Runs `method` and stores its section, or says why it has none.
    fn run(&mut self, method: Method) -> Result<Outcome<()>> {
        let (opts, progress) = (self.opts, self.progress);
        // No catch-all arm: a new method must say here what it runs.
        match method {
            Method::Weights => {
                let pairing = pair_tensors(self.base.source().tensors(), self.tuned.source().tensors())?;
                let spectrum = SpectrumOptions {
                    seed: opts.seed,
                    ..opts.spectrum.clone()
                };
                let section = diff_weights(self.base.source(), self.tuned.source(), pairing, &spectrum, progress)?;
                self.report.weights = Some(section);
            }
            Method::Kl => {
                let (pair, prepared) = self.models()?;
                let header = prepared.header.clone();
                let section = behaviour(pair, &prepared.prompts, &opts.behaviour, header, progress)?;
                self.report.behaviour = Some(section);
            }
            Method::Lens => {
                let (pair, prepared) = self.models()?;
                self.report.lens = Some(lens(pair, &prepared.prompts, &opts.lens, progress)?);
            }
            Method::Swap => {
                let (pair, prepared) = self.models()?;
                match swap(pair, &prepared.prompts, &opts.swap, progress)? {
                    Outcome::Done(section) => self.report.swap = Some(section),
                    Outcome::Skipped(reason) => return Ok(Outcome::Skipped(reason)),
                }
            }
            Method::Patch => {
                let (pair, prepared) = self.models()?;
                match patch(pair, &prepared.prompts, &opts.patch, progress)? {
                    Outcome::Done(section) => self.report.patching = Some(section),
                    Outcome::Skipped(reason) => return Ok(Outcome::Skipped(reason)),
                }
            }
            Method::Crosscoder => {
                let (pair, prepared) = self.models()?;
                match crosscoder(pair, &prepared.prompts, &opts.crosscoder, progress)? {
                    Outcome::Done(section) => self.report.crosscoder = Some(section),
                    Outcome::Skipped(reason) => return Ok(Outcome::Skipped(reason)),
                }
            }
        }
        Ok(Outcome::Done(()))
    }

    /// The loaded pair and its prompts, loading the models on first use.
    fn models(&mut self) -> Result<(&ModelPair, &Prepared)> {
        let Behavioural::Ready(prepared) = &mut *self.behavioural else {
            return Err(Error::Internal("behavioural inputs were not prepared".into()));
        };
        if self.pair.is_none() {
            let plan = prepared
                .plan
                .take()
                .ok_or_else(|| Error::Internal("the model plan was used twice".into()))?;
            let loading = Instant::now();
            *self.pair = Some(plan.load(self.base, self.tuned, self.pair_opts)?);
            // Reported apart so throughput can be read off the report.
            self.report
                .timings_ms
                .insert("load_models".into(), loading.elapsed().as_secs_f64() * 1e3);
        }
        let pair = self
            .pair
            .as_ref()
            .ok_or_else(|| Error::Internal("models not loaded".into()))?;
        Ok((pair, prepared))
    }
}

/// The inputs of the behavioural methods, checked up front.
enum Behavioural {
    /// No behavioural method was asked for.
    NotAsked,
    /// A file they need is missing; the reason says which flag supplies it.
    Missing(String),
    /// The runtime does not implement the architecture; the reason names it and the supported ones.
    Unsupported(String),
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
    /// Why `method` cannot run on these inputs, if it cannot; the reason names the flag that fixes it.
    fn unavailable(&self, method: Method) -> Option<String> {
        if !method.runs_models() {
            return None;
        }
        match self {
            Self::Missing(reason) | Self::Unsupported(reason) => Some(reason.clone()),
            Self::Ready(prepared) if method.is_layerwise() => prepared
                .layerwise_mismatch
                .as_ref()
                .map(|reason| format!("{reason}; leave {method} out of --methods")),
            Self::Ready(_) | Self::NotAsked => None,
        }
    }

    /// Whether a named method that cannot run stops the run. A missing file does: a flag supplies it. An
    /// unsupported architecture does only when every method asked for runs the models: with the weight diff among
    /// them the run still answers, and no flag would make the others run; without it, nothing asked for could run
    /// and an empty report would pass for an answer.
    fn stops_named(&self, methods: &[Method]) -> bool {
        match self {
            Self::Unsupported(_) => methods.iter().all(|m| m.runs_models()),
            Self::NotAsked | Self::Missing(_) | Self::Ready(_) => true,
        }
    }

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
            PairReadiness::Ready(plan) => *plan,
            PairReadiness::MissingFile(reason) => return Ok(Self::Missing(reason)),
            PairReadiness::Unsupported(reason) => return Ok(Self::Unsupported(reason)),
        };
        let score = opts.behaviour.score;
        let ignored = check_score_methods(score, methods, opts.methods.is_given())?;
        let (encoded, mut warnings) =
            prepare_scored_prompts(&prompts, plan.tokenizer(), plan.context_len(), plan.vocab_size(), score)?;
        check_scored_positions(score, &encoded)?;
        warnings.splice(0..0, plan.warnings().iter().cloned().chain(ignored));
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
