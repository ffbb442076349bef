//! Hybrid models: one model with some of its parts taken from another of the same shape (weight swapping).
//!
//! A [`Model`] clone shares its tensors, so a hybrid costs one block's worth of bookkeeping, not a copy of the
//! model; only a single projection inside a fused one (`q_proj` inside the fused q/k/v product) is spliced into a
//! new tensor of that one layer.

use std::fmt;

use candle_core::Tensor;

use super::Model;
use super::config::Family;
use super::layers::{Block, Linear, Mlp};
use crate::error::{Error, Result};

/// What can be taken from the other model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The token embedding used for lookup (and GPT-2's position embedding), not the unembedding, even when the
    /// checkpoint ties the two.
    Embed,
    /// A piece of block `layer`.
    Block {
        /// Block index.
        layer: usize,
        /// Which piece.
        piece: Piece,
    },
    /// The final norm.
    FinalNorm,
    /// The unembedding matrix (`lm_head`).
    Unembed,
}

/// A piece of one block: a whole sublayer with its norm, or one of its tensors (with its bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Piece {
    /// The pre-attention norm and every attention projection.
    Attn,
    /// The pre-MLP norm and every MLP projection.
    Mlp,
    /// The pre-attention norm.
    AttnNorm,
    /// The query projection (Llama family).
    Query,
    /// The key projection (Llama family).
    Key,
    /// The value projection (Llama family).
    Value,
    /// GPT-2's fused query/key/value projection `c_attn`.
    QueryKeyValue,
    /// The attention output projection.
    AttnOutput,
    /// The pre-MLP norm.
    MlpNorm,
    /// The gate projection (gated MLPs).
    Gate,
    /// The up projection (gated MLPs).
    Up,
    /// The down projection (gated MLPs).
    Down,
    /// The expansion `c_fc` (GPT-2).
    Fc,
    /// The projection back `c_proj` (GPT-2).
    Proj,
}

impl Piece {
    /// The tensor-level pieces of one block of `family`, in forward order.
    #[must_use]
    pub fn tensors(family: Family) -> &'static [Piece] {
        match family {
            Family::Llama => &[
                Self::AttnNorm,
                Self::Query,
                Self::Key,
                Self::Value,
                Self::AttnOutput,
                Self::MlpNorm,
                Self::Gate,
                Self::Up,
                Self::Down,
            ],
            Family::Gpt2 => &[
                Self::AttnNorm,
                Self::QueryKeyValue,
                Self::AttnOutput,
                Self::MlpNorm,
                Self::Fc,
                Self::Proj,
            ],
        }
    }

    /// The sublayer the piece belongs to: `attn` or `mlp`.
    #[must_use]
    pub fn component(self) -> &'static str {
        match self {
            Self::Attn
            | Self::AttnNorm
            | Self::Query
            | Self::Key
            | Self::Value
            | Self::QueryKeyValue
            | Self::AttnOutput => "attn",
            Self::Mlp | Self::MlpNorm | Self::Gate | Self::Up | Self::Down | Self::Fc | Self::Proj => "mlp",
        }
    }

    /// The piece's name inside a block: `attn`/`mlp` for sublayers, the Hugging Face module name for tensors.
    #[must_use]
    pub fn name(self, family: Family) -> &'static str {
        let llama = family == Family::Llama;
        match self {
            Self::Attn => "attn",
            Self::Mlp => "mlp",
            Self::AttnNorm if llama => "input_layernorm",
            Self::AttnNorm => "ln_1",
            Self::Query => "self_attn.q_proj",
            Self::Key => "self_attn.k_proj",
            Self::Value => "self_attn.v_proj",
            Self::QueryKeyValue => "attn.c_attn",
            Self::AttnOutput if llama => "self_attn.o_proj",
            Self::AttnOutput => "attn.c_proj",
            Self::MlpNorm if llama => "post_attention_layernorm",
            Self::MlpNorm => "ln_2",
            Self::Gate => "mlp.gate_proj",
            Self::Up => "mlp.up_proj",
            Self::Down => "mlp.down_proj",
            Self::Fc => "mlp.c_fc",
            Self::Proj => "mlp.c_proj",
        }
    }
}

impl Part {
    /// The block the part belongs to, if any.
    #[must_use]
    pub fn layer(self) -> Option<usize> {
        match self {
            Self::Block { layer, .. } => Some(layer),
            _ => None,
        }
    }

    /// How the report names it: `embed`, `layers.3.mlp`, `layers.3.self_attn.q_proj`, `ln_final`, `lm_head`.
    #[must_use]
    pub fn name(self, family: Family) -> String {
        match self {
            Self::Embed => "embed".into(),
            Self::Block { layer, piece } => format!("layers.{layer}.{}", piece.name(family)),
            Self::FinalNorm => "ln_final".into(),
            Self::Unembed => "lm_head".into(),
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name(Family::Llama))
    }
}

impl Model {
    /// This model with `part` taken from `donor`; every other tensor is shared with `self`.
    ///
    /// # Errors
    /// [`Error::Incompatible`] when the two models differ in family or shape, or the part does not exist in this
    /// family; tensor failures.
    pub fn transplant(&self, donor: &Model, part: Part) -> Result<Model> {
        let (c, d) = (&self.config, &donor.config);
        if c.family != d.family
            || c.hidden_size != d.hidden_size
            || c.vocab_size != d.vocab_size
            || self.blocks.len() != donor.blocks.len()
        {
            return Err(Error::Incompatible(format!(
                "cannot swap {part} between a {} model of {} blocks × {} and a {} model of {} blocks × {}",
                c.architecture,
                self.blocks.len(),
                c.hidden_size,
                d.architecture,
                donor.blocks.len(),
                d.hidden_size
            )));
        }
        let mut hybrid = self.clone();
        match part {
            Part::Embed => {
                hybrid.embed = donor.embed.clone();
                hybrid.pos_embed.clone_from(&donor.pos_embed);
            }
            Part::FinalNorm => hybrid.final_norm = donor.final_norm.clone(),
            Part::Unembed => hybrid.unembed = donor.unembed.clone(),
            Part::Block { layer, piece } => {
                let (Some(host), Some(from)) = (hybrid.blocks.get_mut(layer), donor.blocks.get(layer)) else {
                    return Err(Error::Usage(format!(
                        "layer {layer} is out of range: the model has {} layers",
                        self.blocks.len()
                    )));
                };
                transplant_piece(host, from, piece, c.family)?;
            }
        }
        Ok(hybrid)
    }
}

/// Moves `piece` from `from` into `host`.
fn transplant_piece(host: &mut Block, from: &Block, piece: Piece, family: Family) -> Result<()> {
    let a = &from.attn;
    let (q, kv) = (a.heads * a.head_dim, a.kv_heads * a.head_dim);
    let missing = || Error::Usage(format!("a {family:?} block has no {}", piece.name(family)));
    match piece {
        Piece::Attn => {
            host.attn_norm = from.attn_norm.clone();
            host.attn = from.attn.clone();
        }
        Piece::Mlp => {
            host.mlp_norm = from.mlp_norm.clone();
            host.mlp = from.mlp.clone();
        }
        Piece::AttnNorm => host.attn_norm = from.attn_norm.clone(),
        Piece::MlpNorm => host.mlp_norm = from.mlp_norm.clone(),
        Piece::AttnOutput => host.attn.o = from.attn.o.clone(),
        Piece::QueryKeyValue => host.attn.qkv = from.attn.qkv.clone(),
        // The fused q/k/v rows are [q | k | v].
        Piece::Query => host.attn.qkv = host.attn.qkv.with_rows_from(&a.qkv, 0, q)?,
        Piece::Key => host.attn.qkv = host.attn.qkv.with_rows_from(&a.qkv, q, kv)?,
        Piece::Value => host.attn.qkv = host.attn.qkv.with_rows_from(&a.qkv, q + kv, kv)?,
        Piece::Gate | Piece::Up | Piece::Down | Piece::Fc | Piece::Proj => {
            match (&mut host.mlp, &from.mlp) {
                (
                    Mlp::Gated { gate_up, down, .. },
                    Mlp::Gated {
                        gate_up: g, down: dn, ..
                    },
                ) => match piece {
                    // The fused gate/up rows are [gate | up].
                    Piece::Gate => *gate_up = gate_up.with_rows_from(g, 0, g.rows()? / 2)?,
                    Piece::Up => *gate_up = gate_up.with_rows_from(g, g.rows()? / 2, g.rows()? / 2)?,
                    Piece::Down => *down = dn.clone(),
                    _ => return Err(missing()),
                },
                (Mlp::Plain { fc, proj, .. }, Mlp::Plain { fc: f, proj: p, .. }) => match piece {
                    Piece::Fc => *fc = f.clone(),
                    Piece::Proj => *proj = p.clone(),
                    _ => return Err(missing()),
                },
                _ => return Err(missing()),
            }
        }
    }
    Ok(())
}

impl Linear {
    /// Output rows `start..start + len` (weight and bias) taken from `donor`, the rest kept.
    ///
    /// # Errors
    /// Shape errors (different shapes, rows out of range).
    pub fn with_rows_from(&self, donor: &Linear, start: usize, len: usize) -> Result<Linear> {
        let splice = |host: &Tensor, from: &Tensor| -> Result<Tensor> {
            let rows = host.dim(0)?;
            let mut parts = Vec::with_capacity(3);
            if start > 0 {
                parts.push(host.narrow(0, 0, start)?);
            }
            parts.push(from.narrow(0, start, len)?);
            if start + len < rows {
                parts.push(host.narrow(0, start + len, rows - start - len)?);
            }
            Ok(Tensor::cat(&parts, 0)?)
        };
        let (weight, bias) = self.parts();
        let (donor_weight, donor_bias) = donor.parts();
        let bias = match (bias, donor_bias) {
            (Some(b), Some(d)) => Some(splice(b, d)?),
            (None, None) => None,
            _ => return Err(Error::Internal("splicing a biased and an unbiased projection".into())),
        };
        Ok(Linear::new(splice(weight, donor_weight)?, bias))
    }
}
