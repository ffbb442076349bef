//! Prompts → token ids both models can run: encoded as Hugging Face does, checked against the vocabulary, and cut
//! to the context length with a warning.

use crate::error::{Error, Result};
use crate::report::Score;
use crate::text::{PromptContent, PromptSet, Tokenizer};

/// A prompt ready to run: its ids (truncated to the context) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    /// 1-based line in the prompt file (or index in the built-in set).
    pub line: usize,
    /// Whether the chat template rendered it.
    pub chat_template: bool,
    /// Token ids fed to both models.
    pub ids: Vec<u32>,
    /// Tokens dropped from the end to fit the context.
    pub truncated_tokens: usize,
    /// The prompt's group, when it has one.
    pub group: Option<String>,
    /// The prompt's id, when the prompt file gives one.
    pub id: Option<String>,
    /// Per position (as `ids`), whether the KL summaries score it ([`Score`]; all true for [`Score::All`]).
    pub scored: Vec<bool>,
}

/// Encodes every prompt of `set` for models with `context_len` positions and `vocab_size` embedding rows.
/// Returns the prompts (in set order) and warnings for the report.
///
/// # Errors
/// Chat-template and tokenizer failures; [`Error::Tokenizer`] when the tokenizer yields an id the model has no
/// embedding for.
pub fn prepare_prompts(
    set: &PromptSet,
    tokenizer: &Tokenizer,
    context_len: usize,
    vocab_size: usize,
) -> Result<(Vec<EncodedPrompt>, Vec<String>)> {
    prepare_scored_prompts(set, tokenizer, context_len, vocab_size, Score::All)
}

/// [`prepare_prompts`] with the positions `score` keeps marked in [`EncodedPrompt::scored`]: for a role, position
/// t is scored when the token at t + 1 (the one the model predicts there) comes from a message of that role
/// ([`Tokenizer::encode_with_roles`]); a warning names each message of that role the rendered template does not
/// contain verbatim (none of its tokens is scored).
///
/// # Errors
/// As [`prepare_prompts`].
pub fn prepare_scored_prompts(
    set: &PromptSet,
    tokenizer: &Tokenizer,
    context_len: usize,
    vocab_size: usize,
    score: Score,
) -> Result<(Vec<EncodedPrompt>, Vec<String>)> {
    let resolved = set.clone().resolve_for(tokenizer);
    let encoded = resolved.encode_all(tokenizer)?;
    let mut warnings = Vec::new();
    let mut prompts = Vec::with_capacity(encoded.len());
    for (prompt, mut ids) in resolved.prompts.iter().zip(encoded) {
        let location = resolved.location(prompt);
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(Error::Tokenizer {
                path: tokenizer.path().to_path_buf(),
                reason: format!(
                    "{location} encodes to token id {bad}, but the model has only {vocab_size} embedding rows; \
                     is this the model's own tokenizer?"
                ),
            });
        }
        if ids.is_empty() {
            warnings.push(format!("{location} encodes to no tokens and was skipped"));
        }
        let mut scored = match score.role() {
            None => vec![true; ids.len()],
            Some(role) => {
                let roles = tokenizer.encode_with_roles(&prompt.content)?;
                // The roles are read off a second encoding; were it to differ from the first, every mark would be
                // shifted, so the two are checked to agree rather than trusted to.
                if roles.ids != ids {
                    return Err(Error::Internal(format!(
                        "{location}: the encoding with message offsets differs from the plain one ({} vs {} tokens)",
                        roles.ids.len(),
                        ids.len()
                    )));
                }
                if let PromptContent::Messages(messages) = &prompt.content {
                    for &i in &roles.unmatched {
                        if messages.get(i).is_some_and(|m| m.role == role) {
                            warnings.push(format!(
                                "{location}: the chat template changes the text of message {} (the {role}'s), so \
                                 --score {role} scores none of its tokens",
                                i + 1
                            ));
                        }
                    }
                }
                (1..=ids.len())
                    .map(|next| roles.roles.get(next).copied().flatten() == Some(role))
                    .collect()
            }
        };
        let truncated_tokens = ids.len().saturating_sub(context_len);
        if truncated_tokens > 0 {
            warnings.push(format!(
                "{location} has {} tokens, more than the model's context of {context_len}; the last \
                 {truncated_tokens} tokens were dropped",
                ids.len()
            ));
            ids.truncate(context_len);
            scored.truncate(context_len);
        }
        prompts.push(EncodedPrompt {
            line: prompt.line,
            chat_template: matches!(prompt.content, PromptContent::Messages(_)),
            ids,
            truncated_tokens,
            group: prompt.group.clone(),
            id: prompt.id.clone(),
            scored,
        });
    }
    Ok((prompts, warnings))
}
