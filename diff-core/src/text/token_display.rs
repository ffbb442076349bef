//! The display string of each token, so reports can show tokens without a tokenizer.
//!
//! A token is shown as the text it contributes in the middle of a sequence: we decode it after an anchor token
//! and drop the anchor's text. That keeps the leading space of SentencePiece tokens (`▁the` → `" the"`), which
//! their decoders strip at the start of a sequence. A token that is an incomplete piece of a multi-byte UTF-8
//! character decodes to U+FFFD; it is shown as its bytes instead (`<0xE2>`), taken from byte-level BPE's
//! byte ↔ char table or from a byte-fallback token's own name.

use std::fmt::Write as _;

use tokenizers::DecoderWrapper;

/// How one tokenizer's tokens are displayed.
#[derive(Debug, Clone)]
pub(crate) struct TokenDisplay {
    /// The decoder is (or contains) GPT-2's byte-level decoder.
    byte_level: bool,
    /// A token that decodes to non-empty text on its own, and that text; `None` without a decoder.
    anchor: Option<(u32, String)>,
}

impl TokenDisplay {
    pub(crate) fn new(inner: &tokenizers::Tokenizer) -> Self {
        let decoder = inner.get_decoder();
        let anchor = decoder.and_then(|_| {
            let encoding = inner.encode("a", false).ok()?;
            let [id] = encoding.get_ids() else { return None };
            let text = inner.decode(&[*id], false).ok()?;
            (!text.is_empty()).then_some((*id, text))
        });
        Self {
            byte_level: decoder.is_some_and(is_byte_level),
            anchor,
        }
    }

    /// The display string of token `id` (see the module docs).
    pub(crate) fn token_string(&self, inner: &tokenizers::Tokenizer, id: u32) -> String {
        let Some(token) = inner.id_to_token(id) else {
            return format!("<unknown id {id}>");
        };
        let decoded = self.decode_in_context(inner, id).unwrap_or_else(|| token.clone());
        if !decoded.contains('\u{FFFD}') {
            decoded
        } else if self.byte_level {
            display_bytes(&byte_level_bytes(&token))
        } else if is_byte_fallback_token(&token) {
            token
        } else {
            decoded
        }
    }

    fn decode_in_context(&self, inner: &tokenizers::Tokenizer, id: u32) -> Option<String> {
        if let Some((anchor, prefix)) = &self.anchor
            && let Ok(full) = inner.decode(&[*anchor, id], false)
            && let Some(rest) = full.strip_prefix(prefix.as_str())
        {
            return Some(rest.to_owned());
        }
        inner.decode(&[id], false).ok()
    }
}

fn is_byte_level(decoder: &DecoderWrapper) -> bool {
    match decoder {
        DecoderWrapper::ByteLevel(_) => true,
        DecoderWrapper::Sequence(sequence) => sequence.get_decoders().iter().any(is_byte_level),
        _ => false,
    }
}

/// `<0xAB>`, the name SentencePiece byte-fallback tokens have.
fn is_byte_fallback_token(token: &str) -> bool {
    token.len() == 6
        && token.starts_with("<0x")
        && token.ends_with('>')
        && token
            .get(3..5)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Bytes as text where they are valid UTF-8 and as `<0xAB>` where they are not.
fn display_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(out, "<0x{byte:02X}>");
        }
    }
    out
}

/// The bytes a byte-level BPE token stands for, as the byte-level decoder computes them: every char mapped back
/// through GPT-2's table, or the token's own UTF-8 if some char is not in the table (added tokens).
fn byte_level_bytes(token: &str) -> Vec<u8> {
    token
        .chars()
        .map(byte_level_byte)
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_else(|| token.as_bytes().to_vec())
}

/// Bytes GPT-2's table leaves as themselves: printable Latin-1 except the soft hyphen.
fn is_printable_byte(byte: u32) -> bool {
    (0x21..=0x7E).contains(&byte) || (0xA1..=0xAC).contains(&byte) || (0xAE..=0xFF).contains(&byte)
}

/// GPT-2's byte → char table: printable bytes stand for themselves, the other 68 (0x00-0x20, 0x7F-0xA0, 0xAD)
/// map in order to U+0100, U+0101, ... (tests build vocabularies with it; decoding only needs the inverse).
#[cfg(test)]
pub(crate) fn byte_level_char(byte: u8) -> char {
    let code = u32::from(byte);
    let mapped = if is_printable_byte(code) {
        code
    } else if code <= 0x20 {
        256 + code
    } else if code <= 0xA0 {
        256 + 33 + (code - 0x7F)
    } else {
        256 + 67
    };
    char::from_u32(mapped).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The inverse of [`byte_level_char`].
fn byte_level_byte(c: char) -> Option<u8> {
    let code = u32::from(c);
    let byte = if is_printable_byte(code) {
        code
    } else {
        match code.checked_sub(256)? {
            n @ 0..=32 => n,
            n @ 33..=66 => 0x7F + (n - 33),
            67 => 0xAD,
            _ => return None,
        }
    };
    u8::try_from(byte).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips_and_matches_gpt2() {
        for byte in 0..=255_u8 {
            assert_eq!(byte_level_byte(byte_level_char(byte)), Some(byte), "byte {byte:#04x}");
        }
        assert_eq!(byte_level_char(b' '), 'Ġ');
        assert_eq!(byte_level_char(b'\n'), 'Ċ');
        assert_eq!(byte_level_char(b'a'), 'a');
        assert_eq!(byte_level_char(0xAD), 'Ń');
        assert_eq!(byte_level_byte('€'), None);
    }

    #[test]
    fn bytes_display_valid_text_and_hex_for_broken_pieces() {
        assert_eq!(display_bytes(b" the"), " the");
        assert_eq!(display_bytes(&[0xE2]), "<0xE2>");
        assert_eq!(display_bytes(&[b' ', 0xE2, 0x80]), " <0xE2><0x80>");
        assert_eq!(display_bytes("€".as_bytes()), "€");
        assert!(is_byte_fallback_token("<0x0A>"));
        assert!(!is_byte_fallback_token("<0xZZ>"));
        assert!(!is_byte_fallback_token("<|bos|>"));
    }
}
