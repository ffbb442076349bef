//! Short tables for people: column-aligned text, numbers in compact scientific form.

use std::fmt::Write;

pub use mdiff_core::units::bytes;

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

    /// Renders with two spaces between columns and a leading indent.
    pub fn render(&self, indent: &str) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                let cells = self.rows.iter().filter_map(|r| r.get(c));
                cells
                    .chain(self.headers.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = indent.to_string();
            for (cell, width) in row.iter().zip(&widths) {
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
        assert_eq!(t.render(""), "name       value\na            1.5\nlong name     10\n");
    }
}
