//! Which message each token of an encoded prompt comes from, so summaries can score only one role's tokens
//! (docs/methods.md, "Scoring one role's tokens").
//!
//! The chat template interleaves the messages' contents with its own text (role headers, special tokens, a default
//! system prompt), and the tokenizer only sees the rendered string. Each message's content is therefore looked up
//! in that string, in message order, each search starting where the previous match ended (so a content repeated
//! in an earlier message or in the template's own text ahead of it is not taken for a later one); a token belongs
//! to the message whose content its byte offsets overlap.

use std::ops::Range;

use super::Message;

/// The role a plain-text prompt's tokens are given: the text is what a user would type.
pub const TEXT_ROLE: &str = "user";

/// Tokens of one prompt with the role of the message each comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRoles<'a> {
    /// Token ids, the same as [`Tokenizer::encode`](super::Tokenizer::encode) gives.
    pub ids: Vec<u32>,
    /// Per token, the role of the message whose content it overlaps; `None` for the template's own tokens and
    /// tokens the tokenizer adds (BOS).
    pub roles: Vec<Option<&'a str>>,
    /// Indices of the messages whose content the rendered template does not contain verbatim: none of their
    /// tokens has a role.
    pub unmatched: Vec<usize>,
}

/// Byte range of each message's content in `rendered`, searched in order from the end of the previous match;
/// `None` for a content not found verbatim (the template rewrote it: trimmed it, escaped it, dropped it).
#[must_use]
pub fn message_spans(rendered: &str, messages: &[Message]) -> Vec<Option<Range<usize>>> {
    let mut from = 0;
    messages
        .iter()
        .map(|message| {
            let found = rendered.get(from..)?.find(&message.content)? + from;
            let span = found..found + message.content.len();
            from = span.end;
            Some(span)
        })
        .collect()
}

/// For each token, given as its byte offsets in the encoded text, the index of the span it overlaps (the first,
/// should one token straddle two); tokens with empty offsets (added special tokens) overlap none.
#[must_use]
pub fn spans_of_tokens(offsets: &[(usize, usize)], spans: &[Option<Range<usize>>]) -> Vec<Option<usize>> {
    offsets
        .iter()
        .map(|&(start, end)| {
            spans.iter().position(|span| {
                span.as_ref()
                    .is_some_and(|span| start < end && start < span.end && end > span.start)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{message_spans, spans_of_tokens};
    use crate::text::Message;

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn contents_are_found_in_order_after_the_previous_match() {
        let rendered = "<s>user: hi</s>assistant: hi there</s>user: hi</s>";
        let messages = [msg("user", "hi"), msg("assistant", "hi there"), msg("user", "hi")];
        let spans = message_spans(rendered, &messages);
        // The second "hi" is the assistant's own, not the first user message again; the third is after it.
        assert_eq!(spans, [Some(9..11), Some(26..34), Some(44..46)]);
        assert_eq!(&rendered[44..46], "hi");
        let missing = message_spans("user: HI", &[msg("user", "hi"), msg("assistant", "HI")]);
        assert_eq!(missing, [None, Some(6..8)]);
    }

    #[test]
    fn a_token_belongs_to_the_span_it_overlaps() {
        let spans = [Some(3..6), None, Some(8..10)];
        // BOS (empty offsets), a token ending where a span starts, one overlapping its start, one inside, one
        // between spans, one in the last span.
        let offsets = [(0, 0), (1, 3), (2, 4), (4, 6), (6, 8), (8, 10)];
        assert_eq!(
            spans_of_tokens(&offsets, &spans),
            [None, None, Some(0), Some(0), None, Some(2)]
        );
    }
}
