//! A Hugging Face tokenizer with its chat template, encoding prompts exactly as transformers does.
//!
//! Files read (all beside each other, as `save_pretrained` writes them):
//! - `tokenizer.json`: the tokenizer itself (required);
//! - `tokenizer_config.json`: special-token strings (`bos_token`, `eos_token`, ...; a string or an AddedToken
//!   object `{"content": ...}`) and `chat_template` (a string, or a list of `{"name", "template"}` of which the one
//!   named `default` is used);
//! - `chat_template.jinja`: where transformers ≥ 4.43 saves the template; it wins over `tokenizer_config.json`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chat_template::ChatTemplate;
use super::token_display::TokenDisplay;
use super::token_roles::{TEXT_ROLE, TokenRoles, message_spans, spans_of_tokens};
use super::{Message, PromptContent};
use crate::{Error, Result};

/// Special tokens transformers passes to chat templates (its `special_tokens_map`), as `tokenizer_config.json`
/// names them.
const SPECIAL_TOKEN_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
    "cls_token",
    "mask_token",
];

/// A loaded tokenizer: `tokenizer.json`, its special tokens and its chat template.
pub struct Tokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
    special_tokens: Vec<(&'static str, String)>,
    chat_template: TemplateSlot,
    display: TokenDisplay,
    vocab_size: usize,
}

/// The chat template, if any; one that cannot be used is kept as its error so text prompts still work.
#[derive(Debug)]
enum TemplateSlot {
    Missing,
    Ready(Box<ChatTemplate>),
    Unusable(String),
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size)
            .field("special_tokens", &self.special_tokens)
            .field("chat_template", &self.chat_template)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (or the one inside a directory) and, beside it, `tokenizer_config.json` and
    /// `chat_template.jinja` (see the [module docs](self)).
    ///
    /// Truncation and padding saved in `tokenizer.json` are switched off, as transformers does unless asked.
    /// A chat template that does not compile does not fail loading: it fails [`Tokenizer::encode`] of
    /// [`PromptContent::Messages`] prompts.
    ///
    /// # Errors
    /// [`Error::Read`] for unreadable files, [`Error::Tokenizer`] for an invalid `tokenizer.json` or
    /// `tokenizer_config.json`.
    pub fn load(tokenizer_json: &Path) -> Result<Self> {
        let path = if tokenizer_json.is_dir() {
            tokenizer_json.join("tokenizer.json")
        } else {
            tokenizer_json.to_path_buf()
        };
        let bytes = std::fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            reason: format!("not a valid tokenizer.json ({e})"),
        })?;
        inner.with_truncation(None).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            reason: format!("cannot disable truncation ({e})"),
        })?;
        inner.with_padding(None);

        let dir = path.parent().unwrap_or_else(|| Path::new(""));
        let (special_tokens, config_template) = read_tokenizer_config(&dir.join("tokenizer_config.json"))?;
        let jinja_path = dir.join("chat_template.jinja");
        let chat_template = if jinja_path.is_file() {
            let source = std::fs::read_to_string(&jinja_path).map_err(|source| Error::Read {
                path: jinja_path.clone(),
                source,
            })?;
            compile(&source, &jinja_path)
        } else {
            config_template
        };
        let display = TokenDisplay::new(&inner);
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&max| usize::try_from(max).map_or(usize::MAX, |max| max + 1));
        Ok(Self {
            path,
            inner,
            special_tokens,
            chat_template,
            display,
            vocab_size,
        })
    }

    /// The id of the beginning-of-sequence token that `tokenizer_config.json` names, if it names one the vocabulary
    /// has.
    #[must_use]
    pub fn bos_id(&self) -> Option<u32> {
        let (_, text) = self.special_tokens.iter().find(|(key, _)| *key == "bos_token")?;
        self.inner.token_to_id(text)
    }

    /// The `tokenizer.json` this was loaded from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the tokenizer comes with a chat template (even one that fails to compile; encoding says why).
    #[must_use]
    pub fn has_chat_template(&self) -> bool {
        !matches!(self.chat_template, TemplateSlot::Missing)
    }

    /// The file the usable chat template was read from (`chat_template.jinja` or `tokenizer_config.json`).
    #[must_use]
    pub fn chat_template_path(&self) -> Option<&Path> {
        match &self.chat_template {
            TemplateSlot::Ready(template) => Some(template.origin()),
            TemplateSlot::Missing | TemplateSlot::Unusable(_) => None,
        }
    }

    /// Number of token ids, added tokens included: one more than the largest id (the embedding rows it needs).
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Token ids as Hugging Face produces them.
    ///
    /// - [`PromptContent::Text`]: `encode(text, add_special_tokens=True)`, so the post-processor adds BOS (or
    ///   whatever it adds) exactly where the model's tokenizer does.
    /// - [`PromptContent::Messages`]: the chat template rendered ([`Tokenizer::render_chat`]), then
    ///   `encode(rendered, add_special_tokens=False)`, as `apply_chat_template(..., tokenize=True)` does (the
    ///   template writes its own BOS).
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] when messages cannot be rendered (no template, a template that does not compile or
    /// fails), [`Error::Tokenizer`] if the tokenizer itself fails.
    pub fn encode(&self, prompt: &PromptContent) -> Result<Vec<u32>> {
        let encoding = match prompt {
            PromptContent::Text(text) => self.inner.encode(text.as_str(), true),
            PromptContent::Messages(messages) => self.inner.encode(self.render_chat(messages)?, false),
        }
        .map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            reason: format!("encoding failed: {e}"),
        })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// [`Tokenizer::encode`] with the role of the message each token comes from ([module docs](super::token_roles)):
    /// a plain-text prompt's tokens are all [`TEXT_ROLE`]'s, bar those the tokenizer adds (BOS).
    ///
    /// # Errors
    /// As [`Tokenizer::encode`].
    pub fn encode_with_roles<'a>(&self, prompt: &'a PromptContent) -> Result<TokenRoles<'a>> {
        let (encoding, spans, roles): (_, _, Vec<&str>) = match prompt {
            PromptContent::Text(text) => (
                self.inner.encode(text.as_str(), true),
                vec![Some(0..text.len())],
                vec![TEXT_ROLE],
            ),
            PromptContent::Messages(messages) => {
                let rendered = self.render_chat(messages)?;
                let spans = message_spans(&rendered, messages);
                let roles = messages.iter().map(|m| m.role.as_str()).collect();
                (self.inner.encode(rendered, false), spans, roles)
            }
        };
        let encoding = encoding.map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            reason: format!("encoding failed: {e}"),
        })?;
        let owners = spans_of_tokens(encoding.get_offsets(), &spans);
        Ok(TokenRoles {
            ids: encoding.get_ids().to_vec(),
            roles: owners
                .into_iter()
                .map(|o| o.and_then(|i| roles.get(i).copied()))
                .collect(),
            unmatched: spans
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_none())
                .map(|(i, _)| i)
                .collect(),
        })
    }

    /// The chat template rendered for `messages`, with `add_generation_prompt` true unless the last message is the
    /// assistant's, and the special-token strings of `tokenizer_config.json` (`bos_token`, `eos_token`, ...).
    ///
    /// # Errors
    /// [`Error::ChatTemplate`]: no template (use `{"text": ...}` prompts instead), a template that does not
    /// compile, or one that fails or calls `raise_exception` (with its message).
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let add_generation_prompt = messages.last().is_none_or(|m| m.role != "assistant");
        match &self.chat_template {
            TemplateSlot::Ready(template) => template.render(messages, add_generation_prompt, &self.special_tokens),
            TemplateSlot::Unusable(reason) => Err(Error::ChatTemplate(format!(
                "{reason}; fix the template or write the prompts as {{\"text\": ...}}"
            ))),
            TemplateSlot::Missing => Err(Error::ChatTemplate(format!(
                "the tokenizer {} has no chat_template (none in tokenizer_config.json and no chat_template.jinja \
                 beside it), so {{\"messages\": [...]}} prompts cannot be rendered; write them as {{\"text\": ...}} \
                 prompts instead",
                self.path.display()
            ))),
        }
    }

    /// The display string of each token, so reports need no tokenizer: what the token contributes to decoded text
    /// in the middle of a sequence (`" the"` with its leading space, `"\n"`, `"<|eot_id|>"`). A token that is an
    /// incomplete UTF-8 piece of a multi-byte character is shown as its bytes (`"<0xE2>"`, or `" <0xE2><0x80>"`)
    /// instead of U+FFFD; an id outside the vocabulary as `"<unknown id N>"`.
    #[must_use]
    pub fn token_strings(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.display.token_string(&self.inner, id))
            .collect()
    }

    /// Text of `ids` as `decode(ids, skip_special_tokens=False)` gives it.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if the decoder fails.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            reason: format!("decoding failed: {e}"),
        })
    }
}

/// Compiles a template, keeping a compile error for later.
fn compile(source: &str, origin: &Path) -> TemplateSlot {
    match ChatTemplate::compile(source, origin) {
        Ok(template) => TemplateSlot::Ready(Box::new(template)),
        Err(reason) => TemplateSlot::Unusable(reason),
    }
}

/// Special-token strings and chat template of `tokenizer_config.json`; neither when the file is absent.
fn read_tokenizer_config(path: &Path) -> Result<(Vec<(&'static str, String)>, TemplateSlot)> {
    if !path.is_file() {
        return Ok((Vec::new(), TemplateSlot::Missing));
    }
    let invalid = |reason: String| Error::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON ({e})")))?;
    let Value::Object(config) = config else {
        return Err(invalid("tokenizer_config.json is not a JSON object".to_owned()));
    };

    let mut special_tokens = Vec::new();
    for key in SPECIAL_TOKEN_KEYS {
        let text = match config.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(text)) => text,
            Some(Value::Object(token)) => match token.get("content") {
                Some(Value::String(text)) => text,
                _ => return Err(invalid(format!(r#""{key}" is an object without a string "content""#))),
            },
            Some(other) => {
                return Err(invalid(format!(
                    r#""{key}" must be a string or {{"content": ...}}, found {other}"#
                )));
            }
        };
        special_tokens.push((key, text.clone()));
    }

    let template = match config.get("chat_template") {
        None | Some(Value::Null) => TemplateSlot::Missing,
        Some(Value::String(source)) => compile(source, path),
        Some(Value::Array(entries)) => named_default_template(entries, path),
        Some(other) => TemplateSlot::Unusable(format!(
            "{}: \"chat_template\" must be a string or a list of {{\"name\", \"template\"}}, found {}",
            path.display(),
            kind_of(other)
        )),
    };
    Ok((special_tokens, template))
}

/// The template named `default` in a list of `{"name", "template"}`, as transformers picks it.
fn named_default_template(entries: &[Value], path: &Path) -> TemplateSlot {
    fn named(entry: &Value) -> Option<(&str, &str)> {
        Some((entry.get("name")?.as_str()?, entry.get("template")?.as_str()?))
    }
    let mut names = Vec::new();
    for entry in entries {
        match named(entry) {
            Some(("default", source)) => return compile(source, path),
            Some((name, _)) => names.push(name.to_owned()),
            None => {
                return TemplateSlot::Unusable(format!(
                    "{}: \"chat_template\" list entries must be {{\"name\": ..., \"template\": ...}}",
                    path.display()
                ));
            }
        }
    }
    TemplateSlot::Unusable(format!(
        "{}: several chat templates ({}) and none named \"default\"",
        path.display(),
        names.join(", ")
    ))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[path = "tokenizer_tests.rs"]
mod tests;
