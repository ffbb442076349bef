//! CPU kernels candle does not fuse, where the unfused ops cost more than the matrix products around them.
//!
//! Each has a portable fallback built from candle ops (used on GPU and for non-f32 dtypes), and a test that the two
//! agree.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// `silu(gate) ⊙ up` for `x = [..., 2·h]` holding gate then up side by side (the stacked gate/up projection):
/// one pass instead of a strided activation and a strided product.
///
/// # Errors
/// Shape errors (an odd last dimension).
pub fn swiglu_halves(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() {
        return Ok(x.apply_op1_no_bwd(&SwigluHalves)?);
    }
    let half = x.dim(candle_core::D::Minus1)? / 2;
    let last = x.rank() - 1;
    Ok((x.narrow(last, 0, half)?.silu()? * x.narrow(last, half, half)?)?)
}

struct SwigluHalves;

impl CustomOp1 for SwigluHalves {
    fn name(&self) -> &'static str {
        "swiglu-halves"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("swiglu-halves needs a contiguous input");
        };
        let src = &storage.as_slice::<f32>()?[start..end];
        let mut dims = layout.dims().to_vec();
        let Some(width) = dims.last_mut() else {
            candle_core::bail!("swiglu-halves needs at least one dimension");
        };
        if *width % 2 != 0 {
            candle_core::bail!("swiglu-halves needs an even last dimension, got {width}");
        }
        let full = *width;
        *width /= 2;
        let half = *width;
        let mut out = vec![0f32; src.len() / 2];
        out.par_chunks_mut(half.max(1))
            .zip(src.par_chunks(full.max(1)))
            .for_each(|(o, row)| {
                let (gate, up) = row.split_at(half);
                for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            });
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Runs `f` on the f32 values of a contiguous tensor: borrowed in place on the CPU, copied to the host elsewhere.
///
/// # Errors
/// Dtype errors (not f32) and device copies.
pub fn with_f32_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    if t.device().is_cpu() {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            return Ok(f(&cpu.as_slice::<f32>()?[start..end]));
        }
    }
    Ok(f(&t.flatten_all()?.to_vec1::<f32>()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_swiglu_equals_the_candle_ops() {
        let x = Tensor::arange(0f32, 48.0, &Device::Cpu)
            .unwrap()
            .affine(0.21, -4.0)
            .unwrap()
            .reshape((2, 3, 8))
            .unwrap();
        let fused = swiglu_halves(&x).unwrap();
        let plain = (x.narrow(2, 0, 4).unwrap().silu().unwrap() * x.narrow(2, 4, 4).unwrap()).unwrap();
        assert_eq!(fused.dims(), &[2, 3, 4]);
        let diff = crate::model::max_abs_diff(&fused, &plain);
        assert!(diff <= 1e-6, "{diff}");
        assert!(swiglu_halves(&Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap()).is_err());
    }

    #[test]
    fn values_are_borrowed_in_order() {
        let t = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap()
            .t()
            .unwrap();
        let v = with_f32_values(&t, <[f32]>::to_vec).unwrap();
        assert_eq!(v, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
