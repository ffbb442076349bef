//! Rotary position embeddings in Hugging Face's half-rotation layout.
//!
//! Frequencies and angles are computed in f32 exactly as transformers does (`inv_freq` from an f32 power, angle =
//! f32 position × f32 frequency), so long positions round the same way as the reference.

use candle_core::{DType, Device, Tensor};

use super::config::{RopeConfig, RopeScaling};
use crate::error::Result;

/// RoPE frequencies of one model; [`Rope::tables`] turns them into cos/sin tables for a sequence length.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// Longrope's frequencies for sequences longer than the length given with them.
    long: Option<(Vec<f32>, usize)>,
    /// Multiplies cos and sin (longrope's attention factor; 1 otherwise).
    scale: f32,
}

/// cos/sin tables `[seq, head_dim / 2]` for positions `0..seq`.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Frequencies for the `rotary_dim` leading dimensions of each head (all of it unless partial rotary).
    #[must_use]
    pub fn new(config: &RopeConfig, rotary_dim: usize) -> Self {
        match &config.scaling {
            RopeScaling::LongRope {
                long_factor,
                original_max_position_embeddings,
                attention_factor,
                ..
            } => Self {
                inv_freq: inverse_frequencies(config, rotary_dim),
                long: Some((
                    divided(config.theta, rotary_dim, long_factor),
                    *original_max_position_embeddings,
                )),
                #[allow(clippy::cast_possible_truncation)]
                scale: *attention_factor as f32,
            },
            _ => Self {
                inv_freq: inverse_frequencies(config, rotary_dim),
                long: None,
                scale: 1.0,
            },
        }
    }

    /// Tables for positions `0..seq`, built per forward pass (cheap next to the pass; no context-length tables
    /// held in memory).
    ///
    /// # Errors
    /// Tensor allocation failures.
    ///
    /// As transformers, longrope picks its frequencies by the sequence's length: the long ones for every position
    /// of a sequence longer than the pre-training length (so a padded batch decides by its padded length; the
    /// analyses never batch prompts from the two sides together).
    pub fn tables(&self, seq: usize, device: &Device, dtype: DType) -> Result<RopeTables> {
        let inv_freq = match &self.long {
            Some((long, after)) if seq > *after => long,
            _ => &self.inv_freq,
        };
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for pos in 0..seq {
            for &f in inv_freq {
                #[allow(clippy::cast_precision_loss)]
                let angle = pos as f32 * f;
                cos.push(angle.cos() * self.scale);
                sin.push(angle.sin() * self.scale);
            }
        }
        let table = |v: Vec<f32>| Tensor::from_vec(v, (seq, half), device)?.to_dtype(dtype);
        Ok(RopeTables {
            cos: table(cos)?,
            sin: table(sin)?,
        })
    }
}

impl RopeTables {
    /// The rows of positions `offset..offset + len`.
    ///
    /// # Errors
    /// Positions past the table.
    pub fn rows(&self, offset: usize, len: usize) -> Result<RopeTables> {
        Ok(RopeTables {
            cos: self.cos.narrow(0, offset, len)?.contiguous()?,
            sin: self.sin.narrow(0, offset, len)?.contiguous()?,
        })
    }

    /// Rotates `x` of shape `[batch, heads, seq, head_dim]` (contiguous): all of each head, or its leading
    /// dimensions when the tables are narrower (partial rotary, `partial_rotary_factor` < 1), the rest passed through.
    ///
    /// # Errors
    /// Shape errors.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (rotated, head_dim) = (2 * self.cos.dim(1)?, x.dim(3)?);
        if rotated == head_dim {
            return Ok(candle_nn::rotary_emb::rope(x, &self.cos, &self.sin)?);
        }
        let turned = candle_nn::rotary_emb::rope(&x.narrow(3, 0, rotated)?.contiguous()?, &self.cos, &self.sin)?;
        Ok(Tensor::cat(&[&turned, &x.narrow(3, rotated, head_dim - rotated)?], 3)?.contiguous()?)
    }
}

/// Longrope's `1 / (factor_i · theta^(2i / d))`, in f32 as transformers computes it.
fn divided(theta: f64, dim: usize, factors: &[f64]) -> Vec<f32> {
    #[allow(clippy::cast_possible_truncation)]
    let theta = theta as f32;
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    (0..dim)
        .step_by(2)
        .zip(factors)
        .map(|(i, &factor)| 1.0 / (factor as f32 * theta.powf(i as f32 / dim as f32)))
        .collect()
}

/// `1 / theta^(2i / d)` for `i < d / 2`, then scaled as the config says.
#[must_use]
pub fn inverse_frequencies(config: &RopeConfig, head_dim: usize) -> Vec<f32> {
    #[allow(clippy::cast_possible_truncation)]
    let theta = config.theta as f32;
    #[allow(clippy::cast_precision_loss)]
    let base: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / theta.powf(i as f32 / head_dim as f32))
        .collect();
    match &config.scaling {
        RopeScaling::None => base,
        RopeScaling::LongRope { short_factor, .. } => divided(config.theta, head_dim, short_factor),
        &RopeScaling::Linear { factor } => {
            #[allow(clippy::cast_possible_truncation)]
            let factor = factor as f32;
            base.into_iter().map(|f| f / factor).collect()
        }
        &RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: original,
        } => base
            .into_iter()
            .map(|f| {
                // Long wavelengths (low frequencies) are interpolated, short ones kept, the band between blended.
                let wavelen = 2.0 * std::f64::consts::PI / f64::from(f);
                let low_wavelen = original / low_freq_factor;
                let high_wavelen = original / high_freq_factor;
                let f = f64::from(f);
                let scaled = if wavelen > low_wavelen {
                    f / factor
                } else if wavelen < high_wavelen {
                    f
                } else {
                    let smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * f / factor + smooth * f
                };
                #[allow(clippy::cast_possible_truncation)]
                let scaled = scaled as f32;
                scaled
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = RopeConfig {
            theta: 500_000.0,
            scaling: RopeScaling::None,
        };
        let scaled = RopeConfig {
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
            ..plain.clone()
        };
        let (a, b) = (inverse_frequencies(&plain, 128), inverse_frequencies(&scaled, 128));
        assert_eq!(a[0], b[0], "the highest frequency is untouched");
        let last = a.len() - 1;
        assert!(
            (b[last] - a[last] / 8.0).abs() <= 1e-12,
            "the lowest is divided by the factor"
        );
        assert!(a.iter().zip(&b).all(|(x, y)| y <= x && *y >= x / 8.0 - 1e-12));
    }

    #[test]
    fn rotation_preserves_norm_and_is_identity_at_position_zero() {
        let config = RopeConfig {
            theta: 10_000.0,
            scaling: RopeScaling::None,
        };
        let rope = Rope::new(&config, 8).tables(8, &Device::Cpu, DType::F32).unwrap();
        let x = Tensor::arange(0f32, 64.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 8, 8))
            .unwrap();
        let y = rope.apply(&x).unwrap();
        let x0: Vec<f32> = x.get(0).unwrap().get(0).unwrap().get(0).unwrap().to_vec1().unwrap();
        let y0: Vec<f32> = y.get(0).unwrap().get(0).unwrap().get(0).unwrap().to_vec1().unwrap();
        assert_eq!(x0, y0);
        let norms = |t: &Tensor| -> Vec<f32> {
            t.sqr()
                .unwrap()
                .sum(3)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for (a, b) in norms(&x).iter().zip(norms(&y)) {
            assert!((a - b).abs() <= 1e-3 * a.max(1.0));
        }
    }
}
