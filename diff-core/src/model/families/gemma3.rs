//! Gemma 3 (text): Gemma 2's block with q/k norms per head, no softcaps by default, `layer_types` (every sixth
//! layer global by default) and a separate RoPE base for the sliding layers (`rope_local_base_freq`, or the
//! `sliding_attention` entry of transformers 5's per-type `rope_parameters`).
//!
//! `Gemma3ForConditionalGeneration` checkpoints (how the instruction-tuned models ship) run as their language
//! tower: the config's `text_config`, the tensors under `model.language_model.` (the loader finds them), the
//! vision tower left out.
//!
//! Sources: transformers' `modeling_gemma3.py` / `configuration_gemma3.py`.

use super::gemma2::{GEMMA, SANDWICH, gemma_options};
use super::{BlockNames, Layout, Spec};
use crate::error::Result;
use crate::model::config::{Defaults, Fields, ModelConfig, QkNorm, RopeConfig, SlidingLayers};

pub(crate) const SPEC: Spec = Spec {
    id: "gemma3",
    display: "Gemma3ForCausalLM, Gemma3ForConditionalGeneration (its language model)",
    architectures: &["Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"],
    model_types: &["gemma3_text", "gemma3"],
    config,
    layout: Layout {
        block: BlockNames {
            q_norm: Some("self_attn.q_norm"),
            k_norm: Some("self_attn.k_norm"),
            ..SANDWICH.block
        },
        ..SANDWICH
    },
    language_tower: Some(("Gemma3ForConditionalGeneration", "Gemma3ForCausalLM")),
};

fn config(f: &Fields<'_>, architecture: String) -> Result<ModelConfig> {
    let mut c = f.decoder(
        &SPEC,
        architecture,
        // Gemma3TextConfig's defaults: the published multimodal checkpoints' text_config omits most sizes.
        &Defaults {
            context_len: 131_072,
            rope_theta: 1_000_000.0,
            sizes: [Some(262_208), Some(2304), Some(9216), Some(26), Some(8), Some(4)],
            ..GEMMA
        },
    )?;
    if f.bool("use_bidirectional_attention", false)? {
        return Err(
            f.unsupported("use_bidirectional_attention (an embedding model; mdiff runs causal language models)")
        );
    }
    gemma_options(f, &mut c)?;
    c.block.qk_norm = Some(QkNorm::PerHead);
    c.block.attn_softcap = f.softcap("attn_logit_softcapping", None)?;
    // Only Gemma3ForCausalLM caps its logits; the multimodal model's forward never reads the setting.
    c.block.final_softcap = if c.architecture == "Gemma3ForConditionalGeneration" {
        None
    } else {
        f.softcap("final_logit_softcapping", None)?
    };
    c.block.sliding_window = Some(f.usize("sliding_window")?.unwrap_or(4096));
    c.block.sliding_layers = match f.layer_types()? {
        Some(listed) => SlidingLayers::Listed(listed),
        None => SlidingLayers::Pattern {
            period: f.usize("sliding_window_pattern")?.unwrap_or(6),
        },
    };
    // transformers 5 nests the sliding layers' RoPE under rope_parameters.sliding_attention (read by decoder());
    // before, rope_local_base_freq held its base and the sliding layers were never scaled.
    if c.local_rope.is_none() {
        c.local_rope = Some(RopeConfig::plain(
            f.positive_f64("rope_local_base_freq")?.unwrap_or(10_000.0),
        ));
    }
    Ok(c)
}
