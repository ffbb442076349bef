//! One pass over a tensor pair: norms, cosine, |Δ| statistics and non-finite counts, accumulated in f64.

use crate::checkpoint::TensorData;
use crate::report::NonFinite;

/// Elements converted per block: big enough to amortize the call, small enough to stay in L2.
const BLOCK: usize = 1 << 14;

/// Blocks between page releases: 4 Mi elements read, then their mapped pages go back to the OS.
const RELEASE_EVERY: usize = 256;

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

/// Independent accumulators per lane: one chain of f64 adds per lane lets the compiler use SIMD and hides add
/// latency; a single running sum would be latency-bound at one element per ~4 cycles. Four lanes of seven
/// accumulators fit the sixteen SSE registers of baseline x86-64.
const LANES: usize = 4;

#[derive(Default, Clone, Copy)]
struct Lanes {
    base_sq: [f64; LANES],
    tuned_sq: [f64; LANES],
    dot: [f64; LANES],
    delta_sq: [f64; LANES],
    abs_delta: [f64; LANES],
    max_abs_delta: [f64; LANES],
    max_abs_base: [f64; LANES],
    changed: [u64; LANES],
    /// Entries left out because either side is NaN or ±Inf.
    skipped: u64,
}

impl Lanes {
    /// Adds LANES finite pairs and writes their Δ. Each statement is a loop over lanes so it vectorizes.
    #[inline(always)]
    fn add_chunk(&mut self, b: &[f32; LANES], t: &[f32; LANES], d: &mut [f32; LANES]) {
        let b64: [f64; LANES] = std::array::from_fn(|i| f64::from(b[i]));
        let t64: [f64; LANES] = std::array::from_fn(|i| f64::from(t[i]));
        let diff: [f64; LANES] = std::array::from_fn(|i| t64[i] - b64[i]);
        for i in 0..LANES {
            self.base_sq[i] += b64[i] * b64[i];
            self.tuned_sq[i] += t64[i] * t64[i];
            self.dot[i] += b64[i] * t64[i];
            self.delta_sq[i] += diff[i] * diff[i];
            self.abs_delta[i] += diff[i].abs();
        }
        // Whole-array assignments, not per-lane conditional writes: the latter compile to masked stores that
        // keep the accumulators in memory.
        let (max_d, max_b) = (self.max_abs_delta, self.max_abs_base);
        self.max_abs_delta = std::array::from_fn(|i| max_d[i].max(diff[i].abs()));
        self.max_abs_base = std::array::from_fn(|i| max_b[i].max(b64[i].abs()));
        let changed = self.changed;
        self.changed = std::array::from_fn(|i| changed[i] + u64::from(t[i] != b[i]));
        *d = std::array::from_fn(|i| t[i] - b[i]);
    }

    /// Adds one finite pair to lane 0 and returns Δ.
    fn add(&mut self, b: f32, t: f32) -> f32 {
        let (mut d, mut b4, mut t4) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
        (b4[0], t4[0]) = (b, t);
        self.add_chunk(&b4, &t4, &mut d);
        d[0]
    }

    /// Adds one pair that may be non-finite; those only count.
    fn add_checked(&mut self, counts: &mut NonFinite, b: f32, t: f32) -> f32 {
        if b.is_finite() && t.is_finite() {
            self.add(b, t)
        } else {
            count_non_finite(counts, b, t);
            self.skipped += 1;
            0.0
        }
    }

    fn finish(self, s: &mut PairStats) {
        let sum = |a: [f64; LANES]| a.iter().sum::<f64>();
        let max = |a: [f64; LANES]| a.iter().fold(0.0f64, |m, &v| m.max(v));
        s.base_sq = sum(self.base_sq);
        s.tuned_sq = sum(self.tuned_sq);
        s.dot = sum(self.dot);
        s.delta_sq = sum(self.delta_sq);
        s.abs_delta_sum = sum(self.abs_delta);
        s.max_abs_delta = max(self.max_abs_delta);
        s.max_abs_base = max(self.max_abs_base);
        s.num_changed = self.changed.iter().sum();
        s.num_finite = s.num_elements - self.skipped;
    }
}

/// Streams both tensors once, returning the sums, and writes ΔW = tuned − base as f32 into `delta` (0 where
/// either side is not finite, so that the spectrum is not poisoned by a NaN).
///
/// `delta` is cleared and refilled, so a caller that reuses it across tensors pays for fresh pages only once.
pub fn pair_stats(base: &TensorData<'_>, tuned: &TensorData<'_>, delta: &mut Vec<f32>) -> PairStats {
    let len = base.len().min(tuned.len());
    let mut s = PairStats {
        num_elements: len as u64,
        ..PairStats::default()
    };
    let mut lanes = Lanes::default();
    delta.clear();
    delta.reserve(len);
    let mut b_buf = vec![0.0f32; BLOCK];
    let mut t_buf = vec![0.0f32; BLOCK];
    let mut d_buf = vec![0.0f32; BLOCK];
    for block_idx in 0..len.div_ceil(BLOCK) {
        let start = block_idx * BLOCK;
        let n = BLOCK.min(len - start);
        let d_block = &mut d_buf[..n];
        if block_idx % RELEASE_EVERY == 0 {
            let window_end = start + RELEASE_EVERY * BLOCK;
            base.prefetch(start, window_end);
            tuned.prefetch(start, window_end);
        }
        let b_block = block_of(base, start, &mut b_buf[..n]);
        let t_block = block_of(tuned, start, &mut t_buf[..n]);
        accumulate_block(&mut lanes, &mut s.non_finite, b_block, t_block, d_block);
        delta.extend_from_slice(d_block);
        if (block_idx + 1) % RELEASE_EVERY == 0 {
            base.release_before(start + n);
            tuned.release_before(start + n);
        }
    }
    lanes.finish(&mut s);
    // The tolerance needs max|b| over the whole tensor, so it is a second (cheap, in-memory) pass over Δ.
    let threshold = CHANGE_TOLERANCE * s.max_abs_base;
    let mut changed_tol = 0u64;
    for d in delta.iter_mut() {
        // Two finite f32 near ±3.4e38 can differ by more than f32 holds. The f64 sums above are exact; keep the
        // overflow out of the f32 ΔW the spectrum reads rather than turn its values into NaN.
        if !d.is_finite() {
            *d = 0.0;
            changed_tol += 1;
        } else if f64::from(d.abs()) > threshold {
            changed_tol += 1;
        }
    }
    s.num_changed_tol = changed_tol;
    s
}

/// Adds one block of pairs to `acc` and writes their Δ into `d`, with AVX2 when the CPU has it.
fn accumulate_block(acc: &mut Lanes, counts: &mut NonFinite, b: &[f32], t: &[f32], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the only requirement of a `target_feature` function is that the CPU has the feature, which was
        // checked on the line above.
        unsafe {
            accumulate_block_avx2(acc, counts, b, t, d);
        }
        return;
    }
    accumulate_block_body(acc, counts, b, t, d);
}

/// The same body compiled for AVX2: four f64 lanes per instruction instead of baseline SSE2's two.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn accumulate_block_avx2(acc: &mut Lanes, counts: &mut NonFinite, b: &[f32], t: &[f32], d: &mut [f32]) {
    accumulate_block_body(acc, counts, b, t, d);
}

#[inline(always)]
fn accumulate_block_body(acc: &mut Lanes, counts: &mut NonFinite, b: &[f32], t: &[f32], d: &mut [f32]) {
    let mut d_chunks = d.chunks_exact_mut(LANES);
    let mut b_chunks = b.chunks_exact(LANES);
    let mut t_chunks = t.chunks_exact(LANES);
    // A local copy keeps the accumulators in registers for the whole block.
    let mut lanes = *acc;
    for ((d4, b4), t4) in (&mut d_chunks).zip(&mut b_chunks).zip(&mut t_chunks) {
        let (Ok(d4), Ok(b4), Ok(t4)) = (
            <&mut [f32; LANES]>::try_from(d4),
            <&[f32; LANES]>::try_from(b4),
            <&[f32; LANES]>::try_from(t4),
        ) else {
            continue;
        };
        // `&` rather than `all`: no early exit, so the check vectorizes.
        let finite = b4
            .iter()
            .zip(t4.iter())
            .fold(true, |ok, (b, t)| ok & b.is_finite() & t.is_finite());
        if finite {
            lanes.add_chunk(b4, t4, d4);
        } else {
            for ((d, &b), &t) in d4.iter_mut().zip(b4).zip(t4) {
                *d = lanes.add_checked(counts, b, t);
            }
        }
    }
    let tail = d_chunks
        .into_remainder()
        .iter_mut()
        .zip(b_chunks.remainder())
        .zip(t_chunks.remainder());
    for ((d, &b), &t) in tail {
        *d = lanes.add_checked(counts, b, t);
    }
    *acc = lanes;
}

/// Elements `start..start + buf.len()` of `data`: borrowed when they already are f32, else converted into `buf`.
fn block_of<'a>(data: &'a TensorData<'_>, start: usize, buf: &'a mut [f32]) -> &'a [f32] {
    match data.f32_slice(start, buf.len()) {
        Some(values) => values,
        None => {
            data.read_into(start, buf);
            buf
        }
    }
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
        let mut delta = Vec::new();
        let s = pair_stats(&base, &tuned, &mut delta);
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
        let s = pair_stats(&base, &tuned, &mut Vec::new());
        assert_eq!((s.num_changed, s.num_changed_tol), (2, 1));
    }

    #[test]
    fn blocks_cover_tensors_longer_than_one_block() {
        let n = BLOCK * 2 + 3;
        let base = TensorData::Owned(vec![0.0; n]);
        let tuned = TensorData::Owned(vec![1.0; n]);
        let mut delta = Vec::new();
        let s = pair_stats(&base, &tuned, &mut delta);
        assert_eq!(s.num_changed, n as u64);
        assert!(delta.iter().all(|&d| d == 1.0));
    }

    #[test]
    fn lane_sums_equal_a_plain_f64_loop() {
        // Odd length: exercises whole chunks, the tail, and a non-finite entry in the middle of a chunk.
        let n = 1003;
        let b: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut t: Vec<f32> = b
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 3 == 0 { *v } else { v * 1.01 + 0.5 })
            .collect();
        t[501] = f32::NAN;
        let s = pair_stats(
            &TensorData::Owned(b.clone()),
            &TensorData::Owned(t.clone()),
            &mut Vec::new(),
        );
        let pairs = b
            .iter()
            .zip(&t)
            .filter(|(_, t)| t.is_finite())
            .map(|(&b, &t)| (f64::from(b), f64::from(t)));
        let (mut bb, mut tt, mut bt, mut dd, mut ad, mut changed) = (0.0, 0.0, 0.0, 0.0, 0.0, 0u64);
        for (b, t) in pairs {
            (bb, tt, bt, dd, ad) = (
                bb + b * b,
                tt + t * t,
                bt + b * t,
                dd + (t - b) * (t - b),
                ad + (t - b).abs(),
            );
            changed += u64::from(t != b);
        }
        for (got, want) in [
            (s.base_sq, bb),
            (s.tuned_sq, tt),
            (s.dot, bt),
            (s.delta_sq, dd),
            (s.abs_delta_sum, ad),
        ] {
            assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
        }
        assert_eq!(
            (s.num_changed, s.num_finite, s.non_finite.tuned_nan),
            (changed, n as u64 - 1, 1)
        );
    }

    #[test]
    fn a_difference_beyond_f32_range_stays_out_of_the_f32_delta() {
        let base = TensorData::Owned(vec![-3.0e38, 1.0]);
        let tuned = TensorData::Owned(vec![3.0e38, 1.0]);
        let mut delta = Vec::new();
        let s = pair_stats(&base, &tuned, &mut delta);
        assert_eq!(delta, vec![0.0, 0.0]);
        assert!((s.delta_sq.sqrt() - 6.0e38).abs() < 1e32 && s.num_changed_tol == 1);
    }
}
