//! Number formatting shared by every panel: short, aligned and honest about magnitude.

pub use mdiff_core::units::{bytes, significant as number};

/// [`number`], or `–` for a value the report does not have.
#[must_use]
pub fn optional(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), number)
}

/// [`number`] with an explicit sign, for differences.
#[must_use]
pub fn signed(v: f64) -> String {
    if v > 0.0 { format!("+{}", number(v)) } else { number(v) }
}

/// An integer with thin thousands separators.
#[must_use]
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// A share in [0, 1] as a percentage.
#[must_use]
pub fn percent(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits_and_switch_to_scientific() {
        assert_eq!(number(1.98600456), "1.986");
        assert_eq!(number(0.0123456), "0.01235");
        assert_eq!(number(1234.5), "1234");
        assert_eq!(number(2.5e-7), "2.500e-7");
        assert_eq!(number(0.0), "0");
        assert_eq!(signed(0.25), "+0.2500");
        assert_eq!(signed(-2.5e-7), "-2.500e-7");
        assert_eq!(number(-0.5), "-0.5000");
        assert_eq!(optional(None), "–");
        assert_eq!(optional(Some(0.5)), "0.5000");
    }

    #[test]
    fn counts_and_shares_are_readable() {
        assert_eq!(count(1_234_567), "1\u{2009}234\u{2009}567");
        assert_eq!(count(12), "12");
        assert_eq!(percent(0.25), "25.0%");
    }
}
