//! One pass over a tensor pair: norms, cosine, |Δ| statistics and non-finite counts, accumulated in f64.

use crate::checkpoint::TensorData;
use crate::report::NonFinite;

/// Elements converted per block: big enough to amortize the call, small enough to stay in L2.
const BLOCK: usize = 1 << 14;

/// Relative threshold of `changed_fraction_tol`: |Δ| > `CHANGE_TOLERANCE` · max|W_base|.
pub const CHANGE_TOLERANCE: f64 = 1e-6;

/// Raw sums over the finite entries of one tensor pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairStats {
    /// Entries in the tensor.
    pub num_elements: u64,
    /// Σ b².
    pub base_sq: f64,
    /// Σ t².
    pub tuned_sq: f64,
    /// Σ b·t.
    pub dot: f64,
    /// Σ Δ².
    pub delta_sq: f64,
    /// Σ |Δ|.
    pub abs_delta_sum: f64,
    /// max |Δ|.
    pub max_abs_delta: f64,
    /// max |b|.
    pub max_abs_base: f64,
    /// Entries with Δ ≠ 0.
    pub num_changed: u64,
    /// Entries with |Δ| > `CHANGE_TOLERANCE` · max|b|.
    pub num_changed_tol: u64,
    /// Entries where both sides are finite (the denominator of the means).
    pub num_finite: u64,
    /// NaN/Inf counts.
    pub non_finite: NonFinite,
}

/// Streams both tensors once, returning the sums and ΔW = tuned − base as f32 (0 where either side is not finite,
/// so that the spectrum is not poisoned by a NaN).
#[must_use]
pub fn pair_stats(base: &TensorData<'_>, tuned: &TensorData<'_>) -> (PairStats, Vec<f32>) {
    let len = base.len().min(tuned.len());
    let mut s = PairStats {
        num_elements: len as u64,
        ..PairStats::default()
    };
    let mut delta = vec![0.0f32; len];
    let mut b_buf = vec![0.0f32; BLOCK];
    let mut t_buf = vec![0.0f32; BLOCK];
    for (block_idx, d_block) in delta.chunks_mut(BLOCK).enumerate() {
        let start = block_idx * BLOCK;
        let n = d_block.len();
        let (b_block, t_block) = (&mut b_buf[..n], &mut t_buf[..n]);
        base.read_into(start, b_block);
        tuned.read_into(start, t_block);
        for ((d, &b), &t) in d_block.iter_mut().zip(b_block.iter()).zip(t_block.iter()) {
            if !(b.is_finite() && t.is_finite()) {
                count_non_finite(&mut s.non_finite, b, t);
                continue;
            }
            let (b64, t64) = (f64::from(b), f64::from(t));
            let diff = t64 - b64;
            s.base_sq += b64 * b64;
            s.tuned_sq += t64 * t64;
            s.dot += b64 * t64;
            s.delta_sq += diff * diff;
            s.abs_delta_sum += diff.abs();
            s.max_abs_delta = s.max_abs_delta.max(diff.abs());
            s.max_abs_base = s.max_abs_base.max(b64.abs());
            s.num_changed += u64::from(t != b);
            s.num_finite += 1;
            *d = t - b;
        }
    }
    // The tolerance needs max|b| over the whole tensor, so it is a second (cheap, in-memory) pass over Δ.
    let threshold = CHANGE_TOLERANCE * s.max_abs_base;
    s.num_changed_tol = delta.iter().filter(|d| f64::from(d.abs()) > threshold).count() as u64;
    (s, delta)
}

fn count_non_finite(counts: &mut NonFinite, b: f32, t: f32) {
    counts.base_nan += u64::from(b.is_nan());
    counts.base_inf += u64::from(b.is_infinite());
    counts.tuned_nan += u64::from(t.is_nan());
    counts.tuned_inf += u64::from(t.is_infinite());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match_a_hand_computation_and_skip_non_finite_entries() {
        let base = TensorData::Owned(vec![1.0, 2.0, f32::NAN, 4.0]);
        let tuned = TensorData::Owned(vec![1.0, 3.0, 5.0, f32::INFINITY]);
        let (s, delta) = pair_stats(&base, &tuned);
        assert_eq!(delta, vec![0.0, 1.0, 0.0, 0.0]);
        assert_eq!((s.base_sq, s.tuned_sq, s.dot, s.delta_sq), (5.0, 10.0, 7.0, 1.0));
        assert_eq!((s.num_changed, s.num_finite, s.max_abs_base), (1, 2, 2.0));
        assert_eq!(
            s.non_finite,
            NonFinite {
                base_nan: 1,
                base_inf: 0,
                tuned_nan: 0,
                tuned_inf: 1
            }
        );
    }

    #[test]
    fn tolerance_ignores_changes_below_a_millionth_of_the_largest_weight() {
        let base = TensorData::Owned(vec![1000.0, 1.0, 1.0]);
        let tuned = TensorData::Owned(vec![1000.0, 1.0 + 1e-4, 1.01]);
        let (s, _) = pair_stats(&base, &tuned);
        assert_eq!((s.num_changed, s.num_changed_tol), (2, 1));
    }

    #[test]
    fn blocks_cover_tensors_longer_than_one_block() {
        let n = BLOCK * 2 + 3;
        let base = TensorData::Owned(vec![0.0; n]);
        let tuned = TensorData::Owned(vec![1.0; n]);
        let (s, delta) = pair_stats(&base, &tuned);
        assert_eq!(s.num_changed, n as u64);
        assert!(delta.iter().all(|&d| d == 1.0));
    }
}
