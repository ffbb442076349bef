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

impl PairPlan {
    /// Finds and checks the configs and the tokenizer, or says ([`Outcome::Skipped`]) which file is missing and
    /// which flag supplies it.
    ///
    /// # Errors
    /// Broken or unsupported configs, incompatible models, tokenizer errors.
    pub fn prepare(base: &Checkpoint, tuned: &Checkpoint, opts: &PairOptions) -> Result<Outcome<Self>> {
        let mut warnings = Vec::new();
        let Some(base_config) = opts.config.as_deref().or(base.config_path()) else {
            return Ok(Outcome::Skipped(format!(
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
        let Some(tokenizer_path) = opts
            .tokenizer
            .as_deref()
            .or(tuned.tokenizer_path())
            .or(base.tokenizer_path())
        else {
            return Ok(Outcome::Skipped(format!(
                "no tokenizer.json beside either model ({}, {}); pass --tokenizer path/to/tokenizer.json",
                base.path().display(),
                tuned.path().display()
            )));
        };
        let base_config = ModelConfig::load(base_config)?;
        let tuned_config = ModelConfig::load(tuned_config)?;
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
        Ok(Outcome::Done(Self {
            base_config,
            tuned_config,
            tokenizer,
            warnings,
        }))
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

/// Same architecture and the same shapes where the analyses line the models up.
fn check_compatible(base: &ModelConfig, tuned: &ModelConfig) -> Result<()> {
    let differ = |what: &str, b: String, t: String| {
        Err(Error::Incompatible(format!(
            "{what} differs (base {b}, tuned {t}); mdiff compares a model with its own fine-tune"
        )))
    };
    if base.architecture != tuned.architecture || base.family != tuned.family {
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
