//! GPT-2 as Hugging Face names its tensors (with or without the `transformer.` prefix).
//!
//! GPT-2's `Conv1D` stores weights `[in, out]`; they are transposed once here so every layer computes x·Wᵀ, and
//! the fused `c_attn` stays fused.

use candle_core::Tensor;

use super::config::ModelConfig;
use super::layers::{Attention, Block, Linear, Mlp};
use super::loader::Loader;
use super::{Parts, attention_scale};
use crate::error::Result;

pub(crate) fn load(c: &ModelConfig, l: &Loader<'_>) -> Result<Parts> {
    let d = c.hidden_size;
    let conv1d = |prefix: &str, input: usize, out: usize| -> Result<(Tensor, Tensor)> {
        let weight = l
            .tensor(&format!("{prefix}.weight"), &[input, out])?
            .t()?
            .contiguous()?;
        Ok((weight, l.tensor(&format!("{prefix}.bias"), &[out])?))
    };
    let blocks = (0..c.num_layers)
        .map(|i| {
            let p = format!("h.{i}");
            // c_attn is already q, k and v side by side: the fused projection the runtime wants.
            let (qkv_w, qkv_b) = conv1d(&format!("{p}.attn.c_attn"), d, 3 * d)?;
            let (o_w, o_b) = conv1d(&format!("{p}.attn.c_proj"), d, d)?;
            let (fc_w, fc_b) = conv1d(&format!("{p}.mlp.c_fc"), d, c.intermediate_size)?;
            let (proj_w, proj_b) = conv1d(&format!("{p}.mlp.c_proj"), c.intermediate_size, d)?;
            Ok(Block {
                attn_norm: l.layer_norm(&format!("{p}.ln_1"), d, c.norm_eps)?,
                attn: Attention {
                    qkv: Linear::new(qkv_w, Some(qkv_b)),
                    o: Linear::new(o_w, Some(o_b)),
                    heads: c.num_heads,
                    kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                    scale: attention_scale(c, i),
                },
                mlp_norm: l.layer_norm(&format!("{p}.ln_2"), d, c.norm_eps)?,
                mlp: Mlp::Plain {
                    fc: Linear::new(fc_w, Some(fc_b)),
                    proj: Linear::new(proj_w, Some(proj_b)),
                    activation: c.activation,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let embed = l.tensor("wte.weight", &[c.vocab_size, d])?;
    let unembed = if c.tie_word_embeddings {
        embed.clone()
    } else {
        l.tensor("lm_head.weight", &[c.vocab_size, d])?
    };
    Ok(Parts {
        pos_embed: Some(l.tensor("wpe.weight", &[c.context_len, d])?),
        embed,
        blocks,
        final_norm: l.layer_norm("ln_f", d, c.norm_eps)?,
        unembed,
    })
}
