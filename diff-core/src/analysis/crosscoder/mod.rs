//! Crosscoders: a sparse dictionary trained on both models' residual streams at once (docs/methods.md,
//! "Crosscoders").
//!
//! [`collect`] runs the pair on a prompt set and streams their paired activations at one hook to disk, in the
//! format [`activations`] documents and reads back.

pub mod activations;
mod collect;

pub use activations::{ActivationSet, Manifest, ModelNorm, Shard, ShardRows};
pub use collect::{CollectOptions, collect, prepare_dir};
