//! Where a tensor sits in the model, read from its Hugging Face name.
//!
//! Covers the Llama family (`model.layers.N.self_attn.q_proj`), GPT-2 (`transformer.h.N.attn.c_attn`), Gemma
//! (`pre_feedforward_layernorm`), BERT-style (`encoder.layer.N`) and TransformerLens-style (`blocks.N`) names.

use crate::report::Component;

/// The block index: the number after the first `layers.`, `h.`, `layer.` or `blocks.` segment.
#[must_use]
pub fn layer_index(name: &str) -> Option<usize> {
    let segments: Vec<&str> = name.split('.').collect();
    segments.windows(2).find_map(|w| match w {
        [container, index] if matches!(*container, "layers" | "h" | "layer" | "blocks") => index.parse().ok(),
        _ => None,
    })
}

/// The component kind. Norms are tested first: `post_attention_layernorm` is a norm, not attention.
#[must_use]
pub fn component(name: &str) -> Component {
    let lower = name.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let last_module = lower.rsplit('.').nth(1).unwrap_or_default();
    if has(&["lm_head", "embed_out"]) {
        Component::LmHead
    } else if has(&["embed", "wte", "wpe"]) {
        Component::Embed
    } else if has(&["norm", "ln_"]) || last_module.starts_with("ln") {
        Component::Norm
    } else if has(&["attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj"]) {
        Component::Attn
    } else if has(&[
        "mlp",
        "feed_forward",
        "ffn",
        "gate_proj",
        "up_proj",
        "down_proj",
        "experts",
    ]) {
        Component::Mlp
    } else {
        Component::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_gpt2_and_gemma_names() {
        let cases = [
            ("model.embed_tokens.weight", None, Component::Embed),
            ("model.layers.3.self_attn.q_proj.weight", Some(3), Component::Attn),
            ("model.layers.12.mlp.down_proj.weight", Some(12), Component::Mlp),
            (
                "model.layers.0.post_attention_layernorm.weight",
                Some(0),
                Component::Norm,
            ),
            (
                "model.layers.0.pre_feedforward_layernorm.weight",
                Some(0),
                Component::Norm,
            ),
            ("model.norm.weight", None, Component::Norm),
            ("lm_head.weight", None, Component::LmHead),
            ("transformer.h.1.attn.c_attn.weight", Some(1), Component::Attn),
            ("transformer.h.1.mlp.c_fc.bias", Some(1), Component::Mlp),
            ("transformer.h.1.ln_2.weight", Some(1), Component::Norm),
            ("transformer.wpe.weight", None, Component::Embed),
            ("transformer.ln_f.bias", None, Component::Norm),
            ("model.rotary_emb.inv_freq", None, Component::Other),
        ];
        for (name, layer, comp) in cases {
            assert_eq!((layer_index(name), component(name)), (layer, comp), "{name}");
        }
    }
}
