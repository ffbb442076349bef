//! The `behaviour` section: per-token KL divergence between the two models on a prompt set.
//!
//! Position t of a prompt is the distribution of token t + 1 given tokens 0..=t; every position of every prompt
//! is scored. KL is in nats. Token strings are stored so readers need no tokenizer.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Per-token divergence of the tuned model from the base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BehaviourSection {
    /// Where the prompts came from: a path, or `built-in prompts`.
    pub prompts_source: String,
    /// Number of prompts scored.
    pub num_prompts: usize,
    /// Number of positions scored (all prompts).
    pub num_positions: u64,
    /// Dtype the models ran in (`f32`, `bf16`, `f16`); logits are always compared in f32.
    pub dtype: String,
    /// How many prompts were rendered with the tokenizer's chat template.
    pub chat_templated_prompts: usize,
    /// Headline statistics.
    pub summary: BehaviourSummary,
    /// The same statistics per prompt group (the prompts' `"group"`), by group name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupBehaviour>,
    /// One row per prompt, in prompt-file order.
    pub prompts: Vec<PromptBehaviour>,
    /// The positions with the largest KL(P_tuned‖P_base), largest first.
    pub top_positions: Vec<DivergentPosition>,
    /// Positions whose logits were NaN or infinite in either model, or whose KL is infinite; left out of every
    /// statistic.
    pub non_finite: NonFiniteLogits,
    /// Things the user should know (truncated prompts, skipped empty prompts, ...).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// How many most likely next tokens of each model every prompt row stores per position (0: none).
    #[serde(default)]
    pub token_top_k: usize,
    /// Display string of every token id named in the prompt rows' `top_base`/`top_tuned` lists.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub token_strings: BTreeMap<u32, String>,
    /// Positions left out of `summary`, the groups' summaries and `top_positions` because an earlier prompt has
    /// the same tokens up to and including them, so their values are copies (docs/methods.md, "Shared
    /// prefixes"). The prompt rows keep every position.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub folded_positions: u64,
}

impl BehaviourSection {
    /// How people name prompt `index`: its `id` from the prompt file, else the index.
    #[must_use]
    pub fn prompt_label(&self, index: usize) -> String {
        self.prompts
            .get(index)
            .and_then(|p| p.id.clone())
            .unwrap_or_else(|| index.to_string())
    }
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

/// Aggregates over every finite position (and over per-prompt means where named so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BehaviourSummary {
    /// KL(P_tuned‖P_base) over positions.
    pub kl_tuned_base: Option<Distribution>,
    /// KL(P_base‖P_tuned) over positions.
    pub kl_base_tuned: Option<Distribution>,
    /// Per-prompt mean KL(P_tuned‖P_base), summarized over prompts (each prompt weighs the same).
    pub kl_tuned_base_per_prompt: Option<Distribution>,
    /// Share of positions where both models' most likely token is the same.
    pub top1_agreement: Option<f64>,
    /// p_tuned − p_base of the token that actually comes next (positions with a next token).
    pub delta_p_next: Option<Distribution>,
    /// p_tuned − p_base of the base model's most likely token.
    pub delta_p_base_top: Option<Distribution>,
    /// Entropy of the base model's distribution.
    pub entropy_base: Option<Distribution>,
    /// Entropy of the tuned model's distribution.
    pub entropy_tuned: Option<Distribution>,
}

/// One prompt group's share of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupBehaviour {
    /// Prompts in the group.
    pub num_prompts: usize,
    /// Positions scored in the group's prompts (non-finite ones included).
    pub num_positions: u64,
    /// Aggregates over the group's finite positions, as the section's `summary`.
    pub summary: BehaviourSummary,
    /// The group's positions left out of its `summary` because an earlier prompt of the group has the same
    /// tokens up to and including them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub folded_positions: u64,
}

/// Summary of a set of values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Distribution {
    /// Number of values.
    pub n: u64,
    /// Mean.
    pub mean: f64,
    /// Standard error of the mean (sample standard deviation / √n).
    pub std_err: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Percentiles by linear interpolation (numpy's default), keyed `p0.1`, `p1`, `p5`, `p10`, `p50`, `p90`,
    /// `p95`, `p99`, `p99.9`.
    pub percentiles: BTreeMap<String, f64>,
}

/// One prompt's tokens and per-position divergence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromptBehaviour {
    /// 0-based index in the prompt set.
    pub index: usize,
    /// 1-based line in the prompt file (or position in the built-in set).
    pub line: usize,
    /// The prompt's `id` from the prompt file (JSONL, JSON or CSV), when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Leading positions whose whole token prefix an earlier prompt shares (a chat template's system prompt, say):
    /// kept here, left out of the section's summaries.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub shared_prefix_tokens: usize,
    /// The prompt's group, when the prompt file gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Whether it was rendered with the chat template.
    pub chat_template: bool,
    /// Display string of every token, as the models saw them.
    pub tokens: Vec<String>,
    /// KL(P_tuned‖P_base) at each position; `null` where logits were not finite.
    pub kl_tuned_base: Vec<Option<f64>>,
    /// KL(P_base‖P_tuned) at each position; `null` where logits were not finite.
    pub kl_base_tuned: Vec<Option<f64>>,
    /// Mean of `kl_tuned_base` over finite positions.
    pub mean_kl_tuned_base: Option<f64>,
    /// Mean of `kl_base_tuned` over finite positions.
    pub mean_kl_base_tuned: Option<f64>,
    /// Largest `kl_tuned_base`.
    pub max_kl_tuned_base: Option<f64>,
    /// p_tuned − p_base of the token that follows each position; `null` at the last position and where logits
    /// were not finite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delta_p_next: Vec<Option<f64>>,
    /// The base model's `token_top_k` most likely next tokens at each position as `[id, probability]`, most likely
    /// first (strings in the section's `token_strings`); an empty list where logits were not finite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_base: Vec<Vec<(u32, f32)>>,
    /// The tuned model's, as `top_base`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_tuned: Vec<Vec<(u32, f32)>>,
    /// Share of finite positions where both models' top token agrees.
    pub top1_agreement: Option<f64>,
    /// Tokens cut from the end because the prompt was longer than the context.
    #[serde(default)]
    pub truncated_tokens: usize,
}

/// A position where the models disagree most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DivergentPosition {
    /// Index of the prompt.
    pub prompt: usize,
    /// Position in the prompt (the distribution over the token after it).
    pub position: usize,
    /// The token at `position`.
    pub token: String,
    /// The token that actually follows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// KL(P_tuned‖P_base) here.
    pub kl_tuned_base: f64,
    /// KL(P_base‖P_tuned) here.
    pub kl_base_tuned: f64,
    /// Up to a few tokens before `position`, oldest first.
    pub context_before: Vec<String>,
    /// Up to a few tokens after `position`.
    pub context_after: Vec<String>,
    /// Most likely next tokens under the base model.
    pub top_base: Vec<TokenProb>,
    /// Most likely next tokens under the tuned model.
    pub top_tuned: Vec<TokenProb>,
}

/// A token and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenProb {
    /// Token id.
    pub id: u32,
    /// Display string.
    pub token: String,
    /// Probability.
    pub prob: f64,
}

/// Positions left out because a model produced NaN or infinite logits, or the KL there is infinite.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NonFiniteLogits {
    /// Positions with non-finite base logits.
    pub base_positions: u64,
    /// Positions with non-finite tuned logits.
    pub tuned_positions: u64,
    /// Positions with finite logits but an infinite KL (one model gives probability 0 to a token the other uses).
    #[serde(default)]
    pub infinite_kl_positions: u64,
    /// The first few affected positions as (prompt, position).
    pub examples: Vec<(usize, usize)>,
}
