//! Prompts: the files users write and the built-in set.
//!
//! File formats, chosen by extension:
//! - `.jsonl` / `.ndjson`: one JSON object per line, either `{"text": "..."}` (fed to the model as is, special
//!   tokens added as the tokenizer's post-processor does) or `{"messages": [{"role": "...", "content": "..."},
//!   ...]}` (rendered with the model's chat template). An optional `"group"` (a non-empty string such as
//!   `"safety"` or `"code"`) puts the prompt in a group that the report summarizes apart and `mdiff gate` rules
//!   can address. An optional `"id"` (a string or a number) names the prompt in reports and tables (by default
//!   its index). Other keys (labels, ...) are ignored.
//! - `.json`: a JSON array of the same objects.
//! - `.csv` / `.tsv`: a header row, then one prompt per row (RFC 4180 quoting, so a quoted cell may hold commas,
//!   tabs and line breaks). The `text` column is the prompt; optional `id` and `group` columns as above; other
//!   columns are ignored. Conversations (`messages`) need JSONL.
//! - anything else (`.txt`, no extension, ...): one plain-text prompt per line, kept exactly as written except for
//!   a trailing `\r` (use `.jsonl` for prompts that span lines).
//!
//! Blank lines are skipped everywhere; line numbers stay those of the file so errors point at the right line.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Tokenizer;
use crate::{Error, Result};

/// The built-in prompts, one JSON object per line, each in a `"group"` (chat, code, refusal, ...).
const BUILTIN_JSONL: &str = include_str!("builtin_prompts.jsonl");

/// What a prompt object must look like; quoted in error messages.
const EXPECTED: &str = r#"expected {"text": "..."} or {"messages": [{"role": "...", "content": "..."}, ...]}"#;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `"system"`, `"user"`, `"assistant"`, ... (passed to the chat template as is).
    pub role: String,
    /// The message text.
    pub content: String,
}

/// What a prompt holds: plain text, or a conversation to render with the chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptContent {
    /// Text fed to the tokenizer as is.
    Text(String),
    /// A conversation (never empty) rendered with the model's chat template.
    Messages(Vec<Message>),
}

impl PromptContent {
    /// The prompt as plain text: the text itself, or the `user` messages' contents joined by a blank line.
    ///
    /// This is what a built-in chat prompt becomes for a model without a chat template, and a readable label for
    /// any prompt.
    #[must_use]
    pub fn plain_text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Messages(messages) => messages
                .iter()
                .filter(|m| m.role == "user")
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
}

/// One prompt and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The prompt itself.
    pub content: PromptContent,
    /// 1-based line in its file; for the built-in set, the line in `builtin_prompts.jsonl` (its index + 1, as
    /// that file has no blank lines). For `.json` arrays, the line where the element starts.
    pub line: usize,
    /// The prompt's `"group"`, when it has one (plain-text files have none).
    pub group: Option<String>,
    /// The prompt's `"id"` (a string, or a number written as it reads), when it has one: reports and tables name
    /// the prompt by it.
    pub id: Option<String>,
}

/// Where a [`PromptSet`] was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptSource {
    /// [`builtin_prompts`].
    BuiltIn,
    /// A prompt file.
    File(PathBuf),
}

impl fmt::Display for PromptSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BuiltIn => f.write_str("built-in prompts"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The prompts of one run, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSet {
    /// The prompts (never empty when read with [`read_prompt_file`] or [`builtin_prompts`]).
    pub prompts: Vec<Prompt>,
    /// Where they came from.
    pub source: PromptSource,
}

impl PromptSet {
    /// `path:line` of a prompt (or `built-in prompt N`), for messages and report labels.
    #[must_use]
    pub fn location(&self, prompt: &Prompt) -> String {
        match &self.source {
            PromptSource::BuiltIn => format!("built-in prompt {}", prompt.line),
            PromptSource::File(path) => format!("{}:{}", path.display(), prompt.line),
        }
    }

    /// SHA-256 (hex) of every prompt's content and group, in order: two runs on equal sets share it, wherever the
    /// files lie. Line numbers and the source are left out.
    #[must_use]
    pub fn sha256(&self) -> String {
        // Each field is length-prefixed, so no two different sets encode to the same bytes.
        let mut bytes = Vec::new();
        let mut field = |tag: u8, text: &str| {
            bytes.push(tag);
            bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        };
        for prompt in &self.prompts {
            field(b'p', prompt.group.as_deref().unwrap_or(""));
            match &prompt.content {
                PromptContent::Text(text) => field(b't', text),
                PromptContent::Messages(messages) => {
                    for m in messages {
                        field(b'r', &m.role);
                        field(b'c', &m.content);
                    }
                }
            }
        }
        crate::digest::sha256_hex([bytes.as_slice()])
    }

    /// The set as `tokenizer` will see it.
    ///
    /// Built-in prompts are written for chat models; a base model often has no chat template, so when `tokenizer`
    /// has none, each built-in [`PromptContent::Messages`] prompt becomes [`PromptContent::Text`] of its user
    /// contents ([`PromptContent::plain_text`]). Prompts from a file are never rewritten: a `{"messages": ...}`
    /// line for a tokenizer without a chat template fails in [`Tokenizer::encode`] with an error that says so.
    #[must_use]
    pub fn resolve_for(mut self, tokenizer: &Tokenizer) -> Self {
        for prompt in &mut self.prompts {
            if let Cow::Owned(content) = resolved(&self.source, &prompt.content, tokenizer) {
                prompt.content = content;
            }
        }
        self
    }

    /// Token ids of every prompt, resolved as in [`PromptSet::resolve_for`] and encoded with [`Tokenizer::encode`].
    ///
    /// # Errors
    /// The first prompt that cannot be encoded; chat-template errors name the prompt's location.
    pub fn encode_all(&self, tokenizer: &Tokenizer) -> Result<Vec<Vec<u32>>> {
        self.prompts
            .iter()
            .map(|prompt| {
                tokenizer
                    .encode(&resolved(&self.source, &prompt.content, tokenizer))
                    .map_err(|err| match err {
                        Error::ChatTemplate(reason) => {
                            Error::ChatTemplate(format!("{}: {reason}", self.location(prompt)))
                        }
                        other => other,
                    })
            })
            .collect()
    }
}

/// A prompt's content as `tokenizer` sees it (see [`PromptSet::resolve_for`]).
fn resolved<'a>(source: &PromptSource, content: &'a PromptContent, tokenizer: &Tokenizer) -> Cow<'a, PromptContent> {
    match content {
        PromptContent::Messages(_) if *source == PromptSource::BuiltIn && !tokenizer.has_chat_template() => {
            Cow::Owned(PromptContent::Text(content.plain_text()))
        }
        _ => Cow::Borrowed(content),
    }
}

/// The built-in prompt set: 64 prompts written for mdiff covering chat questions, instructions, code, maths word
/// problems, factual questions, requests a safety-tuned model may refuse, ten languages besides English and prose
/// to continue.
///
/// Chat-style prompts are [`PromptContent::Messages`]; see [`PromptSet::resolve_for`] for models without a chat
/// template.
#[must_use]
pub fn builtin_prompts() -> PromptSet {
    // The embedded file is checked by the `builtin_set_parses_and_covers_the_categories` test, so the empty fallback is never taken.
    let prompts = parse_json_lines(BUILTIN_JSONL.as_bytes()).unwrap_or_default();
    PromptSet {
        prompts,
        source: PromptSource::BuiltIn,
    }
}

/// Reads a prompt file (format by extension, see the [module docs](self)).
///
/// # Errors
/// [`Error::Read`] if the file cannot be read, [`Error::PromptFile`] for the first malformed line (including text
/// that is not UTF-8), [`Error::NoPrompts`] if it holds no prompt.
pub fn read_prompt_file(path: &Path) -> Result<PromptSet> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let parsed = match extension.as_deref() {
        Some("jsonl" | "ndjson") => parse_json_lines(&bytes),
        Some("json") => parse_json_array(&bytes),
        Some("csv") => parse_table(&bytes, b','),
        Some("tsv") => parse_table(&bytes, b'\t'),
        _ => parse_text_lines(&bytes),
    };
    let prompts = parsed.map_err(|LineError { line, reason }| Error::PromptFile {
        path: path.to_path_buf(),
        line,
        reason,
    })?;
    if prompts.is_empty() {
        return Err(Error::NoPrompts {
            path: path.to_path_buf(),
        });
    }
    Ok(PromptSet {
        prompts,
        source: PromptSource::File(path.to_path_buf()),
    })
}

/// A malformed line, before the path is known.
#[derive(Debug)]
struct LineError {
    line: usize,
    reason: String,
}

/// The file's lines as `(1-based number, text)`, without `\r\n` endings or a leading byte-order mark.
fn lines(bytes: &[u8]) -> impl Iterator<Item = std::result::Result<(usize, &str), LineError>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes.split(|b| *b == b'\n').enumerate().map(|(idx, raw)| {
        let line = idx + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        std::str::from_utf8(raw)
            .map(|text| (line, text))
            .map_err(|e| LineError {
                line,
                reason: format!(
                    "not valid UTF-8 (bad byte at column {}); save the file as UTF-8",
                    e.valid_up_to() + 1
                ),
            })
    })
}

fn parse_text_lines(bytes: &[u8]) -> std::result::Result<Vec<Prompt>, LineError> {
    let mut prompts = Vec::new();
    for item in lines(bytes) {
        let (line, text) = item?;
        if !text.trim().is_empty() {
            prompts.push(Prompt {
                content: PromptContent::Text(text.to_owned()),
                line,
                group: None,
                id: None,
            });
        }
    }
    Ok(prompts)
}

fn parse_json_lines(bytes: &[u8]) -> std::result::Result<Vec<Prompt>, LineError> {
    let mut prompts = Vec::new();
    for item in lines(bytes) {
        let (line, text) = item?;
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text).map_err(|e| LineError {
            line,
            reason: format!(
                "invalid JSON ({}, column {}); {EXPECTED}",
                json_error_message(&e),
                e.column()
            ),
        })?;
        prompts.push(prompt_from_json(&value, line).map_err(|reason| LineError { line, reason })?);
    }
    Ok(prompts)
}

fn parse_json_array(bytes: &[u8]) -> std::result::Result<Vec<Prompt>, LineError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| LineError {
        line: line_at(bytes, e.valid_up_to()),
        reason: "not valid UTF-8; save the file as UTF-8".to_owned(),
    })?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| LineError {
        line: e.line(),
        reason: format!("invalid JSON ({}, column {})", json_error_message(&e), e.column()),
    })?;
    let Value::Array(elements) = value else {
        return Err(LineError {
            line: 1,
            reason: format!(
                "a .json prompt file must hold one JSON array of prompt objects, found {}; for one object per \
                 line name the file .jsonl",
                snippet(&value)
            ),
        });
    };
    let starts = array_element_offsets(text);
    elements
        .iter()
        .enumerate()
        .map(|(idx, element)| {
            let line = starts.get(idx).map_or(1, |&offset| line_at(bytes, offset));
            prompt_from_json(element, line).map_err(|reason| LineError { line, reason })
        })
        .collect()
}

/// Reads a `.csv` (`delimiter` `,`) or `.tsv` (`\t`) prompt file: a header naming a `text` column, optional `id`
/// and `group` columns.
fn parse_table(bytes: &[u8], delimiter: u8) -> std::result::Result<Vec<Prompt>, LineError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(bytes);
    let headers = reader.headers().map_err(|e| table_error(bytes, &e))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let Some(text_column) = column("text") else {
        let found: Vec<String> = headers.iter().map(|h| format!("{:?}", h.trim())).collect();
        let reason = if column("messages").is_some() {
            "a \"messages\" column is not read from a table; write conversations as .jsonl, one \
             {\"messages\": [{\"role\": \"...\", \"content\": \"...\"}, ...]} per line"
                .to_owned()
        } else {
            format!(
                "the header has no \"text\" column (found {}); name the prompt column \"text\" (optional \"id\" \
                 and \"group\" columns)",
                found.join(", ")
            )
        };
        return Err(LineError { line: 1, reason });
    };
    let (id_column, group_column) = (column("id"), column("group"));
    let mut prompts = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| table_error(bytes, &e))?;
        let line = record.position().map_or(1, |p| line_of(bytes, p));
        let cell = |column: Option<usize>| {
            column
                .and_then(|c| record.get(c))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let text = record.get(text_column).unwrap_or_default();
        if text.trim().is_empty() {
            return Err(LineError {
                line,
                reason: "the \"text\" cell is empty".to_owned(),
            });
        }
        prompts.push(Prompt {
            content: PromptContent::Text(text.to_owned()),
            line,
            group: cell(group_column),
            id: cell(id_column),
        });
    }
    Ok(prompts)
}

/// The 1-based line where a CSV record starts, counted from its byte offset: the reader's own line count, and its
/// offset, stop at the `\r` of a `\r\n` ending, so the line breaks at the offset are skipped first.
fn line_of(bytes: &[u8], position: &csv::Position) -> usize {
    let mut offset = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    while let Some(b'\r' | b'\n') = bytes.get(offset) {
        offset += 1;
    }
    line_at(bytes, offset)
}

/// A CSV reader's error in `bytes` as a line and a reason.
fn table_error(bytes: &[u8], err: &csv::Error) -> LineError {
    let line = err.position().map_or(1, |p| line_of(bytes, p));
    let reason = match err.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("this row has {len} cells and the header {expected_len}; quote cells that hold the delimiter")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8; save the file as UTF-8".to_owned(),
        _ => err.to_string(),
    };
    LineError { line, reason }
}

/// 1-based line number of byte `offset`.
fn line_at(bytes: &[u8], offset: usize) -> usize {
    1 + bytes.iter().take(offset).filter(|b| **b == b'\n').count()
}

/// Byte offsets where each element of the top-level array in `text` (valid JSON) starts.
fn array_element_offsets(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut expecting) = (0_usize, false, false, false);
    for (offset, byte) in text.bytes().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if byte.is_ascii_whitespace() {
            continue;
        }
        if depth == 1 && expecting && !matches!(byte, b']' | b',') {
            starts.push(offset);
            expecting = false;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                expecting = depth == 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    starts
}

/// serde_json's message without its "at line 1 column 7" suffix (we report positions ourselves).
fn json_error_message(err: &serde_json::Error) -> String {
    let message = err.to_string();
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message,
    }
}

/// A short rendering of a JSON value for error messages.
fn snippet(value: &Value) -> String {
    const MAX_CHARS: usize = 60;
    let text = value.to_string();
    if text.chars().count() <= MAX_CHARS {
        text
    } else {
        format!("{}...", text.chars().take(MAX_CHARS).collect::<String>())
    }
}

/// Parses one prompt object (found at `line`); the error says what is wrong and what is expected.
fn prompt_from_json(value: &Value, line: usize) -> std::result::Result<Prompt, String> {
    let Value::Object(map) = value else {
        return Err(format!("{EXPECTED}, found {}", snippet(value)));
    };
    let group = match map.get("group") {
        None | Some(Value::Null) => None,
        // Trimmed, so "refusal " and "refusal" are one group.
        Some(Value::String(group)) if !group.trim().is_empty() => Some(group.trim().to_string()),
        Some(other) => {
            return Err(format!(
                r#""group" must be a non-empty string such as "safety", found {}"#,
                snippet(other)
            ));
        }
    };
    let content = match (map.get("text"), map.get("messages")) {
        (Some(_), Some(_)) => Err(r#"has both "text" and "messages"; give one of them"#.to_owned()),
        (Some(Value::String(text)), None) if text.trim().is_empty() => Err(r#""text" is empty"#.to_owned()),
        (Some(Value::String(text)), None) => Ok(PromptContent::Text(text.clone())),
        (Some(other), None) => Err(format!(r#""text" must be a string, found {}"#, snippet(other))),
        (None, Some(Value::Array(items))) if items.is_empty() => Err(format!("\"messages\" is empty; {EXPECTED}")),
        (None, Some(Value::Array(items))) => items
            .iter()
            .enumerate()
            .map(|(idx, item)| message_from_json(item).map_err(|reason| format!("message {}: {reason}", idx + 1)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(PromptContent::Messages),
        (None, Some(other)) => Err(format!(
            r#""messages" must be a list of {{"role": "...", "content": "..."}}, found {}"#,
            snippet(other)
        )),
        (None, None) => Err(format!("{EXPECTED}, found {}", snippet(value))),
    }?;
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.trim().is_empty() => Some(id.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(format!(
                r#""id" must be a non-empty string or a number, found {}"#,
                snippet(other)
            ));
        }
    };
    Ok(Prompt {
        content,
        line,
        group,
        id,
    })
}

fn message_from_json(value: &Value) -> std::result::Result<Message, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            r#"expected {{"role": "...", "content": "..."}}, found {}"#,
            snippet(value)
        ));
    };
    let field = |key: &str| match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(_)) if key == "content" => {
            Err(r#""content" must be a string, found a list (multimodal content parts are not supported)"#.to_owned())
        }
        Some(other) => Err(format!(r#""{key}" must be a string, found {}"#, snippet(other))),
        None => Err(format!(r#"missing "{key}""#)),
    };
    Ok(Message {
        role: field("role")?,
        content: field("content")?,
    })
}

#[cfg(test)]
#[path = "prompts_tests.rs"]
mod tests;
