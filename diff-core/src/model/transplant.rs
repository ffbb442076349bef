//! Hybrid models: one model with some of its parts taken from another of the same shape (weight swapping).
//!
//! A [`Model`] clone shares its tensors, so a hybrid costs one block's worth of bookkeeping, not a copy of the
//! model; only a single projection inside a fused one (`q_proj` inside the fused q/k/v product) is spliced into a
//! new tensor of that one layer.

use candle_core::Tensor;

use super::Model;
use super::config::Family;
use super::layers::{Block, Linear, Mlp, Norm};
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

/// A piece of one block: a whole sublayer with its norms, or one of its tensors (with its bias). Which tensors a
/// block has, and their names, are the family's ([`Family::pieces`], [`Family::piece_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Piece {
    /// The attention sublayer: its norms and every attention projection.
    Attn,
    /// The MLP sublayer: its norms and every MLP projection.
    Mlp,
    /// The pre-attention norm.
    AttnNorm,
    /// The query projection.
    Query,
    /// The key projection.
    Key,
    /// The value projection.
    Value,
    /// A fused query/key/value projection (GPT-2's `c_attn`, Phi-3's `qkv_proj`).
    QueryKeyValue,
    /// The queries' norm.
    QueryNorm,
    /// The keys' norm.
    KeyNorm,
    /// The attention output projection.
    AttnOutput,
    /// The norm of the attention output.
    AttnPostNorm,
    /// The pre-MLP norm.
    MlpNorm,
    /// The gate projection (gated MLPs).
    Gate,
    /// The up projection (gated MLPs).
    Up,
    /// A fused gate/up projection (Phi-3's `gate_up_proj`).
    GateUp,
    /// The down projection (gated MLPs).
    Down,
    /// The expansion `c_fc` (GPT-2).
    Fc,
    /// The projection back `c_proj` (GPT-2).
    Proj,
    /// The norm of the MLP output.
    MlpPostNorm,
}

impl Piece {
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
            | Self::QueryNorm
            | Self::KeyNorm
            | Self::AttnOutput
            | Self::AttnPostNorm => "attn",
            Self::Mlp
            | Self::MlpNorm
            | Self::Gate
            | Self::Up
            | Self::GateUp
            | Self::Down
            | Self::Fc
            | Self::Proj
            | Self::MlpPostNorm => "mlp",
        }
    }

    /// The piece's name inside a block: `attn`/`mlp` for sublayers, the family's module name for tensors (a
    /// piece the family lacks is named by its kind, in brackets).
    #[must_use]
    pub fn name(self, family: Family) -> String {
        family
            .piece_name(self)
            .map_or_else(|| format!("({self:?})"), str::to_string)
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
                "cannot swap {} between a {} model of {} blocks × {} and a {} model of {} blocks × {}",
                part.name(c.family),
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
    let norm = |host: &mut Option<Norm>, from: &Option<Norm>| match from {
        Some(_) => {
            host.clone_from(from);
            Ok(())
        }
        None => Err(missing()),
    };
    match piece {
        Piece::Attn => {
            host.attn_norm.clone_from(&from.attn_norm);
            host.attn = from.attn.clone();
            host.attn_post_norm.clone_from(&from.attn_post_norm);
        }
        Piece::Mlp => {
            host.mlp_norm.clone_from(&from.mlp_norm);
            host.mlp = from.mlp.clone();
            host.mlp_post_norm.clone_from(&from.mlp_post_norm);
        }
        Piece::AttnNorm => norm(&mut host.attn_norm, &from.attn_norm)?,
        Piece::AttnPostNorm => norm(&mut host.attn_post_norm, &from.attn_post_norm)?,
        Piece::MlpNorm => norm(&mut host.mlp_norm, &from.mlp_norm)?,
        Piece::MlpPostNorm => norm(&mut host.mlp_post_norm, &from.mlp_post_norm)?,
        Piece::QueryNorm | Piece::KeyNorm => match (&mut host.attn.qk_norm, &from.attn.qk_norm) {
            (Some(h), Some(f)) if piece == Piece::QueryNorm => h.q = f.q.clone(),
            (Some(h), Some(f)) => h.k = f.k.clone(),
            _ => return Err(missing()),
        },
        Piece::AttnOutput => host.attn.o = from.attn.o.clone(),
        Piece::QueryKeyValue => host.attn.qkv = from.attn.qkv.clone(),
        // The fused q/k/v rows are [q | k | v].
        Piece::Query => host.attn.qkv = host.attn.qkv.with_rows_from(&a.qkv, 0, q)?,
        Piece::Key => host.attn.qkv = host.attn.qkv.with_rows_from(&a.qkv, q, kv)?,
        Piece::Value => host.attn.qkv = host.attn.qkv.with_rows_from(&a.qkv, q + kv, kv)?,
        Piece::Gate | Piece::Up | Piece::GateUp | Piece::Down | Piece::Fc | Piece::Proj => {
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
                    Piece::GateUp => *gate_up = g.clone(),
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
