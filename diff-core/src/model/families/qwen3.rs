//! Qwen3 (dense): the Llama block with RMSNorm on each query and key head before RoPE, no q/k/v bias, an explicit
//! `head_dim`.
//!
//! Sources: transformers' `modeling_qwen3.py` / `configuration_qwen3.py`.

use super::{BlockNames, Layout, Spec};
use crate::error::Result;
use crate::model::config::{Defaults, Fields, ModelConfig, QkNorm, SlidingLayers};

pub(crate) const SPEC: Spec = Spec {
    id: "qwen3",
    display: "Qwen3ForCausalLM",
    architectures: &["Qwen3ForCausalLM"],
    model_types: &["qwen3"],
    config,
    layout: Layout {
        block: BlockNames {
            q_norm: Some("self_attn.q_norm"),
            k_norm: Some("self_attn.k_norm"),
            ..super::llama::LAYOUT.block
        },
        ..super::llama::LAYOUT
    },
    language_tower: None,
};

fn config(f: &Fields<'_>, architecture: String) -> Result<ModelConfig> {
    let mut c = f.decoder(
        &SPEC,
        architecture,
        &Defaults {
            head_dim: Some(128),
            context_len: 32768,
            ..Defaults::LLAMA
        },
    )?;
    c.block.qk_norm = Some(QkNorm::PerHead);
    // As Qwen2: a window only with use_sliding_window, and only from max_window_layers on (or as listed).
    if f.bool("use_sliding_window", false)? {
        // transformers' default window is 4096; an explicit null means none.
        c.block.sliding_window = if f.has("sliding_window") {
            f.usize("sliding_window")?
        } else {
            Some(4096)
        };
        c.block.sliding_layers = match f.layer_types()? {
            Some(listed) => SlidingLayers::Listed(listed),
            None => SlidingLayers::From(f.usize("max_window_layers")?.unwrap_or(28)),
        };
    }
    Ok(c)
}
