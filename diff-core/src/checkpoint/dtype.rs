//! Float dtypes we read, and a tensor's values converted to f32 a block at a time.

use half::f16;

use super::safetensors_file::PageRelease;

/// The floating point formats mdiff diffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatDtype {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl FloatDtype {
    /// Parses a safetensors dtype name; `None` for dtypes we do not diff.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "F32" => Some(Self::F32),
            "F16" => Some(Self::F16),
            "BF16" => Some(Self::BF16),
            _ => None,
        }
    }

    /// Bytes per element.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }

    /// Converts little-endian `bytes` (a whole number of elements) into `out`.
    fn convert(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            Self::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Self::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
            Self::BF16 => {
                // bf16 is the upper half of an f32: widening is exact.
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
                }
            }
        }
    }
}

/// One tensor's values, readable as f32.
pub enum TensorData<'a> {
    /// Raw bytes in a memory-mapped file, converted on demand; the mapped pages are released on drop.
    Mapped {
        /// The tensor's bytes.
        bytes: &'a [u8],
        /// Their format.
        dtype: FloatDtype,
        /// Gives the pages back to the OS when the tensor is done with.
        release: PageRelease<'a>,
    },
    /// Values computed in memory (e.g. a LoRA merge).
    Owned(Vec<f32>),
}

impl TensorData<'_> {
    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Mapped { bytes, dtype, .. } => bytes.len() / dtype.size(),
            Self::Owned(values) => values.len(),
        }
    }

    /// Whether the tensor has no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `start .. start + len` without a copy, when they already are f32 in memory: owned values, or F32
    /// mapped bytes that happen to be 4-byte aligned on a little-endian machine (the usual safetensors layout).
    #[must_use]
    pub fn f32_slice(&self, start: usize, len: usize) -> Option<&[f32]> {
        match self {
            Self::Mapped {
                bytes,
                dtype: FloatDtype::F32,
                ..
            } if cfg!(target_endian = "little") => {
                let raw = bytes.get(start.checked_mul(4)?..start.checked_add(len)?.checked_mul(4)?)?;
                bytemuck::try_cast_slice(raw).ok()
            }
            Self::Owned(values) => values.get(start..start.checked_add(len)?),
            Self::Mapped { .. } => None,
        }
    }

    /// Writes elements `start .. start + out.len()` into `out`.
    ///
    /// Callers keep the range inside `0..len()`; elements past the end are left untouched.
    pub fn read_into(&self, start: usize, out: &mut [f32]) {
        match self {
            Self::Mapped { bytes, dtype, .. } => {
                let size = dtype.size();
                let begin = (start * size).min(bytes.len());
                let end = ((start + out.len()) * size).min(bytes.len());
                dtype.convert(bytes.get(begin..end).unwrap_or_default(), out);
            }
            Self::Owned(values) => {
                let end = (start + out.len()).min(values.len());
                let src = values.get(start.min(end)..end).unwrap_or_default();
                if let Some(dst) = out.get_mut(..src.len()) {
                    dst.copy_from_slice(src);
                }
            }
        }
    }

    /// Hints that elements `start..end` are about to be read, so a mapped tensor can map their pages in bulk.
    pub fn prefetch(&self, start: usize, end: usize) {
        if let Self::Mapped { dtype, release, .. } = self {
            release.populate(start * dtype.size(), end.saturating_sub(start) * dtype.size());
        }
    }

    /// Hints that elements before `end` will not be read again, so a mapped tensor can give their pages back.
    pub fn release_before(&self, end: usize) {
        if let Self::Mapped { dtype, release, .. } = self {
            release.release_prefix(end * dtype.size());
        }
    }

    /// All values in one vector (consumes owned data without copying).
    #[must_use]
    pub fn into_vec(self) -> Vec<f32> {
        match self {
            Self::Owned(values) => values,
            mapped @ Self::Mapped { .. } => {
                let mut out = vec![0.0; mapped.len()];
                mapped.read_into(0, &mut out);
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_each_float_format_exactly() {
        let mut out = [0.0f32; 2];
        FloatDtype::F32.convert(&[0, 0, 128, 63, 0, 0, 0, 192], &mut out);
        assert_eq!(out, [1.0, -2.0]);
        FloatDtype::BF16.convert(&[128, 63, 0, 192], &mut out);
        assert_eq!(out, [1.0, -2.0]);
        FloatDtype::F16.convert(&[0, 60, 0, 192], &mut out);
        assert_eq!(out, [1.0, -2.0]);
    }

    #[test]
    fn owned_reads_are_clamped_to_the_tensor() {
        let data = TensorData::Owned(vec![1.0, 2.0, 3.0]);
        let mut out = [9.0f32; 2];
        data.read_into(2, &mut out);
        assert_eq!(out, [3.0, 9.0]);
    }
}
