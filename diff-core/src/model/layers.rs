//! The pieces a transformer block is made of, shared by every architecture.
//!
//! Activations are `[batch, seq, width]`, contiguous. Linear weights are stored `[out, in]` as in PyTorch
//! (GPT-2's `Conv1D` weights are transposed once at load).

use candle_core::{DType, Device, Tensor};

use super::config::{Activation, QkNorm};
use super::rope::RopeTables;
use crate::error::{Error, Result};

/// `y = x·Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// From a `[out, in]` weight and an optional `[out]` bias.
    #[must_use]
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// Applies the layer to `[batch, seq, in]`.
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, i) = x.dims3()?;
        // One 2-D product over all rows: candle's batched matmul broadcasts the weight, which is slower.
        let y = x.reshape((b * t, i))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        Ok(y.reshape((b, t, ()))?)
    }
}

impl Linear {
    /// The weight `[out, in]` and the bias `[out]`.
    #[must_use]
    pub fn parts(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.weight, self.bias.as_ref())
    }

    /// Output width.
    ///
    /// # Errors
    /// Never for a weight built by [`Linear::new`] from a matrix.
    pub fn rows(&self) -> Result<usize> {
        Ok(self.weight.dim(0)?)
    }

    /// Stacks layers that read the same input into one whose output is their outputs side by side.
    ///
    /// # Errors
    /// Shape errors (different input widths).
    pub fn stack(parts: &[Linear]) -> Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let biases: Vec<&Tensor> = parts.iter().filter_map(|p| p.bias.as_ref()).collect();
        let bias = match biases.len() {
            0 => None,
            n if n == parts.len() => Some(Tensor::cat(&biases, 0)?),
            // Every family biases all stacked projections or none (config.rs decides per group).
            _ => return Err(Error::Internal("stacking biased and unbiased projections".into())),
        };
        Ok(Self::new(Tensor::cat(&weights, 0)?, bias))
    }
}

/// RMSNorm (Llama family and most others), RMSNorm in f32 (Gemma, OLMo-2) or LayerNorm (GPT-2).
#[derive(Debug, Clone)]
pub enum Norm {
    /// `x / rms(x) · w`, the weight in the run dtype.
    Rms {
        /// Scale.
        weight: Tensor,
        /// Added to the mean square.
        eps: f32,
    },
    /// `x / rms(x) · w` with `x` cast to f32 and `w` in f32, the result cast back to the run dtype (Gemma's
    /// weight is stored here as 1 + w).
    RmsF32 {
        /// Scale, f32.
        weight: Tensor,
        /// Added to the mean square.
        eps: f32,
    },
    /// `(x − mean) / std · w + b`.
    Layer {
        /// Scale.
        weight: Tensor,
        /// Shift.
        bias: Tensor,
        /// Added to the variance.
        eps: f32,
    },
}

impl Norm {
    /// Normalizes over the last dimension.
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Rms { weight, eps } => candle_nn::ops::rms_norm(x, weight, *eps)?,
            Self::RmsF32 { weight, eps } if x.dtype() == DType::F32 => candle_nn::ops::rms_norm(x, weight, *eps)?,
            Self::RmsF32 { weight, eps } => {
                candle_nn::ops::rms_norm(&x.to_dtype(DType::F32)?, weight, *eps)?.to_dtype(x.dtype())?
            }
            Self::Layer { weight, bias, eps } => candle_nn::ops::layer_norm(x, weight, bias, *eps)?,
        })
    }
}

/// RMSNorms of the queries and keys, applied before RoPE.
#[derive(Debug, Clone)]
pub struct QkNorms {
    /// Per head or over the whole projection.
    pub kind: QkNorm,
    /// The queries' norm.
    pub q: Norm,
    /// The keys' norm.
    pub k: Norm,
}

/// Causal self-attention with optional RoPE, q/k norms, softcap and grouped key/value heads.
#[derive(Debug, Clone)]
pub struct Attention {
    /// Query, key and value projections fused into one `[(heads + 2·kv_heads)·head_dim, d_model]` product: one
    /// large matrix product runs faster than three, two of them narrow under grouped-query attention.
    pub qkv: Linear,
    /// Norms of the queries and keys (Qwen3, Gemma 3, OLMo-2).
    pub qk_norm: Option<QkNorms>,
    /// Output projection.
    pub o: Linear,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Multiplies q·k (1/√head_dim, times GPT-2's optional 1/(layer + 1); Gemma's 1/√query_pre_attn_scalar).
    pub scale: f64,
    /// Scores become `cap · tanh(score / cap)` before the mask (Gemma 2).
    pub softcap: Option<f64>,
}

impl Attention {
    /// Attends over `x` (`[batch, seq, d_model]`) under `mask` (see [`causal_mask`]). With `prefix`, `x` holds
    /// the positions after the prefix's, whose keys and values (`[1 or batch, kv_heads, prefix, head_dim]`, after
    /// RoPE) are attended to as well; `rope` then holds the tables of `x`'s own positions. Returns the output and
    /// the keys and values of every position attended to.
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: Option<&RopeTables>,
        mask: &Tensor,
        prefix: Option<&KeyValues>,
    ) -> Result<(Tensor, KeyValues)> {
        let (b, t, _) = x.dims3()?;
        let mut qkv = self.qkv.forward(x)?;
        if let Some(QkNorms {
            kind: QkNorm::Whole,
            q: q_norm,
            k: k_norm,
        }) = &self.qk_norm
        {
            // OLMo-2 normalizes the whole query and key projections before the heads are split.
            let (q_width, kv_width) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
            qkv = Tensor::cat(
                &[
                    &q_norm.forward(&qkv.narrow(2, 0, q_width)?.contiguous()?)?,
                    &k_norm.forward(&qkv.narrow(2, q_width, kv_width)?.contiguous()?)?,
                    &qkv.narrow(2, q_width + kv_width, kv_width)?,
                ],
                2,
            )?;
        }
        let qkv = qkv.reshape((b, t, self.heads + 2 * self.kv_heads, self.head_dim))?;
        let heads =
            |start: usize, n: usize| -> Result<Tensor> { Ok(qkv.narrow(2, start, n)?.transpose(1, 2)?.contiguous()?) };
        let (mut q, mut k, mut v) = (
            heads(0, self.heads)?,
            heads(self.heads, self.kv_heads)?,
            heads(self.heads + self.kv_heads, self.kv_heads)?,
        );
        if let Some(QkNorms {
            kind: QkNorm::PerHead,
            q: q_norm,
            k: k_norm,
        }) = &self.qk_norm
        {
            q = q_norm.forward(&q)?;
            k = k_norm.forward(&k)?;
        }
        if let Some(rope) = rope {
            q = rope.apply(&q)?;
            k = rope.apply(&k)?;
        }
        if let Some(prefix) = prefix {
            let with_prefix = |cached: &Tensor, own: &Tensor| -> Result<Tensor> {
                let (_, kv, p, hd) = cached.dims4()?;
                Ok(Tensor::cat(
                    &[&cached.broadcast_as((b, kv, p, hd))?.contiguous()?, own],
                    2,
                )?)
            };
            k = with_prefix(&prefix.keys, &k)?;
            v = with_prefix(&prefix.values, &v)?;
        }
        // Grouped-query attention without copying keys: the query heads sharing one key/value head are stacked
        // along the sequence axis, so each key/value head takes part in a single larger product.
        let group = self.heads / self.kv_heads;
        let q = (q * self.scale)?.reshape((b, self.kv_heads, group * t, self.head_dim))?;
        let scores = q.matmul(&k.t()?)?;
        let scores = softcap(scores, self.softcap)?;
        let scores = scores.broadcast_add(mask)?;
        // Softmax in f32 whatever the model dtype, as transformers does.
        let probs = match scores.dtype() {
            DType::F32 => candle_nn::ops::softmax_last_dim(&scores)?,
            dtype => candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?,
        };
        let out = probs
            .matmul(&v)?
            .reshape((b, self.heads, t, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.head_dim))?;
        Ok((self.o.forward(&out)?, KeyValues { keys: k, values: v }))
    }
}

/// One attention layer's keys and values, `[batch, kv_heads, seq, head_dim]`, after RoPE.
#[derive(Debug, Clone)]
pub struct KeyValues {
    /// Keys.
    pub keys: Tensor,
    /// Values.
    pub values: Tensor,
}

/// The additive attention mask `[group · seq, seq]`: 0 where query i may see key j (j ≤ i, and i − j < window
/// when there is a sliding window), −∞ elsewhere; repeated `group` times along the rows (see
/// [`Attention::forward`]).
///
/// Batches are right-padded, so real tokens never see padding and no padding mask is needed.
///
/// # Errors
/// Allocation failures.
pub fn causal_mask(seq: usize, group: usize, window: Option<usize>, device: &Device, dtype: DType) -> Result<Tensor> {
    causal_mask_after(0, seq, group, window, device, dtype)
}

/// [`causal_mask`] for queries at positions `offset..offset + seq` over keys `0..offset + seq`:
/// `[group · seq, offset + seq]`.
///
/// # Errors
/// Allocation failures.
pub fn causal_mask_after(
    offset: usize,
    seq: usize,
    group: usize,
    window: Option<usize>,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let keys = offset + seq;
    let mut mask = Vec::with_capacity(group * seq * keys);
    for _ in 0..group {
        for i in offset..keys {
            mask.extend((0..keys).map(|j| {
                let visible = j <= i && window.is_none_or(|w| i - j < w);
                if visible { 0f32 } else { f32::NEG_INFINITY }
            }));
        }
    }
    Ok(Tensor::from_vec(mask, (group * seq, keys), device)?.to_dtype(dtype)?)
}

/// The feed-forward sublayer.
#[derive(Debug, Clone)]
pub enum Mlp {
    /// `down(act(gate(x)) ⊙ up(x))` (Llama family).
    Gated {
        /// Gate and up projections stacked (`[2·intermediate, d_model]`, gate first) into one product.
        gate_up: Linear,
        /// Down projection.
        down: Linear,
        /// Non-linearity on the gate.
        activation: Activation,
    },
    /// `proj(act(fc(x)))` (GPT-2).
    Plain {
        /// Expansion.
        fc: Linear,
        /// Projection back to the residual width.
        proj: Linear,
        /// Non-linearity.
        activation: Activation,
    },
}

impl Mlp {
    /// Applies the MLP.
    ///
    /// # Errors
    /// Shape errors.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Gated {
                gate_up,
                down,
                activation,
            } => {
                let both = gate_up.forward(x)?;
                let hidden = if *activation == Activation::Silu {
                    super::kernels::swiglu_halves(&both)?
                } else {
                    let half = both.dim(2)? / 2;
                    (activate(&both.narrow(2, 0, half)?, *activation)? * both.narrow(2, half, half)?)?
                };
                down.forward(&hidden)
            }
            Self::Plain { fc, proj, activation } => proj.forward(&activate(&fc.forward(x)?, *activation)?),
        }
    }
}

fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    Ok(match activation {
        Activation::Silu => x.silu()?,
        Activation::GeluTanh => x.gelu()?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::Relu => x.relu()?,
    })
}

/// One transformer block: `x + post(attn(pre(x)))`, then the same with the MLP; each norm optional (Llama has
/// only the pre-norms, Gemma both, OLMo-2 only the post-norms).
#[derive(Debug, Clone)]
pub struct Block {
    /// Norm before attention.
    pub attn_norm: Option<Norm>,
    /// Self-attention.
    pub attn: Attention,
    /// Norm of the attention output.
    pub attn_post_norm: Option<Norm>,
    /// Norm before the MLP.
    pub mlp_norm: Option<Norm>,
    /// Feed-forward.
    pub mlp: Mlp,
    /// Norm of the MLP output.
    pub mlp_post_norm: Option<Norm>,
}

/// `cap · tanh(x / cap)` in `x`'s dtype (Gemma 2's attention-score and logit softcaps), or `x` without a cap.
///
/// # Errors
/// Tensor failures.
pub fn softcap(x: Tensor, cap: Option<f64>) -> Result<Tensor> {
    Ok(match cap {
        Some(cap) => (x.affine(1.0 / cap, 0.0)?.tanh()? * cap)?,
        None => x,
    })
}

/// `norm(x)`, or `x` itself when there is no norm.
///
/// # Errors
/// Shape errors.
pub fn maybe_norm(norm: Option<&Norm>, x: &Tensor) -> Result<Tensor> {
    match norm {
        Some(norm) => norm.forward(x),
        None => Ok(x.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal_and_windowed() {
        let m: Vec<Vec<f32>> = causal_mask(3, 2, Some(2), &Device::Cpu, DType::F32)
            .unwrap()
            .to_vec2()
            .unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m.len(), 6);
        assert_eq!(m[0], vec![0.0, inf, inf]);
        assert_eq!(
            m[2],
            vec![inf, 0.0, 0.0],
            "the window of 2 hides position 0 from position 2"
        );
        assert_eq!(m[3], m[0], "each query group repeats the mask");
    }

    #[test]
    fn grouped_attention_equals_repeated_heads() {
        // Four query heads over two key/value heads must equal four heads whose k/v projections repeat each
        // key/value head twice (what transformers' repeat_kv does).
        let dev = Device::Cpu;
        let (d, hd, t) = (8, 2, 5);
        let w = |rows: usize, seed: f64| {
            Tensor::arange(0f32, (rows * d) as f32, &dev)
                .unwrap()
                .affine(0.37, seed)
                .unwrap()
                .sin()
                .unwrap()
                .reshape((rows, d))
                .unwrap()
        };
        let (wq, wk, wv, wo) = (w(4 * hd, 0.1), w(2 * hd, 0.2), w(2 * hd, 0.3), w(d, 0.4));
        let repeat = |w: &Tensor| {
            let parts: Vec<Tensor> = (0..2).map(|h| w.narrow(0, h * hd, hd).unwrap()).collect();
            Tensor::cat(&[&parts[0], &parts[0], &parts[1], &parts[1]], 0).unwrap()
        };
        let attn = |wk: Tensor, wv: Tensor, kv_heads: usize| Attention {
            qkv: Linear::new(Tensor::cat(&[&wq, &wk, &wv], 0).unwrap(), None),
            qk_norm: None,
            softcap: None,
            o: Linear::new(wo.clone(), None),
            heads: 4,
            kv_heads,
            head_dim: hd,
            scale: 0.5,
        };
        let x = Tensor::arange(0f32, (2 * t * d) as f32, &dev)
            .unwrap()
            .affine(0.05, -1.0)
            .unwrap()
            .cos()
            .unwrap()
            .reshape((2, t, d))
            .unwrap();
        let grouped = attn(wk.clone(), wv.clone(), 2)
            .forward(&x, None, &causal_mask(t, 2, None, &dev, DType::F32).unwrap(), None)
            .unwrap()
            .0;
        let full = attn(repeat(&wk), repeat(&wv), 4)
            .forward(&x, None, &causal_mask(t, 1, None, &dev, DType::F32).unwrap(), None)
            .unwrap()
            .0;
        let diff = crate::model::max_abs_diff(&grouped, &full);
        assert!(diff < 1e-6, "{diff}");
    }
}
