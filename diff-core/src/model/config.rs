//! `config.json` → the numbers and block options a forward pass needs, across the dialects real checkpoints use.
//!
//! transformers ≥ 5 nests RoPE settings under `rope_parameters` (per attention type for Gemma 3); older files put
//! `rope_theta` at the top level and scaling under `rope_scaling` (with `type` or `rope_type`). Each family file
//! (`families/`) reads its own dialect through [`Fields`]; defaults are transformers' own where a field is
//! optional; sizes are required, because guessing them would silently build the wrong model.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use super::families::Family;
use super::families::{self, Spec};
use crate::error::{Error, Result};

/// Non-linearity of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(x)` (Llama's gate).
    Silu,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact GELU with erf.
    Gelu,
    /// `max(x, 0)`.
    Relu,
}

/// How the family's norms compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormStyle {
    /// RMSNorm, normalized in f32 and weighted in the run dtype (Llama, Qwen, Phi-3).
    Rms,
    /// RMSNorm normalized and weighted in f32, then cast to the run dtype (OLMo-2).
    F32Weight,
    /// RMSNorm scaled by (1 + w), all in f32, then cast (Gemma).
    OnePlusWeight,
    /// LayerNorm with weight and bias (GPT-2).
    Layer,
}

/// RMSNorm of queries and keys before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// Over each head's `head_dim` values (Qwen3, Gemma 3).
    PerHead,
    /// Over the whole projection, all heads at once (OLMo-2).
    Whole,
}

impl QkNorm {
    /// Widths of the query and key norm weights.
    #[must_use]
    pub fn widths(self, c: &ModelConfig) -> (usize, usize) {
        match self {
            Self::PerHead => (c.head_dim, c.head_dim),
            Self::Whole => (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim),
        }
    }
}

/// Which layers attend through the sliding window (when the model has one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SlidingLayers {
    /// None.
    #[default]
    None,
    /// Layers from this one on (Mistral: 0; Qwen2's `max_window_layers`).
    From(usize),
    /// Every layer but each `period`-th (layer i slides unless (i + 1) is a multiple of `period`): Gemma 2
    /// (period 2), Gemma 3's `sliding_window_pattern`.
    Pattern {
        /// Every `period`-th layer is global.
        period: usize,
    },
    /// As `layer_types` lists them (true = `sliding_attention`).
    Listed(Vec<bool>),
}

impl SlidingLayers {
    /// Whether `layer` slides.
    #[must_use]
    pub fn contains(&self, layer: usize) -> bool {
        match self {
            Self::None => false,
            Self::From(first) => layer >= *first,
            Self::Pattern { period } => !(layer + 1).is_multiple_of(*period),
            Self::Listed(kinds) => kinds.get(layer).copied().unwrap_or(false),
        }
    }
}

/// How RoPE frequencies are scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// Divisor of every frequency.
        factor: f64,
    },
    /// Llama 3.1's piecewise scaling by wavelength.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
    /// Phi-3's long-context RoPE: every frequency divided by a per-dimension factor, one list for sequences up to
    /// the pre-training length and another beyond it, and cos/sin multiplied by `attention_factor`.
    LongRope {
        /// Divisors for sequences of at most `original_max_position_embeddings` tokens.
        short_factor: Vec<f64>,
        /// Divisors for longer sequences.
        long_factor: Vec<f64>,
        /// The length at which the long factors take over (a sequence longer than this uses them everywhere).
        original_max_position_embeddings: usize,
        /// Multiplies cos and sin.
        attention_factor: f64,
    },
}

/// Rotary position embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Base of the frequencies.
    pub theta: f64,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// Unscaled RoPE with base `theta`.
    #[must_use]
    pub fn plain(theta: f64) -> Self {
        Self {
            theta,
            scaling: RopeScaling::None,
        }
    }
}

/// Everything the runtime reads from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Where it came from.
    pub path: PathBuf,
    /// `architectures[0]` (or the `model_type` when that list is missing).
    pub architecture: String,
    /// Block layout and tensor names.
    pub family: Family,
    /// Rows of the embedding and of the unembedding.
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (fewer than `num_heads` under grouped-query attention).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Hidden width of the MLP.
    pub intermediate_size: usize,
    /// Epsilon of every norm.
    pub norm_eps: f64,
    /// How the norms compute.
    pub norm: NormStyle,
    /// RoPE settings (`None` for learned positions); the global layers' when they differ.
    pub rope: Option<RopeConfig>,
    /// The sliding-window layers' RoPE when it differs from [`ModelConfig::rope`] (Gemma 3's local base).
    pub local_rope: Option<RopeConfig>,
    /// Leading dimensions of each head that RoPE rotates (`head_dim` unless `partial_rotary_factor` < 1).
    pub rotary_dim: usize,
    /// Longest sequence the model accepts.
    pub context_len: usize,
    /// Whether the unembedding is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Bias on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// MLP non-linearity.
    pub activation: Activation,
    /// The block's optional parts and how attention and the output are shaped.
    pub block: BlockOptions,
}

/// What a family switches on in the general block, and how it shapes attention and the output. The default is
/// the plain pre-norm block: no q/k norms, no window, no softcaps, queries scaled by 1/√head_dim.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BlockOptions {
    /// Norms of the queries and keys.
    pub qk_norm: Option<QkNorm>,
    /// A query in a sliding layer sees at most this many keys (itself included).
    pub sliding_window: Option<usize>,
    /// Which layers slide.
    pub sliding_layers: SlidingLayers,
    /// Attention scores become `cap · tanh(score / cap)` before the mask (Gemma 2).
    pub attn_softcap: Option<f64>,
    /// Logits become `cap · tanh(logit / cap)` (Gemma 2).
    pub final_softcap: Option<f64>,
    /// Queries are scaled by 1/√this instead of 1/√head_dim (Gemma).
    pub query_pre_attn_scalar: Option<f64>,
    /// The embedding is multiplied by √hidden_size, rounded to the run dtype first (Gemma).
    pub embed_scale: bool,
    /// GPT-2's optional extra attention scale 1/(layer + 1).
    pub scale_attn_by_inverse_layer_idx: bool,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    ///
    /// # Errors
    /// [`Error::Read`], [`Error::ModelConfig`] for malformed or incomplete files, and
    /// [`Error::UnsupportedArchitecture`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::ModelConfig {
            path: path.to_path_buf(),
            reason: format!("not valid JSON ({e}); re-download config.json"),
        })?;
        Self::from_json(path, &value)
    }

    /// Builds the config from parsed JSON (`path` is only used in messages).
    ///
    /// # Errors
    /// As [`ModelConfig::load`].
    pub fn from_json(path: &Path, value: &Value) -> Result<Self> {
        let Value::Object(top) = value else {
            return Err(Error::ModelConfig {
                path: path.to_path_buf(),
                reason: "not a JSON object".into(),
            });
        };
        let listed = top.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str);
        let architecture = listed
            .or_else(|| top.get("model_type").and_then(Value::as_str))
            .unwrap_or("(none)")
            .to_string();
        // A multimodal checkpoint keeps its language model's settings under text_config; top-level keys (e.g.
        // tie_word_embeddings) still apply.
        let fields = match top.get("text_config").and_then(Value::as_object) {
            Some(text) => Fields {
                path,
                architecture: &architecture,
                map: text,
                outer: Some(top),
            },
            None => Fields {
                path,
                architecture: &architecture,
                map: top,
                outer: None,
            },
        };
        let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
        let unsupported = |found: String| Error::UnsupportedArchitecture {
            path: path.to_path_buf(),
            found,
            supported: families::supported(),
        };
        let experts = match fields.usize("num_experts")? {
            Some(n) => Some(n),
            None => fields.usize("num_local_experts")?,
        };
        if families::is_mixture_of_experts(model_type, experts) {
            return Err(unsupported(format!(
                "{architecture} (a mixture of experts; only dense models run)"
            )));
        }
        let Some(family) = families::select(listed, model_type) else {
            return Err(unsupported(if model_type.is_empty() || architecture == model_type {
                architecture.clone()
            } else {
                format!("{architecture} (model_type {model_type})")
            }));
        };
        (family.spec().config)(&fields, architecture.clone())?.validate()
    }

    /// The architecture that runs: a multimodal checkpoint's language-model class (`Gemma3ForCausalLM` for
    /// `Gemma3ForConditionalGeneration`), else the architecture itself. Two configs with the same one describe the
    /// same network.
    #[must_use]
    pub fn language_model(&self) -> &str {
        match self.family.spec().language_tower {
            Some((multimodal, text)) if self.architecture == multimodal => text,
            _ => &self.architecture,
        }
    }

    /// Whether `layer` attends through a sliding window, and its width.
    #[must_use]
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.block
            .sliding_window
            .filter(|_| self.block.sliding_layers.contains(layer))
    }

    /// The sequence length past which the model computes every position differently (longrope switches to its
    /// long factors): prompts on the two sides of it must not share a padded batch, whose length decides.
    #[must_use]
    pub fn length_switch(&self) -> Option<usize> {
        [&self.rope, &self.local_rope]
            .into_iter()
            .flatten()
            .find_map(|r| match r.scaling {
                RopeScaling::LongRope {
                    original_max_position_embeddings,
                    ..
                } => Some(original_max_position_embeddings),
                _ => None,
            })
    }

    /// The RoPE of `layer`: the local one for sliding layers where the model has one.
    #[must_use]
    pub fn rope_of(&self, layer: usize) -> Option<&RopeConfig> {
        match &self.local_rope {
            Some(local) if self.window(layer).is_some() => Some(local),
            _ => self.rope.as_ref(),
        }
    }

    fn validate(self) -> Result<Self> {
        let bad = |reason: String| Error::ModelConfig {
            path: self.path.clone(),
            reason,
        };
        if self.num_heads == 0 || self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(bad(format!(
                "{} attention heads cannot be shared by {} key/value heads",
                self.num_heads, self.num_kv_heads
            )));
        }
        if self.rope.is_some()
            && !(self.rotary_dim > 0 && self.rotary_dim.is_multiple_of(2) && self.rotary_dim <= self.head_dim)
        {
            return Err(bad(format!(
                "RoPE needs an even, positive number of rotated dimensions up to head_dim {}, found {} (check head_dim and partial_rotary_factor)",
                self.head_dim, self.rotary_dim
            )));
        }
        for rope in [&self.rope, &self.local_rope].into_iter().flatten() {
            if let RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            } = &rope.scaling
                && (short_factor.len() != self.rotary_dim / 2 || long_factor.len() != self.rotary_dim / 2)
            {
                return Err(bad(format!(
                    "longrope's short_factor and long_factor hold {} and {} numbers; a head rotating {} dimensions \
                     needs {} each",
                    short_factor.len(),
                    long_factor.len(),
                    self.rotary_dim,
                    self.rotary_dim / 2
                )));
            }
        }
        if let SlidingLayers::Listed(kinds) = &self.block.sliding_layers
            && kinds.len() != self.num_layers
        {
            return Err(bad(format!(
                "layer_types lists {} layers but num_hidden_layers is {}",
                kinds.len(),
                self.num_layers
            )));
        }
        if self.block.sliding_layers == (SlidingLayers::Pattern { period: 0 }) {
            return Err(bad("sliding_window_pattern is 0; it must be positive".into()));
        }
        let keys = &self.family.spec().layout.keys;
        let sizes = [
            (keys.layers, self.num_layers),
            (keys.hidden, self.hidden_size),
            ("vocab_size", self.vocab_size),
            (keys.intermediate, self.intermediate_size),
            ("head_dim", self.head_dim),
            (keys.context, self.context_len),
        ];
        if let Some((key, _)) = sizes.iter().find(|(_, size)| *size == 0) {
            return Err(bad(format!("\"{key}\" is 0; every size of a model must be positive")));
        }
        if self.block.sliding_window == Some(0) {
            return Err(bad("\"sliding_window\" is 0; a query must see at least itself".into()));
        }
        Ok(self)
    }
}

/// transformers' defaults for the keys a family may omit.
pub(crate) struct Defaults {
    /// How norms compute.
    pub norm: NormStyle,
    /// `rms_norm_eps`.
    pub norm_eps: f64,
    /// `head_dim` (else `hidden_size / num_attention_heads`).
    pub head_dim: Option<usize>,
    /// The key naming the MLP's non-linearity (`hidden_act`; Gemma: `hidden_activation`), and its default.
    pub activation: (&'static str, &'static str),
    /// `tie_word_embeddings`.
    pub tie_word_embeddings: bool,
    /// `max_position_embeddings`.
    pub context_len: usize,
    /// `rope_theta`.
    pub rope_theta: f64,
    /// The sizes transformers' config class fills in when the file omits them (Gemma 3's published
    /// `text_config`s give only a few keys), in order: `vocab_size`, `hidden_size`, `intermediate_size`,
    /// `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`. `None`: the key is required (a wrong
    /// default is still caught against the tensors' shapes before loading).
    pub sizes: [Option<usize>; 6],
}

impl Defaults {
    /// Llama's.
    pub const LLAMA: Self = Self {
        norm: NormStyle::Rms,
        norm_eps: 1e-6,
        head_dim: None,
        activation: ("hidden_act", "silu"),
        tie_word_embeddings: false,
        context_len: 2048,
        rope_theta: 10_000.0,
        sizes: [None; 6],
    };
}

/// Typed reads of one config's keys, with messages that name the key.
pub(crate) struct Fields<'a> {
    path: &'a Path,
    /// `architectures[0]` as found, for [`Fields::unsupported`].
    architecture: &'a str,
    map: &'a Map<String, Value>,
    /// The top level, when `map` is a multimodal config's `text_config`: consulted for keys `map` lacks.
    outer: Option<&'a Map<String, Value>>,
}

impl Fields<'_> {
    pub fn path(&self) -> &Path {
        self.path
    }

    pub fn error(&self, reason: String) -> Error {
        Error::ModelConfig {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// A setting the runtime does not implement in an otherwise supported family: the pair is then an
    /// unsupported architecture (weight diff and skipped sections), not a broken config.
    pub fn unsupported(&self, setting: &str) -> Error {
        Error::UnsupportedArchitecture {
            path: self.path.to_path_buf(),
            found: format!("{} with {setting}", self.architecture),
            supported: families::supported(),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).or_else(|| self.outer.and_then(|o| o.get(key)))
    }

    /// Whether the key is present (even as null).
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The top-level `model_type`.
    pub fn model_type(&self) -> &str {
        self.outer
            .unwrap_or(self.map)
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.error(format!("\"{key}\" must be a non-negative integer, found {v}"))),
        }
    }

    pub fn required(&self, key: &str) -> Result<usize> {
        self.usize(key)?
            .ok_or_else(|| self.error(format!("missing \"{key}\"; is this config.json complete?")))
    }

    fn f64_in(&self, map: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(format!("\"{key}\" must be a number, found {v}"))),
        }
    }

    /// A number that must be finite and above 0 (`rope_theta`, norm epsilons, RoPE scaling factors, softcaps):
    /// 0 or below turns activations into NaN, which would then be blamed on the weights.
    fn positive_f64_in(&self, map: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
        match self.f64_in(map, key)? {
            Some(v) if !(v.is_finite() && v > 0.0) => Err(self.error(format!(
                "\"{key}\" must be a finite number above 0, found {v}; the model would compute NaN"
            ))),
            other => Ok(other),
        }
    }

    /// [`Fields::positive_f64_in`] at the top of the config.
    pub fn positive_f64(&self, key: &str) -> Result<Option<f64>> {
        if self.map.contains_key(key) {
            self.positive_f64_in(self.map, key)
        } else {
            self.outer.map_or(Ok(None), |o| self.positive_f64_in(o, key))
        }
    }

    /// A softcap: `default` when the key is absent, none when it is null, else a positive number.
    pub fn softcap(&self, key: &str, default: Option<f64>) -> Result<Option<f64>> {
        if self.has(key) {
            self.positive_f64(key)
        } else {
            Ok(default)
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.error(format!("\"{key}\" must be true or false, found {v}"))),
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// `layer_types` as sliding (true) or full (false) attention, when listed.
    pub fn layer_types(&self) -> Result<Option<Vec<bool>>> {
        let Some(list) = self.get("layer_types").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let Some(list) = list.as_array() else {
            return Err(self.error(format!("\"layer_types\" must be a list, found {list}")));
        };
        list.iter()
            .map(|kind| match kind.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(self.unsupported(&format!(
                    "layer type {kind} (supported: sliding_attention, full_attention)"
                ))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Phi-3's long-context RoPE, as transformers' `_compute_longrope_parameters` reads it: the pre-training
    /// length from the top-level `original_max_position_embeddings` (else the entry's, else the context), and,
    /// unless the entry gives `attention_factor`, √(1 + ln s / ln original) with s = context / original (1 when
    /// s ≤ 1).
    fn long_rope(&self, entry: &Map<String, Value>) -> Result<RopeScaling> {
        let factors = |key: &str| -> Result<Vec<f64>> {
            let list = entry
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| self.error(format!("rope scaling \"longrope\" needs \"{key}\", a list of numbers")))?;
            list.iter()
                .map(|v| match v.as_f64() {
                    Some(f) if f.is_finite() && f > 0.0 => Ok(f),
                    _ => Err(self.error(format!("\"{key}\" must hold finite numbers above 0, found {v}"))),
                })
                .collect()
        };
        let context = self.usize("max_position_embeddings")?;
        let original = match self.usize("original_max_position_embeddings")? {
            Some(o) => Some(o),
            None => entry
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
                .and_then(|o| usize::try_from(o).ok()),
        };
        let Some(original) = original.or(context).filter(|&o| o > 1) else {
            return Err(
                self.error("rope scaling \"longrope\" needs \"original_max_position_embeddings\" above 1".into())
            );
        };
        #[allow(clippy::cast_precision_loss)]
        let attention_factor = match self.positive_f64_in(entry, "attention_factor")? {
            Some(a) => a,
            None => {
                let scale = context.map_or(1.0, |c| c as f64 / original as f64);
                if scale <= 1.0 {
                    1.0
                } else {
                    (1.0 + scale.ln() / (original as f64).ln()).sqrt()
                }
            }
        };
        Ok(RopeScaling::LongRope {
            short_factor: factors("short_factor")?,
            long_factor: factors("long_factor")?,
            original_max_position_embeddings: original,
            attention_factor,
        })
    }

    /// The keys every Hugging Face decoder shares, read with `defaults`; a family then sets its block options.
    pub fn decoder(&self, spec: &'static Spec, architecture: String, defaults: &Defaults) -> Result<ModelConfig> {
        let [vocab, hidden, intermediate, layers, heads, kv_heads] = defaults.sizes;
        let size = |key: &str, default: Option<usize>| match self.usize(key)? {
            Some(v) => Ok(v),
            None => default.map_or_else(|| self.required(key), Ok),
        };
        let hidden_size = size("hidden_size", hidden)?;
        let num_heads = size("num_attention_heads", heads)?;
        let head_dim = match self.usize("head_dim")?.or(defaults.head_dim) {
            Some(d) => d,
            None if num_heads > 0 && hidden_size.is_multiple_of(num_heads) => hidden_size / num_heads,
            None => {
                return Err(self.error(format!(
                    "hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads} and no head_dim \
                     is given"
                )));
            }
        };
        let (activation_key, default_activation) = defaults.activation;
        let activation = match self.str(activation_key).unwrap_or(default_activation) {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            other => {
                return Err(self.unsupported(&format!(
                    "{activation_key} \"{other}\" (supported: silu, gelu_pytorch_tanh, gelu, relu)"
                )));
            }
        };
        let (rope, local_rope, rotary_fraction) = self.ropes(defaults.rope_theta)?;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rotary_dim = (head_dim as f64 * rotary_fraction) as usize;
        let attention_bias = self.bool("attention_bias", false)?;
        Ok(ModelConfig {
            path: self.path.to_path_buf(),
            architecture,
            family: Family::of(spec),
            vocab_size: size("vocab_size", vocab)?,
            hidden_size,
            num_layers: size("num_hidden_layers", layers)?,
            num_heads,
            num_kv_heads: size("num_key_value_heads", kv_heads.or(Some(num_heads)))?,
            head_dim,
            intermediate_size: size("intermediate_size", intermediate)?,
            norm_eps: self.positive_f64("rms_norm_eps")?.unwrap_or(defaults.norm_eps),
            norm: defaults.norm,
            rope: Some(rope),
            local_rope,
            rotary_dim,
            context_len: self.usize("max_position_embeddings")?.unwrap_or(defaults.context_len),
            tie_word_embeddings: self.bool("tie_word_embeddings", defaults.tie_word_embeddings)?,
            qkv_bias: attention_bias,
            o_bias: attention_bias,
            mlp_bias: self.bool("mlp_bias", false)?,
            activation,
            block: BlockOptions::default(),
        })
    }

    /// The global RoPE, the sliding layers' RoPE when the config gives one apart (transformers 5's per-type
    /// `rope_parameters`), and the rotated fraction of each head (`partial_rotary_factor`).
    fn ropes(&self, default_theta: f64) -> Result<(RopeConfig, Option<RopeConfig>, f64)> {
        let nested = self.get("rope_parameters").and_then(Value::as_object);
        let per_type = nested.filter(|p| p.contains_key("full_attention") || p.contains_key("sliding_attention"));
        let (global, local) = match per_type {
            Some(p) => (
                p.get("full_attention").and_then(Value::as_object),
                p.get("sliding_attention").and_then(Value::as_object),
            ),
            None => (nested, None),
        };
        let fraction_in = |map: Option<&Map<String, Value>>| match map {
            Some(m) => self.positive_f64_in(m, "partial_rotary_factor"),
            None => Ok(None),
        };
        let fraction = match fraction_in(global)? {
            Some(f) => Some(f),
            None => self.positive_f64("partial_rotary_factor")?,
        };
        let fraction = fraction.unwrap_or(1.0);
        if fraction > 1.0 {
            return Err(self.error(format!("\"partial_rotary_factor\" is {fraction}; it must be at most 1")));
        }
        // Old style: rope_theta at the top, scaling under rope_scaling.
        let old_scaling = self.get("rope_scaling").and_then(Value::as_object);
        let top_theta = self.positive_f64("rope_theta")?.unwrap_or(default_theta);
        let global = match global {
            Some(g) => self.rope_in(g, top_theta)?,
            None => match old_scaling {
                Some(s) => self.rope_in(s, top_theta)?,
                None => RopeConfig::plain(top_theta),
            },
        };
        // transformers reads a sliding_attention entry without a base as rope_local_base_freq's.
        let local_theta = self.positive_f64("rope_local_base_freq")?.unwrap_or(10_000.0);
        let local = local.map(|l| self.rope_in(l, local_theta)).transpose()?;
        Ok((global, local, fraction))
    }

    /// One RoPE entry: `rope_theta` (else `default_theta`) and its scaling.
    fn rope_in(&self, entry: &Map<String, Value>, default_theta: f64) -> Result<RopeConfig> {
        let theta = self.positive_f64_in(entry, "rope_theta")?.unwrap_or(default_theta);
        let rope_type = entry
            .get("rope_type")
            .or_else(|| entry.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let number = |key: &str| {
            self.positive_f64_in(entry, key)?
                .ok_or_else(|| self.error(format!("rope scaling \"{rope_type}\" needs \"{key}\"")))
        };
        let scaling = match rope_type {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: number("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_position_embeddings: number("original_max_position_embeddings")?,
            },
            "longrope" | "su" => self.long_rope(entry)?,
            other => {
                return Err(self.unsupported(&format!(
                    "rope type \"{other}\" (supported: default, linear, llama3, longrope)"
                )));
            }
        };
        Ok(RopeConfig { theta, scaling })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig> {
        ModelConfig::from_json(Path::new("config.json"), &serde_json::from_str(json).unwrap())
    }

    const LLAMA3: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":2048,
        "intermediate_size":8192,"num_attention_heads":32,"num_hidden_layers":16,"num_key_value_heads":8,
        "vocab_size":128256,"rms_norm_eps":1e-5,"rope_theta":500000.0,"max_position_embeddings":131072,
        "rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,
        "original_max_position_embeddings":8192,"rope_type":"llama3"},"tie_word_embeddings":true,
        "torch_dtype":"bfloat16"}"#;

    #[test]
    fn llama3_with_old_style_rope_scaling() {
        let c = parse(LLAMA3).unwrap();
        assert_eq!(c.family.id(), "llama");
        assert_eq!((c.head_dim, c.num_kv_heads, c.context_len), (64, 8, 131_072));
        let rope = c.rope.unwrap();
        assert_eq!(rope.theta, 500_000.0);
        assert!(matches!(rope.scaling, RopeScaling::Llama3 { factor, .. } if factor == 32.0));
        assert!(c.tie_word_embeddings && !c.qkv_bias);
    }

    #[test]
    fn transformers5_nested_rope_parameters() {
        let c = parse(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":2,"vocab_size":512,"head_dim":16,
            "rope_parameters":{"rope_theta":1000.0,"rope_type":"default"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.rope,
            Some(RopeConfig {
                theta: 1000.0,
                scaling: RopeScaling::None
            })
        );
        assert_eq!(c.num_kv_heads, 4);
    }

    #[test]
    fn qwen2_has_qkv_bias_and_mistral_a_window() {
        let q = parse(
            r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":64,
            "intermediate_size":128,"num_attention_heads":4,"num_hidden_layers":2,"num_key_value_heads":2,
            "vocab_size":512,"rope_theta":1000000.0,"use_sliding_window":false,"sliding_window":32}"#,
        )
        .unwrap();
        assert!(q.qkv_bias && !q.o_bias && q.block.sliding_window.is_none());
        let m = parse(
            r#"{"architectures":["MistralForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":2,"num_key_value_heads":1,"vocab_size":512,
            "sliding_window":4096}"#,
        )
        .unwrap();
        assert_eq!(m.block.sliding_window, Some(4096));
        let windowed = parse(
            r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":4,"vocab_size":512,"use_sliding_window":true,
            "sliding_window":16,"max_window_layers":2}"#,
        )
        .unwrap();
        assert_eq!(
            (windowed.block.sliding_window, windowed.block.sliding_layers.clone()),
            (Some(16), SlidingLayers::From(2))
        );
        assert_eq!((windowed.window(1), windowed.window(2)), (None, Some(16)));
    }

    #[test]
    fn gpt2_dialect() {
        let c = parse(
            r#"{"architectures":["GPT2LMHeadModel"],"model_type":"gpt2","n_embd":64,"n_head":4,"n_layer":2,
            "n_positions":128,"vocab_size":512,"n_inner":null,"activation_function":"gelu_new"}"#,
        )
        .unwrap();
        assert_eq!((c.family.id(), c.head_dim, c.intermediate_size), ("gpt2", 16, 256));
        assert!(c.tie_word_embeddings && c.rope.is_none());
    }

    #[test]
    fn clear_errors() {
        let e = parse(r#"{"architectures":["BertModel"],"model_type":"bert"}"#).unwrap_err();
        assert!(matches!(e, Error::UnsupportedArchitecture { .. }));
        assert!(e.to_string().contains("BertModel") && e.to_string().contains("Qwen2ForCausalLM"));
        let e = parse(r#"{"model_type":"llama","hidden_size":64}"#).unwrap_err();
        assert!(e.to_string().contains("missing \"num_attention_heads\""), "{e}");
        let e = parse(
            r#"{"model_type":"llama","hidden_size":64,"intermediate_size":1,"num_attention_heads":4,
            "num_hidden_layers":1,"vocab_size":8,"num_key_value_heads":3}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot be shared"), "{e}");
        let e = parse(
            r#"{"model_type":"llama","hidden_size":64,"intermediate_size":1,"num_attention_heads":4,
            "num_hidden_layers":1,"vocab_size":8,"rope_scaling":{"type":"yarn","factor":4.0}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::UnsupportedArchitecture { .. }), "{e}");
        assert!(e.to_string().contains("with rope type \"yarn\""), "{e}");
    }

    #[test]
    fn theta_and_epsilons_must_be_finite_and_positive() {
        const SIZES: &str = r#""model_type":"llama","hidden_size":64,"intermediate_size":1,"num_attention_heads":4,
            "num_hidden_layers":1,"vocab_size":8"#;
        for (extra, key) in [
            (r#""rope_theta":0"#, "rope_theta"),
            (r#""rope_parameters":{"rope_theta":-1.0}"#, "rope_theta"),
            (r#""rms_norm_eps":-1e-6"#, "rms_norm_eps"),
            (r#""rope_scaling":{"type":"linear","factor":0}"#, "factor"),
        ] {
            let e = parse(&format!("{{{SIZES},{extra}}}")).unwrap_err().to_string();
            assert!(e.contains(&format!("\"{key}\" must be a finite number above 0")), "{e}");
        }
        let e = parse(
            r#"{"model_type":"gpt2","n_embd":8,"n_head":2,"n_layer":1,"vocab_size":8,
            "layer_norm_epsilon":0.0}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("layer_norm_epsilon"), "{e}");
        let e = parse(&format!(
            "{{{}}}",
            SIZES.replace("\"intermediate_size\":1", "\"intermediate_size\":0")
        ))
        .unwrap_err();
        assert!(e.to_string().contains("\"intermediate_size\" is 0"), "{e}");
    }

    #[test]
    fn gemma2_as_released() {
        let c = parse(
            r#"{"architectures":["Gemma2ForCausalLM"],"attn_logit_softcapping":50.0,"final_logit_softcapping":30.0,
            "head_dim":256,"hidden_activation":"gelu_pytorch_tanh","hidden_size":2304,"intermediate_size":9216,
            "max_position_embeddings":8192,"model_type":"gemma2","num_attention_heads":8,"num_hidden_layers":26,
            "num_key_value_heads":4,"query_pre_attn_scalar":256,"rms_norm_eps":1e-06,"rope_theta":10000.0,
            "sliding_window":4096,"vocab_size":256000}"#,
        )
        .unwrap();
        assert_eq!(c.family.id(), "gemma2");
        assert_eq!((c.block.attn_softcap, c.block.final_softcap), (Some(50.0), Some(30.0)));
        assert_eq!((c.norm, c.activation), (NormStyle::OnePlusWeight, Activation::GeluTanh));
        assert!(c.block.embed_scale && c.tie_word_embeddings && c.block.qk_norm.is_none());
        // Layer 0 slides, layer 1 is global, alternating.
        assert_eq!(
            (c.window(0), c.window(1), c.window(24), c.window(25)),
            (Some(4096), None, Some(4096), None)
        );
        assert_eq!(c.block.query_pre_attn_scalar, Some(256.0));
        assert_eq!(
            c.family.piece_name(super::super::Piece::MlpNorm),
            Some("pre_feedforward_layernorm")
        );
    }

    #[test]
    fn gemma3_multimodal_reads_its_text_config_and_both_ropes() {
        let c = parse(
            // google/gemma-3-4b-it's config as published: the text_config gives only a few keys, transformers'
            // Gemma3TextConfig the rest.
            r#"{"architectures":["Gemma3ForConditionalGeneration"],"model_type":"gemma3",
            "text_config":{"hidden_size":2560,"intermediate_size":10240,"model_type":"gemma3_text",
            "num_hidden_layers":34,"rope_scaling":{"factor":8.0,"rope_type":"linear"},"sliding_window":1024},
            "vision_config":{"hidden_size":1152},"final_logit_softcapping":30.0}"#,
        )
        .unwrap();
        assert_eq!((c.family.id(), c.num_layers, c.vocab_size), ("gemma3", 34, 262_208));
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (8, 4, 256));
        assert_eq!(c.block.query_pre_attn_scalar, Some(256.0));
        assert_eq!(c.block.qk_norm, Some(QkNorm::PerHead));
        // Only Gemma3ForCausalLM caps its logits.
        assert_eq!((c.block.attn_softcap, c.block.final_softcap), (None, None));
        // Every sixth layer is global, with the scaled 1e6 base; the others slide with the local 1e4 base.
        assert_eq!((c.window(4), c.window(5), c.window(6)), (Some(1024), None, Some(1024)));
        let global = c.rope_of(5).unwrap();
        assert_eq!(global.theta, 1e6);
        assert!(matches!(global.scaling, RopeScaling::Linear { factor } if factor == 8.0));
        assert_eq!(
            c.rope_of(4),
            Some(&RopeConfig {
                theta: 1e4,
                scaling: RopeScaling::None
            })
        );
        // transformers 5: the two ropes under rope_parameters, keyed by layer type; layer_types listed.
        let c = parse(
            r#"{"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text","head_dim":16,"hidden_size":32,
            "intermediate_size":64,"num_attention_heads":4,"num_hidden_layers":3,"num_key_value_heads":2,
            "vocab_size":512,"sliding_window":8,
            "layer_types":["sliding_attention","full_attention","sliding_attention"],
            "rope_parameters":{"full_attention":{"rope_type":"linear","factor":8.0,"rope_theta":1000000.0},
            "sliding_attention":{"rope_type":"default","rope_theta":10000.0}}}"#,
        )
        .unwrap();
        assert_eq!((c.window(0), c.window(1), c.window(2)), (Some(8), None, Some(8)));
        assert_eq!(c.rope_of(0).unwrap().theta, 1e4);
        assert_eq!(c.rope_of(1).unwrap().theta, 1e6);
        let e = parse(
            r#"{"architectures":["Gemma3ForCausalLM"],"hidden_size":32,"intermediate_size":64,
            "num_attention_heads":4,"num_hidden_layers":2,"vocab_size":512,"layer_types":["sliding_attention"]}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("layer_types lists 1 layers but num_hidden_layers is 2"),
            "{e}"
        );
    }

    #[test]
    fn qwen3_phi3_olmo2_as_released() {
        let q = parse(
            r#"{"architectures":["Qwen3ForCausalLM"],"head_dim":128,"hidden_size":1024,"intermediate_size":3072,
            "max_position_embeddings":40960,"max_window_layers":28,"model_type":"qwen3","num_attention_heads":16,
            "num_hidden_layers":28,"num_key_value_heads":8,"rms_norm_eps":1e-06,"rope_scaling":null,
            "rope_theta":1000000,"sliding_window":null,"tie_word_embeddings":true,"use_sliding_window":false,
            "vocab_size":151936}"#,
        )
        .unwrap();
        assert_eq!(
            (q.family.id(), q.head_dim, q.block.qk_norm),
            ("qwen3", 128, Some(QkNorm::PerHead))
        );
        assert!(q.window(0).is_none() && !q.qkv_bias && q.tie_word_embeddings);
        let p = parse(
            r#"{"architectures":["Phi3ForCausalLM"],"hidden_size":3072,"intermediate_size":8192,
            "max_position_embeddings":4096,"model_type":"phi3","num_attention_heads":32,"num_hidden_layers":32,
            "num_key_value_heads":32,"original_max_position_embeddings":4096,"rms_norm_eps":1e-05,
            "rope_scaling":null,"rope_theta":10000.0,"sliding_window":2047,"tie_word_embeddings":false,
            "vocab_size":32064}"#,
        )
        .unwrap();
        assert_eq!((p.family.id(), p.head_dim, p.rotary_dim), ("phi3", 96, 96));
        assert_eq!(
            p.family.piece_name(super::super::Piece::QueryKeyValue),
            Some("self_attn.qkv_proj")
        );
        let partial = parse(
            r#"{"architectures":["Phi3ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":2,"vocab_size":512,"partial_rotary_factor":0.75}"#,
        )
        .unwrap();
        assert_eq!((partial.head_dim, partial.rotary_dim), (16, 12));
        // Phi-3-mini-128k's shape of longrope: the attention factor from the context ratio, the switch at 4096.
        let long = |factors: &str| {
            parse(&format!(
                r#"{{"architectures":["Phi3ForCausalLM"],"hidden_size":64,"intermediate_size":128,
                "num_attention_heads":4,"num_hidden_layers":2,"vocab_size":512,"max_position_embeddings":131072,
                "original_max_position_embeddings":4096,
                "rope_scaling":{{"type":"longrope","short_factor":{factors},"long_factor":{factors}}}}}"#
            ))
        };
        let c = long("[1,1,1,1,1,1,1,1]").unwrap();
        assert_eq!(c.length_switch(), Some(4096));
        let RopeScaling::LongRope { attention_factor, .. } = c.rope.unwrap().scaling else {
            panic!("longrope")
        };
        assert!((attention_factor - (1.0 + 32f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-12);
        let e = long("[1.0]").unwrap_err();
        assert!(e.to_string().contains("needs 8 each"), "{e}");
        let o = parse(
            r#"{"architectures":["Olmo2ForCausalLM"],"hidden_size":2048,"intermediate_size":8192,
            "max_position_embeddings":4096,"model_type":"olmo2","num_attention_heads":16,"num_hidden_layers":16,
            "num_key_value_heads":16,"rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":500000,
            "tie_word_embeddings":false,"vocab_size":100352,"attention_bias":false}"#,
        )
        .unwrap();
        assert_eq!(
            (o.family.id(), o.block.qk_norm, o.norm),
            ("olmo2", Some(QkNorm::Whole), NormStyle::F32Weight)
        );
        assert_eq!(o.family.piece_name(super::super::Piece::AttnNorm), None);
    }

    #[test]
    fn a_listed_architecture_without_a_language_model_head_selects_nothing() {
        for arch in [
            "Gemma2ForSequenceClassification",
            "Qwen3Model",
            "LlamaForTokenClassification",
        ] {
            let json = format!(
                r#"{{"architectures":["{arch}"],"model_type":"gemma2","hidden_size":64,"intermediate_size":128,
                "num_attention_heads":4,"num_hidden_layers":2,"vocab_size":512}}"#
            );
            let e = parse(&json).unwrap_err();
            assert!(matches!(e, Error::UnsupportedArchitecture { .. }), "{arch}: {e}");
            assert!(e.to_string().contains(arch), "{e}");
        }
        let e = parse(
            r#"{"architectures":["Gemma2ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":2,"vocab_size":512,"hidden_activation":"gelu_fancy"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::UnsupportedArchitecture { .. }), "{e}");
        assert!(e.to_string().contains("hidden_activation \"gelu_fancy\""), "{e}");
    }

    #[test]
    fn mixtures_of_experts_are_refused_by_name() {
        for json in [
            r#"{"architectures":["Qwen3MoeForCausalLM"],"model_type":"qwen3_moe","hidden_size":64}"#,
            r#"{"architectures":["MixtralForCausalLM"],"model_type":"mixtral"}"#,
            r#"{"architectures":["SomethingForCausalLM"],"model_type":"llama","num_local_experts":8}"#,
        ] {
            let e = parse(json).unwrap_err();
            assert!(matches!(e, Error::UnsupportedArchitecture { .. }), "{e}");
            assert!(
                e.to_string().contains("a mixture of experts; only dense models run"),
                "{e}"
            );
            assert!(e.to_string().contains("Gemma2ForCausalLM"), "{e}");
        }
    }
}
