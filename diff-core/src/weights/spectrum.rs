//! Leading singular values of ΔW.
//!
//! Small matrices are decomposed exactly by one-sided Jacobi (Hestenes) in f64. Large ones use randomized subspace
//! iteration (Halko, Martinsson & Tropp 2011, §4.5): Z spans (AᵀA)^q Ω, re-orthonormalized after every round, and
//! the singular values of the thin A·Z (Rayleigh–Ritz) estimate the leading ones. The products are f32 (`gemm`, on
//! borrowed slices); the orthonormalization and the final decomposition are f64. See docs/methods.md.

use super::matmul::{View, matmul, matmul_add};
use crate::error::Result;
use crate::report::{Spectrum, SpectrumSettings};
use crate::rng::SplitMix64;

/// Options of the estimate (the report's [`SpectrumSettings`]).
pub type SpectrumOptions = SpectrumSettings;

impl Default for SpectrumSettings {
    fn default() -> Self {
        Self {
            top_k: 8,
            oversample: 8,
            power_iterations: 3,
            exact_max_work: 1 << 24,
            rank_tolerance: 1e-3,
            seed: 0,
        }
    }
}

/// Singular values of the `rows × cols` row-major matrix `delta` whose squared Frobenius norm is `delta_sq`.
///
/// `stream` distinguishes tensors so each gets its own random test matrix regardless of thread scheduling.
///
/// # Errors
/// [`crate::Error::Internal`] when a product is handed inconsistent shapes (a bug).
pub fn spectrum(
    delta: &[f32],
    rows: usize,
    cols: usize,
    delta_sq: f64,
    opts: &SpectrumOptions,
    stream: u64,
) -> Result<Spectrum> {
    let (short, long) = (rows.min(cols), rows.max(cols));
    let work = (short as u64).saturating_mul(short as u64).saturating_mul(long as u64);
    let exact = work <= opts.exact_max_work || short <= opts.top_k.saturating_add(opts.oversample);
    let mut values = if exact {
        exact_singular_values(delta, rows, cols)
    } else {
        randomized_singular_values(delta, rows, cols, opts, stream)?
    };
    // One value more than the report lists: a rank equal to `top_k` is then known exactly (the next value is below
    // the tolerance), and `top_k + 1` says "more than top_k".
    values.truncate(opts.top_k.saturating_add(1));
    let sigma1 = values.first().copied().unwrap_or(0.0);
    let effective_rank = values
        .iter()
        .filter(|&&s| sigma1 > 0.0 && s > opts.rank_tolerance * sigma1)
        .count();
    values.truncate(opts.top_k);
    Ok(Spectrum {
        stable_rank: if sigma1 > 0.0 {
            delta_sq / (sigma1 * sigma1)
        } else {
            0.0
        },
        effective_rank,
        singular_values: values,
        exact,
    })
}

/// All singular values, descending, by Jacobi on the shorter orientation.
fn exact_singular_values(delta: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let mut mat: Vec<f64> = if rows <= cols {
        delta.iter().map(|&v| f64::from(v)).collect()
    } else {
        let mut t = vec![0.0; rows * cols];
        for (r, row) in delta.chunks_exact(cols).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                t[c * rows + r] = f64::from(v);
            }
        }
        t
    };
    jacobi_row_norms(&mut mat, rows.min(cols), rows.max(cols))
}

fn randomized_singular_values(
    delta: &[f32],
    rows: usize,
    cols: usize,
    opts: &SpectrumOptions,
    stream: u64,
) -> Result<Vec<f64>> {
    // At least top_k + 1 directions: `spectrum` reads one value past the listed ones.
    let l = opts.top_k.saturating_add(opts.oversample.max(1)).min(rows.min(cols));
    let mut rng = SplitMix64::new(opts.seed ^ stream);
    let omega: Vec<f32> = (0..l * cols).map(|_| rng.gaussian() as f32).collect();

    // Zᵀ (l × cols): orthonormal rows spanning (AᵀA)^q Ω, the leading right singular subspace.
    let mut z_t = orthonormal_rows(View::row_major(&omega, l, cols));
    for _ in 0..opts.power_iterations {
        let w_t = gram_times(delta, rows, cols, &z_t, l)?;
        z_t = orthonormal_rows(View::row_major(&w_t, l, cols));
    }
    // Rayleigh–Ritz: the singular values of A·Z estimate the leading ones of A.
    let y = times_z(delta, rows, cols, &z_t, l)?;
    let mut y_t = vec![0.0f64; l * rows];
    for (r, row) in y.chunks_exact(l).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            y_t[c * rows + r] = f64::from(v);
        }
    }
    Ok(jacobi_row_norms(&mut y_t, l, rows))
}

/// Row groups a pass over ΔW is split into. Fixed (not the thread count) so that partial sums are added in the
/// same order on every machine: same inputs and seed, same bits.
const GROUPS: usize = 16;

/// ~512 KiB of ΔW per block: it stays in L2 between the two products of [`gram_times`].
const BLOCK_BYTES: usize = 512 * 1024;

/// Splits `rows` rows into up to [`GROUPS`] contiguous ranges of whole blocks.
fn row_groups(rows: usize, cols: usize) -> (usize, Vec<std::ops::Range<usize>>) {
    let block_rows = (BLOCK_BYTES / 4 / cols.max(1)).clamp(1, rows.max(1));
    let blocks = rows.div_ceil(block_rows);
    let per_group = blocks.div_ceil(GROUPS).max(1) * block_rows;
    let groups = (0..rows)
        .step_by(per_group)
        .map(|start| start..(start + per_group).min(rows))
        .collect();
    (block_rows, groups)
}

/// Rows `range` of the row-major matrix `delta` with `cols` columns.
fn rows_of(delta: &[f32], range: std::ops::Range<usize>, cols: usize) -> View<'_> {
    View::row_major(
        delta.get(range.start * cols..range.end * cols).unwrap_or_default(),
        range.len(),
        cols,
    )
}

/// (AᵀA·Z)ᵀ in one pass over A: each block of rows A_i is multiplied twice while it is in cache,
/// Wᵀ += (A_i Z)ᵀ A_i. The usual scheme reads A from memory twice per iteration (A·Z, then Aᵀ·Q); this halves
/// the memory traffic. Groups run in parallel; their partials are summed in group order.
fn gram_times(delta: &[f32], rows: usize, cols: usize, z_t: &[f32], l: usize) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let (block_rows, groups) = row_groups(rows, cols);
    let z = View::row_major(z_t, l, cols).t();
    let partials: Vec<Vec<f32>> = groups
        .into_par_iter()
        .map(|group| {
            let mut w_t = vec![0.0f32; l * cols];
            for start in group.clone().step_by(block_rows) {
                let end = (start + block_rows).min(group.end);
                let a_i = rows_of(delta, start..end, cols);
                let y_i = matmul(a_i, z)?;
                matmul_add(&mut w_t, View::row_major(&y_i, a_i.rows, l).t(), a_i)?;
            }
            Ok(w_t)
        })
        .collect::<Result<_>>()?;
    let mut sum = vec![0.0f32; l * cols];
    for partial in partials {
        sum.iter_mut().zip(partial).for_each(|(s, p)| *s += p);
    }
    Ok(sum)
}

/// A·Z (rows × l), by row groups in parallel: each output row is computed by one single-threaded product, so the
/// result does not depend on how many threads there are.
fn times_z(delta: &[f32], rows: usize, cols: usize, z_t: &[f32], l: usize) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let (_, groups) = row_groups(rows, cols);
    let z = View::row_major(z_t, l, cols).t();
    let parts: Vec<Vec<f32>> = groups
        .into_par_iter()
        .map(|g| matmul(rows_of(delta, g, cols), z))
        .collect::<Result<_>>()?;
    Ok(parts.concat())
}

/// The rows of `v`, orthonormalized in f64 (modified Gram–Schmidt, twice for stability), as row-major f32.
fn orthonormal_rows(v: View<'_>) -> Vec<f32> {
    let mut m = Vec::with_capacity(v.rows * v.cols);
    for i in 0..v.rows {
        for j in 0..v.cols {
            m.push(f64::from(
                v.data.get(i * v.row_stride + j * v.col_stride).copied().unwrap_or(0.0),
            ));
        }
    }
    for _ in 0..2 {
        orthonormalize_rows(&mut m, v.rows, v.cols);
    }
    m.into_iter().map(|x| x as f32).collect()
}

/// Modified Gram–Schmidt over rows; a row that is (numerically) in the span of earlier ones becomes zero, which
/// is what a rank-deficient ΔW (a LoRA update) needs.
fn orthonormalize_rows(m: &mut [f64], n_rows: usize, n_cols: usize) {
    for i in 0..n_rows {
        let (done, rest) = m.split_at_mut(i * n_cols);
        let Some(row) = rest.get_mut(..n_cols) else {
            return;
        };
        let original = norm(row);
        for prev in done.chunks_exact(n_cols) {
            let proj = dot(row, prev);
            row.iter_mut().zip(prev).for_each(|(r, p)| *r -= proj * p);
        }
        let left = norm(row);
        if left <= 1e-10 * original || left == 0.0 {
            row.fill(0.0);
        } else {
            row.iter_mut().for_each(|r| *r /= left);
        }
    }
}

/// One-sided Jacobi: rotates pairs of rows until all are orthogonal; the row norms are then the singular values.
fn jacobi_row_norms(m: &mut [f64], n_rows: usize, n_cols: usize) -> Vec<f64> {
    const MAX_SWEEPS: usize = 60;
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for i in 0..n_rows {
            for j in (i + 1)..n_rows {
                let (head, tail) = m.split_at_mut(j * n_cols);
                let (Some(x), Some(y)) = (head.get_mut(i * n_cols..(i + 1) * n_cols), tail.get_mut(..n_cols)) else {
                    continue;
                };
                let (alpha, beta, gamma) = (dot(x, x), dot(y, y), dot(x, y));
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for (xk, yk) in x.iter_mut().zip(y.iter_mut()) {
                    let (xv, yv) = (*xk, *yk);
                    *xk = c * xv - s * yv;
                    *yk = s * xv + c * yv;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut values: Vec<f64> = m.chunks_exact(n_cols.max(1)).take(n_rows).map(norm).collect();
    values.sort_by(|a, b| b.total_cmp(a));
    values
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// FNV-1a of a tensor name: the per-tensor stream of the random test matrix.
#[must_use]
pub fn stream_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// u_i v_iᵀ σ_i with orthogonal coordinate vectors: the singular values are the σ_i by construction.
    fn planted(rows: usize, cols: usize, sigmas: &[f64], noise: f64) -> Vec<f32> {
        let mut rng = SplitMix64::new(7);
        let mut m = vec![0.0f32; rows * cols];
        for (i, s) in sigmas.iter().enumerate() {
            // Rows i*3 and columns i*5 keep the rank-one terms orthogonal.
            m[(i * 3) * cols + i * 5] += *s as f32;
        }
        m.iter_mut().for_each(|v| *v += (noise * rng.gaussian()) as f32);
        m
    }

    /// An i.i.d. standard normal matrix: the flattest spectrum there is.
    fn gaussian(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..rows * cols).map(|_| rng.gaussian() as f32).collect()
    }

    /// Options that force the randomized path.
    fn randomized() -> SpectrumOptions {
        SpectrumOptions {
            exact_max_work: 0,
            ..SpectrumOptions::default()
        }
    }

    /// Options that force the exact path.
    fn exact() -> SpectrumOptions {
        SpectrumOptions {
            exact_max_work: u64::MAX,
            ..SpectrumOptions::default()
        }
    }

    fn frob_sq(m: &[f32]) -> f64 {
        m.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
    }

    #[test]
    fn exact_path_recovers_planted_singular_values_and_rank() {
        let sigmas = [5.0, 3.0, 1.0];
        let m = planted(40, 30, &sigmas, 0.0);
        let s = spectrum(&m, 40, 30, frob_sq(&m), &SpectrumOptions::default(), 1).unwrap();
        assert!(s.exact);
        assert_eq!(s.effective_rank, 3);
        for (got, want) in s.singular_values.iter().zip(sigmas) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!((s.stable_rank - 35.0 / 25.0).abs() < 1e-6);
    }

    /// Issue #15: an r = 8 LoRA showed "≥8" with 8 values listed. One value past the listed ones tells a rank of
    /// exactly `top_k` from a larger one, on both paths.
    #[test]
    fn a_rank_equal_to_the_values_listed_is_exact_and_a_larger_one_is_top_k_plus_one() {
        let (rows, cols) = (300, 200);
        let eight = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0];
        let nine = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        for opts in [exact(), randomized()] {
            let m = planted(rows, cols, &eight, 0.0);
            let s = spectrum(&m, rows, cols, frob_sq(&m), &opts, 1).unwrap();
            assert_eq!(
                (s.effective_rank, s.singular_values.len()),
                (8, 8),
                "{:?}",
                s.singular_values
            );
            let m = planted(rows, cols, &nine, 0.0);
            let s = spectrum(&m, rows, cols, frob_sq(&m), &opts, 1).unwrap();
            assert_eq!(
                (s.effective_rank, s.singular_values.len()),
                (9, 8),
                "{:?}",
                s.singular_values
            );
        }
    }

    #[test]
    fn randomized_path_matches_exact_on_a_low_rank_plus_noise_matrix() {
        let (rows, cols) = (300, 200);
        let m = planted(rows, cols, &[50.0, 40.0, 30.0, 20.0, 10.0, 8.0, 6.0, 4.0], 1e-3);
        let exact = spectrum(&m, rows, cols, frob_sq(&m), &SpectrumOptions::default(), 1).unwrap();
        let opts = randomized();
        let approx = spectrum(&m, rows, cols, frob_sq(&m), &opts, 1).unwrap();
        assert!(exact.exact && !approx.exact);
        for (a, e) in approx.singular_values.iter().zip(&exact.singular_values) {
            assert!((a - e).abs() / e < 1e-4, "{a} vs {e}");
        }
    }

    #[test]
    fn randomized_path_sees_exactly_the_rank_of_a_rank_two_update() {
        let (rows, cols) = (256, 192);
        let m = planted(rows, cols, &[2.0, 1.0], 0.0);
        let opts = randomized();
        let s = spectrum(&m, rows, cols, frob_sq(&m), &opts, 3).unwrap();
        assert_eq!(s.effective_rank, 2, "{:?}", s.singular_values);
        assert!((s.stable_rank - 1.25).abs() < 1e-5);
    }

    #[test]
    fn same_seed_same_values() {
        let m = planted(200, 150, &[3.0, 2.0], 0.1);
        let opts = randomized();
        let a = spectrum(&m, 200, 150, frob_sq(&m), &opts, 9).unwrap();
        let b = spectrum(&m, 200, 150, frob_sq(&m), &opts, 9).unwrap();
        assert_eq!(a, b);
    }

    /// A Gaussian matrix has the flattest spectrum a fine-tune could give: the worst case of the estimate, which
    /// comes out about 7% low on the top values with q = 3 (docs/methods.md).
    #[test]
    fn randomized_path_is_within_a_few_percent_on_a_flat_spectrum() {
        let (rows, cols) = (300, 240);
        let m = gaussian(rows, cols, 11);
        let exact_opts = exact();
        let exact = spectrum(&m, rows, cols, frob_sq(&m), &exact_opts, 1).unwrap();
        let opts = randomized();
        let approx = spectrum(&m, rows, cols, frob_sq(&m), &opts, 1).unwrap();
        assert!(exact.exact && !approx.exact);
        let worst = approx
            .singular_values
            .iter()
            .zip(&exact.singular_values)
            .map(|(a, e)| (e - a) / e)
            .fold(0.0f64, f64::max);
        assert!(worst < 0.1, "worst relative underestimate {worst}");
    }

    /// Same inputs and seed give the same bits whatever the thread count (the report contract).
    #[test]
    fn randomized_path_is_bit_identical_across_thread_counts() {
        // 4096 rows of 256 columns: 8 blocks of 512 rows, spread over several groups.
        let (rows, cols) = (4096, 256);
        let m = gaussian(rows, cols, 5);
        let opts = randomized();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| spectrum(&m, rows, cols, frob_sq(&m), &opts, 2).unwrap())
        };
        let one = run(1);
        for threads in [2, 3, 4] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }
}
