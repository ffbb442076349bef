//! Tiny tokenizers written into temp dirs, so tests control exactly what the tokenizer does.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::token_display::byte_level_char;

/// Special tokens of [`byte_level_tokenizer`], ids 0, 1, 2, ...
pub(crate) const SPECIALS: [&str; 4] = ["<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"];

/// The fixture tokenizers the other engineers keep in `fixtures/` (their post-processors may change).
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
        .join("base/tokenizer.json")
}

/// A GPT-2-style byte-level BPE: [`SPECIALS`] as added tokens, the 256 byte chars, and merges that make `" the"`
/// and `"Hello"` single tokens. With `bos_post_processor` it prepends `<|bos|>` like Llama 3's tokenizer does.
pub(crate) fn byte_level_tokenizer(bos_post_processor: bool) -> Value {
    let mut vocab = serde_json::Map::new();
    for (id, special) in SPECIALS.iter().enumerate() {
        vocab.insert((*special).to_owned(), json!(id));
    }
    for byte in 0..=255_u8 {
        let id = vocab.len();
        vocab.insert(byte_level_char(byte).to_string(), json!(id));
    }
    let merges = [
        ("Ġ", "t"),
        ("Ġt", "h"),
        ("Ġth", "e"),
        ("H", "e"),
        ("He", "l"),
        ("Hel", "l"),
        ("Hell", "o"),
    ];
    for (a, b) in merges {
        let id = vocab.len();
        vocab.insert(format!("{a}{b}"), json!(id));
    }
    let added: Vec<Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(id, content)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let post_processor = if bos_post_processor {
        json!({"type": "TemplateProcessing",
               "single": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
               "pair": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                        {"Sequence": {"id": "B", "type_id": 1}}],
               "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [0], "tokens": ["<|bos|>"]}}})
    } else {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()}
    })
}

/// A Llama-2-style SentencePiece BPE with byte fallback: `▁` for spaces, `<0xAB>` byte tokens, and the decoder
/// chain that strips the first leading space.
pub(crate) fn sentencepiece_tokenizer() -> Value {
    let mut vocab = serde_json::Map::new();
    for token in ["<unk>", "<s>", "</s>"] {
        let id = vocab.len();
        vocab.insert(token.to_owned(), json!(id));
    }
    for byte in 0..=255_u8 {
        let id = vocab.len();
        vocab.insert(format!("<0x{byte:02X}>"), json!(id));
    }
    let pieces = ["▁", "a", "t", "h", "e", "▁a", "▁t", "▁th", "▁the"];
    for piece in pieces {
        let id = vocab.len();
        vocab.insert(piece.to_owned(), json!(id));
    }
    let merges = ["▁ a", "▁ t", "▁t h", "▁th e"];
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

/// Writes `tokenizer.json` and, when given, `tokenizer_config.json` and `chat_template.jinja` into a temp dir;
/// returns the dir and the `tokenizer.json` path.
pub(crate) fn model_dir(
    tokenizer: &Value,
    config: Option<&Value>,
    jinja: Option<&str>,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, tokenizer.to_string()).expect("write tokenizer.json");
    if let Some(config) = config {
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).expect("write config");
    }
    if let Some(jinja) = jinja {
        std::fs::write(dir.path().join("chat_template.jinja"), jinja).expect("write chat_template.jinja");
    }
    (dir, path)
}
