//! Crosscoders: a sparse dictionary trained on both models' residual streams at once (docs/methods.md,
//! "Crosscoders").
//!
//! [`collect`] runs the pair on a prompt set and streams their paired activations at one hook to disk, in the
//! format [`activations`] documents and reads back.

pub mod activations;
mod analyze;
mod collect;
mod dictionary;
mod kernels;
mod on_pair;
mod stream;
mod tensor_file;
mod train;

pub use activations::{
    ActivationSet, ActivationWriter, CollectDir, Manifest, ModelNorm, Shard, ShardRows, prepare_collect_dir,
};
pub use analyze::{AnalyzeOptions, analyze};
pub use collect::{CollectOptions, check_new_or_empty, collect, prepare_dir};
pub use dictionary::{CONFIG_FILE, Crosscoder, CrosscoderConfig, Sparsity, TrainedFor, WEIGHTS_FILE, read_config};
pub use kernels::Sparse;
pub use on_pair::{CrosscoderOptions, crosscoder};
pub use train::{StepStats, TrainOptions, TrainSummary, train};
