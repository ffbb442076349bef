//! `mdiff_core`: what changed when a language model was fine-tuned.
//!
//! Data flows one way: checkpoints ([`checkpoint`]) → analyses ([`weights`], ...) → one [`report::Report`].
//! Only [`report`] and [`error`] build without the default `compute` feature (the viewer's wasm build).

pub mod error;
pub mod gate;
pub mod report;
pub mod units;

#[cfg(feature = "compute")]
pub mod analysis;
#[cfg(feature = "compute")]
pub mod checkpoint;
#[cfg(feature = "compute")]
pub mod compare;
#[cfg(feature = "compute")]
pub mod digest;
#[cfg(feature = "compute")]
pub mod model;
#[cfg(feature = "compute")]
pub mod progress;
#[cfg(feature = "compute")]
mod rng;
#[cfg(feature = "compute")]
pub mod stats;
#[cfg(feature = "compute")]
pub mod text;
#[cfg(feature = "compute")]
pub mod weights;

pub use error::{Error, Result};
