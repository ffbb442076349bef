//! Reads a model's tensors by their Hugging Face names, checks their shapes against `config.json`, and places them
//! on the device in the run's dtype, one tensor at a time.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use super::layers::{Linear, Norm};
use crate::checkpoint::{TensorInfo, TensorSource};
use crate::error::{Error, Result};

/// Prefixes that checkpoints add or omit around the module names (`model.` for Llama, `transformer.` for GPT-2).
const PREFIXES: [&str; 2] = ["model.", "transformer."];

/// The name under which `tensors` holds `name`, trying it with and without the usual prefixes.
pub(crate) fn resolve_name(tensors: &BTreeMap<String, TensorInfo>, name: &str) -> Option<String> {
    if tensors.contains_key(name) {
        return Some(name.to_string());
    }
    PREFIXES.iter().find_map(|prefix| {
        let candidate = match name.strip_prefix(prefix) {
            Some(stripped) => stripped.to_string(),
            None => format!("{prefix}{name}"),
        };
        tensors.contains_key(&candidate).then_some(candidate)
    })
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

    /// Reads `name`, which must have `shape` (as stored on disk).
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
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
        Ok(t.to_dtype(self.dtype)?.to_device(self.device)?)
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

    /// RMSNorm `{prefix}.weight`.
    pub fn rms_norm(&self, prefix: &str, width: usize, eps: f64) -> Result<Norm> {
        Ok(Norm::Rms {
            weight: self.tensor(&format!("{prefix}.weight"), &[width])?,
            eps: narrow_eps(eps),
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
