//! The base and tuned models side by side, with the one tokenizer both are fed through.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};
use crate::text::Tokenizer;

use super::Outcome;

/// Where to run and which files to use when they are not beside the weights.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// Compute device.
    pub device: Device,
    /// Dtype of weights and activations.
    pub dtype: DType,
    /// `config.json` for both models; overrides the ones found beside the weights.
    pub config: Option<PathBuf>,
    /// `tokenizer.json` for both models; overrides the ones found beside the weights (and skips their check).
    pub tokenizer: Option<PathBuf>,
}

/// Everything needed to load the pair, checked: configs parsed and compatible, tokenizer loaded. Cheap to build,
/// so input errors surface before any long stage; [`PairPlan::load`] then reads the weights.
#[derive(Debug)]
pub struct PairPlan {
    base_config: ModelConfig,
    tuned_config: ModelConfig,
    tokenizer: Tokenizer,
    warnings: Vec<String>,
}

/// Both models loaded, ready to run on the same token ids.
#[derive(Debug)]
pub struct ModelPair {
    /// The model before fine-tuning.
    pub base: Model,
    /// The model after fine-tuning.
    pub tuned: Model,
    /// The tokenizer both are fed through (the tuned model's: it carries the chat template the fine-tune used).
    pub tokenizer: Tokenizer,
}

/// What [`PairPlan::prepare`] found: the plan, or why the models cannot run on this pair.
#[derive(Debug)]
#[must_use]
pub enum PairReadiness {
    /// Configs and tokenizer checked.
    Ready(Box<PairPlan>),
    /// `config.json` or `tokenizer.json` is missing; the reason names the flag that supplies it.
    MissingFile(String),
    /// The runtime does not implement the architecture of one model or both. No flag fixes that, so a caller with
    /// other work (the weight diff) skips the model-running part rather than stopping. The reason is the
    /// [`Error::UnsupportedArchitecture`] message, the tuned model's as well when it names another architecture.
    Unsupported(String),
}

impl PairReadiness {
    /// The plan, or the reason it cannot be made as the error: for callers that only run the models.
    ///
    /// # Errors
    /// The reason of [`PairReadiness::MissingFile`] or [`PairReadiness::Unsupported`].
    pub fn into_result(self) -> std::result::Result<PairPlan, String> {
        match self {
            Self::Ready(plan) => Ok(*plan),
            Self::MissingFile(reason) | Self::Unsupported(reason) => Err(reason),
        }
    }
}

impl ModelPair {
    /// The lengths past which either model computes every position differently (longrope's switch to its long
    /// factors): batches keep prompts on the two sides apart (see [`super::batch::batches`]).
    #[must_use]
    pub(crate) fn length_switches(&self) -> Vec<usize> {
        let mut switches: Vec<usize> = [&self.base, &self.tuned]
            .iter()
            .filter_map(|m| m.config().length_switch())
            .collect();
        switches.dedup();
        switches
    }
}

impl PairPlan {
    /// Finds and checks the configs and the tokenizer, or says which file is missing and which flag supplies it,
    /// or that the runtime does not implement the models' architecture.
    ///
    /// # Errors
    /// Broken configs, incompatible models, tokenizer errors.
    pub fn prepare(base: &Checkpoint, tuned: &Checkpoint, opts: &PairOptions) -> Result<PairReadiness> {
        let mut warnings = Vec::new();
        let Some(base_config) = opts.config.as_deref().or(base.config_path()) else {
            return Ok(PairReadiness::MissingFile(format!(
                "no config.json beside the base weights ({}); pass --config path/to/config.json",
                base.path().display()
            )));
        };
        let tuned_config = match (&opts.config, tuned.config_path()) {
            (Some(forced), _) => forced.as_path(),
            (None, Some(own)) => own,
            (None, None) => {
                warnings.push(format!(
                    "no config.json beside the tuned weights; using the base's ({})",
                    base_config.display()
                ));
                base_config
            }
        };
        // The configs are read before the tokenizer is looked for: on an architecture the runtime lacks, asking
        // for a --tokenizer would send the user after a file that cannot help.
        let (base_config, tuned_config) =
            match supported_configs(ModelConfig::load(base_config), ModelConfig::load(tuned_config))? {
                Outcome::Done(configs) => configs,
                Outcome::Skipped(reason) => return Ok(PairReadiness::Unsupported(reason)),
            };
        let Some(tokenizer_path) = opts
            .tokenizer
            .as_deref()
            .or(tuned.tokenizer_path())
            .or(base.tokenizer_path())
        else {
            return Ok(PairReadiness::MissingFile(format!(
                "no tokenizer.json beside either model ({}, {}); pass --tokenizer path/to/tokenizer.json",
                base.path().display(),
                tuned.path().display()
            )));
        };
        check_compatible(&base_config, &tuned_config)?;
        let tokenizer = Tokenizer::load(tokenizer_path)?;
        if opts.tokenizer.is_none() {
            check_same_vocabulary(&tokenizer, base.tokenizer_path())?;
        }
        if tokenizer.vocab_size() > base_config.vocab_size {
            return Err(Error::Tokenizer {
                path: tokenizer_path.to_path_buf(),
                reason: format!(
                    "has {} token ids but the model's vocabulary is {}; is it this model's tokenizer?",
                    tokenizer.vocab_size(),
                    base_config.vocab_size
                ),
            });
        }
        Ok(PairReadiness::Ready(Box::new(Self {
            base_config,
            tuned_config,
            tokenizer,
            warnings,
        })))
    }

    /// Checks both configs against the tensors they describe (layer count, sizes): call it before anything is
    /// sized by the configs (per-layer plans, the models), since a config of 10^12 layers would abort there.
    ///
    /// # Errors
    /// [`Error::ConfigContradictsWeights`].
    pub fn check_fit(&self, base: &Checkpoint, tuned: &Checkpoint) -> Result<()> {
        self.base_config
            .check_against(base.source().tensors(), &base.path().display().to_string())?;
        self.tuned_config
            .check_against(tuned.source().tensors(), &tuned.path().display().to_string())
    }

    /// Notes for the report (e.g. a config borrowed from the base).
    #[must_use]
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The base's configuration.
    #[must_use]
    pub fn base_config(&self) -> &ModelConfig {
        &self.base_config
    }

    /// The tuned model's configuration.
    #[must_use]
    pub fn tuned_config(&self) -> &ModelConfig {
        &self.tuned_config
    }

    /// The tokenizer both models will be fed through.
    #[must_use]
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Longest sequence both models accept.
    #[must_use]
    pub fn context_len(&self) -> usize {
        self.base_config.context_len.min(self.tuned_config.context_len)
    }

    /// Rows of the (shared) vocabulary.
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.base_config.vocab_size
    }

    /// Reads both models' weights onto the device.
    ///
    /// # Errors
    /// Missing or misshapen tensors ([`Error::ModelWeights`]) and read errors.
    pub fn load(self, base: &Checkpoint, tuned: &Checkpoint, opts: &PairOptions) -> Result<ModelPair> {
        let load = |ck: &Checkpoint, config: &ModelConfig| {
            Model::load(
                ck.source(),
                config,
                &opts.device,
                opts.dtype,
                &ck.path().display().to_string(),
            )
        };
        Ok(ModelPair {
            base: load(base, &self.base_config)?,
            tuned: load(tuned, &self.tuned_config)?,
            tokenizer: self.tokenizer,
        })
    }
}

/// Both configs, or ([`Outcome::Skipped`]) why the runtime cannot run the pair: the unsupported architecture of
/// each side, once when both name the same one. Any other config error is the user's to fix and stays an error,
/// the base's first.
fn supported_configs(
    base: Result<ModelConfig>,
    tuned: Result<ModelConfig>,
) -> Result<Outcome<(ModelConfig, ModelConfig)>> {
    let unsupported = |e: &Error| match e {
        Error::UnsupportedArchitecture { found, .. } => Some(found.clone()),
        _ => None,
    };
    match (base, tuned) {
        (Ok(base), Ok(tuned)) => Ok(Outcome::Done((base, tuned))),
        (Err(e), _) | (_, Err(e)) if unsupported(&e).is_none() => Err(e),
        (Err(base), Err(tuned)) if unsupported(&base) != unsupported(&tuned) => {
            Ok(Outcome::Skipped(format!("{base}; {tuned}")))
        }
        (Err(e), _) | (_, Err(e)) => Ok(Outcome::Skipped(e.to_string())),
    }
}

/// Same architecture and the same shapes where the analyses line the models up.
fn check_compatible(base: &ModelConfig, tuned: &ModelConfig) -> Result<()> {
    let differ = |what: &str, b: String, t: String| {
        Err(Error::Incompatible(format!(
            "{what} differs (base {b}, tuned {t}); mdiff compares a model with its own fine-tune"
        )))
    };
    // A multimodal Gemma 3 runs its language tower, which compares with a text-only Gemma 3 fine-tune of it.
    if base.language_model() != tuned.language_model() || base.family != tuned.family {
        return differ("architecture", base.architecture.clone(), tuned.architecture.clone());
    }
    if base.vocab_size != tuned.vocab_size {
        return differ(
            "vocabulary size",
            base.vocab_size.to_string(),
            tuned.vocab_size.to_string(),
        );
    }
    // Depth and width may differ: the output distributions still compare, and the layer-by-layer methods say
    // why they skip (see `layerwise_mismatch`).
    Ok(())
}

/// When both models ship a tokenizer, they must agree on the vocabulary, or the token ids mean different things.
fn check_same_vocabulary(tuned: &Tokenizer, base_path: Option<&Path>) -> Result<()> {
    let Some(base_path) = base_path.filter(|p| *p != tuned.path()) else {
        return Ok(());
    };
    let base = Tokenizer::load(base_path)?;
    if tuned.vocab_size() != base.vocab_size() {
        return Err(Error::Incompatible(format!(
            "the tokenizers differ: {} has {} tokens, {} has {}; added tokens are not supported, pass --tokenizer \
             to force one",
            base.path().display(),
            base.vocab_size(),
            tuned.path().display(),
            tuned.vocab_size()
        )));
    }
    Ok(())
}
