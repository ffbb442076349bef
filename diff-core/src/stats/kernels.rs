//! Lane-parallel kernels over logit rows: max/argmax with a validity check, and sums of `exp(x − max)`.
//!
//! The hot loops work on `[f32; LANES]` chunks with one independent accumulator per lane and no branches, so the
//! compiler turns them into SIMD code even for baseline x86-64 (SSE2); the tail is padded with −inf, which every
//! kernel treats as "p = 0". `std`'s `f32::exp` is a libm call that does not vectorize, hence [`exp_f32`].
//! Measured on one core of the dev machine (release, SSE2): a whole `compare_rows` costs ~4 ns per vocabulary
//! entry, ~0.6 ms for a 152k vocabulary; written as plain iterator code it was ~3× slower.

/// Lanes per chunk: two AVX registers of f32 (four SSE ones on baseline x86-64).
pub(super) const LANES: usize = 8;

/// `exp_f32(x)` is 0 for `x <= EXP_MIN` (−inf included): e^−86 ≈ 4·10⁻³⁸ is near the smallest normal f32, and
/// below it the exponent trick of [`exp_f32`] would need subnormals. Inputs here are `x − max(x)`, so this is a
/// probability ratio to the top token that no f32 model can tell from 0 anyway.
pub(super) const EXP_MIN: f32 = -86.0;

/// 1.5·2²³: adding it to an f32 of magnitude < 2²² rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x in f32 for `x <= 0`, branch-free so that it vectorizes when inlined into a lane loop.
///
/// Cephes' `expf`: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two for an exact n·ln2_hi), a degree-5
/// polynomial for e^r, and 2ⁿ added to the exponent bits. Relative error ≤ 2 ulp (tested against f64 `exp`).
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 355.0 / 512.0; // few bits, so n·LN2_HI is exact for |n| < 2¹⁵
    #[allow(clippy::excessive_precision, reason = "Cephes expf coefficients as published")]
    const LN2_LO: f32 = -2.121_944_40e-4;
    #[allow(clippy::excessive_precision, reason = "Cephes expf coefficients as published")]
    const P: [f32; 6] = [
        1.987_569_150_0e-4,
        1.398_199_950_7e-3,
        8.333_451_907_3e-3,
        4.166_579_589_4e-2,
        1.666_666_545_9e-1,
        5.000_000_120_1e-1,
    ];
    // Clamp first so that −inf and huge negatives never reach the bit arithmetic; they are zeroed at the end.
    let xc = if x > EXP_MIN { x } else { EXP_MIN };
    let shifted = xc * LOG2E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let poly = ((((P[0] * r + P[1]) * r + P[2]) * r + P[3]) * r + P[4]) * r + P[5];
    let y = poly * (r * r) + r + 1.0;
    // n as a two's complement integer (|n| ≤ 125), moved into the exponent field; y ∈ [0.7, 1.5) so the biased
    // exponent stays ≥ 1 for n ≥ −124.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let scaled = f32::from_bits(y.to_bits().wrapping_add(n_bits << 23));
    if x > EXP_MIN { scaled } else { 0.0 }
}

/// What [`scan_row`] finds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RowScan {
    /// Largest entry (−inf for an empty or all −inf row).
    pub max: f32,
    /// Index of the first entry equal to `max` (`torch.argmax`'s tie rule).
    pub argmax: u32,
    /// Whether some entry is NaN or +inf.
    pub has_nan_or_pos_inf: bool,
}

impl RowScan {
    /// Whether the row defines a distribution: no NaN or +inf, and at least one entry above −inf.
    pub fn is_distribution(&self) -> bool {
        !self.has_nan_or_pos_inf && self.max > f32::NEG_INFINITY
    }
}

/// Max, first argmax and NaN/+inf check of `row`. Rows longer than `u32::MAX` are not supported.
///
/// Two passes, both vectorized: max and validity, then the first chunk that holds the max (it stops there).
/// Tracking the argmax per lane in the first pass measured ~1.5× slower than the two together.
pub(super) fn scan_row(row: &[f32]) -> RowScan {
    debug_assert!(u32::try_from(row.len()).is_ok(), "row of {} entries", row.len());
    let mut max = [f32::NEG_INFINITY; LANES];
    // Nonzero where the lane saw a NaN or +inf (u32, not bool, so that it shares the f32 lanes' masks).
    let mut bad = [0u32; LANES];
    let (chunks, tail) = row.as_chunks::<LANES>();
    for chunk in chunks.iter().chain(std::iter::once(&padded(tail))) {
        for i in 0..LANES {
            max[i] = if chunk[i] > max[i] { chunk[i] } else { max[i] };
        }
        for i in 0..LANES {
            bad[i] |= if chunk[i] < f32::INFINITY { 0 } else { 1 };
        }
    }
    let max = max.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let has_nan_or_pos_inf = bad.iter().any(|&b| b != 0);
    let argmax = if has_nan_or_pos_inf {
        0
    } else {
        first_index_of(row, max)
    };
    RowScan {
        max,
        argmax,
        has_nan_or_pos_inf,
    }
}

/// Index of the first entry equal to `value` (0 when there is none).
fn first_index_of(row: &[f32], value: f32) -> u32 {
    let (chunks, tail) = row.as_chunks::<LANES>();
    let in_chunks = chunks.iter().position(|chunk| {
        let mut hit = false;
        for &x in chunk {
            hit |= x == value;
        }
        hit
    });
    let (start, rest) = match in_chunks {
        Some(at) => (at * LANES, chunks.get(at).map_or(&[][..], <[f32; LANES]>::as_slice)),
        None => (chunks.len() * LANES, tail),
    };
    let index = start + rest.iter().position(|&x| x == value).unwrap_or(0);
    u32::try_from(index).unwrap_or(0)
}

/// Σ exp(x − max) over `row` in f64 (terms are f32 `exp`s, as `torch.softmax` makes them).
pub(super) fn sum_exp(row: &[f32], max: f32) -> f64 {
    let mut sum = [0.0f64; LANES];
    let (chunks, tail) = row.as_chunks::<LANES>();
    for chunk in chunks.iter().chain(std::iter::once(&padded(tail))) {
        for i in 0..LANES {
            sum[i] += f64::from(exp_f32(chunk[i] - max));
        }
    }
    sum.iter().sum()
}

/// The sums from which KL and entropy of a row pair follow (see [`pair_sums`]); `s = x − max`, `e = exp(s)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct PairSums {
    /// Σ e_t.
    pub sum_tuned: f64,
    /// Σ e_b.
    pub sum_base: f64,
    /// Σ e_t·(s_t − s_b), over e_t > 0.
    pub cross_tuned: f64,
    /// Σ e_b·(s_b − s_t), over e_b > 0.
    pub cross_base: f64,
    /// Σ e_t·s_t, over e_t > 0.
    pub self_tuned: f64,
    /// Σ e_b·s_b, over e_b > 0.
    pub self_base: f64,
}

/// Per-lane accumulators of [`pair_sums`].
#[derive(Default)]
struct PairLanes {
    sum_tuned: [f64; LANES],
    sum_base: [f64; LANES],
    cross_tuned: [f64; LANES],
    cross_base: [f64; LANES],
    self_tuned: [f64; LANES],
    self_base: [f64; LANES],
}

impl PairLanes {
    /// Staged: the f32 differences, then the exps, then the f64 sums, each its own lane loop. Written as one
    /// loop body, LLVM gives up on vectorizing it and the pass runs ~3.5× slower.
    #[inline(always)]
    fn add(&mut self, b: &[f32; LANES], t: &[f32; LANES], max_base: f32, max_tuned: f32) {
        let (mut s_t, mut s_b) = ([0.0f32; LANES], [0.0f32; LANES]);
        for i in 0..LANES {
            s_t[i] = t[i] - max_tuned;
            s_b[i] = b[i] - max_base;
        }
        let (mut e_t, mut e_b) = ([0.0f32; LANES], [0.0f32; LANES]);
        for i in 0..LANES {
            e_t[i] = exp_f32(s_t[i]);
            e_b[i] = exp_f32(s_b[i]);
        }
        for i in 0..LANES {
            let (st, sb, et, eb) = (
                f64::from(s_t[i]),
                f64::from(s_b[i]),
                f64::from(e_t[i]),
                f64::from(e_b[i]),
            );
            let d = st - sb;
            self.sum_tuned[i] += et;
            self.sum_base[i] += eb;
            self.cross_tuned[i] += if e_t[i] > 0.0 { et * d } else { 0.0 };
            self.cross_base[i] += if e_b[i] > 0.0 { eb * -d } else { 0.0 };
            self.self_tuned[i] += if e_t[i] > 0.0 { et * st } else { 0.0 };
            self.self_base[i] += if e_b[i] > 0.0 { eb * sb } else { 0.0 };
        }
    }
}

/// One fused pass over a base/tuned row pair (equal lengths) with their maxima.
///
/// Terms with e = 0 are skipped rather than multiplied, so a −inf logit (s = −inf, e = 0) adds nothing instead of
/// 0·(−inf) = NaN. The two cross sums use `d` and `−d` of the same f64 difference, so swapping the rows swaps
/// them bit for bit.
pub(super) fn pair_sums(base: &[f32], tuned: &[f32], max_base: f32, max_tuned: f32) -> PairSums {
    debug_assert_eq!(base.len(), tuned.len());
    let mut lanes = PairLanes::default();
    let (chunks_b, tail_b) = base.as_chunks::<LANES>();
    let (chunks_t, tail_t) = tuned.as_chunks::<LANES>();
    for (b, t) in chunks_b.iter().zip(chunks_t) {
        lanes.add(b, t, max_base, max_tuned);
    }
    lanes.add(&padded(tail_b), &padded(tail_t), max_base, max_tuned);
    let sum = |a: [f64; LANES]| a.iter().sum::<f64>();
    PairSums {
        sum_tuned: sum(lanes.sum_tuned),
        sum_base: sum(lanes.sum_base),
        cross_tuned: sum(lanes.cross_tuned),
        cross_base: sum(lanes.cross_base),
        self_tuned: sum(lanes.self_tuned),
        self_base: sum(lanes.self_base),
    }
}

/// A tail shorter than a chunk, padded with −inf (p = 0 for every kernel).
fn padded(tail: &[f32]) -> [f32; LANES] {
    let mut chunk = [f32::NEG_INFINITY; LANES];
    for (slot, &x) in chunk.iter_mut().zip(tail) {
        *slot = x;
    }
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulp_of_f64_exp() {
        let mut worst = 0.0f64;
        for i in 0..=860_000 {
            let x = -(i as f32) * 1e-4;
            if x <= EXP_MIN {
                continue;
            }
            let exact = f64::from(x).exp();
            let rel = ((f64::from(exp_f32(x)) - exact) / exact).abs();
            worst = worst.max(rel);
        }
        // 2 ulp of f32 relative to the value: 2·2⁻²³.
        assert!(worst <= 2.0 * f64::from(f32::EPSILON), "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn exp_f32_is_zero_below_the_floor_and_at_minus_inf() {
        assert_eq!(exp_f32(EXP_MIN), 0.0);
        assert_eq!(exp_f32(-1e4), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(EXP_MIN + 0.01) > 0.0);
    }

    #[test]
    fn scan_finds_the_first_maximum_across_lanes_and_the_tail() {
        // Maxima in lanes 5 (index 13) and 2 (index 18): the lower index wins though its lane comes later.
        let mut row = vec![0.0f32; 21];
        row[18] = 3.0;
        row[13] = 3.0;
        assert_eq!(scan_row(&row).argmax, 13);
        // Only in the tail.
        row[20] = 4.0;
        assert_eq!(scan_row(&row).argmax, 20);
        // All equal: index 0.
        assert_eq!(scan_row(&[1.0; 19]).argmax, 0);
        let scan = scan_row(&[f32::NEG_INFINITY, -2.0, f32::NEG_INFINITY]);
        assert_eq!((scan.max, scan.argmax, scan.is_distribution()), (-2.0, 1, true));
    }

    #[test]
    fn scan_flags_nan_and_pos_inf_but_not_neg_inf() {
        for bad in [f32::NAN, f32::INFINITY] {
            for at in [0, 7, 8, 16] {
                let mut row = vec![0.5f32; 17];
                row[at] = bad;
                assert!(!scan_row(&row).is_distribution(), "{bad} at {at}");
            }
        }
        assert!(!scan_row(&[]).is_distribution());
        assert!(!scan_row(&[f32::NEG_INFINITY; 9]).is_distribution());
    }
}
