//! Gemma 2: "sandwich" norms (RMSNorm before and after each sublayer), RMSNorm scaling by (1 + w) in f32, the
//! embedding scaled by √d, GELU-tanh gated MLP, attention-logit and final-logit softcaps, queries scaled by
//! `query_pre_attn_scalar`, sliding-window and global attention alternating (layer 0 sliding).
//!
//! Sources: transformers' `modeling_gemma2.py` / `configuration_gemma2.py` (defaults included).

use super::{BlockNames, Layout, Spec};
use crate::error::Result;
use crate::model::config::{Defaults, Fields, ModelConfig, NormStyle, SlidingLayers};

pub(crate) const SPEC: Spec = Spec {
    id: "gemma2",
    display: "Gemma2ForCausalLM",
    architectures: &["Gemma2ForCausalLM"],
    model_types: &["gemma2"],
    config,
    layout: SANDWICH,
    language_tower: None,
};

/// Gemma's block: the Llama names plus a norm after each sublayer; `pre_feedforward_layernorm` is the pre-MLP
/// norm, and `post_attention_layernorm` normalizes the attention output (not the MLP input, as in Llama).
pub(crate) const SANDWICH: Layout = Layout {
    block: BlockNames {
        attn_post_norm: Some("post_attention_layernorm"),
        mlp_norm: Some("pre_feedforward_layernorm"),
        mlp_post_norm: Some("post_feedforward_layernorm"),
        ..super::llama::LAYOUT.block
    },
    ..super::llama::LAYOUT
};

/// What Gemma 2 and 3 share: (1 + w) norms in f32, GELU-tanh under its own key, tied embeddings, and
/// `Gemma2Config`'s sizes (Gemma-2-2B's) for the keys a file omits.
pub(crate) const GEMMA: Defaults = Defaults {
    norm: NormStyle::OnePlusWeight,
    head_dim: Some(256),
    activation: ("hidden_activation", "gelu_pytorch_tanh"),
    tie_word_embeddings: true,
    context_len: 8192,
    sizes: [Some(256_000), Some(2304), Some(9216), Some(26), Some(8), Some(4)],
    ..Defaults::LLAMA
};

fn config(f: &Fields<'_>, architecture: String) -> Result<ModelConfig> {
    let mut c = f.decoder(&SPEC, architecture, &GEMMA)?;
    gemma_options(f, &mut c)?;
    c.block.attn_softcap = f.softcap("attn_logit_softcapping", Some(50.0))?;
    c.block.final_softcap = f.softcap("final_logit_softcapping", Some(30.0))?;
    c.block.sliding_window = Some(f.usize("sliding_window")?.unwrap_or(4096));
    // Layer i slides when (i + 1) is odd, unless layer_types lists them.
    c.block.sliding_layers = match f.layer_types()? {
        Some(listed) => SlidingLayers::Listed(listed),
        None => SlidingLayers::Pattern { period: 2 },
    };
    Ok(c)
}

/// The options every Gemma shares: √d embedding scale and the query scalar (default 256, as transformers).
pub(crate) fn gemma_options(f: &Fields<'_>, c: &mut ModelConfig) -> Result<()> {
    c.block.embed_scale = true;
    c.block.query_pre_attn_scalar = Some(f.positive_f64("query_pre_attn_scalar")?.unwrap_or(256.0));
    Ok(())
}
