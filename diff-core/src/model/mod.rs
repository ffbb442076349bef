//! The hooked transformer runtime: Hugging Face checkpoints run on candle with TransformerLens hook points.
//!
//! One forward pass implementation serves every architecture: each family (one file in `families/`) only says how
//! to read its config and where its tensors are; the shared [`layers`] block has optional parts (pre- and
//! post-norms, q/k norms, softcaps, per-layer windows) that the config switches on. A pass returns the final normalized residual stream; [`Model::unembed`] turns chosen rows
//! of it into logits, so callers never hold `[batch, seq, vocab]` at once.

mod config;
mod device;
mod families;
mod fit;
mod hooks;
mod kernels;
pub mod layers;
mod loader;
mod rope;
mod transplant;

pub use config::{
    Activation, BlockOptions, Family, ModelConfig, NormStyle, QkNorm, RopeConfig, RopeScaling, SlidingLayers,
};
pub use device::{DeviceSpec, RunDtype, device_name, parse_device, parse_dtype};
pub use hooks::{Captured, HookPoint, Hooks, Replacement};
pub use kernels::with_f32_values;
pub use rope::{Rope, RopeTables, inverse_frequencies};
pub use transplant::{Part, Piece};

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::TensorSource;
use crate::error::{Error, Result};
use layers::{Block, KeyValues, Norm, causal_mask_after, maybe_norm};
use loader::Loader;

/// What an architecture loader hands to [`Model`].
pub(crate) struct Parts {
    embed: Tensor,
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    final_norm: Norm,
    unembed: Tensor,
}

/// 1/√head_dim (Gemma: 1/√query_pre_attn_scalar), and GPT-2's optional extra 1/(layer + 1).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn attention_scale(c: &ModelConfig, layer: usize) -> f64 {
    let scale = 1.0 / c.block.query_pre_attn_scalar.unwrap_or(c.head_dim as f64).sqrt();
    if c.block.scale_attn_by_inverse_layer_idx {
        scale / (layer + 1) as f64
    } else {
        scale
    }
}

/// A loaded model ready to run. Cloning shares the weights (tensors are reference-counted), which is how
/// [`Model::transplant`] builds hybrids without copying a model.
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    embed: Tensor,
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    final_norm: Norm,
    unembed: Tensor,
    rope: Option<Rope>,
    /// The sliding layers' RoPE when it differs (Gemma 3).
    local_rope: Option<Rope>,
    device: Device,
    dtype: DType,
}

/// Where a resumed pass enters the network: the residual stream before block `L` (`L` = the number of blocks
/// leaves only the final norm), or between block `L`'s attention and its MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// `blocks.{L}.hook_resid_pre`.
    Pre(usize),
    /// `blocks.{L}.hook_resid_mid`.
    Mid(usize),
}

impl Stage {
    /// The stage that `point`'s residual stream feeds, for the residual points.
    #[must_use]
    pub fn after(point: HookPoint) -> Option<Self> {
        match point {
            HookPoint::ResidPre(l) => Some(Self::Pre(l)),
            HookPoint::ResidMid(l) => Some(Self::Mid(l)),
            HookPoint::ResidPost(l) => Some(Self::Pre(l + 1)),
            _ => None,
        }
    }

    /// Attention and MLP sublayers a pass from here through `layers` blocks evaluates.
    #[must_use]
    pub fn sublayers_left(self, layers: usize) -> usize {
        match self {
            Self::Pre(l) => 2 * layers.saturating_sub(l),
            Self::Mid(l) => (2 * layers.saturating_sub(l)).saturating_sub(1),
        }
    }
}

/// Every block's attention keys and values from one pass ([`Model::forward_keeping_kv`]).
#[derive(Debug, Clone)]
pub struct KvCache(Vec<KeyValues>);

/// Which rows of the sequence a pass computes: those from `offset` on, attending to `prefix`'s keys and values
/// for the earlier ones; and whether to keep each block's keys and values.
#[derive(Default)]
struct Span<'a> {
    offset: usize,
    prefix: Option<&'a KvCache>,
    keep: Option<Vec<KeyValues>>,
}

impl Span<'_> {
    /// The keys and values of positions `..offset` at `layer`, when the pass starts after some.
    fn prefix_at(&self, layer: usize) -> Result<Option<KeyValues>> {
        let Some(cache) = self.prefix.filter(|_| self.offset > 0) else {
            return Ok(None);
        };
        let kv = cache
            .0
            .get(layer)
            .ok_or_else(|| Error::Internal(format!("no cached keys for block {layer}")))?;
        Ok(Some(KeyValues {
            keys: kv.keys.narrow(2, 0, self.offset)?,
            values: kv.values.narrow(2, 0, self.offset)?,
        }))
    }
}

/// The result of a forward pass.
#[derive(Debug)]
pub struct Forward {
    /// `ln_final.hook_normalized`: `[batch, seq, d_model]`, the input of [`Model::unembed`].
    pub normalized: Tensor,
    /// What the hooks captured.
    pub captured: Captured,
}

impl Model {
    /// Loads the weights of `source` as `config` describes them onto `device` in `dtype`. `label` names the model
    /// in error messages.
    ///
    /// # Errors
    /// [`Error::ConfigContradictsWeights`] when the config's layer count or sizes disagree with the tensors;
    /// [`Error::ModelWeights`] when a tensor is missing or has the wrong shape; read errors.
    pub fn load(
        source: &dyn TensorSource,
        config: &ModelConfig,
        device: &Device,
        dtype: DType,
        label: &str,
    ) -> Result<Self> {
        // Before any allocation sized by the config: a wrong config.json must not abort or run a truncated model.
        config.check_against(source.tensors(), label)?;
        let loader = Loader {
            source,
            label,
            device,
            dtype,
        };
        let parts = (config.family.spec().layout.load)(config, &loader)?;
        Ok(Self {
            rope: config.rope.as_ref().map(|r| Rope::new(r, config.rotary_dim)),
            local_rope: config.local_rope.as_ref().map(|r| Rope::new(r, config.rotary_dim)),
            config: config.clone(),
            embed: parts.embed,
            pos_embed: parts.pos_embed,
            blocks: parts.blocks,
            final_norm: parts.final_norm,
            unembed: parts.unembed,
            device: device.clone(),
            dtype,
        })
    }

    /// The configuration it was built from.
    #[must_use]
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Number of blocks.
    #[must_use]
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Device the weights live on.
    #[must_use]
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Dtype of weights and activations.
    #[must_use]
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Runs token ids `[batch, seq]` (u32, right-padded) through the model.
    ///
    /// # Errors
    /// [`Error::Usage`] for sequences longer than the context; shape errors from replacements.
    pub fn forward(&self, ids: &Tensor, hooks: &Hooks) -> Result<Forward> {
        Ok(self.forward_span(ids, hooks, Span::default())?.0)
    }

    /// [`Model::forward`] that also keeps every block's attention keys and values, for
    /// [`Model::resume_after`].
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn forward_keeping_kv(&self, ids: &Tensor, hooks: &Hooks) -> Result<(Forward, KvCache)> {
        let span = Span {
            keep: Some(Vec::with_capacity(self.blocks.len())),
            ..Span::default()
        };
        let (forward, span) = self.forward_span(ids, hooks, span)?;
        Ok((forward, KvCache(span.keep.unwrap_or_default())))
    }

    fn forward_span<'a>(&self, ids: &Tensor, hooks: &Hooks, mut span: Span<'a>) -> Result<(Forward, Span<'a>)> {
        let mut captured = Captured::default();
        let resid = self.embed_tokens(ids, hooks, &mut captured)?;
        let resid = self.run_blocks(Stage::Pre(0), self.blocks.len(), resid, hooks, &mut captured, &mut span)?;
        Ok((self.finish(&resid, hooks, captured)?, span))
    }

    /// Runs token ids `[batch, seq]` through blocks `..end` only and returns what the hooks captured: the cheap
    /// way to read an activation part-way up (the blocks above it and the final norm are not run).
    ///
    /// # Errors
    /// [`Error::Usage`] for `end` past the last block; as [`Model::forward`].
    pub fn capture_until(&self, ids: &Tensor, end: usize, hooks: &Hooks) -> Result<Captured> {
        if end > self.blocks.len() {
            return Err(Error::Usage(format!(
                "cannot stop after block {end}: the model has {} blocks",
                self.blocks.len()
            )));
        }
        let mut captured = Captured::default();
        let resid = self.embed_tokens(ids, hooks, &mut captured)?;
        self.run_blocks(Stage::Pre(0), end, resid, hooks, &mut captured, &mut Span::default())?;
        Ok(captured)
    }

    /// The residual stream entering block 0: token (and learned position) embeddings, through their hooks.
    fn embed_tokens(&self, ids: &Tensor, hooks: &Hooks, captured: &mut Captured) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.config.context_len {
            return Err(Error::Usage(format!(
                "sequence of {t} tokens is longer than the model's context of {} tokens",
                self.config.context_len
            )));
        }
        self.check_hooks(hooks)?;
        let ids = ids.to_device(&self.device)?;
        let mut embed = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?;
        if self.config.block.embed_scale {
            // As transformers: √d is rounded to the run dtype before it multiplies (bf16 √2304 = 48.0, not 48.0104).
            #[allow(clippy::cast_precision_loss)]
            let scale = Tensor::new((self.config.hidden_size as f32).sqrt(), &self.device)?.to_dtype(self.dtype)?;
            embed = embed.broadcast_mul(&scale)?;
        }
        let mut resid = hooks.apply(HookPoint::Embed, embed, captured)?;
        if let Some(pos) = &self.pos_embed {
            let pos = pos.narrow(0, 0, t)?.unsqueeze(0)?.broadcast_as(resid.shape())?;
            let pos = if hooks.touches(HookPoint::PosEmbed) {
                hooks.apply(HookPoint::PosEmbed, pos.contiguous()?, captured)?
            } else {
                pos
            };
            resid = (resid + pos)?;
        }
        Ok(resid)
    }

    /// Runs blocks `layer..` from the residual stream entering block `layer` (`[batch, seq, d_model]`), as
    /// `blocks.{layer}.hook_resid_pre` would hold it. Hooks before `layer` are not reached.
    ///
    /// # Errors
    /// [`Error::Usage`] for a layer past the last block; as [`Model::forward`].
    pub fn forward_from(&self, layer: usize, resid: &Tensor, hooks: &Hooks) -> Result<Forward> {
        self.resume(Stage::Pre(layer), resid, hooks)
    }

    /// Runs the rest of the network from `stage`, given the residual stream there (`[batch, seq, d_model]`): what
    /// a full pass would compute if its residual stream at `stage` were `resid`. Hooks before `stage` are not
    /// reached.
    ///
    /// # Errors
    /// [`Error::Usage`] for a stage past the last block; as [`Model::forward`].
    pub fn resume(&self, stage: Stage, resid: &Tensor, hooks: &Hooks) -> Result<Forward> {
        let mut captured = Captured::default();
        let resid = self.run_layers(stage, self.blocks.len(), resid, hooks, &mut captured)?;
        self.finish(&resid, hooks, captured)
    }

    /// [`Model::resume`] for the positions from `offset` on only: `resid` (`[batch, seq − offset, d_model]`) holds
    /// those rows, and every earlier position is taken to be the run `cache` was kept from (its keys and values
    /// are attended to; a causal model's earlier positions do not depend on later ones, so when the two runs agree
    /// before `offset` this equals the full pass's rows `offset..`). Hooks see the rows from `offset` only.
    ///
    /// # Errors
    /// [`Error::Usage`] for a stage past the last block or a cache shorter than `offset`; as [`Model::forward`].
    pub fn resume_after(
        &self,
        stage: Stage,
        offset: usize,
        resid: &Tensor,
        cache: &KvCache,
        hooks: &Hooks,
    ) -> Result<Forward> {
        let kept = cache.0.first().map_or(Ok(0), |kv| kv.keys.dim(2))?;
        if cache.0.len() != self.blocks.len() || kept < offset {
            return Err(Error::Usage(format!(
                "a cache of {} blocks × {kept} positions cannot serve {offset} positions of a {}-block model",
                cache.0.len(),
                self.blocks.len()
            )));
        }
        self.check_hooks(hooks)?;
        let mut captured = Captured::default();
        let mut span = Span {
            offset,
            prefix: Some(cache),
            keep: None,
        };
        // Callers pass slices of cached activations; the kernels want contiguous rows.
        let resid = resid.to_device(&self.device)?.to_dtype(self.dtype)?.contiguous()?;
        let resid = self.run_blocks(stage, self.blocks.len(), resid, hooks, &mut captured, &mut span)?;
        self.finish(&resid, hooks, captured)
    }

    /// The raw residual stream after blocks `stage..end` (no final norm): a slice of the network, so hybrids
    /// can chain slices of two models.
    ///
    /// # Errors
    /// [`Error::Usage`] for a stage or end past the last block; as [`Model::forward`].
    pub fn run_layers(
        &self,
        stage: Stage,
        end: usize,
        resid: &Tensor,
        hooks: &Hooks,
        captured: &mut Captured,
    ) -> Result<Tensor> {
        let n = self.blocks.len();
        let valid = match stage {
            Stage::Pre(l) => l <= end,
            Stage::Mid(l) => l < end,
        };
        if end > n || !valid {
            return Err(Error::Usage(format!(
                "cannot run from {stage:?} to block {end}: the model has {n} blocks"
            )));
        }
        self.check_hooks(hooks)?;
        // Callers pass slices of cached activations; the kernels want contiguous rows.
        let resid = resid.to_device(&self.device)?.to_dtype(self.dtype)?.contiguous()?;
        self.run_blocks(stage, end, resid, hooks, captured, &mut Span::default())
    }

    /// Refuses hooks that would never fire, so a typo cannot silently do nothing.
    fn check_hooks(&self, hooks: &Hooks) -> Result<()> {
        for point in hooks.points() {
            let missing = match point {
                HookPoint::PosEmbed => self.pos_embed.is_none(),
                p => p.layer().is_some_and(|l| l >= self.blocks.len()),
            };
            if missing {
                return Err(Error::Usage(format!(
                    "hook {point} does not exist in this {} model ({} blocks{})",
                    self.config.architecture,
                    self.blocks.len(),
                    if self.pos_embed.is_none() {
                        ", no learned positions"
                    } else {
                        ""
                    }
                )));
            }
        }
        Ok(())
    }

    fn run_blocks(
        &self,
        start: Stage,
        end: usize,
        mut resid: Tensor,
        hooks: &Hooks,
        captured: &mut Captured,
        span: &mut Span<'_>,
    ) -> Result<Tensor> {
        let (first, skip_attn) = match start {
            Stage::Pre(l) => (l, false),
            Stage::Mid(l) => (l, true),
        };
        if first >= end {
            return Ok(resid);
        }
        let t = resid.dim(1)?;
        let (offset, total) = (span.offset, span.offset + t);
        let c = &self.config;
        let group = c.num_heads / c.num_kv_heads;
        let mask = causal_mask_after(offset, t, group, None, &self.device, self.dtype)?;
        // One window per model: a sliding layer's mask differs only when the sequence outgrows it.
        let windowed = match c.block.sliding_window {
            Some(w) if w < total && (first..end).any(|l| c.window(l).is_some()) => {
                Some(causal_mask_after(offset, t, group, Some(w), &self.device, self.dtype)?)
            }
            _ => None,
        };
        let tables = |rope: &Option<Rope>| -> Result<Option<RopeTables>> {
            match rope {
                Some(r) => Ok(Some(r.tables(total, &self.device, self.dtype)?.rows(offset, t)?)),
                None => Ok(None),
            }
        };
        let (rope, local_rope) = (tables(&self.rope)?, tables(&self.local_rope)?);
        for (layer, block) in self.blocks.iter().enumerate().take(end).skip(first) {
            let sliding = c.window(layer).is_some();
            if !(skip_attn && layer == first) {
                resid = hooks.apply(HookPoint::ResidPre(layer), resid, captured)?;
                let mask = match &windowed {
                    Some(w) if sliding => w,
                    _ => &mask,
                };
                let rope = match &local_rope {
                    Some(local) if sliding => Some(local),
                    _ => rope.as_ref(),
                };
                let prefix = span.prefix_at(layer)?;
                let normed = maybe_norm(block.attn_norm.as_ref(), &resid)?;
                let (attn, kv) = block.attn.forward(&normed, rope, mask, prefix.as_ref())?;
                if let Some(kept) = &mut span.keep {
                    kept.push(kv);
                }
                let attn = maybe_norm(block.attn_post_norm.as_ref(), &attn)?;
                let attn = hooks.apply(HookPoint::AttnOut(layer), attn, captured)?;
                resid = (resid + attn)?;
            }
            resid = hooks.apply(HookPoint::ResidMid(layer), resid, captured)?;
            let mlp = block.mlp.forward(&maybe_norm(block.mlp_norm.as_ref(), &resid)?)?;
            let mlp = maybe_norm(block.mlp_post_norm.as_ref(), &mlp)?;
            let mlp = hooks.apply(HookPoint::MlpOut(layer), mlp, captured)?;
            resid = hooks.apply(HookPoint::ResidPost(layer), (resid + mlp)?, captured)?;
        }
        Ok(resid)
    }

    /// The final norm, after the last block.
    fn finish(&self, resid: &Tensor, hooks: &Hooks, mut captured: Captured) -> Result<Forward> {
        let normalized = hooks.apply(
            HookPoint::FinalNormalized,
            self.final_norm.forward(resid)?,
            &mut captured,
        )?;
        Ok(Forward { normalized, captured })
    }

    /// Logits `[rows, vocab]` in f32 for normalized residual rows `[rows, d_model]`, through the final softcap
    /// when the model has one (every reader of logits goes through here: KL, lens, swap and patch scores).
    ///
    /// # Errors
    /// Shape errors.
    pub fn unembed(&self, rows: &Tensor) -> Result<Tensor> {
        let rows = rows.to_device(&self.device)?.to_dtype(self.dtype)?;
        // Capped in the run dtype, as transformers caps before any upcast.
        let logits = layers::softcap(rows.matmul(&self.unembed.t()?)?, self.config.block.final_softcap)?;
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// Final norm then unembedding of raw residual rows `[rows, d_model]` (the logit lens).
    ///
    /// # Errors
    /// Shape errors.
    pub fn lens(&self, resid_rows: &Tensor) -> Result<Tensor> {
        let rows = resid_rows.to_device(&self.device)?.to_dtype(self.dtype)?;
        self.unembed(&self.final_norm.forward(&rows)?)
    }
}

/// Largest |a − b| over two tensors of one shape (for tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar())
        .unwrap_or(f32::INFINITY)
}
