//! Reads a model's tensors by their Hugging Face names, checks their shapes against `config.json`, and places them
//! on the device in the run's dtype, one tensor at a time.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use super::config::NormStyle;
use super::layers::{Linear, Norm};
use crate::checkpoint::{TensorInfo, TensorSource};
use crate::error::{Error, Result};

/// Prefixes that checkpoints add or omit around the module names: `model.` (Llama), `transformer.` (GPT-2), and
/// the language tower of a multimodal checkpoint (`model.language_model.` since transformers 4.52,
/// `language_model.model.` and `language_model.` before). Longest first, so stripping finds the whole prefix.
pub(crate) const PREFIXES: [&str; 5] = [
    "model.language_model.",
    "language_model.model.",
    "language_model.",
    "model.",
    "transformer.",
];

/// The name under which `tensors` holds `name`, trying it with and without the usual prefixes.
pub(crate) fn resolve_name(tensors: &BTreeMap<String, TensorInfo>, name: &str) -> Option<String> {
    if tensors.contains_key(name) {
        return Some(name.to_string());
    }
    let bare = PREFIXES.iter().find_map(|p| name.strip_prefix(p)).unwrap_or(name);
    std::iter::once(bare.to_string())
        .chain(PREFIXES.iter().map(|prefix| format!("{prefix}{bare}")))
        .find(|candidate| tensors.contains_key(candidate))
}

pub(crate) struct Loader<'a> {
    pub source: &'a dyn TensorSource,
    pub label: &'a str,
    pub device: &'a Device,
    pub dtype: DType,
}

impl Loader<'_> {
    fn error(&self, tensor: &str, reason: String) -> Error {
        Error::ModelWeights {
            model: self.label.to_string(),
            tensor: tensor.to_string(),
            reason,
        }
    }

    /// Reads `name`, which must have `shape` (as stored on disk), in the run dtype.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.tensor_in(name, shape, self.dtype)
    }

    /// [`Loader::tensor`] in `dtype`.
    fn tensor_in(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let resolved = resolve_name(self.source.tensors(), name).ok_or_else(|| {
            self.error(
                name,
                "is missing; is config.json the one that belongs to these weights?".to_string(),
            )
        })?;
        let info = &self.source.tensors()[&resolved];
        if info.shape != shape {
            return Err(self.error(
                &resolved,
                format!("has shape {:?} but config.json implies {shape:?}", info.shape),
            ));
        }
        let data = self.source.read(&resolved)?.into_vec();
        let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
        Ok(t.to_dtype(dtype)?.to_device(self.device)?)
    }

    /// `{prefix}.weight` `[out, in]` and, when `bias`, `{prefix}.bias` `[out]`.
    pub fn linear(&self, prefix: &str, out: usize, input: usize, bias: bool) -> Result<Linear> {
        let weight = self.tensor(&format!("{prefix}.weight"), &[out, input])?;
        let bias = if bias {
            Some(self.tensor(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias))
    }

    /// The norm `{prefix}` of width `width`, computed as `style` says.
    pub fn norm(&self, prefix: &str, width: usize, style: NormStyle, eps: f64) -> Result<Norm> {
        let weight = format!("{prefix}.weight");
        let eps = narrow_eps(eps);
        Ok(match style {
            NormStyle::Rms => Norm::Rms {
                weight: self.tensor(&weight, &[width])?,
                eps,
            },
            // Norm weights stay f32 whatever the run dtype: these families weight in f32 (transformers upcasts).
            NormStyle::F32Weight => Norm::RmsF32 {
                weight: self.tensor_in(&weight, &[width], DType::F32)?,
                eps,
            },
            // Gemma scales by (1 + w), with the 1 added in f32.
            NormStyle::OnePlusWeight => Norm::RmsF32 {
                weight: (self.tensor_in(&weight, &[width], DType::F32)? + 1.0)?,
                eps,
            },
            NormStyle::Layer => self.layer_norm(prefix, width, f64::from(eps))?,
        })
    }

    /// LayerNorm `{prefix}.weight` and `{prefix}.bias`.
    pub fn layer_norm(&self, prefix: &str, width: usize, eps: f64) -> Result<Norm> {
        Ok(Norm::Layer {
            weight: self.tensor(&format!("{prefix}.weight"), &[width])?,
            bias: self.tensor(&format!("{prefix}.bias"), &[width])?,
            eps: narrow_eps(eps),
        })
    }
}

#[allow(clippy::cast_possible_truncation)]
fn narrow_eps(eps: f64) -> f32 {
    eps as f32
}
