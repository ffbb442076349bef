//! The `swap` section: weight swapping, one part at a time, in both directions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What one swap row puts back: `component` or `tensor` (on the command line and in reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// Attention and MLP (each with its norm) per layer.
    Component,
    /// Each projection and norm per layer.
    Tensor,
}

impl Granularity {
    /// `component` or `tensor`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Component => "component",
            Self::Tensor => "tensor",
        }
    }
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Granularity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "component" => Ok(Self::Component),
            "tensor" => Ok(Self::Tensor),
            _ => Err(Error::Usage(format!(
                "unknown swap granularity \"{s}\"; expected component or tensor"
            ))),
        }
    }
}

/// Which parts of the tuned model carry the change, found by putting the base's weights back
/// (docs/methods.md, "Weight swap").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SwapSection {
    /// Prompts scored: the first ones of the prompt set, up to `max_positions` positions.
    pub num_prompts: usize,
    /// Positions scored (those where KL(tuned‖base) is finite).
    pub num_positions: u64,
    /// The position budget (`--localize-positions`).
    pub max_positions: usize,
    /// `component` (attention and MLP per layer) or `tensor` (each projection and norm).
    pub granularity: Granularity,
    /// Mean KL(tuned‖base) over the scored positions: the divergence the scores are shares of.
    pub kl_tuned_base: f64,
    /// One row per part, in depth order: `embed`, the blocks' parts, `ln_final`, `lm_head`.
    pub rows: Vec<SwapRow>,
    /// Whole blocks swapped together, per layer (blocks only: embedding, final norm and unembedding stay).
    pub cumulative: Vec<CumulativeSwap>,
}

/// One part swapped, in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SwapRow {
    /// `embed`, `layers.{L}.attn`, `layers.{L}.mlp` (or a Hugging Face module name at tensor granularity,
    /// `layers.{L}.self_attn.q_proj`), `ln_final`, `lm_head`.
    pub part: String,
    /// The block, for block parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// `attn` or `mlp` for block parts; else the part's name.
    pub component: String,
    /// Share of the divergence removed by giving the tuned model the base's part:
    /// 1 − KL̄(swapped‖base) / KL̄(tuned‖base). Absent when not every scored position was finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<f64>,
    /// Share of the divergence introduced by giving the base the tuned model's part:
    /// KL̄(swapped‖base) / KL̄(tuned‖base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced: Option<f64>,
    /// KL̄(swapped‖base) of the tuned model with the base's part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_removed: Option<f64>,
    /// KL̄(swapped‖base) of the base with the tuned model's part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_introduced: Option<f64>,
}

/// Blocks swapped together: all up to a layer, or all from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CumulativeSwap {
    /// The layer.
    pub layer: usize,
    /// Share removed when blocks 0..=layer of the tuned model are the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_removed: Option<f64>,
    /// Share removed when blocks layer.. of the tuned model are the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix_removed: Option<f64>,
    /// Share introduced when blocks 0..=layer of the base are the tuned model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_introduced: Option<f64>,
    /// Share introduced when blocks layer.. of the base are the tuned model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix_introduced: Option<f64>,
}
