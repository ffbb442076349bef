//! Per-position comparison of two next-token distributions and summaries of the results.
//!
//! [`compare_rows`] / [`compare_chunk`] turn a base and a tuned logit row into KL both ways, entropies and top
//! tokens ([`PositionStats`]); [`summarize`] turns many such values into a [`Summary`] (mean, standard error,
//! llama.cpp's percentiles); [`RunningMean`] keeps per-prompt means. Formulas: docs/methods.md, "Per-token KL".

mod kernels;
mod position;
mod prefix;
mod summary;

pub use position::{NextTokenProbs, NonFiniteSide, PositionStats, compare_chunk, compare_rows, top_k};
pub use prefix::shared_prefix_lengths;
pub use summary::{PERCENTILES, RunningMean, Summary, percentile_label, summarize};
