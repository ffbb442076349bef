//! Behavioural analyses: both models run on the same prompts.
//!
//! [`PairPlan::prepare`] checks the configs and loads the shared tokenizer (or says which file is missing, or that
//! the runtime lacks the architecture);
//! [`prepare_prompts`] turns a prompt set into token ids that fit the context; [`PairPlan::load`] then reads both
//! models' weights into a [`ModelPair`], which each analysis takes with the prompts.

mod batch;
pub mod behaviour;
pub mod crosscoder;
mod lens;
mod outcome;
mod pair;
mod patch;
mod prepare;
mod scored;
mod scoring;
mod swap;

pub use behaviour::{BehaviourOptions, SectionHeader, behaviour};
pub use lens::{LensOptions, lens};
pub use outcome::Outcome;
pub use pair::{ModelPair, PairOptions, PairPlan, PairReadiness};
pub use patch::{PatchOptions, PositionPrompts, patch};
pub use prepare::{EncodedPrompt, prepare_prompts, prepare_scored_prompts};
pub use scored::{check_score_methods, check_scored_positions};
pub use swap::{SwapOptions, swap};
// Report types, re-exported where the options that use them live.
pub use crate::report::{Granularity, Site};

use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};

/// Why the layer-by-layer methods (lens, swap, patching) cannot line the two models up, if they cannot: they
/// need one family, depth, width and vocabulary. Weights and KL still run on such a pair.
#[must_use]
pub fn layerwise_mismatch(base: &ModelConfig, tuned: &ModelConfig) -> Option<String> {
    let same = base.family == tuned.family
        && base.num_layers == tuned.num_layers
        && base.hidden_size == tuned.hidden_size
        && base.vocab_size == tuned.vocab_size;
    (!same).then(|| {
        format!(
            "the models differ in shape (base {} layers × {} wide, tuned {} × {}); layer-by-layer methods need              a model and its own fine-tune",
            base.num_layers, base.hidden_size, tuned.num_layers, tuned.hidden_size
        )
    })
}

/// Why swap and patching skip when the models' divergence is nothing to share out.
pub(crate) fn no_divergence(scored_positions: u64) -> String {
    if scored_positions == 0 {
        "no scored position: the models' outputs are not finite anywhere on these prompts".into()
    } else {
        format!(
            "the models' outputs agree at all {scored_positions} scored positions (KL = 0): there is no divergence \
             to localize"
        )
    }
}

/// [`layerwise_mismatch`] as an error, for the analyses' own guard.
pub(crate) fn check_same_shape(base: &Model, tuned: &Model) -> Result<()> {
    match layerwise_mismatch(base.config(), tuned.config()) {
        Some(reason) => Err(Error::Incompatible(reason)),
        None => Ok(()),
    }
}

/// The layers a localization sweep covers: `layers` (sorted, deduplicated), or all `n`.
///
/// # Errors
/// [`Error::Usage`] for a layer the models do not have.
pub fn selected_layers(layers: Option<&[usize]>, n: usize) -> Result<Vec<usize>> {
    let Some(layers) = layers else {
        return Ok((0..n).collect());
    };
    if let Some(bad) = layers.iter().find(|&&l| l >= n) {
        return Err(Error::Usage(format!(
            "--layers {bad} is out of range: the models have {n} layers, numbered 0 to {}",
            n.saturating_sub(1)
        )));
    }
    let mut layers = layers.to_vec();
    layers.sort_unstable();
    layers.dedup();
    Ok(layers)
}
