//! The `lens` section: the logit lens on both models' residual streams, layer by layer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Distribution, TokenProb};

/// Where along the depth the two models' predictions part (docs/methods.md, "Logit lens").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LensSection {
    /// Prompts the lens ran on: the first ones of the prompt set, up to `max_positions` positions.
    pub num_prompts: usize,
    /// Positions scored at every point (non-finite ones left out).
    pub num_positions: u64,
    /// The position budget (`--lens-positions`).
    pub max_positions: usize,
    /// The embedding, then each block's output, in depth order.
    pub points: Vec<LensPoint>,
    /// Index into `points` of the first point whose mean drift reaches 10% of the last point's, if any drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onset: Option<usize>,
    /// The positions with the largest final KL(tuned‖base), with both models' top tokens at every point.
    pub top_positions: Vec<LensPosition>,
    /// Positions left out because some point's logits were not finite, or a KL there was infinite.
    pub non_finite_positions: u64,
}

/// One residual-stream point read through the lens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LensPoint {
    /// TransformerLens name: `blocks.0.hook_resid_pre` for the embedding, else `blocks.{L}.hook_resid_post`.
    pub hook: String,
    /// The block whose output this is; absent for the embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// KL(lens_tuned ‖ lens_base) over the positions: each model's residual through its own final norm and
    /// unembedding. Absent when no position was finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Distribution>,
    /// Mean KL(cross ‖ lens_base), cross = the tuned residual through the base's final norm and unembedding: the
    /// part of the drift the residual stream carries (equal to the drift when the readout did not change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_drift: Option<f64>,
    /// Mean KL(lens_base ‖ the base's output): how far the base's prediction here is from its final one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_to_final: Option<f64>,
    /// Mean KL(lens_tuned ‖ the tuned model's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_to_final: Option<f64>,
    /// Share of positions where both lenses' most likely tokens agree (0 when none was finite; the means above are
    /// then absent).
    pub top1_agreement: f64,
}

/// Both models' top tokens at every lens point, at one position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LensPosition {
    /// Prompt index in the prompt set.
    pub prompt: usize,
    /// Token position in the prompt.
    pub position: usize,
    /// The token at the position.
    pub token: String,
    /// The token after it, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// KL(tuned‖base) of the two models' outputs here.
    pub kl_tuned_base: f64,
    /// Per point, in `points` order: the base lens's top tokens.
    pub top_base: Vec<Vec<TokenProb>>,
    /// Per point: the tuned lens's top tokens.
    pub top_tuned: Vec<Vec<TokenProb>>,
}
