//! Sharded checkpoints: `model.safetensors.index.json` plus the shard files it names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::dtype::TensorData;
use super::safetensors_file::SafetensorsFile;
use super::{TensorInfo, TensorSource};
use crate::error::{Error, Result};

/// The index as Hugging Face writes it; `metadata` (total size) is not needed.
#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

/// Several safetensors files read as one checkpoint.
pub struct ShardedSource {
    shards: Vec<SafetensorsFile>,
    tensors: BTreeMap<String, TensorInfo>,
    /// Tensor name → position in `shards`.
    location: BTreeMap<String, usize>,
}

impl ShardedSource {
    /// Opens the index and every shard it names, and checks that each shard holds what the index says.
    ///
    /// # Errors
    /// [`Error::InvalidShardIndex`] for bad JSON, a tensor the shard lacks or a tensor in two shards;
    /// [`Error::MissingShard`] for a shard file that is not there; errors of [`SafetensorsFile::open`].
    pub fn open(index_path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidShardIndex {
            path: index_path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(index_path).map_err(|source| Error::Read {
            path: index_path.to_path_buf(),
            source,
        })?;
        let index: Index = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if index.weight_map.is_empty() {
            return Err(invalid("weight_map is empty".into()));
        }
        let dir = index_path.parent().unwrap_or(Path::new("."));

        let mut shard_names: Vec<&String> = index.weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();
        let mut shards = Vec::with_capacity(shard_names.len());
        for name in &shard_names {
            // Shards live beside the index; a name with a path in it is a corrupt (or hostile) index.
            if name.contains(['/', '\\']) || name.as_str() == ".." {
                return Err(invalid(format!("shard name {name:?} is not a file name")));
            }
            let shard_path: PathBuf = dir.join(name);
            if !shard_path.is_file() {
                return Err(Error::MissingShard {
                    index: index_path.to_path_buf(),
                    shard: (*name).clone(),
                });
            }
            shards.push(SafetensorsFile::open(&shard_path)?);
        }

        let mut tensors = BTreeMap::new();
        let mut location = BTreeMap::new();
        for (shard_idx, shard) in shards.iter().enumerate() {
            for (name, info) in shard.tensors() {
                if location.insert(name.clone(), shard_idx).is_some() {
                    return Err(invalid(format!("tensor {name} is stored in more than one shard")));
                }
                tensors.insert(name.clone(), info.clone());
            }
        }
        for (tensor, shard) in &index.weight_map {
            let holder = location.get(tensor).and_then(|&i| shard_names.get(i));
            if holder.map(|s| s.as_str()) != Some(shard.as_str()) {
                return Err(invalid(format!(
                    "index places {tensor} in {shard}, but that shard does not hold it"
                )));
            }
        }
        Ok(Self {
            shards,
            tensors,
            location,
        })
    }

    /// The shard files, sorted by name.
    #[must_use]
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.shards
    }
}

impl TensorSource for ShardedSource {
    fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    fn read(&self, name: &str) -> Result<TensorData<'_>> {
        match self.location.get(name).and_then(|&i| self.shards.get(i)) {
            Some(shard) => shard.read(name),
            None => Err(Error::TensorNotFound {
                tensor: name.to_string(),
                path: self.shards.first().map(|s| s.path().to_path_buf()).unwrap_or_default(),
            }),
        }
    }
}
