//! Summaries of many per-token values: mean with its standard error, extremes and percentiles (numpy's), and a
//! compensated running mean.

/// Percentiles every [`Summary`] reports: the ones llama.cpp's `--kl-divergence` prints.
pub const PERCENTILES: [f64; 9] = [0.1, 1.0, 5.0, 10.0, 50.0, 90.0, 95.0, 99.0, 99.9];

/// The report key of a percentile: `p0.1`, `p1`, `p50`, `p99.9` (shortest decimal that reads back the same).
pub fn percentile_label(p: f64) -> String {
    format!("p{p}")
}

/// Distribution of a set of values.
///
/// Values may include ±inf (a KL of +inf where one model masks a token the other uses): `min`, `max` and the
/// percentiles handle them as limits; `mean` is then ±inf (NaN only when both +inf and −inf are present) and
/// `std_err` is +inf.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// How many values (NaNs left out).
    pub n: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Standard error of the mean: the sample standard deviation (divisor n − 1) over √n; 0 when n < 2.
    pub std_err: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// `(p, value)` for each p of [`PERCENTILES`] in that order, as `numpy.percentile(values, p)` (its default
    /// "linear" method).
    pub percentiles: Vec<(f64, f64)>,
}

/// Summarizes `values`; `None` when there are none.
///
/// NaNs must not be passed (debug builds panic; release builds leave them out). The values are sorted once and
/// every sum runs over the sorted order with Neumaier compensation, so the result depends only on the multiset
/// of values, not on their order (and so not on how a parallel run collected them).
pub fn summarize(values: &[f64]) -> Option<Summary> {
    debug_assert!(!values.iter().any(|v| v.is_nan()), "NaN passed to summarize");
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let (&min, &max) = (sorted.first()?, sorted.last()?);
    let n = sorted.len();

    let mut sum = CompensatedSum::default();
    sorted.iter().for_each(|&v| sum.add(v));
    let mean = sum.total() / n as f64;
    let std_err = if n < 2 {
        0.0
    } else if !mean.is_finite() {
        f64::INFINITY
    } else {
        let mut squares = CompensatedSum::default();
        sorted.iter().for_each(|&v| squares.add((v - mean) * (v - mean)));
        (squares.total() / (n - 1) as f64).sqrt() / (n as f64).sqrt()
    };

    Some(Summary {
        n: n as u64,
        mean,
        std_err,
        min,
        max,
        percentiles: PERCENTILES
            .iter()
            .map(|&p| (p, percentile_of_sorted(&sorted, p)))
            .collect(),
    })
}

/// `numpy.percentile(sorted, p)` with the default "linear" method, bit for bit on finite values: the virtual
/// index h = (n − 1)·(p / 100), then numpy's `_lerp` between the neighbours. `p` outside [0, 100] is clamped
/// (numpy raises). Unlike numpy, an infinite neighbour never gives NaN: the interpolation takes its limit.
/// `sorted` must be non-empty and ascending (returns NaN when empty).
fn percentile_of_sorted(sorted: &[f64], p: f64) -> f64 {
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
        return f64::NAN;
    };
    let top = (sorted.len() - 1) as f64;
    let h = top * (p / 100.0);
    if h.is_nan() || h <= 0.0 {
        return first;
    }
    if h >= top {
        return last;
    }
    let below = h.floor();
    let gamma = h - below;
    let at = below as usize;
    let (Some(&a), Some(&b)) = (sorted.get(at), sorted.get(at + 1)) else {
        return last;
    };
    lerp(a, b, gamma)
}

/// numpy's `_lerp(a, b, t)` for 0 ≤ t < 1: a + (b − a)·t, or b − (b − a)·(1 − t) from t = 0.5 on (keeps it
/// monotonic); with an infinite end, the limit instead of NaN.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    if t == 0.0 || a == b || a.is_infinite() {
        a
    } else if b.is_infinite() {
        b
    } else {
        let diff = b - a;
        if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t }
    }
}

/// Neumaier's compensated sum; infinities are kept apart so that they cannot poison the compensation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CompensatedSum {
    sum: f64,
    compensation: f64,
    /// Sum of the infinite terms (0, ±inf, or NaN for +inf + −inf).
    infinite: f64,
}

impl CompensatedSum {
    fn add(&mut self, v: f64) {
        if v.is_infinite() {
            self.infinite += v;
            return;
        }
        let t = self.sum + v;
        self.compensation += if self.sum.abs() >= v.abs() {
            (self.sum - t) + v
        } else {
            (v - t) + self.sum
        };
        self.sum = t;
    }

    fn total(&self) -> f64 {
        if self.infinite == 0.0 {
            self.sum + self.compensation
        } else {
            self.infinite
        }
    }
}

/// A mean built one value at a time (per prompt, say), with Neumaier-compensated summation.
///
/// The result depends on the order of the values only through rounding far below f64's 16 digits; merge
/// per-worker means in a fixed order for bit-identical output. NaNs must not be pushed (debug builds panic;
/// release builds leave them out); ±inf make the mean ±inf.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunningMean {
    count: u64,
    sum: CompensatedSum,
}

impl RunningMean {
    /// An empty mean.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value.
    pub fn push(&mut self, value: f64) {
        debug_assert!(!value.is_nan(), "NaN pushed to RunningMean");
        if value.is_nan() {
            return;
        }
        self.count += 1;
        self.sum.add(value);
    }

    /// Adds all the values of `other`, as if they had been pushed here.
    pub fn merge(&mut self, other: &RunningMean) {
        self.count += other.count;
        self.sum.add(other.sum.sum);
        self.sum.add(other.sum.compensation);
        self.sum.add(other.sum.infinite);
    }

    /// How many values were pushed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum.
    pub fn sum(&self) -> f64 {
        self.sum.total()
    }

    /// Their mean; `None` before the first value.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.total() / self.count as f64)
    }
}

impl Extend<f64> for RunningMean {
    fn extend<I: IntoIterator<Item = f64>>(&mut self, values: I) {
        values.into_iter().for_each(|v| self.push(v));
    }
}

impl FromIterator<f64> for RunningMean {
    fn from_iter<I: IntoIterator<Item = f64>>(values: I) -> Self {
        let mut mean = Self::new();
        mean.extend(values);
        mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percentile_map(summary: &Summary) -> Vec<f64> {
        summary.percentiles.iter().map(|&(_, v)| v).collect()
    }

    /// `[numpy.percentile([1, 2, 3, 4], p) for p in PERCENTILES]` (numpy 2), compared bit for bit.
    #[test]
    fn percentiles_match_numpy_on_a_small_array() {
        let summary = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        let numpy = [
            1.003,
            1.03,
            1.15,
            1.3,
            2.5,
            3.7,
            3.8499999999999996,
            3.9699999999999998,
            3.9970000000000003,
        ];
        assert_eq!(percentile_map(&summary), numpy);
        assert_eq!((summary.n, summary.mean, summary.min, summary.max), (4, 2.5, 1.0, 4.0));
        // Sample variance 5/3: std_err = sqrt(5/3) / 2.
        assert!((summary.std_err - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
    }

    /// numpy interpolates from the upper neighbour when the fraction is ≥ 0.5: `np.percentile(np.array([-311,
    /// -114, 130]) / 7, 90)` is 11.600000000000001, where a + (b − a)·t gives 11.600000000000005.
    #[test]
    fn percentiles_interpolate_from_the_nearer_end_like_numpy() {
        let summary = summarize(&[-311.0 / 7.0, -114.0 / 7.0, 130.0 / 7.0]).unwrap();
        assert_eq!(summary.percentiles[5], (90.0, 11.600000000000001));
    }

    /// ```python
    /// a = np.array([((i * 7919) % 101) / 13 for i in range(37)])
    /// [np.percentile(a, p) for p in PERCENTILES], a.mean(), a.std(ddof=1) / np.sqrt(len(a))
    /// ```
    #[test]
    fn percentiles_mean_and_std_err_match_numpy_on_37_values() {
        let values: Vec<f64> = (0..37).map(|i| ((i * 7919) % 101) as f64 / 13.0).collect();
        let summary = summarize(&values).unwrap();
        let numpy = [
            0.00830769230769231,
            0.08307692307692308,
            0.4153846153846154,
            0.8307692307692308,
            3.8461538461538463,
            6.861538461538461,
            7.276923076923076,
            7.60923076923077,
            7.684000000000002,
        ];
        assert_eq!(percentile_map(&summary), numpy);
        assert!((summary.mean - 3.8544698544698544).abs() < 1e-15);
        assert!((summary.std_err - 0.3752235597544466).abs() < 1e-15);
        assert_eq!((summary.min, summary.max), (0.0, 7.6923076923076925));
    }

    #[test]
    fn summary_does_not_depend_on_order() {
        let values: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1009) as f64 * 1e-3 + 1e8).collect();
        let mut reversed = values.clone();
        reversed.reverse();
        assert_eq!(summarize(&values), summarize(&reversed));
    }

    #[test]
    fn edge_sizes() {
        assert_eq!(summarize(&[]), None);
        let one = summarize(&[0.25]).unwrap();
        assert_eq!(
            (one.n, one.mean, one.std_err, one.min, one.max),
            (1, 0.25, 0.0, 0.25, 0.25)
        );
        assert!(one.percentiles.iter().all(|&(_, v)| v == 0.25));
        let labels: Vec<f64> = one.percentiles.iter().map(|&(p, _)| p).collect();
        assert_eq!(labels, PERCENTILES);
    }

    #[test]
    fn infinities_never_turn_into_nan() {
        let summary = summarize(&[0.5, f64::INFINITY, 1.0, f64::INFINITY]).unwrap();
        assert_eq!((summary.mean, summary.std_err), (f64::INFINITY, f64::INFINITY));
        assert_eq!(summary.max, f64::INFINITY);
        // Sorted [0.5, 1, inf, inf]: p50 lies between 1 and inf, p1 between 0.5 and 1.
        let p = percentile_map(&summary);
        assert_eq!(p[4], f64::INFINITY);
        assert!((p[1] - 0.515).abs() < 1e-12);
        assert!(p.iter().all(|v| !v.is_nan()));
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "NaN passed to summarize"))]
    fn nan_is_a_caller_bug_and_left_out_in_release() {
        let summary = summarize(&[1.0, f64::NAN, 3.0]).unwrap();
        assert_eq!((summary.n, summary.mean), (2, 2.0));
    }

    #[test]
    fn labels_are_the_report_keys() {
        let labels: Vec<String> = PERCENTILES.iter().map(|&p| percentile_label(p)).collect();
        assert_eq!(labels, ["p0.1", "p1", "p5", "p10", "p50", "p90", "p95", "p99", "p99.9"]);
    }

    #[test]
    fn running_mean_compensates_and_merges() {
        // Naive summation loses both ones; Kahan (without Neumaier's branch) loses them too.
        let mean: RunningMean = [1.0, 1e100, 1.0, -1e100].into_iter().collect();
        assert_eq!((mean.count(), mean.sum(), mean.mean()), (4, 2.0, Some(0.5)));
        assert_eq!(RunningMean::new().mean(), None);

        let mut left: RunningMean = [0.1; 10].into_iter().collect();
        let right: RunningMean = [0.2; 30].into_iter().collect();
        left.merge(&right);
        let all: RunningMean = [0.1; 10].into_iter().chain([0.2; 30]).collect();
        assert_eq!(left.count(), 40);
        assert!((left.mean().unwrap() - all.mean().unwrap()).abs() < 1e-16);
        assert!((all.mean().unwrap() - 0.175).abs() < 1e-16);
    }

    #[test]
    fn running_mean_with_infinity() {
        let mean: RunningMean = [1.0, f64::INFINITY].into_iter().collect();
        assert_eq!(mean.mean(), Some(f64::INFINITY));
    }
}
