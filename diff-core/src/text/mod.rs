//! Text in and out of the models: tokenizers, chat templates and prompt files.
