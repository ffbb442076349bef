//! One position: the base's and the tuned model's next-token distributions compared (KL both ways, entropies,
//! top tokens), and the top-k tokens of one distribution.

use std::cmp::Ordering;

use rayon::prelude::*;

use super::kernels::{LANES, pair_sums, scan_row, sum_exp};

/// Which side's logit row does not define a distribution: it holds a NaN or +inf, or has no entry above −inf
/// (an empty row included). A −inf entry alone is fine: it is a masked token with probability 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NonFiniteSide {
    /// Only the base model's row.
    #[error("the base model's logits hold NaN or +inf (or no finite entry)")]
    Base,
    /// Only the tuned model's row.
    #[error("the tuned model's logits hold NaN or +inf (or no finite entry)")]
    Tuned,
    /// Both rows.
    #[error("both models' logits hold NaN or +inf (or no finite entry)")]
    Both,
}

impl NonFiniteSide {
    /// The side(s) that failed, or `None` when both rows are usable.
    fn from_flags(base_bad: bool, tuned_bad: bool) -> Option<Self> {
        match (base_bad, tuned_bad) {
            (false, false) => None,
            (true, false) => Some(Self::Base),
            (false, true) => Some(Self::Tuned),
            (true, true) => Some(Self::Both),
        }
    }
}

/// Probabilities of the token that actually comes next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NextTokenProbs {
    /// Its id.
    pub token: u32,
    /// Its probability under the base model.
    pub p_base: f64,
    /// Its probability under the tuned model.
    pub p_tuned: f64,
}

/// How the tuned model's next-token distribution differs from the base's at one position. Natural logs (nats).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionStats {
    /// KL(P_tuned ‖ P_base) = Σ_v p_t(v)·(log p_t(v) − log p_b(v)); +inf where the tuned model puts mass on a
    /// token the base masks with a −inf logit.
    pub kl_tuned_base: f64,
    /// KL(P_base ‖ P_tuned), the reverse.
    pub kl_base_tuned: f64,
    /// Entropy of the base distribution, −Σ p log p.
    pub entropy_base: f64,
    /// Entropy of the tuned distribution.
    pub entropy_tuned: f64,
    /// The base model's most likely token (lowest id on ties, as `torch.argmax`).
    pub top_base: u32,
    /// The tuned model's most likely token.
    pub top_tuned: u32,
    /// p_base(`top_base`).
    pub p_base_of_base_top: f64,
    /// p_tuned(`top_base`): with `p_base_of_base_top`, the |Δp| of the base's top token.
    pub p_tuned_of_base_top: f64,
    /// The next token's probabilities, where one was given and it lies inside the rows.
    pub next: Option<NextTokenProbs>,
}

/// Compares the base's and the tuned model's logits at one position.
///
/// Numerics start as `torch.log_softmax` on f32 logits does: s = x − max(x) in f32 and e = exp(s) in f32; from
/// there everything is f64. Because log p = s − ln Σe, the sums factor:
/// KL(t‖b) = Σ e_t·(s_t − s_b) / Σe_t − (ln Σe_t − ln Σe_b), and H = ln Σe − Σ e·s / Σe, so one fused pass over
/// both rows gives all four numbers and the log-probabilities are never rounded to f32. That is more accurate
/// than torch, whose f32 log-probabilities put ~1e-7 to 1e-6 nats of noise on each KL: here the error is ~1e-9
/// nats (tested against an f64 reference to 1e-8), and identical rows give exactly 0. The only rounding left can
/// push the KL of nearly identical rows (or the entropy of a one-hot row) a hair below 0; that is clamped to 0.
///
/// Terms with p = 0 add nothing (0·log 0 = 0). That includes a token both rows mask with −inf, where torch's
/// `kl_div` gives exp(−inf)·(−inf − (−inf)) = 0·NaN = NaN: the mathematically right contribution is 0, and that
/// is what this returns. p = 0 also covers e^s that f32 cannot represent (s ≤ −86, p < 4·10⁻³⁸ of the top).
///
/// `next` is the id of the token that follows; ids outside the rows give `next: None`. Rows must have equal
/// lengths (below `u32::MAX`); with unequal ones only the common prefix is compared (debug builds panic).
///
/// # Errors
/// [`NonFiniteSide`] when either row holds a NaN or +inf or has no entry above −inf: no statistic is made up.
pub fn compare_rows(
    base_logits: &[f32],
    tuned_logits: &[f32],
    next: Option<u32>,
) -> Result<PositionStats, NonFiniteSide> {
    debug_assert_eq!(base_logits.len(), tuned_logits.len(), "rows of different vocabularies");
    let len = base_logits.len().min(tuned_logits.len());
    let base = base_logits.get(..len).unwrap_or_default();
    let tuned = tuned_logits.get(..len).unwrap_or_default();

    let scan_base = scan_row(base);
    let scan_tuned = scan_row(tuned);
    if let Some(side) = NonFiniteSide::from_flags(!scan_base.is_distribution(), !scan_tuned.is_distribution()) {
        return Err(side);
    }
    let sums = pair_sums(base, tuned, scan_base.max, scan_tuned.max);
    // Both sums are ≥ 1: the maximum contributes exp(0) = 1.
    let (ln_sum_base, ln_sum_tuned) = (sums.sum_base.ln(), sums.sum_tuned.ln());
    let non_negative = |v: f64| if v < 0.0 { 0.0 } else { v };

    let prob = |row: &[f32], max: f32, sum: f64, token: u32| -> Option<f64> {
        let x = *row.get(usize::try_from(token).ok()?)?;
        Some(f64::from(x - max).exp() / sum)
    };
    let base_prob = |token| prob(base, scan_base.max, sums.sum_base, token);
    let tuned_prob = |token| prob(tuned, scan_tuned.max, sums.sum_tuned, token);

    Ok(PositionStats {
        kl_tuned_base: non_negative(sums.cross_tuned / sums.sum_tuned - (ln_sum_tuned - ln_sum_base)),
        kl_base_tuned: non_negative(sums.cross_base / sums.sum_base - (ln_sum_base - ln_sum_tuned)),
        entropy_base: non_negative(ln_sum_base - sums.self_base / sums.sum_base),
        entropy_tuned: non_negative(ln_sum_tuned - sums.self_tuned / sums.sum_tuned),
        top_base: scan_base.argmax,
        top_tuned: scan_tuned.argmax,
        p_base_of_base_top: base_prob(scan_base.argmax).unwrap_or(0.0),
        p_tuned_of_base_top: tuned_prob(scan_base.argmax).unwrap_or(0.0),
        next: next.and_then(|token| {
            Some(NextTokenProbs {
                token,
                p_base: base_prob(token)?,
                p_tuned: tuned_prob(token)?,
            })
        }),
    })
}

/// [`compare_rows`] for each row of a `[rows, vocab]` chunk (row-major), in parallel on rayon's pool.
///
/// Each row is computed on its own, so the result does not depend on the number of threads. `next` holds one
/// entry per row. `base` and `tuned` must have the same length, `rows · vocab`; rows past the shortest of
/// `base`, `tuned` and `next` are dropped (debug builds panic), and `vocab == 0` gives no rows.
pub fn compare_chunk(
    base: &[f32],
    tuned: &[f32],
    vocab: usize,
    next: &[Option<u32>],
) -> Vec<Result<PositionStats, NonFiniteSide>> {
    if vocab == 0 {
        return Vec::new();
    }
    debug_assert_eq!(base.len(), tuned.len(), "chunks of different sizes");
    debug_assert_eq!(base.len(), vocab * next.len(), "chunk is not next.len() rows of vocab");
    base.par_chunks_exact(vocab)
        .zip(tuned.par_chunks_exact(vocab))
        .zip(next.par_iter())
        .map(|((base_row, tuned_row), &next)| compare_rows(base_row, tuned_row, next))
        .collect()
}

/// Above this `k`, [`top_k`] sorts the whole row instead of keeping a sorted buffer of `k` entries.
const TOP_K_BUFFER_MAX: usize = 64;

/// The `k` most likely tokens of one logit row with their softmax probabilities (f32), most likely first.
///
/// Ordered by logit, which orders the probabilities the same way; equal logits go lowest id first. Fewer than
/// `k` when the row is shorter; empty when `k == 0` or the row is not a distribution (see [`NonFiniteSide`]).
/// Masked (−inf) tokens can appear, with probability 0, only after all the others. Probabilities are exp(x − max) / Σ exp(x − max), the same as [`compare_rows`]' p values.
pub fn top_k(logits_row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let scan = scan_row(logits_row);
    if k == 0 || !scan.is_distribution() {
        return Vec::new();
    }
    let sum = sum_exp(logits_row, scan.max);
    let best = if k <= TOP_K_BUFFER_MAX {
        top_k_buffered(logits_row, k)
    } else {
        top_k_sorted(logits_row, k)
    };
    best.into_iter()
        .map(|(id, x)| (id, (f64::from(x - scan.max).exp() / sum) as f32))
        .collect()
}

/// (id, logit) of the `k` largest logits in one pass with a sorted buffer; chunks with nothing above the current
/// k-th are skipped with one vectorized comparison, so inserts (rare on real logits) dominate only for tiny rows.
fn top_k_buffered(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    // Ids arrive in increasing order, so an equal logit never displaces an earlier one.
    let offer = |best: &mut Vec<(u32, f32)>, id: usize, x: f32| {
        if best.len() == k && best.last().is_some_and(|&(_, last)| x <= last) {
            return;
        }
        let at = best.partition_point(|&(_, y)| y >= x);
        best.insert(at, (id as u32, x));
        best.truncate(k);
    };
    let (chunks, tail) = row.as_chunks::<LANES>();
    for (c, chunk) in chunks.iter().enumerate() {
        if best.len() == k
            && let Some(&(_, threshold)) = best.last()
        {
            let mut above = false;
            for &x in chunk {
                above |= x > threshold;
            }
            if !above {
                continue;
            }
        }
        for (j, &x) in chunk.iter().enumerate() {
            offer(&mut best, c * LANES + j, x);
        }
    }
    for (j, &x) in tail.iter().enumerate() {
        offer(&mut best, chunks.len() * LANES + j, x);
    }
    best
}

/// (id, logit) of the `k` largest logits by selection and a sort, for large `k`.
fn top_k_sorted(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let by_logit =
        |a: &(u32, f32), b: &(u32, f32)| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(a.0.cmp(&b.0));
    let mut best: Vec<(u32, f32)> = (0u32..).zip(row.iter().copied()).collect();
    if k < best.len() {
        best.select_nth_unstable_by(k - 1, by_logit);
        best.truncate(k);
    }
    best.sort_unstable_by(by_logit);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reproducible random logit rows.
    struct Rng(crate::rng::SplitMix64);

    fn rng(seed: u64) -> Rng {
        Rng(crate::rng::SplitMix64::new(seed))
    }

    impl Rng {
        /// Uniform in [-1, 1).
        fn unit(&mut self) -> f32 {
            (2.0 * self.0.uniform() - 1.0) as f32
        }

        fn row(&mut self, len: usize, scale: f32) -> Vec<f32> {
            (0..len).map(|_| self.unit() * scale).collect()
        }
    }

    fn assert_close(actual: f64, expected: f64, tol: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= tol,
            "{what}: {actual} vs {expected} (tol {tol})"
        );
    }

    /// Expected values in f64 from numpy:
    /// ```python
    /// import numpy as np
    /// def ls(x): x = np.array(x, dtype=np.float64); m = x.max(); return x - m - np.log(np.exp(x - m).sum())
    /// lb, lt = ls([1.0, 2.0, 0.5]), ls([0.0, 3.0, -1.0]); pb, pt = np.exp(lb), np.exp(lt)
    /// (pt * (lt - lb)).sum(), (pb * (lb - lt)).sum(), -(pb * lb).sum(), -(pt * lt).sum(), pb[1], pt[1], pb[2], pt[2]
    /// ```
    /// Tolerance 1e-6: f32 `exp` terms (2 ulp) and f32 differences x − max.
    #[test]
    fn three_token_example_matches_numpy() {
        let stats = compare_rows(&[1.0, 2.0, 0.5], &[0.0, 3.0, -1.0], Some(2)).unwrap();
        let tol = 1e-6;
        assert_close(stats.kl_tuned_base, 0.262390071330767, tol, "KL(t||b)");
        assert_close(stats.kl_base_tuned, 0.41457387280900354, tol, "KL(b||t)");
        assert_close(stats.entropy_base, 0.9059592564792267, tol, "H(b)");
        assert_close(stats.entropy_tuned, 0.27431307367343233, tol, "H(t)");
        assert_eq!((stats.top_base, stats.top_tuned), (1, 1));
        assert_close(stats.p_base_of_base_top, 0.6285317192117624, tol, "p_b(top)");
        assert_close(stats.p_tuned_of_base_top, 0.9362395518765058, tol, "p_t(top)");
        let next = stats.next.unwrap();
        assert_eq!(next.token, 2);
        assert_close(next.p_base, 0.14024438316608848, tol, "p_b(next)");
        assert_close(next.p_tuned, 0.017147825545520388, tol, "p_t(next)");
    }

    #[test]
    fn kl_of_a_row_with_itself_is_exactly_zero() {
        let mut rng = rng(1);
        for len in [1, 7, 8, 9, 1000, 50_257] {
            let row = rng.row(len, 12.0);
            let stats = compare_rows(&row, &row, None).unwrap();
            assert_eq!((stats.kl_tuned_base, stats.kl_base_tuned), (0.0, 0.0), "len {len}");
            assert_eq!(stats.entropy_base, stats.entropy_tuned);
            assert_eq!(stats.p_base_of_base_top, stats.p_tuned_of_base_top);
        }
    }

    #[test]
    fn kl_is_non_negative_and_entropy_bounded_on_random_rows() {
        let mut rng = rng(2);
        for trial in 0..200 {
            let len = 1 + (rng.0.next_u64() % 3000) as usize;
            let scale = [0.01, 1.0, 10.0, 100.0][trial % 4];
            let base = rng.row(len, scale);
            // Half the trials: a small perturbation of base, where rounding could push KL below 0.
            let tuned: Vec<f32> = if trial % 2 == 0 {
                rng.row(len, scale)
            } else {
                base.iter().map(|&x| x + rng.unit() * 1e-4).collect()
            };
            let stats = compare_rows(&base, &tuned, None).unwrap();
            let max_entropy = (len as f64).ln() + 1e-9;
            for v in [stats.kl_tuned_base, stats.kl_base_tuned] {
                assert!(v.is_finite() && v >= 0.0, "trial {trial}: KL {v}");
            }
            for h in [stats.entropy_base, stats.entropy_tuned] {
                assert!((0.0..=max_entropy).contains(&h), "trial {trial}: H {h} > ln {len}");
            }
        }
    }

    /// KL in f64 from the f32 logits: log-softmax with f64 `exp`/`ln`, then Σ p·(log p − log q).
    fn reference_kl(p: &[f32], q: &[f32]) -> f64 {
        let log_softmax = |x: &[f32]| {
            let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let lse = x.iter().map(|&v| (f64::from(v) - m).exp()).sum::<f64>().ln();
            x.iter().map(|&v| f64::from(v) - m - lse).collect::<Vec<_>>()
        };
        let (lp, lq) = (log_softmax(p), log_softmax(q));
        lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
    }

    /// Absolute error ≤ 1e-8 nats even where KL itself is ~1e-6: f32 log-probabilities (torch) would be off by
    /// ~1e-6 there.
    #[test]
    fn kl_matches_an_f64_reference_on_random_rows() {
        let mut rng = rng(3);
        for (len, perturbation) in [(3, 1.0), (64, 1.0), (4099, 1.0), (4099, 1e-2), (50_000, 1e-3)] {
            let base = rng.row(len, 8.0);
            let tuned: Vec<f32> = base.iter().map(|&x| x + rng.unit() * 8.0 * perturbation).collect();
            let stats = compare_rows(&base, &tuned, None).unwrap();
            for (got, expected, what) in [
                (stats.kl_tuned_base, reference_kl(&tuned, &base), "KL(t||b)"),
                (stats.kl_base_tuned, reference_kl(&base, &tuned), "KL(b||t)"),
            ] {
                assert_close(
                    got,
                    expected,
                    1e-8 + 1e-7 * expected,
                    &format!("{what}, len {len}, ±{perturbation}"),
                );
            }
        }
    }

    #[test]
    fn swapping_the_rows_swaps_the_directions_bit_for_bit() {
        let mut rng = rng(4);
        let (a, b) = (rng.row(5003, 6.0), rng.row(5003, 6.0));
        let ab = compare_rows(&a, &b, Some(17)).unwrap();
        let ba = compare_rows(&b, &a, Some(17)).unwrap();
        assert_eq!(ab.kl_tuned_base, ba.kl_base_tuned);
        assert_eq!(ab.kl_base_tuned, ba.kl_tuned_base);
        assert_eq!((ab.entropy_base, ab.entropy_tuned), (ba.entropy_tuned, ba.entropy_base));
        assert_eq!((ab.top_base, ab.top_tuned), (ba.top_tuned, ba.top_base));
        let (n_ab, n_ba) = (ab.next.unwrap(), ba.next.unwrap());
        assert_eq!((n_ab.p_base, n_ab.p_tuned), (n_ba.p_tuned, n_ba.p_base));
    }

    #[test]
    fn extreme_spreads_stay_finite_and_exact() {
        // Base is sure of token 0, tuned of token 1, both 1e4 nats apart; token 2 is masked in both.
        let ninf = f32::NEG_INFINITY;
        let base = [1e4, 0.0, ninf, -1e4];
        let tuned = [0.0, 1e4, ninf, -1e4];
        let stats = compare_rows(&base, &tuned, Some(2)).unwrap();
        assert_eq!(stats.kl_tuned_base, 1e4);
        assert_eq!(stats.kl_base_tuned, 1e4);
        assert_eq!((stats.entropy_base, stats.entropy_tuned), (0.0, 0.0));
        assert_eq!((stats.top_base, stats.top_tuned), (0, 1));
        assert_eq!((stats.p_base_of_base_top, stats.p_tuned_of_base_top), (1.0, 0.0));
        let next = stats.next.unwrap();
        assert_eq!((next.p_base, next.p_tuned), (0.0, 0.0));
    }

    #[test]
    fn masked_tokens_count_as_zero_probability() {
        // numpy: KL(t||b) = log(1 + e) = 1.3132616875182228 (tuned's only token has p_b = 1/(1+e)).
        let ninf = f32::NEG_INFINITY;
        let stats = compare_rows(&[0.0, 1.0, ninf], &[2.0, ninf, ninf], None).unwrap();
        assert_close(stats.kl_tuned_base, 1.3132616875182228, 1e-6, "KL(t||b)");
        // The base puts mass on token 1, which the tuned model masks: infinitely surprising, not NaN.
        assert_eq!(stats.kl_base_tuned, f64::INFINITY);
        assert_eq!(stats.entropy_tuned, 0.0);
        assert!(stats.entropy_base.is_finite());
    }

    #[test]
    fn rows_without_a_distribution_name_their_side() {
        let ok = [0.0f32, 1.0, 2.0];
        let nan = [0.0, f32::NAN, 2.0];
        let inf = [f32::INFINITY, 1.0, 2.0];
        let masked = [f32::NEG_INFINITY; 3];
        assert_eq!(compare_rows(&nan, &ok, None), Err(NonFiniteSide::Base));
        assert_eq!(compare_rows(&ok, &inf, None), Err(NonFiniteSide::Tuned));
        assert_eq!(compare_rows(&nan, &masked, None), Err(NonFiniteSide::Both));
        assert_eq!(compare_rows(&masked, &ok, None), Err(NonFiniteSide::Base));
        assert_eq!(compare_rows(&[], &[], None), Err(NonFiniteSide::Both));
    }

    #[test]
    fn argmax_ties_take_the_lowest_id_and_next_outside_the_row_is_none() {
        let stats = compare_rows(&[1.0, 3.0, 3.0, 2.0], &[5.0, 0.0, 0.0, 5.0], Some(4)).unwrap();
        assert_eq!((stats.top_base, stats.top_tuned), (1, 0));
        assert_eq!(stats.next, None);
    }

    #[test]
    fn compare_chunk_equals_row_by_row() {
        let (rows, vocab) = (37, 1001);
        let mut rng = rng(5);
        let mut base = rng.row(rows * vocab, 10.0);
        let tuned = rng.row(rows * vocab, 10.0);
        base[5 * vocab + 3] = f32::NAN;
        let next: Vec<Option<u32>> = (0..rows)
            .map(|r| (r % 3 != 0).then_some((r * 31 % vocab) as u32))
            .collect();
        let chunk = compare_chunk(&base, &tuned, vocab, &next);
        assert_eq!(chunk.len(), rows);
        for (r, got) in chunk.iter().enumerate() {
            let row = r * vocab..(r + 1) * vocab;
            assert_eq!(*got, compare_rows(&base[row.clone()], &tuned[row], next[r]), "row {r}");
        }
        assert_eq!(chunk[5], Err(NonFiniteSide::Base));
        assert!(compare_chunk(&base, &tuned, 0, &next).is_empty());
    }

    #[test]
    fn top_k_orders_by_probability_with_ties_to_the_lower_id() {
        let row = [1.0f32, 3.0, 2.0, 3.0, f32::NEG_INFINITY, 0.5];
        let ids = |top: &[(u32, f32)]| top.iter().map(|&(id, _)| id).collect::<Vec<_>>();
        assert_eq!(ids(&top_k(&row, 3)), [1, 3, 2]);
        assert_eq!(ids(&top_k(&row, 1)), [1]);
        // More than the row holds: everything, the masked token last with p = 0.
        let all = top_k(&row, 10);
        assert_eq!(ids(&all), [1, 3, 2, 0, 5, 4]);
        assert_eq!(all[5].1, 0.0);
        let total: f32 = all.iter().map(|&(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-6);
        // softmax of token 1 = e³ / (e + 2e³ + e² + e^0.5).
        let p1 = 3f64.exp() / (1f64.exp() + 2.0 * 3f64.exp() + 2f64.exp() + 0.5f64.exp());
        assert!((f64::from(all[0].1) - p1).abs() < 1e-7);
        assert!(top_k(&row, 0).is_empty());
        assert!(top_k(&[f32::NAN, 1.0], 2).is_empty());
    }

    #[test]
    fn top_k_buffer_and_sort_paths_agree() {
        let mut rng = rng(6);
        // Few distinct values, so ties are everywhere.
        let row: Vec<f32> = (0..5000).map(|_| (rng.0.next_u64() % 50) as f32).collect();
        let small = top_k(&row, TOP_K_BUFFER_MAX);
        let large = top_k(&row, TOP_K_BUFFER_MAX + 1);
        assert_eq!(small[..], large[..TOP_K_BUFFER_MAX]);
        let mut expected: Vec<(u32, f32)> = (0u32..).zip(row.iter().copied()).collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let expected_ids: Vec<u32> = expected.iter().take(200).map(|&(id, _)| id).collect();
        let got_ids: Vec<u32> = top_k(&row, 200).iter().map(|&(id, _)| id).collect();
        assert_eq!(got_ids, expected_ids);
        assert!(small.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}
