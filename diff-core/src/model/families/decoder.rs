//! The Hugging Face decoder layout most families share (`model.embed_tokens`, `model.layers.{i}`, `model.norm`,
//! `lm_head`), loaded by the names and options a family declares; and the tensor shapes its config implies.

use super::{MlpNames, Projections};
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::fit::Expected;
use crate::model::layers::{Attention, Block, Linear, Mlp, QkNorms};
use crate::model::loader::Loader;
use crate::model::{Parts, attention_scale};

/// Loads a model in the decoder layout of `c.family`.
pub(crate) fn load(c: &ModelConfig, l: &Loader<'_>) -> Result<Parts> {
    let layout = &c.family.spec().layout;
    let names = &layout.block;
    let (d, hd, inter) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let (q_rows, kv_rows) = (c.num_heads * hd, c.num_kv_heads * hd);
    let norm = |name: &str, width: usize| l.norm(name, width, c.norm, c.norm_eps);
    let embed = l.tensor(&format!("{}.weight", layout.embed), &[c.vocab_size, d])?;
    let blocks = (0..c.num_layers)
        .map(|i| {
            let at = |module: &str| format!("{}.{i}.{module}", layout.blocks);
            let optional_norm = |name: Option<&str>| name.map(|n| norm(&at(n), d)).transpose();
            let qkv = match names.qkv {
                Projections::Separate([q, k, v]) => Linear::stack(&[
                    l.linear(&at(q), q_rows, d, c.qkv_bias)?,
                    l.linear(&at(k), kv_rows, d, c.qkv_bias)?,
                    l.linear(&at(v), kv_rows, d, c.qkv_bias)?,
                ])?,
                Projections::Fused(qkv) => l.linear(&at(qkv), q_rows + 2 * kv_rows, d, c.qkv_bias)?,
            };
            let qk_norm = match (c.block.qk_norm, names.q_norm, names.k_norm) {
                (None, ..) => None,
                (Some(kind), Some(q), Some(k)) => {
                    let (q_width, k_width) = kind.widths(c);
                    Some(QkNorms {
                        kind,
                        q: norm(&at(q), q_width)?,
                        k: norm(&at(k), k_width)?,
                    })
                }
                _ => {
                    return Err(Error::Internal(format!(
                        "the {} layout names no q/k norms",
                        c.family.id()
                    )));
                }
            };
            let mlp = match names.mlp {
                MlpNames::Gated { gate, up, down } => Mlp::Gated {
                    gate_up: Linear::stack(&[
                        l.linear(&at(gate), inter, d, c.mlp_bias)?,
                        l.linear(&at(up), inter, d, c.mlp_bias)?,
                    ])?,
                    down: l.linear(&at(down), d, inter, c.mlp_bias)?,
                    activation: c.activation,
                },
                MlpNames::FusedGated { gate_up, down } => Mlp::Gated {
                    gate_up: l.linear(&at(gate_up), 2 * inter, d, c.mlp_bias)?,
                    down: l.linear(&at(down), d, inter, c.mlp_bias)?,
                    activation: c.activation,
                },
                MlpNames::Plain { .. } => {
                    return Err(Error::Internal(format!(
                        "the {} layout has no gated MLP for the decoder loader",
                        c.family.id()
                    )));
                }
            };
            Ok(Block {
                attn_norm: optional_norm(names.attn_norm)?,
                attn: Attention {
                    qkv,
                    qk_norm,
                    o: l.linear(&at(names.o), d, q_rows, c.o_bias)?,
                    heads: c.num_heads,
                    kv_heads: c.num_kv_heads,
                    head_dim: hd,
                    scale: attention_scale(c, i),
                    softcap: c.block.attn_softcap,
                },
                attn_post_norm: optional_norm(names.attn_post_norm)?,
                mlp_norm: optional_norm(names.mlp_norm)?,
                mlp,
                mlp_post_norm: optional_norm(names.mlp_post_norm)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let final_norm = norm(layout.final_norm, d)?;
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

/// The tensors that carry the config's sizes, with the shapes it implies (stored shapes: GPT-2's `Conv1D` is
/// `[in, out]`).
pub(crate) fn expected_shapes(c: &ModelConfig) -> Vec<Expected> {
    let layout = &c.family.spec().layout;
    let n = |v: usize| v as u128;
    let (vocab, d, inter) = (n(c.vocab_size), n(c.hidden_size), n(c.intermediate_size));
    let (q_rows, kv_rows) = (n(c.num_heads) * n(c.head_dim), n(c.num_kv_heads) * n(c.head_dim));
    let stored = |out: u128, input: u128| if layout.conv1d { [input, out] } else { [out, input] };
    let block0 = |module: &str| format!("{}.0.{module}.weight", layout.blocks);
    let mut shapes = vec![Expected {
        tensor: format!("{}.weight", layout.embed),
        shape: [vocab, d],
        keys: "vocab_size × hidden_size",
    }];
    if let Some(pos) = layout.pos_embed {
        shapes.push(Expected {
            tensor: format!("{pos}.weight"),
            shape: [n(c.context_len), d],
            keys: "max positions × hidden_size",
        });
    }
    match layout.block.qkv {
        Projections::Separate([q, k, _]) => shapes.extend([
            Expected {
                tensor: block0(q),
                shape: stored(q_rows, d),
                keys: "num_attention_heads · head_dim × hidden_size",
            },
            Expected {
                tensor: block0(k),
                shape: stored(kv_rows, d),
                keys: "num_key_value_heads · head_dim × hidden_size",
            },
        ]),
        Projections::Fused(qkv) => shapes.push(Expected {
            tensor: block0(qkv),
            shape: stored(q_rows + 2 * kv_rows, d),
            keys: "(num_attention_heads + 2 · num_key_value_heads) · head_dim × hidden_size",
        }),
    }
    shapes.push(match layout.block.mlp {
        MlpNames::Gated { gate, .. } => Expected {
            tensor: block0(gate),
            shape: stored(inter, d),
            keys: "intermediate_size × hidden_size",
        },
        MlpNames::FusedGated { gate_up, .. } => Expected {
            tensor: block0(gate_up),
            shape: stored(2 * inter, d),
            keys: "2 · intermediate_size × hidden_size",
        },
        MlpNames::Plain { fc, .. } => Expected {
            tensor: block0(fc),
            shape: stored(inter, d),
            keys: "intermediate_size × hidden_size",
        },
    });
    if !c.tie_word_embeddings {
        shapes.push(Expected {
            tensor: "lm_head.weight".into(),
            shape: [vocab, d],
            keys: "vocab_size × hidden size (untied lm_head)",
        });
    }
    shapes
}
