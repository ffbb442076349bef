//! One memory-mapped `.safetensors` file.
//!
//! The header is parsed and validated by the `safetensors` crate (offsets contiguous, in range and consistent
//! with dtype × shape); its errors are turned into one line that names the file and what to do.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensorError;

use super::dtype::{FloatDtype, TensorData};
use super::{TensorInfo, TensorSource};
use crate::error::{Error, Result};

/// A mapped safetensors file and its validated header.
pub struct SafetensorsFile {
    path: PathBuf,
    size_bytes: u64,
    mmap: Mmap,
    /// Length of the 8-byte length prefix plus the JSON header.
    header_bytes: usize,
    tensors: BTreeMap<String, TensorInfo>,
    /// Byte range of each tensor within the file.
    ranges: BTreeMap<String, Range<usize>>,
}

impl SafetensorsFile {
    /// Maps and validates `path`.
    ///
    /// # Errors
    /// [`Error::Read`] when it cannot be opened; [`Error::InvalidSafetensors`] for a truncated file, a header
    /// length past the end, a header that is not JSON, or tensor offsets out of range or overlapping.
    pub fn open(path: &Path) -> Result<Self> {
        let read_err = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let size_bytes = file.metadata().map_err(read_err)?.len();
        let mmap = map(&file).map_err(read_err)?;
        // A GGUF file would fail below as a "truncated" safetensors file; say what it is instead.
        if mmap.starts_with(GGUF_MAGIC) {
            return Err(Error::GgufCheckpoint {
                path: path.to_path_buf(),
            });
        }
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| {
            // Only after the header fails to parse: a valid header length could begin with these bytes.
            if mmap.starts_with(ZIP_MAGIC) {
                return Error::PickleCheckpoint {
                    path: path.to_path_buf(),
                };
            }
            Error::InvalidSafetensors {
                path: path.to_path_buf(),
                reason: explain(&e, size_bytes),
            }
        })?;
        let data_start = 8 + header_len;
        // The crate builds a map from the header, so of two entries with one name it silently keeps one.
        if let Some(name) = mmap.get(8..data_start).and_then(first_duplicate_key) {
            return Err(Error::InvalidSafetensors {
                path: path.to_path_buf(),
                reason: format!("tensor {name} is named twice in the header, so which one is meant is ambiguous"),
            });
        }
        let mut tensors = BTreeMap::new();
        let mut ranges = BTreeMap::new();
        for (name, info) in metadata.tensors() {
            let (begin, end) = info.data_offsets;
            tensors.insert(
                name.clone(),
                TensorInfo {
                    dtype: format!("{:?}", info.dtype),
                    shape: info.shape.clone(),
                },
            );
            ranges.insert(name, data_start + begin..data_start + end);
        }
        Ok(Self {
            path: path.to_path_buf(),
            size_bytes,
            mmap,
            header_bytes: data_start,
            tensors,
            ranges,
        })
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// SHA-256 of the length prefix and JSON header, in lower-case hex: it names every tensor with its dtype,
    /// shape and offsets (and the file's metadata), so it tells checkpoints apart without reading the weights.
    #[must_use]
    pub fn header_sha256(&self) -> String {
        crate::digest::sha256_hex([&self.mmap[..self.header_bytes.min(self.mmap.len())]])
    }
}

impl TensorSource for SafetensorsFile {
    fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    fn read(&self, name: &str) -> Result<TensorData<'_>> {
        let not_found = || Error::TensorNotFound {
            tensor: name.to_string(),
            path: self.path.clone(),
        };
        let info = self.tensors.get(name).ok_or_else(not_found)?;
        let range = self.ranges.get(name).ok_or_else(not_found)?;
        let dtype = FloatDtype::parse(&info.dtype).ok_or_else(|| Error::UnsupportedDtype {
            tensor: name.to_string(),
            dtype: info.dtype.clone(),
        })?;
        // The header was validated against the file length, so the range is in bounds; stay defensive anyway.
        let bytes = self.mmap.get(range.clone()).ok_or_else(|| Error::InvalidSafetensors {
            path: self.path.clone(),
            reason: format!("tensor {name} lies outside the file"),
        })?;
        Ok(TensorData::Mapped {
            bytes,
            dtype,
            release: PageRelease {
                mmap: &self.mmap,
                range: range.clone(),
            },
        })
    }
}

/// Hands a tensor's mapped pages back to the OS when dropped, so resident memory stays bounded by the tensors
/// in flight instead of growing to the size of the checkpoint.
pub struct PageRelease<'a> {
    mmap: &'a Mmap,
    range: Range<usize>,
}

impl PageRelease<'_> {
    /// Maps the pages of bytes `start..start + len` of the tensor in one call, instead of one fault per page.
    pub fn populate(&self, start: usize, len: usize) {
        let start = start.min(self.range.len());
        let len = len.min(self.range.len() - start);
        if len > 0 {
            // Best effort: on kernels without MADV_POPULATE_READ (< 5.14) pages simply fault in as read.
            let _ = self
                .mmap
                .advise_range(memmap2::Advice::PopulateRead, self.range.start + start, len);
        }
    }

    /// Releases the pages of the tensor's first `len` bytes (the reader has moved past them).
    pub fn release_prefix(&self, len: usize) {
        self.advise_dont_need(len.min(self.range.len()));
    }

    #[allow(unsafe_code)]
    fn advise_dont_need(&self, len: usize) {
        #[cfg(unix)]
        // SAFETY: the map is a read-only shared file mapping. MADV_DONTNEED on it only drops our page table
        // entries; a later access faults the same bytes back in from the page cache, so no reader (in this or
        // another thread) can observe changed contents. Failure only means the pages stay resident.
        unsafe {
            let _ = self
                .mmap
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, self.range.start, len);
        }
    }
}

impl Drop for PageRelease<'_> {
    fn drop(&mut self) {
        self.advise_dont_need(self.range.len());
    }
}

#[allow(unsafe_code)]
fn map(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only. Like every mmap-based loader (candle, safetensors, llama.cpp) we assume
    // the checkpoint is not truncated or rewritten by another process while mdiff runs.
    unsafe { Mmap::map(file) }
}

/// The first bytes of a GGUF file (llama.cpp's format).
const GGUF_MAGIC: &[u8] = b"GGUF";
/// The first bytes of a zip archive, which is what `torch.save` writes (a pickle inside).
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// The first key that a JSON object (`header`) holds twice; `None` when every key is unique or the header does not
/// parse (the safetensors crate has already said why).
fn first_duplicate_key(header: &[u8]) -> Option<String> {
    serde_json::from_slice::<FirstDuplicateKey>(header).ok()?.0
}

/// Reads a JSON object's keys in file order without building a map, which would drop a repeated key.
struct FirstDuplicateKey(Option<String>);

impl<'de> serde::Deserialize<'de> for FirstDuplicateKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> serde::de::Visitor<'de> for KeyVisitor {
    type Value = FirstDuplicateKey;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        let mut first = None;
        // The whole object is read even after a duplicate: the parser rejects a map left half-consumed.
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<serde::de::IgnoredAny>()?;
            if first.is_none() && !seen.insert(key.clone()) {
                first = Some(key);
            }
        }
        Ok(FirstDuplicateKey(first))
    }
}

/// Turns the safetensors crate's terse errors into what a user can act on.
fn explain(err: &SafeTensorError, size_bytes: u64) -> String {
    match err {
        SafeTensorError::HeaderTooSmall => {
            format!("file is only {size_bytes} bytes, too short for a header")
        }
        SafeTensorError::InvalidHeaderLength | SafeTensorError::HeaderTooLarge => {
            format!("header length runs past the end of the {size_bytes}-byte file (truncated download?)")
        }
        SafeTensorError::InvalidHeader(_) => "header is not UTF-8".into(),
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("header is not valid safetensors JSON: {e}")
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor {name} has data offsets that overlap or leave a gap")
        }
        SafeTensorError::TensorInvalidInfo => "a tensor's byte range does not match its dtype and shape".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            format!("tensor data does not match the file size ({size_bytes} bytes): truncated or padded file")
        }
        SafeTensorError::ValidationOverflow => "a tensor shape overflows".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use safetensors::tensor::{Dtype, TensorView};

    use super::*;

    /// An F32 safetensors file of one tensor `name` holding `values`, as its bytes.
    fn file_bytes(name: &str, values: &[f32]) -> Vec<u8> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![values.len()], &data).unwrap();
        safetensors::serialize([(name, view)], None).unwrap()
    }

    fn header_hash(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        std::fs::write(&path, bytes).unwrap();
        SafetensorsFile::open(&path).unwrap().header_sha256()
    }

    #[test]
    fn the_header_hash_covers_the_header_and_not_the_weights() {
        let bytes = file_bytes("w", &[1.0, 2.0]);
        // The hash is of the 8-byte little-endian length and the JSON header that follows, nothing more.
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(
            header_hash(&bytes),
            crate::digest::sha256_hex([&bytes[..8 + header_len]])
        );
        // New weights of the same shape keep it; a renamed or reshaped tensor changes it.
        assert_eq!(header_hash(&bytes), header_hash(&file_bytes("w", &[3.0, -4.0])));
        assert_ne!(header_hash(&bytes), header_hash(&file_bytes("v", &[1.0, 2.0])));
        assert_ne!(header_hash(&bytes), header_hash(&file_bytes("w", &[1.0, 2.0, 3.0])));
    }

    #[test]
    fn duplicate_keys_are_found_in_file_order() {
        assert_eq!(first_duplicate_key(br#"{"a":1,"b":{"a":2},"c":3}  "#), None);
        assert_eq!(
            first_duplicate_key(br#"{"a":1,"b":2,"a":3,"b":4}"#).as_deref(),
            Some("a")
        );
        assert_eq!(first_duplicate_key(b"not json"), None);
    }
}
