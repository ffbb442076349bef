//! Model families: each is one file holding its `config.json` dialect and its tensor names. This table is the only
//! place that lists them.
//!
//! A family file gives a [`Spec`]: which `architectures` / `model_type` values select it, how to read its config
//! into a [`ModelConfig`] (block options included: norms, q/k norms, softcaps, windows, embedding scale), and its
//! [`Layout`] (tensor names). Most families share the Hugging Face decoder layout and loader ([`decoder`]); only
//! their names and options differ.

pub(crate) mod decoder;
mod gemma2;
mod gemma3;
mod gpt2;
mod llama;
mod olmo2;
mod phi3;
mod qwen3;

use std::fmt;

use super::Parts;
use super::config::{Fields, ModelConfig};
use super::loader::Loader;
use super::transplant::Piece;
use crate::error::Result;

/// Every family the runtime runs, in the order the supported list names them.
const FAMILIES: [&Spec; 7] = [
    &llama::SPEC,
    &qwen3::SPEC,
    &gemma2::SPEC,
    &gemma3::SPEC,
    &phi3::SPEC,
    &olmo2::SPEC,
    &gpt2::SPEC,
];

/// `model_type`s of mixture-of-experts checkpoints, refused by name: their MLPs are routed experts, which the
/// runtime does not implement, and a dense reading of their tensors would fail less clearly.
const MIXTURES_OF_EXPERTS: [&str; 9] = [
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "phimoe",
    "deepseek_v2",
    "deepseek_v3",
    "granitemoe",
    "jamba",
];

/// What a family file declares.
pub(crate) struct Spec {
    /// Short name used in messages and tests: `llama`, `gemma2`, ...
    pub id: &'static str,
    /// How the supported list names it.
    pub display: &'static str,
    /// `architectures[0]` values that select it.
    pub architectures: &'static [&'static str],
    /// `model_type` values that select it (when the architecture is not listed).
    pub model_types: &'static [&'static str],
    /// Reads the config dialect (given the architecture string as found).
    pub config: fn(&Fields<'_>, String) -> Result<ModelConfig>,
    /// Tensor names.
    pub layout: Layout,
    /// A multimodal architecture of the family that runs as its text one: (multimodal, text).
    pub language_tower: Option<(&'static str, &'static str)>,
}

/// Where a family keeps its tensors.
pub(crate) struct Layout {
    /// The token embedding module (`model.embed_tokens`).
    pub embed: &'static str,
    /// Learned position embeddings (GPT-2's `wpe`).
    pub pos_embed: Option<&'static str>,
    /// The prefix of block `i`'s modules, before `.{i}` (`model.layers`).
    pub blocks: &'static str,
    /// The final norm module (`model.norm`).
    pub final_norm: &'static str,
    /// How the config names its sizes (in messages).
    pub keys: SizeKeys,
    /// Module names inside one block.
    pub block: BlockNames,
    /// Whether projection weights are stored `[in, out]` (GPT-2's `Conv1D`) rather than `[out, in]`.
    pub conv1d: bool,
    /// Builds the model's parts.
    pub load: fn(&ModelConfig, &Loader<'_>) -> Result<Parts>,
}

/// The `config.json` keys of the sizes a family's messages name.
pub(crate) struct SizeKeys {
    /// The layer count (`num_hidden_layers`).
    pub layers: &'static str,
    /// The residual width (`hidden_size`).
    pub hidden: &'static str,
    /// The MLP width (`intermediate_size`).
    pub intermediate: &'static str,
    /// The longest sequence (`max_position_embeddings`).
    pub context: &'static str,
}

/// The modules of one block, as the family names them (relative to `{blocks}.{i}`). `None`: the family's block
/// has no such part.
pub(crate) struct BlockNames {
    /// Norm before attention (`input_layernorm`).
    pub attn_norm: Option<&'static str>,
    /// Query, key and value projections.
    pub qkv: Projections,
    /// Norm of the queries (per head or over the whole projection, as the config says).
    pub q_norm: Option<&'static str>,
    /// Norm of the keys.
    pub k_norm: Option<&'static str>,
    /// Attention output projection.
    pub o: &'static str,
    /// Norm of the attention output before it joins the residual stream (Gemma 2/3, OLMo-2).
    pub attn_post_norm: Option<&'static str>,
    /// Norm before the MLP.
    pub mlp_norm: Option<&'static str>,
    /// The MLP's projections.
    pub mlp: MlpNames,
    /// Norm of the MLP output before it joins the residual stream (Gemma 2/3, OLMo-2).
    pub mlp_post_norm: Option<&'static str>,
}

/// Query, key and value as separate tensors or one fused tensor (`[q | k | v]` rows).
pub(crate) enum Projections {
    /// `q_proj`, `k_proj`, `v_proj`.
    Separate([&'static str; 3]),
    /// Phi-3's `qkv_proj`, GPT-2's `c_attn`.
    Fused(&'static str),
}

/// The MLP's projections.
pub(crate) enum MlpNames {
    /// `down(act(gate(x)) ⊙ up(x))` with gate and up separate.
    Gated {
        /// `gate_proj`.
        gate: &'static str,
        /// `up_proj`.
        up: &'static str,
        /// `down_proj`.
        down: &'static str,
    },
    /// The same with gate and up fused (`[gate | up]` rows, Phi-3's `gate_up_proj`).
    FusedGated {
        /// `gate_up_proj`.
        gate_up: &'static str,
        /// `down_proj`.
        down: &'static str,
    },
    /// `proj(act(fc(x)))` (GPT-2).
    Plain {
        /// `c_fc`.
        fc: &'static str,
        /// `c_proj`.
        proj: &'static str,
    },
}

impl BlockNames {
    /// The block's tensor-level pieces, in forward order, with their module names.
    pub fn pieces(&self) -> Vec<(Piece, &'static str)> {
        let mut out = Vec::with_capacity(14);
        out.extend(self.attn_norm.map(|n| (Piece::AttnNorm, n)));
        match self.qkv {
            Projections::Separate([q, k, v]) => {
                out.extend([(Piece::Query, q), (Piece::Key, k), (Piece::Value, v)]);
            }
            Projections::Fused(name) => out.push((Piece::QueryKeyValue, name)),
        }
        out.extend(self.q_norm.map(|n| (Piece::QueryNorm, n)));
        out.extend(self.k_norm.map(|n| (Piece::KeyNorm, n)));
        out.push((Piece::AttnOutput, self.o));
        out.extend(self.attn_post_norm.map(|n| (Piece::AttnPostNorm, n)));
        out.extend(self.mlp_norm.map(|n| (Piece::MlpNorm, n)));
        match self.mlp {
            MlpNames::Gated { gate, up, down } => {
                out.extend([(Piece::Gate, gate), (Piece::Up, up), (Piece::Down, down)]);
            }
            MlpNames::FusedGated { gate_up, down } => out.extend([(Piece::GateUp, gate_up), (Piece::Down, down)]),
            MlpNames::Plain { fc, proj } => out.extend([(Piece::Fc, fc), (Piece::Proj, proj)]),
        }
        out.extend(self.mlp_post_norm.map(|n| (Piece::MlpPostNorm, n)));
        out
    }
}

/// A model family (a row of the table above).
#[derive(Clone, Copy)]
pub struct Family(&'static Spec);

impl Family {
    pub(crate) fn of(spec: &'static Spec) -> Self {
        Self(spec)
    }

    pub(crate) fn spec(self) -> &'static Spec {
        self.0
    }

    /// Short name: `llama`, `qwen3`, `gemma2`, `gemma3`, `phi3`, `olmo2`, `gpt2`.
    #[must_use]
    pub fn id(self) -> &'static str {
        self.0.id
    }

    /// The tensor-level pieces of one block, in forward order.
    #[must_use]
    pub fn pieces(self) -> Vec<Piece> {
        self.0.layout.block.pieces().into_iter().map(|(p, _)| p).collect()
    }

    /// The module name of `piece` inside a block (`self_attn.q_proj`), or `None` when the family has no such
    /// piece.
    #[must_use]
    pub fn piece_name(self, piece: Piece) -> Option<&'static str> {
        match piece {
            Piece::Attn => Some("attn"),
            Piece::Mlp => Some("mlp"),
            _ => self
                .0
                .layout
                .block
                .pieces()
                .into_iter()
                .find_map(|(p, name)| (p == piece).then_some(name)),
        }
    }
}

impl PartialEq for Family {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Family {}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.id)
    }
}

/// The family that `architectures[0]` selects, or `model_type` when the config lists no architecture. A listed
/// architecture the table lacks selects nothing even when its `model_type` is known: `Gemma2ForSequenceClassification`
/// or a bare `Qwen3Model` has no language-model head, and running its weights as one would give plausible nonsense.
pub(crate) fn select(architecture: Option<&str>, model_type: &str) -> Option<Family> {
    match architecture {
        Some(architecture) => FAMILIES.iter().find(|s| s.architectures.contains(&architecture)),
        None => FAMILIES.iter().find(|s| s.model_types.contains(&model_type)),
    }
    .map(|s| Family(s))
}

/// Whether the config describes a mixture-of-experts model.
pub(crate) fn is_mixture_of_experts(model_type: &str, experts: Option<usize>) -> bool {
    MIXTURES_OF_EXPERTS.contains(&model_type) || experts.is_some_and(|n| n > 1)
}

/// The supported list for messages.
pub(crate) fn supported() -> String {
    FAMILIES.iter().map(|s| s.display).collect::<Vec<_>>().join(", ")
}
