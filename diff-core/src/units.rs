//! Units for people: the CLI's tables, the gate's messages and the viewer show sizes and numbers the same way.

/// A size in bytes with a binary unit and one decimal (`512 B`, `1.5 MiB`).
#[must_use]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    match UNITS.get(unit) {
        Some(name) if unit > 0 => format!("{v:.1} {name}"),
        _ => format!("{n} B"),
    }
}

/// Four significant digits; scientific notation outside [1e-3, 1e5), so tiny KLs do not read as 0. Trailing zeros
/// are kept, so columns of these line up.
#[must_use]
pub fn significant(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        #[allow(clippy::cast_possible_truncation, reason = "log10 of a value in [1e-3, 1e5)")]
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6);
        #[allow(clippy::cast_sign_loss, reason = "clamped to 0..=6")]
        let decimals = decimals as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

/// [`significant`] without trailing zeros (`0.1`, `12`): for numbers read in a sentence, such as a policy's limits.
#[must_use]
pub fn short(v: f64) -> String {
    let text = significant(v);
    if text.contains('.') && !text.contains('e') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::{bytes, short, significant};

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(significant(1.98600456), "1.986");
        assert_eq!(significant(0.0123456), "0.01235");
        assert_eq!(significant(1234.5), "1234");
        assert_eq!(significant(2.5e-7), "2.500e-7");
        assert_eq!(significant(-0.5), "-0.5000");
        assert_eq!((significant(0.0), short(0.0)), ("0".into(), "0".into()));
        assert_eq!(short(0.1), "0.1");
        assert_eq!(short(12.0), "12");
        assert_eq!(short(1.5e-5), "1.500e-5");
        assert_eq!(short(2.070521567), "2.071");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }
}
