//! Behavioural analyses: both models run on the same prompts.
//!
//! [`ModelPair::load`] builds the two models and the shared tokenizer (or says which file is missing);
//! [`prepare_prompts`] turns a prompt set into token ids that fit the context; each analysis takes both.

pub mod behaviour;
mod pair;
mod prepare;

pub use behaviour::{BehaviourOptions, SectionHeader, behaviour};
pub use pair::{ModelPair, PairOptions};
pub use prepare::{EncodedPrompt, prepare_prompts};
