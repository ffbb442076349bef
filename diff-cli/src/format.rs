//! Short tables for people: column-aligned text that fits the terminal, numbers in compact scientific form.

use std::fmt::Write;
use std::sync::OnceLock;

pub use mdiff_core::units::bytes;

/// Width assumed when neither `COLUMNS` nor the terminal says (and for output into pipes and files).
pub const DEFAULT_WIDTH: usize = 100;

/// Narrowest a shortened text column gets: enough for `layers.12.mlp…` to stay recognisable.
const MIN_COLUMN: usize = 12;

/// The width tables fit: `COLUMNS` when set to a number, else the terminal's when stdout is one, else
/// [`DEFAULT_WIDTH`]. Read once.
pub fn terminal_width() -> usize {
    static WIDTH: OnceLock<usize> = OnceLock::new();
    *WIDTH.get_or_init(|| {
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok());
        columns
            .or_else(|| {
                console::Term::stdout()
                    .size_checked()
                    .map(|(_, cols)| usize::from(cols))
            })
            .filter(|&w| w > 0)
            .unwrap_or(DEFAULT_WIDTH)
    })
}

/// `text` in at most `width` characters: Hugging Face's `model.` prefix dropped first (`model.layers.3.mlp` →
/// `layers.3.mlp`), then a `.weight` suffix, then the middle replaced by `…`, keeping a third of the room for the
/// start (the layer) and the rest for the end (the module, which tells rows apart).
#[must_use]
pub fn shorten(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_string();
    }
    if let Some(rest) = text.strip_prefix("model.") {
        return shorten(rest, width);
    }
    if let Some(rest) = text.strip_suffix(".weight") {
        return shorten(rest, width);
    }
    if width < 3 {
        return text.chars().take(width).collect();
    }
    // The layer (`layers.12.`) is kept whole when it takes at most two thirds of the room.
    let layer = text
        .strip_prefix("layers.")
        .and_then(|rest| rest.find('.'))
        .map_or(0, |dot| "layers.".len() + dot + 1);
    let head = if layer <= (width - 1) * 2 / 3 {
        layer.max((width - 1) / 3)
    } else {
        (width - 1) / 3
    };
    let tail = width - 1 - head;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(count - tail));
    out
}

/// `text` wrapped at spaces into lines of at most `width` characters, each starting with `indent` (the first one
/// included); a word longer than a line stays whole.
#[must_use]
pub fn wrap(text: &str, indent: &str, width: usize) -> String {
    let room = width.saturating_sub(indent.chars().count()).max(MIN_COLUMN);
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > room {
            let _ = writeln!(out, "{indent}{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}{line}");
    }
    out
}

/// A plain text table; numeric-looking cells are right-aligned.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders with two spaces between columns and a leading indent, fitting [`terminal_width`].
    pub fn render(&self, indent: &str) -> String {
        self.render_within(indent, terminal_width())
    }

    /// Renders within `width` characters: when the columns are wider, the widest text columns are narrowed (not
    /// below [`MIN_COLUMN`]; the first column last) and their cells [`shorten`]ed; numbers are never cut.
    pub fn render_within(&self, indent: &str, width: usize) -> String {
        let mut widths: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                let cells = self.rows.iter().filter_map(|r| r.get(c));
                cells
                    .chain(self.headers.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let text_column: Vec<bool> = (0..widths.len())
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).any(|cell| !is_numeric(cell)))
            .collect();
        let total = |widths: &[usize]| {
            indent.chars().count() + widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)
        };
        // The first column names the row (a tensor, a metric): it is narrowed only once the others cannot be.
        let narrowable = |widths: &[usize], first: bool| {
            widths
                .iter()
                .enumerate()
                .filter(|&(c, &w)| (c == 0) == first && text_column.get(c).copied().unwrap_or(false) && w > MIN_COLUMN)
                .max_by_key(|&(c, &w)| (w, std::cmp::Reverse(c)))
                .map(|(c, _)| c)
        };
        while total(&widths) > width {
            let widest = narrowable(&widths, false).or_else(|| narrowable(&widths, true));
            match widest.and_then(|c| widths.get_mut(c)) {
                Some(w) => *w -= 1,
                None => break,
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = indent.to_string();
            for (cell, &width) in row.iter().zip(&widths) {
                let cell = &shorten(cell, width);
                if is_numeric(cell) {
                    let _ = write!(line, "{cell:>width$}  ");
                } else {
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn is_numeric(cell: &str) -> bool {
    !cell.is_empty() && cell.chars().all(|c| c.is_ascii_digit() || ".-+e%".contains(c)) && cell != "-"
}

/// Compact number: 0, 1.23e-4, 0.0123, 12.3, 1.23e5.
pub fn num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e4).contains(&v.abs()) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

/// Human parameter count.
pub fn params(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_compact_and_tables_align() {
        assert_eq!(
            (num(0.0), num(0.5), num(1.5e-6)),
            ("0".into(), "0.5000".into(), "1.50e-6".into())
        );
        assert_eq!(
            (bytes(512), bytes(2048), params(1_500_000)),
            ("512 B".into(), "2.0 KiB".into(), "1.5M".into())
        );
        let mut t = Table::new(&["name", "value"]);
        t.row(vec!["a".into(), "1.5".into()]);
        t.row(vec!["long name".into(), "10".into()]);
        assert_eq!(
            t.render_within("", 100),
            "name       value\na            1.5\nlong name     10\n"
        );
    }

    /// Issue #15: tables ran to 155 columns.
    #[test]
    fn wide_tables_shorten_their_text_columns_to_fit() {
        let mut t = Table::new(&["tensor", "‖ΔW‖/‖W‖", "context"]);
        t.row(vec![
            "model.layers.12.self_attn.q_proj.weight".into(),
            "0.9568".into(),
            "a long stretch of context text that goes on".into(),
        ]);
        let natural = t.render_within("  ", 200);
        assert!(natural.contains("model.layers.12.self_attn.q_proj.weight"), "{natural}");
        let fitted = t.render_within("  ", 60);
        for line in fitted.lines() {
            assert!(line.chars().count() <= 60, "{line:?} in\n{fitted}");
        }
        assert!(fitted.contains("0.9568"), "numbers are never cut: {fitted}");
        assert!(
            fitted.contains(" layers.12.self_attn.q_proj") && fitted.contains("a l… goes on"),
            "{fitted}"
        );
        // Too narrow for the minimum: columns stop at MIN_COLUMN rather than vanish.
        let narrow = t.render_within("", 10);
        assert!(narrow.lines().nth(1).unwrap().starts_with("lay…n.q_proj"), "{narrow}");
    }

    #[test]
    fn paths_lose_the_model_prefix_then_their_middle() {
        assert_eq!(shorten("model.layers.3.mlp", 12), "layers.3.mlp");
        assert_eq!(
            shorten("model.layers.12.mlp.down_proj.weight", 23),
            "layers.12.mlp.down_proj"
        );
        assert_eq!(
            shorten("model.layers.12.mlp.down_proj.weight", 20),
            "layers.12.…down_proj"
        );
        assert_eq!(shorten("lm_head.weight", 8), "lm_head");
        assert_eq!(shorten("short", 20), "short");
        assert_eq!(wrap("one two three four", "  ", 14), "  one two\n  three four\n");
    }
}
