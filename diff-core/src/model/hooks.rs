//! Hook points with TransformerLens names, and what a run does at them: capture or replace.
//!
//! Every hooked tensor has shape `[batch, seq, d_model]`. A replacement swaps in a tensor of that shape, either
//! everywhere or only at chosen positions (the same positions in every batch row).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// A place in the forward pass where activations can be read or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings.
    Embed,
    /// `hook_pos_embed`: learned position embeddings (GPT-2 only).
    PosEmbed,
    /// `blocks.{L}.hook_resid_pre`: the residual stream entering block L.
    ResidPre(usize),
    /// `blocks.{L}.hook_attn_out`: what attention adds to the residual stream.
    AttnOut(usize),
    /// `blocks.{L}.hook_resid_mid`: the residual stream between attention and MLP.
    ResidMid(usize),
    /// `blocks.{L}.hook_mlp_out`: what the MLP adds to the residual stream.
    MlpOut(usize),
    /// `blocks.{L}.hook_resid_post`: the residual stream leaving block L.
    ResidPost(usize),
    /// `ln_final.hook_normalized`: the final norm's output (weight applied), the unembedding's input.
    FinalNormalized,
}

impl HookPoint {
    /// The block this point belongs to, if any.
    #[must_use]
    pub fn layer(self) -> Option<usize> {
        match self {
            Self::ResidPre(l) | Self::AttnOut(l) | Self::ResidMid(l) | Self::MlpOut(l) | Self::ResidPost(l) => Some(l),
            Self::Embed | Self::PosEmbed | Self::FinalNormalized => None,
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embed => f.write_str("hook_embed"),
            Self::PosEmbed => f.write_str("hook_pos_embed"),
            Self::ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            Self::AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            Self::ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            Self::MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            Self::ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            Self::FinalNormalized => f.write_str("ln_final.hook_normalized"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Usage(format!(
                "unknown hook point \"{s}\"; expected hook_embed, hook_pos_embed, ln_final.hook_normalized or \
                 blocks.L.hook_{{resid_pre,attn_out,resid_mid,mlp_out,resid_post}}"
            ))
        };
        match s {
            "hook_embed" => return Ok(Self::Embed),
            "hook_pos_embed" => return Ok(Self::PosEmbed),
            "ln_final.hook_normalized" => return Ok(Self::FinalNormalized),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(bad)?;
        let (layer, name) = rest.split_once('.').ok_or_else(bad)?;
        let layer: usize = layer.parse().map_err(|_| bad())?;
        Ok(match name {
            "hook_resid_pre" => Self::ResidPre(layer),
            "hook_attn_out" => Self::AttnOut(layer),
            "hook_resid_mid" => Self::ResidMid(layer),
            "hook_mlp_out" => Self::MlpOut(layer),
            "hook_resid_post" => Self::ResidPost(layer),
            _ => return Err(bad()),
        })
    }
}

/// A tensor to put in place of an activation.
#[derive(Debug, Clone)]
pub struct Replacement {
    /// `[batch, seq, d_model]`, like the activation it replaces.
    pub value: Tensor,
    /// Positions to replace; `None` replaces every position.
    pub positions: Option<Vec<usize>>,
}

/// What a forward pass does at its hook points. The default captures and replaces nothing.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    capture: BTreeSet<HookPoint>,
    replace: BTreeMap<HookPoint, Replacement>,
}

impl Hooks {
    /// No hooks.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Also keep the activation at `point` (after any replacement there).
    #[must_use]
    pub fn capture(mut self, point: HookPoint) -> Self {
        self.capture.insert(point);
        self
    }

    /// Replace the whole activation at `point` with `value`.
    #[must_use]
    pub fn replace(mut self, point: HookPoint, value: Tensor) -> Self {
        self.replace.insert(point, Replacement { value, positions: None });
        self
    }

    /// Replace the activation at `point` with `value` at `positions` only.
    #[must_use]
    pub fn replace_positions(mut self, point: HookPoint, value: Tensor, positions: Vec<usize>) -> Self {
        self.replace.insert(
            point,
            Replacement {
                value,
                positions: Some(positions),
            },
        );
        self
    }

    /// Every point with a capture or a replacement.
    pub fn points(&self) -> impl Iterator<Item = HookPoint> + '_ {
        self.capture.iter().chain(self.replace.keys()).copied()
    }

    /// The points to capture.
    #[must_use]
    pub fn captures(&self) -> &BTreeSet<HookPoint> {
        &self.capture
    }

    /// Applies this run's hooks at `point`: replaces `x` if asked, records it if asked, and returns what flows on.
    pub(crate) fn apply(&self, point: HookPoint, x: Tensor, captured: &mut Captured) -> Result<Tensor> {
        let x = match self.replace.get(&point) {
            None => x,
            Some(r) => replaced(point, &x, r)?,
        };
        if self.capture.contains(&point) {
            captured.0.insert(point, x.clone());
        }
        Ok(x)
    }

    /// Whether any hook (capture or replacement) is set at `point`.
    #[must_use]
    pub fn touches(&self, point: HookPoint) -> bool {
        self.capture.contains(&point) || self.replace.contains_key(&point)
    }
}

fn replaced(point: HookPoint, x: &Tensor, r: &Replacement) -> Result<Tensor> {
    if r.value.dims() != x.dims() {
        return Err(Error::Usage(format!(
            "replacement for {point} has shape {:?} but the activation has {:?}",
            r.value.dims(),
            x.dims()
        )));
    }
    let value = r.value.to_dtype(x.dtype())?.to_device(x.device())?;
    let Some(positions) = &r.positions else {
        return Ok(value);
    };
    let seq = x.dim(1)?;
    let mut mask = vec![0u8; seq];
    for &p in positions {
        let slot = mask.get_mut(p).ok_or_else(|| {
            Error::Usage(format!(
                "replacement position {p} at {point} is past the sequence length {seq}"
            ))
        })?;
        *slot = 1;
    }
    let mask = Tensor::from_vec(mask, (1, seq, 1), x.device())?
        .to_dtype(DType::U8)?
        .broadcast_as(x.shape())?;
    Ok(mask.where_cond(&value, x)?)
}

/// Activations captured during one forward pass.
#[derive(Debug, Clone, Default)]
pub struct Captured(pub(crate) BTreeMap<HookPoint, Tensor>);

impl Captured {
    /// The activation at `point`, if it was captured.
    #[must_use]
    pub fn get(&self, point: HookPoint) -> Option<&Tensor> {
        self.0.get(&point)
    }

    /// Takes the activation at `point` out.
    pub fn take(&mut self, point: HookPoint) -> Option<Tensor> {
        self.0.remove(&point)
    }

    /// Every captured point and tensor, in hook order.
    pub fn iter(&self) -> impl Iterator<Item = (&HookPoint, &Tensor)> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_round_trip() {
        for p in [
            HookPoint::Embed,
            HookPoint::PosEmbed,
            HookPoint::ResidPre(0),
            HookPoint::AttnOut(3),
            HookPoint::ResidMid(12),
            HookPoint::MlpOut(7),
            HookPoint::ResidPost(29),
            HookPoint::FinalNormalized,
        ] {
            assert_eq!(p.to_string().parse::<HookPoint>().unwrap(), p);
        }
        assert!("blocks.x.hook_resid_pre".parse::<HookPoint>().is_err());
        assert!("blocks.1.hook_z".parse::<HookPoint>().is_err());
    }

    #[test]
    fn position_replacement_touches_only_those_positions() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 4, 3), DType::F32, &dev).unwrap();
        let v = Tensor::ones((2, 4, 3), DType::F32, &dev).unwrap();
        let hooks = Hooks::new()
            .replace_positions(HookPoint::ResidPre(0), v, vec![1, 3])
            .capture(HookPoint::ResidPre(0));
        let mut captured = Captured::default();
        let y = hooks.apply(HookPoint::ResidPre(0), x, &mut captured).unwrap();
        let row: Vec<f32> = y.get(1).unwrap().sum(1).unwrap().to_vec1().unwrap();
        assert_eq!(row, vec![0.0, 3.0, 0.0, 3.0]);
        assert!(captured.get(HookPoint::ResidPre(0)).is_some());
        assert!(captured.get(HookPoint::ResidPost(0)).is_none());
    }

    #[test]
    fn bad_replacements_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 3), DType::F32, &dev).unwrap();
        let wrong = Tensor::zeros((1, 3, 3), DType::F32, &dev).unwrap();
        let mut c = Captured::default();
        let e = Hooks::new()
            .replace(HookPoint::Embed, wrong)
            .apply(HookPoint::Embed, x.clone(), &mut c);
        assert!(e.unwrap_err().to_string().contains("shape"));
        let ok = Tensor::zeros((1, 2, 3), DType::F32, &dev).unwrap();
        let e = Hooks::new()
            .replace_positions(HookPoint::Embed, ok, vec![5])
            .apply(HookPoint::Embed, x, &mut c);
        assert!(e.unwrap_err().to_string().contains("past the sequence"));
    }
}
