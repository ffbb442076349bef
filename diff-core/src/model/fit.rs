//! `config.json` against the tensors it describes, before anything is allocated.
//!
//! The runtime allocates by the config's numbers: a config of 10^12 layers aborted the process in an allocation
//! before a tensor was read, and one of fewer layers than the weights ran a model cut short (the extra blocks
//! ignored, KL 0, "the models agree"). So the layer count that the tensor names hold must equal the config's, and
//! the tensors that carry each size (embedding, the first block's projections, the unembedding, GPT-2's position
//! table) must have the shapes the config implies. The loader still checks every tensor as it reads it.

use std::collections::{BTreeMap, BTreeSet};

use super::config::ModelConfig;
use super::families::decoder;
use super::loader::{PREFIXES, resolve_name};
use crate::checkpoint::TensorInfo;
use crate::error::{Error, Result};

/// One tensor that carries config sizes: its name, its shape as stored (u128, so products cannot overflow), and
/// the config keys that give that shape.
pub(crate) struct Expected {
    pub tensor: String,
    pub shape: [u128; 2],
    pub keys: &'static str,
}

impl ModelConfig {
    /// Checks the layer count and every size against `tensors` (of the checkpoint named `weights` in messages).
    ///
    /// # Errors
    /// [`Error::ConfigContradictsWeights`] naming the config value and what the weights hold.
    pub fn check_against(&self, tensors: &BTreeMap<String, TensorInfo>, weights: &str) -> Result<()> {
        let contradicts = |reason: String| Error::ConfigContradictsWeights {
            config: self.path.clone(),
            weights: weights.to_string(),
            reason,
        };
        let layout = &self.family.spec().layout;
        let (layers_key, block_prefix) = (layout.keys.layers, layout.blocks);
        let layers = layer_indices(tensors, block_prefix);
        if layers.len() != self.num_layers {
            let held = match (layers.first(), layers.last()) {
                (Some(first), Some(last)) => {
                    format!(
                        "{} layers ({block_prefix}.{first} to {block_prefix}.{last})",
                        layers.len()
                    )
                }
                _ => format!("no layers (no tensor named {block_prefix}.N.*)"),
            };
            return Err(contradicts(format!(
                "{layers_key} is {} but the weights hold {held}",
                self.num_layers
            )));
        }
        for expected in decoder::expected_shapes(self) {
            let Some(name) = resolve_name(tensors, &expected.tensor) else {
                continue; // The loader names a missing tensor; only sizes matter here.
            };
            let Some(info) = tensors.get(&name) else {
                continue;
            };
            let actual: Vec<u128> = info.shape.iter().map(|&d| d as u128).collect();
            if actual != expected.shape {
                return Err(contradicts(format!(
                    "{name} is {:?} but {} give {:?}",
                    info.shape, expected.keys, expected.shape
                )));
            }
        }
        Ok(())
    }
}

/// The block indices `i` of tensors named `{prefix}.{i}.…` (with or without the checkpoint's `model.` /
/// `transformer.` prefix).
fn layer_indices(tensors: &BTreeMap<String, TensorInfo>, prefix: &str) -> BTreeSet<usize> {
    let bare = prefix.strip_prefix("model.").unwrap_or(prefix);
    tensors
        .keys()
        .filter_map(|name| {
            let name = PREFIXES.iter().find_map(|p| name.strip_prefix(p)).unwrap_or(name);
            let rest = name.strip_prefix(bare)?.strip_prefix('.')?;
            rest.split_once('.')?.0.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn tensors(entries: &[(&str, &[usize])]) -> BTreeMap<String, TensorInfo> {
        entries
            .iter()
            .map(|(name, shape)| {
                (
                    (*name).to_string(),
                    TensorInfo {
                        dtype: "F32".into(),
                        shape: shape.to_vec(),
                    },
                )
            })
            .collect()
    }

    fn llama(layers: u64, hidden: u64) -> ModelConfig {
        let json = serde_json::json!({"model_type": "llama", "hidden_size": hidden, "intermediate_size": 32,
            "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": layers, "vocab_size": 10});
        ModelConfig::from_json(Path::new("config.json"), &json).unwrap()
    }

    const WEIGHTS: [(&str, &[usize]); 5] = [
        ("model.embed_tokens.weight", &[10, 8]),
        ("model.layers.0.self_attn.q_proj.weight", &[8, 8]),
        ("model.layers.0.self_attn.k_proj.weight", &[4, 8]),
        ("model.layers.1.mlp.gate_proj.weight", &[32, 8]),
        ("lm_head.weight", &[10, 8]),
    ];

    #[test]
    fn layer_counts_and_sizes_must_match_the_tensors() {
        let weights = tensors(&WEIGHTS);
        llama(2, 8).check_against(&weights, "w").unwrap();
        for (config, needle) in [
            (
                llama(1, 8),
                "num_hidden_layers is 1 but the weights hold 2 layers (model.layers.0 to model.layers.1)",
            ),
            (llama(1_000_000_000_000, 8), "num_hidden_layers is 1000000000000"),
            (
                llama(2, 1 << 40),
                "model.embed_tokens.weight is [10, 8] but vocab_size × hidden_size give",
            ),
        ] {
            let e = config.check_against(&weights, "w").unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let unprefixed = tensors(&[("layers.0.x", &[1]), ("layers.1.x", &[1])]);
        assert_eq!(layer_indices(&unprefixed, "model.layers").len(), 2);
        let gpt2 = tensors(&[("transformer.h.0.x", &[1]), ("h.1.x", &[1]), ("h.x", &[1])]);
        assert_eq!(layer_indices(&gpt2, "h").into_iter().collect::<Vec<_>>(), [0, 1]);
    }
}
