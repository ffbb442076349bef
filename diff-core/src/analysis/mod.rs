//! Behavioural analyses: both models run on the same prompts.
//!
//! [`PairPlan::prepare`] checks the configs and loads the shared tokenizer (or says which file is missing);
//! [`prepare_prompts`] turns a prompt set into token ids that fit the context; [`PairPlan::load`] then reads both
//! models' weights into a [`ModelPair`], which each analysis takes with the prompts.

mod batch;
pub mod behaviour;
mod lens;
mod pair;
mod prepare;

pub use behaviour::{BehaviourOptions, SectionHeader, behaviour};
pub use lens::{LensOptions, lens};
pub use pair::{ModelPair, PairOptions, PairPlan};
pub use prepare::{EncodedPrompt, prepare_prompts};
