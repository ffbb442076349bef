//! `config.json` → the few numbers a forward pass needs, across the dialects real checkpoints use.
//!
//! transformers ≥ 5 nests RoPE settings under `rope_parameters`; older files put `rope_theta` at the top level and
//! scaling under `rope_scaling` (with `type` or `rope_type`). GPT-2 spells everything differently (`n_embd`,
//! `n_layer`, ...). Defaults are transformers' own where a field is optional; sizes are required, because guessing
//! them would silently build the wrong model.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Architectures the runtime implements, as `architectures[0]` names them.
pub const SUPPORTED: &str =
    "LlamaForCausalLM (Llama 2/3, SmolLM, TinyLlama), MistralForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel";

/// Block layout family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Pre-norm RMSNorm, RoPE, grouped-query attention, SwiGLU MLP (Llama, Mistral, Qwen2).
    Llama,
    /// Pre-norm LayerNorm, learned positions, fused QKV `Conv1D`, GELU MLP.
    Gpt2,
}

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
}

/// Rotary position embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Base of the frequencies.
    pub theta: f64,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

/// Everything the runtime reads from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Where it came from.
    pub path: PathBuf,
    /// `architectures[0]` (or the `model_type` when that list is missing).
    pub architecture: String,
    /// Block layout.
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
    /// RoPE settings (`None` for learned positions).
    pub rope: Option<RopeConfig>,
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
    /// Each query sees at most this many keys (Mistral; Qwen2 with `use_sliding_window`).
    pub sliding_window: Option<usize>,
    /// First layer the sliding window applies to (Qwen2's `max_window_layers`; 0 for Mistral).
    pub sliding_window_from_layer: usize,
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
        let Value::Object(map) = value else {
            return Err(Error::ModelConfig {
                path: path.to_path_buf(),
                reason: "not a JSON object".into(),
            });
        };
        let fields = Fields { path, map };
        let architecture = map
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .or_else(|| map.get("model_type").and_then(Value::as_str))
            .unwrap_or("(none)")
            .to_string();
        let model_type = map.get("model_type").and_then(Value::as_str).unwrap_or("");
        let kind = match (architecture.as_str(), model_type) {
            ("LlamaForCausalLM", _) | (_, "llama") => Kind::Llama,
            ("MistralForCausalLM", _) | (_, "mistral") => Kind::Mistral,
            ("Qwen2ForCausalLM", _) | (_, "qwen2") => Kind::Qwen2,
            ("GPT2LMHeadModel", _) | (_, "gpt2") => Kind::Gpt2,
            _ => {
                return Err(Error::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    found: if model_type.is_empty() || architecture == model_type {
                        architecture
                    } else {
                        format!("{architecture} (model_type {model_type})")
                    },
                    supported: SUPPORTED.into(),
                });
            }
        };
        let config = match kind {
            Kind::Gpt2 => fields.gpt2(architecture)?,
            _ => fields.llama(kind, architecture)?,
        };
        config.validate()
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
        if self.rope.is_some() && !self.head_dim.is_multiple_of(2) {
            return Err(bad(format!("RoPE needs an even head_dim, found {}", self.head_dim)));
        }
        if self.family == Family::Gpt2 && self.head_dim * self.num_heads != self.hidden_size {
            return Err(bad(format!(
                "n_embd {} is not divisible by n_head {}",
                self.hidden_size, self.num_heads
            )));
        }
        let gpt2 = self.family == Family::Gpt2;
        let sizes = [
            (if gpt2 { "n_layer" } else { "num_hidden_layers" }, self.num_layers),
            (if gpt2 { "n_embd" } else { "hidden_size" }, self.hidden_size),
            ("vocab_size", self.vocab_size),
            (
                if gpt2 { "n_inner" } else { "intermediate_size" },
                self.intermediate_size,
            ),
            ("head_dim", self.head_dim),
            (
                if gpt2 { "n_positions" } else { "max_position_embeddings" },
                self.context_len,
            ),
        ];
        if let Some((key, _)) = sizes.iter().find(|(_, size)| *size == 0) {
            return Err(bad(format!("\"{key}\" is 0; every size of a model must be positive")));
        }
        Ok(self)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Llama,
    Mistral,
    Qwen2,
    Gpt2,
}

struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn error(&self, reason: String) -> Error {
        Error::ModelConfig {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.error(format!("\"{key}\" must be a non-negative integer, found {v}"))),
        }
    }

    fn required(&self, key: &str) -> Result<usize> {
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

    /// A number that must be finite and above 0 (`rope_theta`, norm epsilons, RoPE scaling factors): 0 or below
    /// turns activations into NaN, which would then be blamed on the weights.
    fn positive_f64_in(&self, map: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
        match self.f64_in(map, key)? {
            Some(v) if !(v.is_finite() && v > 0.0) => Err(self.error(format!(
                "\"{key}\" must be a finite number above 0, found {v}; the model would compute NaN"
            ))),
            other => Ok(other),
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.error(format!("\"{key}\" must be true or false, found {v}"))),
        }
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.map.get(key).and_then(Value::as_str)
    }

    fn llama(&self, kind: Kind, architecture: String) -> Result<ModelConfig> {
        let hidden_size = self.required("hidden_size")?;
        let num_heads = self.required("num_attention_heads")?;
        let head_dim = match self.usize("head_dim")? {
            Some(d) => d,
            None if num_heads > 0 && hidden_size.is_multiple_of(num_heads) => hidden_size / num_heads,
            None => {
                return Err(self.error(format!(
                    "hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads} and no head_dim \
                     is given"
                )));
            }
        };
        let activation = match self.str("hidden_act").unwrap_or("silu") {
            "silu" | "swish" => Activation::Silu,
            other => return Err(self.error(format!("hidden_act \"{other}\" is not supported (expected silu)"))),
        };
        let default_context = match kind {
            Kind::Mistral => 4096 * 32,
            Kind::Qwen2 => 32768,
            _ => 2048,
        };
        // As transformers: Mistral defaults to a 4096 window unless the key is explicitly null; Qwen2 windows only
        // layers from max_window_layers on, and only with use_sliding_window.
        let (sliding_window, sliding_window_from_layer) = match kind {
            Kind::Mistral if !self.map.contains_key("sliding_window") => (Some(4096), 0),
            Kind::Mistral => (self.usize("sliding_window")?, 0),
            Kind::Qwen2 if self.bool("use_sliding_window", false)? => (
                self.usize("sliding_window")?,
                self.usize("max_window_layers")?.unwrap_or(28),
            ),
            _ => (None, 0),
        };
        let attention_bias = self.bool("attention_bias", false)?;
        Ok(ModelConfig {
            path: self.path.to_path_buf(),
            architecture,
            family: Family::Llama,
            vocab_size: self.required("vocab_size")?,
            hidden_size,
            num_layers: self.required("num_hidden_layers")?,
            num_heads,
            num_kv_heads: self.usize("num_key_value_heads")?.unwrap_or(num_heads),
            head_dim,
            intermediate_size: self.required("intermediate_size")?,
            norm_eps: self.positive_f64_in(self.map, "rms_norm_eps")?.unwrap_or(1e-6),
            rope: Some(self.rope()?),
            context_len: self.usize("max_position_embeddings")?.unwrap_or(default_context),
            tie_word_embeddings: self.bool("tie_word_embeddings", false)?,
            // Qwen2 always has q/k/v biases and never an output bias.
            qkv_bias: kind == Kind::Qwen2 || attention_bias,
            o_bias: kind != Kind::Qwen2 && attention_bias,
            mlp_bias: self.bool("mlp_bias", false)?,
            activation,
            sliding_window,
            sliding_window_from_layer,
            scale_attn_by_inverse_layer_idx: false,
        })
    }

    fn rope(&self) -> Result<RopeConfig> {
        // transformers ≥ 5: everything under rope_parameters; before: rope_theta + rope_scaling.
        let nested = self.map.get("rope_parameters").and_then(Value::as_object);
        let scaling = nested.or_else(|| self.map.get("rope_scaling").and_then(Value::as_object));
        let theta = match nested {
            Some(p) => self.positive_f64_in(p, "rope_theta")?,
            None => None,
        };
        let theta = match theta {
            Some(t) => t,
            None => self.positive_f64_in(self.map, "rope_theta")?.unwrap_or(10_000.0),
        };
        let Some(scaling) = scaling else {
            return Ok(RopeConfig {
                theta,
                scaling: RopeScaling::None,
            });
        };
        let rope_type = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let number = |key: &str| {
            self.positive_f64_in(scaling, key)?
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
            other => {
                return Err(self.error(format!(
                    "rope type \"{other}\" is not supported (supported: default, linear, llama3)"
                )));
            }
        };
        Ok(RopeConfig { theta, scaling })
    }

    fn gpt2(&self, architecture: String) -> Result<ModelConfig> {
        let hidden_size = self.required("n_embd")?;
        let num_heads = self.required("n_head")?;
        let activation = match self.str("activation_function").unwrap_or("gelu_new") {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            other => return Err(self.error(format!("activation_function \"{other}\" is not supported"))),
        };
        if !self.bool("scale_attn_weights", true)? {
            return Err(self.error("scale_attn_weights = false is not supported".into()));
        }
        Ok(ModelConfig {
            path: self.path.to_path_buf(),
            architecture,
            family: Family::Gpt2,
            vocab_size: self.required("vocab_size")?,
            hidden_size,
            num_layers: self.required("n_layer")?,
            num_heads,
            num_kv_heads: num_heads,
            head_dim: hidden_size.checked_div(num_heads).unwrap_or(0),
            intermediate_size: match self.usize("n_inner")? {
                Some(inner) => inner,
                None => hidden_size
                    .checked_mul(4)
                    .ok_or_else(|| self.error(format!("\"n_embd\" {hidden_size} is too large")))?,
            },
            norm_eps: self.positive_f64_in(self.map, "layer_norm_epsilon")?.unwrap_or(1e-5),
            rope: None,
            context_len: self.usize("n_positions")?.unwrap_or(1024),
            tie_word_embeddings: self.bool("tie_word_embeddings", true)?,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            activation,
            sliding_window: None,
            sliding_window_from_layer: 0,
            scale_attn_by_inverse_layer_idx: self.bool("scale_attn_by_inverse_layer_idx", false)?,
        })
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
        assert_eq!(c.family, Family::Llama);
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
        assert!(q.qkv_bias && !q.o_bias && q.sliding_window.is_none());
        let m = parse(
            r#"{"architectures":["MistralForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":2,"num_key_value_heads":1,"vocab_size":512,
            "sliding_window":4096}"#,
        )
        .unwrap();
        assert_eq!(m.sliding_window, Some(4096));
        let windowed = parse(
            r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":4,"vocab_size":512,"use_sliding_window":true,
            "sliding_window":16,"max_window_layers":2}"#,
        )
        .unwrap();
        assert_eq!(
            (windowed.sliding_window, windowed.sliding_window_from_layer),
            (Some(16), 2)
        );
    }

    #[test]
    fn gpt2_dialect() {
        let c = parse(
            r#"{"architectures":["GPT2LMHeadModel"],"model_type":"gpt2","n_embd":64,"n_head":4,"n_layer":2,
            "n_positions":128,"vocab_size":512,"n_inner":null,"activation_function":"gelu_new"}"#,
        )
        .unwrap();
        assert_eq!((c.family, c.head_dim, c.intermediate_size), (Family::Gpt2, 16, 256));
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
        assert!(e.to_string().contains("\"yarn\" is not supported"), "{e}");
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
}
