//! `config.json` and `tokenizer.json` found beside the weights.
//!
//! The weight diff needs neither; they are described in the report so readers know what was compared, and later
//! analyses build the model from them. Config dialects differ between transformers versions (`torch_dtype` vs
//! `dtype`, `n_layer` in GPT-2), so fields are read leniently.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::report::ModelConfigSummary;

/// `dir/name` when it is a file.
#[must_use]
pub fn find_beside(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = dir.join(name);
    path.is_file().then_some(path)
}

/// Reads the fields of `config.json` the report shows.
///
/// # Errors
/// A one-line description of why the file cannot be used (unreadable, not JSON, not an object).
pub fn read_config_summary(path: &Path) -> Result<ModelConfigSummary, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let Value::Object(map) = value else {
        return Err(format!("{} is not a JSON object", path.display()));
    };
    // A multimodal checkpoint keeps its language model's sizes under text_config.
    let text = map.get("text_config").and_then(Value::as_object);
    let get = |key: &str| text.and_then(|t| t.get(key)).or_else(|| map.get(key));
    let first_u64 = |keys: &[&str]| keys.iter().find_map(|k| get(k).and_then(Value::as_u64));
    let first_str = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str))
            .map(String::from)
    };
    Ok(ModelConfigSummary {
        path: path.display().to_string(),
        architecture: map
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .map(String::from),
        model_type: first_str(&["model_type"]),
        num_layers: first_u64(&["num_hidden_layers", "n_layer", "num_layers"]),
        hidden_size: first_u64(&["hidden_size", "n_embd", "d_model"]),
        vocab_size: first_u64(&["vocab_size"]),
        dtype: first_str(&["dtype", "torch_dtype"]),
        // Absent, the architecture's default, as the model loader reads it: GPT-2 and Gemma tie, the Llama family
        // does not. This mirrors the families' `Defaults::tie_word_embeddings` because this reader is also built
        // without the runtime (the viewer, the gate); keep the two in step.
        tie_word_embeddings: get("tie_word_embeddings").and_then(Value::as_bool).or_else(|| {
            Some(matches!(
                first_str(&["model_type"]).as_deref(),
                Some("gpt2" | "gemma" | "gemma2" | "gemma3" | "gemma3_text")
            ))
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llama_and_gpt2_dialects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"architectures":["GPT2LMHeadModel"],"n_layer":2,"n_embd":64,"torch_dtype":"float32"}"#,
        )
        .unwrap();
        let s = read_config_summary(&path).unwrap();
        assert_eq!(s.architecture.as_deref(), Some("GPT2LMHeadModel"));
        assert_eq!((s.num_layers, s.hidden_size), (Some(2), Some(64)));
        assert_eq!(s.dtype.as_deref(), Some("float32"));

        std::fs::write(&path, "{not json").unwrap();
        assert!(read_config_summary(&path).unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn gemma_ties_by_default_and_a_multimodal_config_gives_its_text_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"architectures":["Gemma2ForCausalLM"],"model_type":"gemma2"}"#,
        )
        .unwrap();
        assert_eq!(read_config_summary(&path).unwrap().tie_word_embeddings, Some(true));
        std::fs::write(&path, r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3"}"#).unwrap();
        assert_eq!(read_config_summary(&path).unwrap().tie_word_embeddings, Some(false));
        std::fs::write(
            &path,
            r#"{"architectures":["Gemma3ForConditionalGeneration"],"model_type":"gemma3",
            "text_config":{"hidden_size":2560,"num_hidden_layers":34,"vocab_size":262208}}"#,
        )
        .unwrap();
        let s = read_config_summary(&path).unwrap();
        assert_eq!(
            (s.num_layers, s.hidden_size, s.vocab_size),
            (Some(34), Some(2560), Some(262_208))
        );
        assert_eq!(s.tie_word_embeddings, Some(true));
    }
}
