//! Text in and out of the models: tokenizers, chat templates and prompt files.
//!
//! - [`prompts`]: prompt files (`.txt`, `.jsonl`, `.json`, `.csv`, `.tsv`) and the built-in prompt set.
//! - [`tokenizer`]: `tokenizer.json` + `tokenizer_config.json` (+ `chat_template.jinja`), encoding prompts to ids
//!   exactly as Hugging Face does, and the display string of each token for reports.
//! - [`token_roles`]: which message (user, assistant, ...) each token of a chat-templated prompt comes from.
//! - `chat_template`: renders a model's Jinja chat template the way `transformers` does (same whitespace
//!   handling, Python string methods, `raise_exception`, `strftime_now`, Python-style `tojson`).

mod chat_template;
pub mod prompts;
mod template_globals;
mod token_display;
pub mod token_roles;
pub mod tokenizer;

#[cfg(test)]
mod test_support;

pub use prompts::{Message, Prompt, PromptContent, PromptSet, PromptSource, builtin_prompts, read_prompt_file};
pub use token_roles::TokenRoles;
pub use tokenizer::Tokenizer;
