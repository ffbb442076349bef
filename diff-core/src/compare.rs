//! `compare`: runs the requested analyses on a base/tuned pair and assembles one [`Report`].

use std::collections::BTreeMap;
use std::time::Instant;

use crate::checkpoint::{Checkpoint, pair_tensors};
use crate::error::Result;
use crate::progress::Progress;
use crate::report::{Inputs, Method, Report, SCHEMA_VERSION, Settings, SkippedSection};
use crate::weights::{SpectrumOptions, diff_weights};

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    /// Methods asked for, deduplicated and sorted.
    pub methods: Vec<Method>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Singular value settings (its `seed` is overwritten by `seed`).
    pub spectrum: SpectrumOptions,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            methods: Method::ALL.to_vec(),
            seed: 0,
            spectrum: SpectrumOptions::default(),
        }
    }
}

/// Compares `base` and `tuned`.
///
/// Methods that this version cannot compute are listed in [`Report::skipped`] with the reason.
///
/// # Errors
/// Pairing failures ([`crate::Error::NothingPaired`]), read errors, and internal failures.
pub fn compare(
    base: &Checkpoint,
    tuned: &Checkpoint,
    opts: &CompareOptions,
    progress: &dyn Progress,
) -> Result<Report> {
    let mut methods = opts.methods.clone();
    methods.sort();
    methods.dedup();
    let mut timings_ms = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut weights = None;

    for &method in &methods {
        let started = Instant::now();
        match method {
            Method::Weights => {
                let pairing = pair_tensors(base.source().tensors(), tuned.source().tensors())?;
                let spectrum = SpectrumOptions {
                    seed: opts.seed,
                    ..opts.spectrum.clone()
                };
                weights = Some(diff_weights(
                    base.source(),
                    tuned.source(),
                    pairing,
                    &spectrum,
                    progress,
                )?);
            }
            other => skipped.push(SkippedSection {
                section: other.section().to_string(),
                method: other,
                reason: format!("not implemented in mdiff {}", env!("CARGO_PKG_VERSION")),
            }),
        }
        timings_ms.insert(method.name().to_string(), started.elapsed().as_secs_f64() * 1e3);
    }

    Ok(Report {
        schema_version: SCHEMA_VERSION.to_string(),
        mdiff_version: env!("CARGO_PKG_VERSION").to_string(),
        inputs: Inputs {
            base: base.describe(),
            tuned: tuned.describe(),
        },
        settings: Settings {
            seed: opts.seed,
            methods,
            device: "cpu".into(),
        },
        weights,
        skipped,
        timings_ms,
    })
}
