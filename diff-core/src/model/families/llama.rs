//! The Llama family (Llama 2/3, Mistral, Qwen2, SmolLM, TinyLlama): pre-norm RMSNorm, RoPE, grouped-query
//! attention, SwiGLU MLP.

use super::{BlockNames, Layout, MlpNames, Projections, SizeKeys, Spec, decoder};
use crate::error::Result;
use crate::model::config::{Defaults, Fields, ModelConfig, SlidingLayers};

pub(crate) const SPEC: Spec = Spec {
    id: "llama",
    display: "LlamaForCausalLM (Llama 2/3, SmolLM, TinyLlama), MistralForCausalLM, Qwen2ForCausalLM",
    architectures: &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"],
    model_types: &["llama", "mistral", "qwen2"],
    config,
    layout: LAYOUT,
    language_tower: None,
};

/// The Hugging Face decoder names that most families reuse.
pub(crate) const LAYOUT: Layout = Layout {
    embed: "model.embed_tokens",
    pos_embed: None,
    blocks: "model.layers",
    final_norm: "model.norm",
    keys: SizeKeys {
        layers: "num_hidden_layers",
        hidden: "hidden_size",
        intermediate: "intermediate_size",
        context: "max_position_embeddings",
    },
    block: BlockNames {
        attn_norm: Some("input_layernorm"),
        qkv: Projections::Separate(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
        q_norm: None,
        k_norm: None,
        o: "self_attn.o_proj",
        attn_post_norm: None,
        mlp_norm: Some("post_attention_layernorm"),
        mlp: MlpNames::Gated {
            gate: "mlp.gate_proj",
            up: "mlp.up_proj",
            down: "mlp.down_proj",
        },
        mlp_post_norm: None,
    },
    conv1d: false,
    load: decoder::load,
};

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Llama,
    Mistral,
    Qwen2,
}

fn config(f: &Fields<'_>, architecture: String) -> Result<ModelConfig> {
    let dialect = match (architecture.as_str(), f.model_type()) {
        ("MistralForCausalLM", _) | (_, "mistral") => Dialect::Mistral,
        ("Qwen2ForCausalLM", _) | (_, "qwen2") => Dialect::Qwen2,
        _ => Dialect::Llama,
    };
    let mut c = f.decoder(
        &SPEC,
        architecture,
        &Defaults {
            context_len: match dialect {
                Dialect::Mistral => 4096 * 32,
                Dialect::Qwen2 => 32768,
                Dialect::Llama => 2048,
            },
            ..Defaults::LLAMA
        },
    )?;
    // As transformers: Mistral defaults to a 4096 window unless the key is explicitly null; Qwen2 windows only
    // layers from max_window_layers on, and only with use_sliding_window.
    (c.block.sliding_window, c.block.sliding_layers) = match dialect {
        Dialect::Mistral if !f.has("sliding_window") => (Some(4096), SlidingLayers::From(0)),
        Dialect::Mistral => (f.usize("sliding_window")?, SlidingLayers::From(0)),
        Dialect::Qwen2 if f.bool("use_sliding_window", false)? => (
            // As Qwen3: 4096 unless given (null: none).
            if f.has("sliding_window") {
                f.usize("sliding_window")?
            } else {
                Some(4096)
            },
            SlidingLayers::From(f.usize("max_window_layers")?.unwrap_or(28)),
        ),
        _ => (None, SlidingLayers::None),
    };
    if dialect == Dialect::Qwen2 {
        // Qwen2 always has q/k/v biases and never an output bias.
        (c.qkv_bias, c.o_bias) = (true, false);
    }
    Ok(c)
}
