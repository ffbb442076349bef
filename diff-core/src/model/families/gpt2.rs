//! GPT-2 as Hugging Face names its tensors (with or without the `transformer.` prefix): pre-norm LayerNorm,
//! learned positions, fused q/k/v, GELU MLP.
//!
//! GPT-2's `Conv1D` stores weights `[in, out]`; they are transposed once here so every layer computes x·Wᵀ, and
//! the fused `c_attn` stays fused.

use candle_core::Tensor;

use super::{BlockNames, Layout, MlpNames, Projections, SizeKeys, Spec};
use crate::error::Result;
use crate::model::config::{Activation, BlockOptions, Fields, ModelConfig, NormStyle};
use crate::model::layers::{Attention, Block, Linear, Mlp};
use crate::model::loader::Loader;
use crate::model::{Parts, attention_scale};

pub(crate) const SPEC: Spec = Spec {
    id: "gpt2",
    display: "GPT2LMHeadModel",
    architectures: &["GPT2LMHeadModel"],
    model_types: &["gpt2"],
    config,
    layout: Layout {
        embed: "wte",
        pos_embed: Some("wpe"),
        blocks: "h",
        final_norm: "ln_f",
        keys: SizeKeys {
            layers: "n_layer",
            hidden: "n_embd",
            intermediate: "n_inner",
            context: "n_positions",
        },
        block: BlockNames {
            attn_norm: Some("ln_1"),
            qkv: Projections::Fused("attn.c_attn"),
            q_norm: None,
            k_norm: None,
            o: "attn.c_proj",
            attn_post_norm: None,
            mlp_norm: Some("ln_2"),
            mlp: MlpNames::Plain {
                fc: "mlp.c_fc",
                proj: "mlp.c_proj",
            },
            mlp_post_norm: None,
        },
        conv1d: true,
        load,
    },
    language_tower: None,
};

fn config(f: &Fields<'_>, architecture: String) -> Result<ModelConfig> {
    let hidden_size = f.required("n_embd")?;
    let num_heads = f.required("n_head")?;
    let activation = match f.str("activation_function").unwrap_or("gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        other => return Err(f.error(format!("activation_function \"{other}\" is not supported"))),
    };
    if !f.bool("scale_attn_weights", true)? {
        return Err(f.error("scale_attn_weights = false is not supported".into()));
    }
    let head_dim = hidden_size.checked_div(num_heads).unwrap_or(0);
    if head_dim * num_heads != hidden_size {
        return Err(f.error(format!("n_embd {hidden_size} is not divisible by n_head {num_heads}")));
    }
    Ok(ModelConfig {
        path: f.path().to_path_buf(),
        architecture,
        family: super::Family::of(&SPEC),
        vocab_size: f.required("vocab_size")?,
        hidden_size,
        num_layers: f.required("n_layer")?,
        num_heads,
        num_kv_heads: num_heads,
        head_dim,
        intermediate_size: match f.usize("n_inner")? {
            Some(inner) => inner,
            None => hidden_size
                .checked_mul(4)
                .ok_or_else(|| f.error(format!("\"n_embd\" {hidden_size} is too large")))?,
        },
        norm_eps: f.positive_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        norm: NormStyle::Layer,
        rope: None,
        local_rope: None,
        rotary_dim: 0,
        context_len: f.usize("n_positions")?.unwrap_or(1024),
        tie_word_embeddings: f.bool("tie_word_embeddings", true)?,
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        activation,
        block: BlockOptions {
            scale_attn_by_inverse_layer_idx: f.bool("scale_attn_by_inverse_layer_idx", false)?,
            ..BlockOptions::default()
        },
    })
}

fn load(c: &ModelConfig, l: &Loader<'_>) -> Result<Parts> {
    let d = c.hidden_size;
    let conv1d = |prefix: &str, input: usize, out: usize| -> Result<Linear> {
        let weight = l
            .tensor(&format!("{prefix}.weight"), &[input, out])?
            .t()?
            .contiguous()?;
        let bias: Tensor = l.tensor(&format!("{prefix}.bias"), &[out])?;
        Ok(Linear::new(weight, Some(bias)))
    };
    let blocks = (0..c.num_layers)
        .map(|i| {
            let p = format!("h.{i}");
            Ok(Block {
                attn_norm: Some(l.layer_norm(&format!("{p}.ln_1"), d, c.norm_eps)?),
                attn: Attention {
                    // c_attn is already q, k and v side by side: the fused projection the runtime wants.
                    qkv: conv1d(&format!("{p}.attn.c_attn"), d, 3 * d)?,
                    qk_norm: None,
                    o: conv1d(&format!("{p}.attn.c_proj"), d, d)?,
                    heads: c.num_heads,
                    kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                    scale: attention_scale(c, i),
                    softcap: None,
                },
                attn_post_norm: None,
                mlp_norm: Some(l.layer_norm(&format!("{p}.ln_2"), d, c.norm_eps)?),
                mlp: Mlp::Plain {
                    fc: conv1d(&format!("{p}.mlp.c_fc"), d, c.intermediate_size)?,
                    proj: conv1d(&format!("{p}.mlp.c_proj"), c.intermediate_size, d)?,
                    activation: c.activation,
                },
                mlp_post_norm: None,
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
