//! The `patching` section: activations copied between the two models' runs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where an activation is copied: `resid_pre`, `attn_out` or `mlp_out` (on the command line and in reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    /// `blocks.{L}.hook_resid_pre`.
    ResidPre,
    /// `blocks.{L}.hook_attn_out`.
    AttnOut,
    /// `blocks.{L}.hook_mlp_out`.
    MlpOut,
}

impl Site {
    /// Every site, in forward order within a block.
    pub const ALL: [Site; 3] = [Self::ResidPre, Self::AttnOut, Self::MlpOut];

    /// `resid_pre`, `attn_out`, `mlp_out`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ResidPre => "resid_pre",
            Self::AttnOut => "attn_out",
            Self::MlpOut => "mlp_out",
        }
    }
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Site {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|site| site.name() == s).ok_or_else(|| {
            Error::Usage(format!(
                "unknown patching site \"{s}\"; expected resid_pre, attn_out or mlp_out"
            ))
        })
    }
}

/// Which way activations are copied: `tuned_into_base` (clean = tuned, corrupt = base) or `base_into_tuned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatchDirection {
    /// The tuned model's activations into the base's run.
    TunedIntoBase,
    /// The base's activations into the tuned model's run.
    BaseIntoTuned,
}

impl PatchDirection {
    /// Both directions, in report order.
    pub const BOTH: [Self; 2] = [Self::TunedIntoBase, Self::BaseIntoTuned];

    /// `tuned_into_base` or `base_into_tuned`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::TunedIntoBase => "tuned_into_base",
            Self::BaseIntoTuned => "base_into_tuned",
        }
    }
}

impl std::fmt::Display for PatchDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which activations carry the change, found by copying them from one model's run into the other's
/// (docs/methods.md, "Activation patching").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatchSection {
    /// Prompts scored: the first ones of the prompt set, up to `max_positions` positions.
    pub num_prompts: usize,
    /// Positions scored (those where both KLs between the models are finite).
    pub num_positions: u64,
    /// The position budget (`--localize-positions`).
    pub max_positions: usize,
    /// Mean KL(tuned‖base): what `tuned_into_base` recovers a share of.
    pub kl_tuned_base: f64,
    /// Mean KL(base‖tuned): what `base_into_tuned` recovers a share of.
    pub kl_base_tuned: f64,
    /// One cell per hook and layer, every position patched at once; hooks in forward order.
    pub cells: Vec<PatchCell>,
    /// Per-position sweeps on chosen prompts (`--patch-positions`, `--patch-prompts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub position_sweeps: Vec<PositionSweep>,
    /// Work done against the naive one-full-forward-per-cell method.
    pub work: PatchWork,
}

/// One hook at one layer, patched at every position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatchCell {
    /// TransformerLens name, `blocks.{L}.hook_mlp_out`.
    pub hook: String,
    /// `resid_pre`, `attn_out` or `mlp_out`.
    pub site: Site,
    /// The block.
    pub layer: usize,
    /// Base run with the tuned model's activation: (KL(tuned‖base) − KL(tuned‖patched)) / KL(tuned‖base), means
    /// over the scored positions. Absent when a patched position was not finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_into_base: Option<f64>,
    /// Tuned run with the base's activation: (KL(base‖tuned) − KL(base‖patched)) / KL(base‖tuned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_into_tuned: Option<f64>,
}

/// Every layer × position of one prompt, patched one position at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PositionSweep {
    /// Prompt index in the prompt set.
    pub prompt: usize,
    /// The prompt's tokens, as the tokenizer writes them.
    pub tokens: Vec<String>,
    /// Mean KL(tuned‖base) over the prompt's positions.
    pub kl_tuned_base: f64,
    /// One grid per site and direction.
    pub grids: Vec<PositionGrid>,
}

/// Share recovered per layer and position: the prompt's summed KL, as in [`PatchCell`], with one position patched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PositionGrid {
    /// `resid_pre`, `attn_out` or `mlp_out`.
    pub site: Site,
    /// `tuned_into_base` or `base_into_tuned`.
    pub direction: PatchDirection,
    /// The layers of the rows.
    pub layers: Vec<usize>,
    /// `[layer][position]`; null where undefined (no divergence to recover, or a non-finite patched position).
    pub recovered: Vec<Vec<Option<f64>>>,
}

/// What the sweep evaluated, against one full forward pass per cell (TransformerLens's `get_act_patch_*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatchWork {
    /// Patched runs scored (cells × directions × prompts batches, per-position cells included).
    pub patched_runs: u64,
    /// Of those, runs whose patch changed nothing (both models' activations equal there): scored without running.
    pub identical_skipped: u64,
    /// Block evaluations run (half blocks count ½), per token row.
    pub layer_evaluations: f64,
    /// Block evaluations the naive method runs.
    pub naive_layer_evaluations: f64,
    /// Logit rows computed (unembeddings).
    pub unembedded_rows: u64,
    /// Logit rows the naive method computes.
    pub naive_unembedded_rows: u64,
    /// Forward passes run (each may hold several patched cells).
    pub forward_passes: u64,
}
