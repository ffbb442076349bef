//! The report contract: one versioned JSON document per `mdiff compare` run.
//!
//! These types are the schema. They build without the `compute` feature so the viewer (wasm) can read reports
//! without candle. Maps are `BTreeMap` and lists are sorted so that the same inputs give byte-identical JSON
//! (apart from [`Report::timings_ms`]).

#[cfg(not(target_arch = "wasm32"))]
pub mod atomic;
mod behaviour;
mod crosscoder;
pub mod headlines;
mod io;
mod layout;
mod lens;
mod patch;
mod swap;
mod weights;

#[cfg(not(target_arch = "wasm32"))]
pub use atomic::write_atomic;
pub use behaviour::{
    BehaviourSection, BehaviourSummary, Distribution, DivergentPosition, GroupBehaviour, NonFiniteLogits,
    PromptBehaviour, TokenProb,
};
pub use crosscoder::{
    ClassCounts, ClassThresholds, CrosscoderSection, CrosscoderTraining, LatentClass, LatentContext, LatentSummary,
};
#[cfg(not(target_arch = "wasm32"))]
pub use io::write_report;
pub use io::{SCHEMA_MAJOR, SCHEMA_VERSION, json_schema, parse_report, read_report};
pub use layout::to_readable_json;
pub use lens::{LensPoint, LensPosition, LensSection};
pub use patch::{PatchCell, PatchDirection, PatchSection, PatchWork, PositionGrid, PositionSweep, Site};
pub use swap::{CumulativeSwap, Granularity, SwapRow, SwapSection};
pub use weights::{
    Component, ComponentRollup, DtypeMismatch, LayerComponentRollup, LayerRollup, NonFinite, RollupStats,
    ShapeMismatch, SkippedTensor, Spectrum, SpectrumSettings, TensorDiff, WeightTotals, WeightsSection,
};

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One `mdiff compare` run: what was compared, how, and what each analysis found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// `MAJOR.MINOR` of this document's schema. Readers reject a newer major version.
    pub schema_version: String,
    /// Version of the mdiff that wrote it.
    pub mdiff_version: String,
    /// The two models compared.
    pub inputs: Inputs,
    /// Settings that, with the inputs, determine every number in the report.
    pub settings: Settings,
    /// Per-tensor weight differences and their roll-ups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightsSection>,
    /// Per-token KL divergence between the models on a prompt set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<BehaviourSection>,
    /// Weight swapping: which parts of the tuned model carry the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapSection>,
    /// Activation patching: which activations carry the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patching: Option<PatchSection>,
    /// The logit lens: where along the depth the two models' predictions part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lens: Option<LensSection>,
    /// Crosscoder latents: shared, base-only and tuned-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crosscoder: Option<CrosscoderSection>,
    /// Sections that were asked for (or are on by default) but not computed, each with the reason.
    #[serde(default)]
    pub skipped: Vec<SkippedSection>,
    /// Wall-clock time per stage in milliseconds. The only field that differs between identical runs.
    #[serde(default)]
    pub timings_ms: BTreeMap<String, f64>,
    /// Set when the run was stopped before every method finished (schema 1.6): the sections present are complete,
    /// the methods listed here are missing. Absent from a finished run's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

/// What an interrupted run left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Incomplete {
    /// Methods that were running or had not started when the run stopped, in run order.
    pub unfinished: Vec<Method>,
    /// Why the run stopped, e.g. `interrupted by SIGINT`.
    pub reason: String,
}

/// The base and the tuned model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Inputs {
    /// The model before fine-tuning.
    pub base: ModelInput,
    /// The model after fine-tuning (a full checkpoint, or a LoRA adapter applied to `base`).
    pub tuned: ModelInput,
}

/// How a checkpoint was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// One `.safetensors` file.
    Safetensors,
    /// Several shards listed in `model.safetensors.index.json`.
    Sharded,
    /// A PEFT LoRA adapter merged onto the base (W + s·B·A).
    LoraAdapter,
}

/// One side of the comparison as it was found on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelInput {
    /// The path the user gave.
    pub path: String,
    /// How the weights are stored.
    pub kind: CheckpointKind,
    /// Weight files read, with their sizes.
    pub files: Vec<InputFile>,
    /// Sum of `files` sizes in bytes.
    pub size_bytes: u64,
    /// Number of tensors.
    pub num_tensors: usize,
    /// Total number of scalar parameters.
    pub num_parameters: u64,
    /// Number of tensors per dtype (`F32`, `BF16`, ...).
    pub dtypes: BTreeMap<String, usize>,
    /// What `config.json` says, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ModelConfigSummary>,
    /// Why `config.json` could not be used, when it exists but is broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_problem: Option<String>,
    /// Path of the `tokenizer.json` found beside the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// The adapter, when this side is a LoRA adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSummary>,
}

/// A weight file and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InputFile {
    /// Path of the file.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256 (hex) of the safetensors length prefix and header: tensor names, dtypes, shapes, offsets and
    /// metadata. Matches a baseline report to its model without hashing the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_sha256: Option<String>,
}

/// The few `config.json` fields a reader needs to place the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ModelConfigSummary {
    /// Path of `config.json`.
    pub path: String,
    /// `architectures[0]`, e.g. `LlamaForCausalLM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// `model_type`, e.g. `llama`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Number of transformer blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_layers: Option<u64>,
    /// Residual stream width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<u64>,
    /// Vocabulary size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<u64>,
    /// `torch_dtype` (or `dtype` in transformers ≥ 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// `tie_word_embeddings`: the unembedding is the token embedding (no `lm_head` tensor is stored). Absent from
    /// the config, transformers' default for the architecture (true for GPT-2, false otherwise). Since 1.6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
}

/// A PEFT LoRA adapter as read from `adapter_config.json` and its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoraSummary {
    /// The adapter directory.
    pub adapter_path: String,
    /// `base_model_name_or_path` from the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model_name_or_path: Option<String>,
    /// Default rank `r`.
    pub r: usize,
    /// Default `lora_alpha`.
    pub lora_alpha: f64,
    /// Rank-stabilized scaling (alpha/√r).
    pub use_rslora: bool,
    /// Conv1D layout (weights stored `[in, out]`, GPT-2 style).
    pub fan_in_fan_out: bool,
    /// `target_modules` as written: a list of names, or a regular expression.
    pub target_modules: Vec<String>,
    /// Whether `target_modules` is a regular expression.
    pub target_modules_is_regex: bool,
    /// Per-module rank overrides.
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides.
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Each adapted module with its rank and scaling.
    pub modules: Vec<LoraModule>,
    /// Full tensors the adapter replaces (`modules_to_save`, trained biases).
    pub replaced_tensors: Vec<String>,
}

/// One module the adapter modifies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoraModule {
    /// Base tensor the update is added to.
    pub tensor: String,
    /// Rank of this module's update.
    pub r: usize,
    /// Alpha of this module.
    pub alpha: f64,
    /// Scale s applied to B·A.
    pub scaling: f64,
}

/// Run settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Settings {
    /// Seed of every random choice (random projections of the SVD, ...).
    pub seed: u64,
    /// Methods asked for.
    pub methods: Vec<Method>,
    /// Compute device (`cpu`, `cuda:0`).
    pub device: String,
    /// SHA-256 of the prompt set's contents and groups (`PromptSet::sha256`), when the models ran on prompts: a
    /// baseline must have been computed on the same set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts_sha256: Option<String>,
    /// Whose tokens the KL summaries score (`--score`); absent means `all`.
    #[serde(default, skip_serializing_if = "Score::is_all")]
    pub score: Score,
}

/// Whose tokens of chat-templated prompts the KL summaries (summary, groups, most divergent positions) score
/// (docs/methods.md, "Scoring one role's tokens").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Score {
    /// Every position.
    #[default]
    All,
    /// Positions that predict a token of a user message (every token of a plain-text prompt).
    User,
    /// Positions that predict a token of an assistant message.
    Assistant,
}

impl Score {
    /// The name used on the command line and in the report.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }

    /// True for [`Score::All`] (left out of the report).
    #[must_use]
    #[allow(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's skip_serializing_if passes a reference"
    )]
    pub fn is_all(&self) -> bool {
        *self == Self::All
    }

    /// The message role whose tokens are scored; `None` for [`Score::All`].
    #[must_use]
    pub fn role(self) -> Option<&'static str> {
        match self {
            Self::All => None,
            Self::User | Self::Assistant => Some(self.name()),
        }
    }
}

/// An analysis `mdiff compare` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Per-tensor weight differences.
    Weights,
    /// Per-token KL divergence between the two models.
    Kl,
    /// Weight-swap localization.
    Swap,
    /// Activation patching.
    Patch,
    /// Logit-lens drift.
    Lens,
    /// Crosscoder latents.
    Crosscoder,
}

impl Method {
    /// What `compare` runs when `--methods` is not given: the methods that finish within a few times the KL run
    /// (docs/benchmarks.md, "The default run"). Swap and patching run the models again for every part or cell,
    /// and the crosscoder trains a model, so they are asked for by name.
    pub const DEFAULT: [Self; 3] = [Self::Weights, Self::Kl, Self::Lens];

    /// Every method, in report order.
    pub const ALL: [Self; 6] = [
        Self::Weights,
        Self::Kl,
        Self::Swap,
        Self::Patch,
        Self::Lens,
        Self::Crosscoder,
    ];

    /// The name used on the command line and in the report.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Weights => "weights",
            Self::Kl => "kl",
            Self::Swap => "swap",
            Self::Patch => "patch",
            Self::Lens => "lens",
            Self::Crosscoder => "crosscoder",
        }
    }

    /// Whether the method runs the two models on prompts (and so needs their configs, a tokenizer and prompts).
    /// The one place that knows it: every other check asks here.
    #[must_use]
    pub fn runs_models(self) -> bool {
        match self {
            Self::Weights => false,
            Self::Kl | Self::Swap | Self::Patch | Self::Lens | Self::Crosscoder => true,
        }
    }

    /// Whether the method lines the two models up layer by layer (so needs one family, depth, width and
    /// vocabulary).
    #[must_use]
    pub fn is_layerwise(self) -> bool {
        match self {
            Self::Weights | Self::Kl => false,
            Self::Swap | Self::Patch | Self::Lens | Self::Crosscoder => true,
        }
    }

    /// The report section the method fills.
    #[must_use]
    pub fn section(self) -> &'static str {
        match self {
            Self::Weights => "weights",
            Self::Kl => "behaviour",
            Self::Swap => "swap",
            Self::Patch => "patching",
            Self::Lens => "lens",
            Self::Crosscoder => "crosscoder",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A section that is absent from the report, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SkippedSection {
    /// Section name (`behaviour`, `swap`, ...).
    pub section: String,
    /// The method that would have filled it.
    pub method: Method,
    /// Why it was not computed.
    pub reason: String,
}

impl SkippedSection {
    /// The section `method` fills, skipped for `reason`.
    #[must_use]
    pub fn new(method: Method, reason: String) -> Self {
        Self {
            section: method.section().to_string(),
            method,
            reason,
        }
    }
}
