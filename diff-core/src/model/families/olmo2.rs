//! OLMo-2: no norm before the sublayers, RMSNorm after each (`post_attention_layernorm`,
//! `post_feedforward_layernorm`), RMSNorm over the whole query and key projections before the heads are split,
//! norms computed and weighted in f32.
//!
//! Sources: transformers' `modeling_olmo2.py` / `configuration_olmo2.py`.

use super::{BlockNames, Layout, Spec};
use crate::error::Result;
use crate::model::config::{Defaults, Fields, ModelConfig, NormStyle, QkNorm};

pub(crate) const SPEC: Spec = Spec {
    id: "olmo2",
    display: "Olmo2ForCausalLM",
    architectures: &["Olmo2ForCausalLM"],
    model_types: &["olmo2"],
    config,
    layout: Layout {
        block: BlockNames {
            attn_norm: None,
            q_norm: Some("self_attn.q_norm"),
            k_norm: Some("self_attn.k_norm"),
            attn_post_norm: Some("post_attention_layernorm"),
            mlp_norm: None,
            mlp_post_norm: Some("post_feedforward_layernorm"),
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
            norm: NormStyle::F32Weight,
            norm_eps: 1e-5,
            context_len: 2048,
            ..Defaults::LLAMA
        },
    )?;
    c.block.qk_norm = Some(QkNorm::Whole);
    Ok(c)
}
