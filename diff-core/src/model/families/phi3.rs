//! Phi-3: the Llama block with q/k/v fused in `qkv_proj` and gate/up fused in `gate_up_proj` (gate rows first),
//! optional partial rotary embedding, a sliding window on every layer, and `longrope` for the long-context
//! checkpoints (see `rope.rs`).
//!
//! Sources: transformers' `modeling_phi3.py` / `configuration_phi3.py`.

use super::{BlockNames, Layout, MlpNames, Projections, Spec};
use crate::error::Result;
use crate::model::config::{Defaults, Fields, ModelConfig, SlidingLayers};

pub(crate) const SPEC: Spec = Spec {
    id: "phi3",
    display: "Phi3ForCausalLM (Phi-3, Phi-3.5, Phi-4-mini)",
    architectures: &["Phi3ForCausalLM"],
    model_types: &["phi3"],
    config,
    layout: Layout {
        block: BlockNames {
            qkv: Projections::Fused("self_attn.qkv_proj"),
            mlp: MlpNames::FusedGated {
                gate_up: "mlp.gate_up_proj",
                down: "mlp.down_proj",
            },
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
            norm_eps: 1e-5,
            context_len: 4096,
            ..Defaults::LLAMA
        },
    )?;
    if let Some(window) = f.usize("sliding_window")? {
        (c.block.sliding_window, c.block.sliding_layers) = (Some(window), SlidingLayers::From(0));
    }
    Ok(c)
}
