//! The `weights` section: per-tensor ΔW statistics, singular values, and roll-ups per layer and component.

pub(crate) mod matmul;
mod naming;
mod rollup;
mod spectrum;
mod stats;

pub use naming::{component, layer_index};
pub use spectrum::{SpectrumOptions, spectrum, stream_of};
pub use stats::{CHANGE_TOLERANCE, PairStats, pair_stats};

use rayon::prelude::*;

use crate::checkpoint::{FloatDtype, Pair, Pairing, TensorSource};
use crate::error::Result;
use crate::progress::{Progress, checkpoint};
use crate::report::{SkippedTensor, TensorDiff, WeightTotals, WeightsSection};

/// Diffs every pair, in parallel on rayon's pool; memory is bounded by the tensors in flight (one ΔW each).
///
/// # Errors
/// Read errors of either source (including a failed LoRA merge), an internal error in the spectrum, or
/// [`crate::Error::Interrupted`] when `progress` says stop.
pub fn diff_weights(
    base: &dyn TensorSource,
    tuned: &dyn TensorSource,
    pairing: Pairing,
    opts: &SpectrumOptions,
    progress: &dyn Progress,
) -> Result<WeightsSection> {
    let total_elements: u64 = pairing.pairs.iter().map(|p| p.base.num_elements()).sum();
    progress.begin("weights", total_elements);
    let outcomes: Vec<Result<Outcome>> = pairing
        .pairs
        .par_iter()
        .map(|pair| {
            // A stop request skips the pairs not started yet; the first error below returns it.
            checkpoint(progress)?;
            let outcome = diff_pair(base, tuned, pair, opts);
            progress.advance(pair.base.num_elements());
            outcome
        })
        .collect();
    progress.end();

    let mut tensors = Vec::new();
    let mut skipped_tensors = Vec::new();
    for outcome in outcomes {
        match outcome? {
            Outcome::Diffed(diff) => tensors.push(*diff),
            Outcome::Skipped(skip) => skipped_tensors.push(skip),
        }
    }
    let (layers, components, layer_components) = rollup::rollups(&tensors);
    Ok(WeightsSection {
        spectrum_settings: opts.clone(),
        totals: totals(&tensors),
        tensors,
        layers,
        components,
        layer_components,
        unmatched_base: pairing.unmatched_base,
        unmatched_tuned: pairing.unmatched_tuned,
        shape_mismatches: pairing.shape_mismatches,
        dtype_mismatches: pairing.dtype_mismatches,
        skipped_tensors,
    })
}

enum Outcome {
    Diffed(Box<TensorDiff>),
    Skipped(SkippedTensor),
}

fn diff_pair(
    base: &dyn TensorSource,
    tuned: &dyn TensorSource,
    pair: &Pair,
    opts: &SpectrumOptions,
) -> Result<Outcome> {
    for (side, info) in [("base", &pair.base), ("tuned", &pair.tuned)] {
        if FloatDtype::parse(&info.dtype).is_none() {
            return Ok(Outcome::Skipped(SkippedTensor {
                name: pair.name.clone(),
                reason: format!("{side} dtype {} is not F32, F16 or BF16", info.dtype),
            }));
        }
    }
    // Taken out rather than borrowed: while the spectrum waits for its parallel row groups, this thread may run
    // another pair's task, which then finds the slot empty and allocates instead of panicking on a double borrow.
    let mut delta = DELTA.take();
    let stats = {
        let base_data = base.read(&pair.base_name)?;
        let tuned_data = tuned.read(&pair.tuned_name)?;
        pair_stats(&base_data, &tuned_data, &mut delta)
    };
    let spectrum = match pair.base.shape[..] {
        [rows, cols] if stats.delta_sq > 0.0 && opts.top_k > 0 => Some(spectrum(
            &delta,
            rows,
            cols,
            stats.delta_sq,
            opts,
            stream_of(&pair.name),
        )?),
        _ => None,
    };
    DELTA.set(delta);
    Ok(Outcome::Diffed(Box::new(tensor_diff(pair, &stats, spectrum))))
}

thread_local! {
    /// ΔW of the tensor this worker is on. Kept between tensors: a fresh allocation per tensor costs a page fault
    /// and a zeroed page per 4 KiB, a third of the run time on a multi-GB checkpoint. Its size is bounded by the
    /// largest tensor, once per worker.
    static DELTA: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

fn tensor_diff(pair: &Pair, s: &PairStats, spectrum: Option<crate::report::Spectrum>) -> TensorDiff {
    let (base_norm, tuned_norm) = (s.base_sq.sqrt(), s.tuned_sq.sqrt());
    let per_entry = |count: u64| {
        if s.num_elements == 0 {
            0.0
        } else {
            count as f64 / s.num_elements as f64
        }
    };
    TensorDiff {
        name: pair.name.clone(),
        base_name: pair.base_name.clone(),
        tuned_name: pair.tuned_name.clone(),
        shape: pair.base.shape.clone(),
        dtype_base: pair.base.dtype.clone(),
        dtype_tuned: pair.tuned.dtype.clone(),
        layer: layer_index(&pair.name),
        component: component(&pair.name),
        num_elements: s.num_elements,
        base_norm,
        tuned_norm,
        delta_norm: s.delta_sq.sqrt(),
        relative: (base_norm > 0.0).then(|| s.delta_sq.sqrt() / base_norm),
        cosine: (base_norm > 0.0 && tuned_norm > 0.0).then(|| (s.dot / (base_norm * tuned_norm)).clamp(-1.0, 1.0)),
        max_abs_delta: s.max_abs_delta,
        mean_abs_delta: if s.num_finite == 0 {
            0.0
        } else {
            s.abs_delta_sum / s.num_finite as f64
        },
        num_changed: s.num_changed,
        changed_fraction: per_entry(s.num_changed),
        changed_fraction_tol: per_entry(s.num_changed_tol),
        non_finite: s.non_finite,
        spectrum,
    }
}

fn totals(tensors: &[TensorDiff]) -> WeightTotals {
    // fold from +0.0: an empty f64 `sum()` is -0.0, which would be written as such.
    let base_sq = tensors.iter().fold(0.0, |acc, t| acc + t.base_norm * t.base_norm);
    let delta_sq = tensors.iter().fold(0.0, |acc, t| acc + t.delta_norm * t.delta_norm);
    WeightTotals {
        num_tensors: tensors.len(),
        num_changed: tensors.iter().filter(|t| t.num_changed > 0).count(),
        num_parameters: tensors.iter().map(|t| t.num_elements).sum(),
        num_changed_parameters: tensors.iter().map(|t| t.num_changed).sum(),
        base_norm: base_sq.sqrt(),
        delta_norm: delta_sq.sqrt(),
        relative: if base_sq > 0.0 {
            (delta_sq / base_sq).sqrt()
        } else {
            0.0
        },
    }
}
