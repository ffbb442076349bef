//! A model's Jinja chat template, rendered the way `transformers` renders it.
//!
//! transformers (`utils/chat_template_utils.py`, `_compile_jinja_template`) uses an `ImmutableSandboxedEnvironment`
//! with `trim_blocks=True, lstrip_blocks=True` and the `loopcontrols` extension, adds `raise_exception`,
//! `strftime_now` and its own `tojson`, and renders with `messages`, `tools=None`, `documents=None`,
//! `add_generation_prompt` and the special-token strings (`bos_token`, `eos_token`, ...). We do the same with
//! minijinja, plus minijinja-contrib's Python compatibility so `.strip()`, `.startswith()`, `.items()` and friends
//! work. transformers' `{% generation %}` block (which only marks assistant spans) is rewritten to a plain block.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ValueKind};
use minijinja::{AutoEscape, Environment, Error as JinjaError, ErrorKind, Output, State, Value};

use super::Message;
use super::template_globals::{RaisedByTemplate, raise_exception, strftime_now, tojson};
use crate::{Error, Result};

/// Name the template is registered under; minijinja's errors quote it (`in chat_template:3`).
const TEMPLATE_NAME: &str = "chat_template";

/// Template instructions one render may run, before [`FUEL_PER_MESSAGE`]: the Llama 3, ChatML and Zephyr templates
/// of `testdata/` use 90–340 for a four-message conversation, so this is hundreds of times what a chat template
/// needs and stops only templates that loop without end (in well under a second).
const FUEL_BASE: u64 = 200_000;

/// Instructions allowed per message on top of [`FUEL_BASE`], so long conversations still render.
const FUEL_PER_MESSAGE: u64 = 10_000;

/// Bytes one render may write beyond its messages' own text: a template adds role markers and a system prompt,
/// never megabytes.
const OUTPUT_OVERHEAD: usize = 4 << 20;

/// A compiled chat template and the file it came from.
#[derive(Debug)]
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    origin: PathBuf,
}

impl ChatTemplate {
    /// Compiles `source`, read from `origin` (`tokenizer_config.json` or `chat_template.jinja`).
    ///
    /// # Errors
    /// A one-line description of the syntax error.
    pub(crate) fn compile(source: &str, origin: &Path) -> std::result::Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |format: String| strftime_now(&format));
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_blocks(source))
            .map_err(|err| {
                let line = err
                    .line()
                    .map_or_else(String::new, |line| format!(" (template line {line})"));
                format!(
                    "{}{line}: the chat template does not compile: {}",
                    origin.display(),
                    one_line(&err)
                )
            })?;
        Ok(Self {
            env,
            origin: origin.to_path_buf(),
        })
    }

    /// The file the template was read from.
    pub(crate) fn origin(&self) -> &Path {
        &self.origin
    }

    /// Renders `messages`; `special_tokens` are `(name, text)` pairs such as `("bos_token", "<s>")`.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] with the template's own message for `raise_exception`, or minijinja's for other
    /// failures, both with the template's file and line.
    pub(crate) fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        special_tokens: &[(&'static str, String)],
    ) -> Result<String> {
        let text_bytes: usize = messages.iter().map(|m| m.role.len() + m.content.len()).sum::<usize>()
            + special_tokens.iter().map(|(_, t)| t.len()).sum::<usize>();
        let num_messages = messages.len() as u64;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_object(MessageObject {
                    role: m.role.clone(),
                    content: m.content.clone(),
                })
            })
            .collect();
        let mut context: Vec<(&str, Value)> = vec![
            ("messages", Value::from(messages)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        context.extend(
            special_tokens
                .iter()
                .map(|(name, text)| (*name, Value::from(text.as_str()))),
        );
        let context: Value = context.into_iter().collect();
        // A template is code from a download: bound its running time (fuel per instruction, scaled to the
        // conversation) as well as its output. The environment is cheap to clone (templates are shared).
        let mut env = self.env.clone();
        let fuel = FUEL_BASE.saturating_add(FUEL_PER_MESSAGE.saturating_mul(num_messages));
        env.set_fuel(Some(fuel));
        let mut out = BoundedOutput {
            bytes: Vec::new(),
            limit: text_bytes.saturating_mul(2).saturating_add(OUTPUT_OVERHEAD),
            overflowed: false,
        };
        env.get_template(TEMPLATE_NAME)
            .and_then(|template| template.render_captured_to(context, &mut out).map(drop))
            .map_err(|err| match err.kind() {
                ErrorKind::OutOfFuel => Error::ChatTemplate(format!(
                    "{}: rendering one prompt ran past {fuel} template steps and was stopped; the template loops \
                     far longer than a chat template should (check its for loops)",
                    self.origin.display()
                )),
                ErrorKind::WriteFailure if out.overflowed => Error::ChatTemplate(format!(
                    "{}: rendering one prompt wrote more than {} and was stopped; the template writes far more \
                     than its messages (check its for loops)",
                    self.origin.display(),
                    crate::units::bytes(out.limit as u64)
                )),
                _ => self.render_error(&err),
            })?;
        String::from_utf8(out.bytes).map_err(|_| {
            Error::ChatTemplate(format!(
                "{}: the template rendered text that is not UTF-8",
                self.origin.display()
            ))
        })
    }

    fn render_error(&self, err: &minijinja::Error) -> Error {
        let at = match err.line() {
            Some(line) => format!("{} (template line {line})", self.origin.display()),
            None => self.origin.display().to_string(),
        };
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            if let Some(RaisedByTemplate(message)) = inner.downcast_ref::<RaisedByTemplate>() {
                return Error::ChatTemplate(format!("{at}: the template raised: {message}"));
            }
            source = inner.source();
        }
        Error::ChatTemplate(format!("{at}: {}", one_line(err)))
    }
}

/// The rendered text, refusing to grow past `limit` bytes (a template that loops writing text would otherwise fill
/// the memory before its fuel runs out).
struct BoundedOutput {
    bytes: Vec<u8>,
    limit: usize,
    /// Set when a write was refused, so the render error is known to be ours.
    overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("the rendered prompt is too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Prints booleans and none as Python does (`True`, `False`, `None`; minijinja writes `true`, `false`, `none`).
fn python_formatter(out: &mut Output<'_>, state: &State<'_, '_>, value: &Value) -> std::result::Result<(), JinjaError> {
    let python = match value.kind() {
        ValueKind::Bool if value.is_true() => "True",
        ValueKind::Bool => "False",
        ValueKind::None => "None",
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(python)
        .map_err(|e| JinjaError::new(ErrorKind::WriteFailure, "cannot write output").with_source(e))
}

/// minijinja's kind and detail on one line, without its `(in chat_template:3)` suffix (we name the file).
fn one_line(err: &minijinja::Error) -> String {
    let text = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    text.replace('\n', " ")
}

/// Rewrites transformers' `{% generation %}` / `{% endgeneration %}` tags (unknown to minijinja) into
/// `{% if true %}` / `{% endif %}`, keeping whitespace-control markers so the output is unchanged.
fn rewrite_generation_blocks(source: &str) -> String {
    if !source.contains("generation") {
        return source.to_owned();
    }
    let Ok(pattern) = regex::Regex::new(r"\{%([-+]?)\s*(end)?generation\s*([-+]?)%\}") else {
        return source.to_owned();
    };
    pattern
        .replace_all(source, |caps: &regex::Captures<'_>| {
            let (open, close) = (&caps[1], &caps[3]);
            if caps.get(2).is_some() {
                format!("{{%{open} endif {close}%}}")
            } else {
                format!("{{%{open} if true {close}%}}")
            }
        })
        .into_owned()
}

/// A message as the template sees it: a mapping with `role` and `content`, iterated in that order (so
/// `message | tojson` and `message.items()` match transformers, where messages are Python dicts).
#[derive(Debug)]
struct MessageObject {
    role: String,
    content: String,
}

impl Object for MessageObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "role" => Some(Value::from(self.role.as_str())),
            "content" => Some(Value::from(self.content.as_str())),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["role", "content"])
    }
}

#[cfg(test)]
#[path = "chat_template_tests.rs"]
mod tests;
