//! The Llama family (Llama 2/3, Mistral, Qwen2, SmolLM, TinyLlama) as Hugging Face names its tensors.

use super::config::ModelConfig;
use super::layers::{Attention, Block, Linear, Mlp};
use super::loader::Loader;
use super::{Parts, attention_scale};
use crate::error::Result;

pub(crate) fn load(c: &ModelConfig, l: &Loader<'_>) -> Result<Parts> {
    let (d, hd) = (c.hidden_size, c.head_dim);
    let embed = l.tensor("model.embed_tokens.weight", &[c.vocab_size, d])?;
    let blocks = (0..c.num_layers)
        .map(|i| {
            let p = format!("model.layers.{i}");
            Ok(Block {
                attn_norm: l.rms_norm(&format!("{p}.input_layernorm"), d, c.norm_eps)?,
                attn: Attention {
                    qkv: Linear::stack(&[
                        l.linear(&format!("{p}.self_attn.q_proj"), c.num_heads * hd, d, c.qkv_bias)?,
                        l.linear(&format!("{p}.self_attn.k_proj"), c.num_kv_heads * hd, d, c.qkv_bias)?,
                        l.linear(&format!("{p}.self_attn.v_proj"), c.num_kv_heads * hd, d, c.qkv_bias)?,
                    ])?,
                    o: l.linear(&format!("{p}.self_attn.o_proj"), d, c.num_heads * hd, c.o_bias)?,
                    heads: c.num_heads,
                    kv_heads: c.num_kv_heads,
                    head_dim: hd,
                    scale: attention_scale(c, i),
                },
                mlp_norm: l.rms_norm(&format!("{p}.post_attention_layernorm"), d, c.norm_eps)?,
                mlp: Mlp::Gated {
                    gate_up: Linear::stack(&[
                        l.linear(&format!("{p}.mlp.gate_proj"), c.intermediate_size, d, c.mlp_bias)?,
                        l.linear(&format!("{p}.mlp.up_proj"), c.intermediate_size, d, c.mlp_bias)?,
                    ])?,
                    down: l.linear(&format!("{p}.mlp.down_proj"), d, c.intermediate_size, c.mlp_bias)?,
                    activation: c.activation,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let final_norm = l.rms_norm("model.norm", d, c.norm_eps)?;
    // As transformers: a tied model uses the embedding even if the file also stores lm_head.weight.
    let unembed = if c.tie_word_embeddings {
        embed.clone()
    } else {
        l.tensor("lm_head.weight", &[c.vocab_size, d])?
    };
    Ok(Parts {
        embed,
        pos_embed: None,
        blocks,
        final_norm,
        unembed,
    })
}
