//! The report's JSON layout: indented like `serde_json`'s pretty printer, except that arrays holding no object and
//! nesting at most two deep (per-token rows, `[id, p]` pairs, a position's top-k list) take one line.
//!
//! Pretty JSON puts every number of every per-token row on its own line, behind up to a dozen spaces: for a report
//! with top-k tokens per position that is ~3× the bytes (a 290 MB file instead of ~95 MB for 330k positions) and
//! unreadable in an editor anyway. Folded rows keep the file diffable and greppable.

use serde::Serialize;

use crate::error::{Error, Result};

/// Arrays nesting deeper than this (a leaf is 0) are spread over lines.
const MAX_FOLDED_DEPTH: usize = 2;

/// Serializes `value` in the report layout.
///
/// # Errors
/// [`Error::Serialize`] when `value` cannot be serialized (a map with non-string keys, a failing `Serialize`).
pub fn to_readable_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let compact = serde_json::to_vec(value)?;
    relayout(&compact).ok_or_else(|| Error::Internal("re-laying out the report's JSON failed".into()))
}

/// Re-lays out compact JSON (as `serde_json::to_vec` writes it); `None` if it is not.
fn relayout(compact: &[u8]) -> Option<Vec<u8>> {
    let folded = fold_decisions(compact)?;
    let mut writer = Writer {
        text: compact,
        pos: 0,
        folded: &folded,
        next_array: 0,
        out: Vec::with_capacity(compact.len() + compact.len() / 4),
    };
    writer.value(0)?;
    (writer.pos == compact.len()).then_some(())?;
    writer.out.push(b'\n');
    Some(writer.out)
}

/// Position just past the string literal that starts at `pos`.
fn skip_string(text: &[u8], mut pos: usize) -> Option<usize> {
    pos += 1;
    loop {
        match *text.get(pos)? {
            b'\\' => pos += 2,
            b'"' => return Some(pos + 1),
            _ => pos += 1,
        }
    }
}

/// For each `[` in document order: whether that array goes on one line. One pass with a stack: an array's depth
/// and whether it holds an object are known when it closes, and are handed to the array around it.
fn fold_decisions(text: &[u8]) -> Option<Vec<bool>> {
    enum Open {
        Array {
            index: usize,
            depth: usize,
            has_object: bool,
        },
        Object,
    }
    let mut folded = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut pos = 0;
    while let Some(&byte) = text.get(pos) {
        match byte {
            b'"' => {
                pos = skip_string(text, pos)?;
                continue;
            }
            b'[' => {
                stack.push(Open::Array {
                    index: folded.len(),
                    depth: 0,
                    has_object: false,
                });
                folded.push(false);
            }
            b'{' => {
                if let Some(Open::Array { has_object, .. }) = stack.last_mut() {
                    *has_object = true;
                }
                stack.push(Open::Object);
            }
            b'}' => {
                let Some(Open::Object) = stack.pop() else { return None };
            }
            b']' => {
                let Some(Open::Array {
                    index,
                    depth,
                    has_object,
                }) = stack.pop()
                else {
                    return None;
                };
                let depth = depth + 1;
                *folded.get_mut(index)? = !has_object && depth <= MAX_FOLDED_DEPTH;
                if let Some(Open::Array {
                    depth: outer,
                    has_object: outer_object,
                    ..
                }) = stack.last_mut()
                {
                    *outer = (*outer).max(depth);
                    *outer_object |= has_object;
                }
            }
            _ => {}
        }
        pos += 1;
    }
    stack.is_empty().then_some(folded)
}

struct Writer<'a> {
    text: &'a [u8],
    pos: usize,
    folded: &'a [bool],
    next_array: usize,
    out: Vec<u8>,
}

impl Writer<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn newline(&mut self, indent: usize) {
        self.out.push(b'\n');
        self.out.extend(std::iter::repeat_n(b' ', 2 * indent));
    }

    fn copy_to(&mut self, end: usize) -> Option<()> {
        self.out.extend_from_slice(self.text.get(self.pos..end)?);
        self.pos = end;
        Some(())
    }

    /// Copies one value at `pos`, laid out for nesting level `indent`.
    fn value(&mut self, indent: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.container(indent, b'}', true, false),
            b'[' => {
                let folded = *self.folded.get(self.next_array)?;
                self.next_array += 1;
                self.container(indent, b']', false, folded)
            }
            b'"' => {
                let end = skip_string(self.text, self.pos)?;
                self.copy_to(end)
            }
            _ => {
                let mut end = self.pos;
                while !matches!(self.text.get(end), None | Some(b',' | b']' | b'}')) {
                    end += 1;
                }
                self.copy_to(end)
            }
        }
    }

    /// An object or array whose opening bracket is at `pos`; members of an object are `key: value`.
    fn container(&mut self, indent: usize, close: u8, object: bool, folded: bool) -> Option<()> {
        self.copy_to(self.pos + 1)?;
        if self.peek()? == close {
            return self.copy_to(self.pos + 1);
        }
        loop {
            if folded {
                if self.out.last() == Some(&b',') {
                    self.out.push(b' ');
                }
            } else {
                self.newline(indent + 1);
            }
            if object {
                let end = skip_string(self.text, self.pos)?;
                self.copy_to(end)?;
                (self.peek()? == b':').then_some(())?;
                self.pos += 1;
                self.out.extend_from_slice(b": ");
            }
            self.value(indent + 1)?;
            match self.peek()? {
                b',' => self.copy_to(self.pos + 1)?,
                c if c == close => {
                    if !folded {
                        self.newline(indent);
                    }
                    return self.copy_to(self.pos + 1);
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn layout(value: &Value) -> String {
        String::from_utf8(to_readable_json(value).unwrap()).unwrap()
    }

    #[test]
    fn objects_are_indented_and_small_arrays_folded() {
        let value = json!({
            "rows": [[[1, 0.5], [2, 2.5e-7]]],
            "tokens": ["a\"b", "é,]", "{["],
            "empty": [],
            "none": {},
            "objects": [{"k": {}}],
            "deep": [[[[1]]]]
        });
        let want = r#"{
  "deep": [
    [
      [[1]]
    ]
  ],
  "empty": [],
  "none": {},
  "objects": [
    {
      "k": {}
    }
  ],
  "rows": [
    [[1, 0.5], [2, 2.5e-7]]
  ],
  "tokens": ["a\"b", "é,]", "{["]
}
"#;
        assert_eq!(layout(&value), want);
    }

    #[test]
    fn without_folding_it_is_serde_json_pretty() {
        let value = json!({"a": {"b": [{"c": 1}, {"d": "x"}]}, "e": true, "f": null});
        assert_eq!(layout(&value), serde_json::to_string_pretty(&value).unwrap() + "\n");
    }

    #[test]
    fn the_layout_parses_back_to_the_same_value() {
        let value = json!({"x": [[1, [2, [3, {"y": [4.5, -0.0, "z"]}]]]], "s": "\\\"]}"});
        let text = layout(&value);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn input_that_is_not_compact_json_is_refused() {
        for bad in [&b"[1,2"[..], b"{\"a\":1]", b"[1]]", b"\"open"] {
            assert!(relayout(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
