//! Checkpoints on disk: one safetensors file, sharded safetensors, or a PEFT LoRA adapter over a base.
//!
//! Every kind is a [`TensorSource`]: a sorted table of tensor names with dtype and shape, and a way to read one
//! tensor as f32 at a time. Files are memory-mapped; nothing is read until a tensor is asked for.

mod config;
mod dtype;
pub mod hub;
mod lora;
mod pairing;
mod paths;
mod safetensors_file;
mod sharded;

pub use config::{find_beside, read_config_summary};
pub use dtype::{FloatDtype, TensorData};
pub use hub::resolve as resolve_hub_id;
pub use lora::{AdapterConfig, LoraSource, TargetModules};
pub use pairing::{Pair, Pairing, canonical_name, pair_tensors};
pub use safetensors_file::SafetensorsFile;
pub use sharded::ShardedSource;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::report::{CheckpointKind, InputFile, ModelInput};

/// Dtype and shape of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Dtype as safetensors spells it (`F32`, `BF16`, `I64`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of entries.
    #[must_use]
    pub fn num_elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// Where tensors come from: a table of names, and one tensor at a time as f32.
pub trait TensorSource: Send + Sync {
    /// Every tensor, by name.
    fn tensors(&self) -> &BTreeMap<String, TensorInfo>;

    /// Reads one tensor. Mapped sources return a view that converts on the fly and releases its pages on drop.
    ///
    /// # Errors
    /// [`Error::TensorNotFound`], [`Error::UnsupportedDtype`], or source-specific failures.
    fn read(&self, name: &str) -> Result<TensorData<'_>>;
}

/// A checkpoint opened from a path, with what was found beside it.
pub struct Checkpoint {
    path: PathBuf,
    kind: CheckpointKind,
    files: Vec<InputFile>,
    config_path: Option<PathBuf>,
    tokenizer_path: Option<PathBuf>,
    source: Arc<dyn TensorSource>,
    adapter: Option<Arc<LoraSource>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("num_tensors", &self.source.tensors().len())
            .finish_non_exhaustive()
    }
}

const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";
const ADAPTER_CONFIG: &str = "adapter_config.json";

impl Checkpoint {
    /// Opens a full checkpoint: a `.safetensors` file, or a directory with `model.safetensors`, a shard index,
    /// or exactly one other `.safetensors` file; or a Hugging Face Hub id ([`hub::resolve`]).
    ///
    /// # Errors
    /// Bad paths and malformed files give input errors ([`Error::is_input_error`]); an adapter directory gives
    /// [`Error::Usage`] (it needs a base: use [`Checkpoint::open_tuned`]); LoRA weights without their
    /// `adapter_config.json` give [`Error::AdapterFileNotFolder`] or [`Error::AdapterConfigMissing`].
    pub fn open(path: &Path) -> Result<Self> {
        let checkpoint = Self::open_local(&hub::resolve(path)?)?;
        checkpoint.refuse_bare_lora()?;
        Ok(checkpoint)
    }

    /// The weights file of the PEFT adapter folder `dir` as stored (`lora_A`/`lora_B` factors, not merged), for
    /// listing its tensors.
    ///
    /// # Errors
    /// As [`Checkpoint::open`].
    pub fn open_adapter_weights(dir: &Path) -> Result<Self> {
        Self::open_file(&dir.join(lora::ADAPTER_WEIGHTS))
    }

    fn open_local(path: &Path) -> Result<Self> {
        let meta = paths::metadata(path)?;
        if meta.is_file() {
            return Self::open_file(path);
        }
        if paths::file_in(path, ADAPTER_CONFIG)?.is_some() {
            return Err(Error::Usage(format!(
                "{} is a PEFT adapter; pass it as the tuned side with its base model as the base",
                path.display()
            )));
        }
        if let Some(index) = paths::file_in(path, INDEX_FILE)? {
            let sharded = ShardedSource::open(&index)?;
            let files = sharded.files().iter().map(input_file).collect();
            return Ok(Self::with_source(
                path,
                CheckpointKind::Sharded,
                files,
                Arc::new(sharded),
                path,
            ));
        }
        if let Some(single) = paths::file_in(path, SINGLE_FILE)? {
            return Self::open_file(&single).map(|c| Self {
                path: path.to_path_buf(),
                ..c
            });
        }
        let candidates = list_with_extension(path, "safetensors")?;
        match candidates.as_slice() {
            [only] => Self::open_file(only).map(|c| Self {
                path: path.to_path_buf(),
                ..c
            }),
            [] => Err(Self::why_no_weights(path)?),
            many => Err(Error::AmbiguousWeights {
                path: path.to_path_buf(),
                count: many.len(),
            }),
        }
    }

    /// The error for a folder with no safetensors weights: the files it holds instead (pickles, GGUF, a folder or
    /// broken link named `*.safetensors`), else [`Error::NoWeights`].
    fn why_no_weights(dir: &Path) -> Result<Error> {
        if let Some(bin) = list_with_extension(dir, "bin")?.into_iter().next() {
            return Ok(Error::PickleCheckpoint { path: bin });
        }
        if let Some(gguf) = list_with_extension(dir, "gguf")?.into_iter().next() {
            return Ok(Error::GgufCheckpoint { path: gguf });
        }
        if let Some(error) = entries_with_extension(dir, "safetensors")?
            .iter()
            .find_map(|p| paths::unusable(p))
        {
            return Ok(error);
        }
        if dir.extension().is_some_and(|e| e == "safetensors") {
            return Ok(Error::UnusablePath {
                path: dir.to_path_buf(),
                what: "a folder, not a safetensors file, and it holds no weights; pass the weights file or the \
                       model folder"
                    .into(),
            });
        }
        Ok(Error::NoWeights {
            path: dir.to_path_buf(),
        })
    }

    /// Refuses LoRA factors opened as if they were a model: without `adapter_config.json` they cannot be merged,
    /// and compared as they are they share no tensor with any model.
    fn refuse_bare_lora(&self) -> Result<()> {
        let Some(tensor) = self.source.tensors().keys().find(|n| lora::is_lora_key(n)) else {
            return Ok(());
        };
        if self.path.is_file() {
            let folder = match self.path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if folder.join(ADAPTER_CONFIG).is_file() {
                return Err(Error::AdapterFileNotFolder {
                    file: self.path.clone(),
                    folder: folder.to_path_buf(),
                });
            }
        }
        Err(Error::AdapterConfigMissing {
            path: self.path.clone(),
            tensor: tensor.clone(),
        })
    }

    /// Opens the tuned side: a full checkpoint as in [`Checkpoint::open`], or a PEFT LoRA adapter directory,
    /// which is merged onto `base` tensor by tensor as it is read. Either may be a Hugging Face Hub id.
    ///
    /// # Errors
    /// As [`Checkpoint::open`], plus adapter validation errors.
    pub fn open_tuned(path: &Path, base: &Checkpoint) -> Result<Self> {
        let path = &hub::resolve(path)?;
        if paths::file_in(path, ADAPTER_CONFIG)?.is_none() {
            return Self::open(path);
        }
        let lora = Arc::new(LoraSource::open(path, Arc::clone(&base.source))?);
        let mut files = vec![input_file(lora.adapter_file())];
        files.extend(base.files.iter().cloned());
        let mut checkpoint = Self::with_source(path, CheckpointKind::LoraAdapter, files, lora.clone(), path);
        // An adapter directory rarely carries config.json; the model it describes is the base's.
        checkpoint.config_path = checkpoint.config_path.or_else(|| base.config_path.clone());
        checkpoint.tokenizer_path = checkpoint.tokenizer_path.or_else(|| base.tokenizer_path.clone());
        checkpoint.adapter = Some(lora);
        Ok(checkpoint)
    }

    fn open_file(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "bin" || e == "pt" || e == "pth") {
            return Err(Error::PickleCheckpoint {
                path: path.to_path_buf(),
            });
        }
        let file = SafetensorsFile::open(path)?;
        let files = vec![input_file(&file)];
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(Self::with_source(
            path,
            CheckpointKind::Safetensors,
            files,
            Arc::new(file),
            dir,
        ))
    }

    fn with_source(
        path: &Path,
        kind: CheckpointKind,
        files: Vec<InputFile>,
        source: Arc<dyn TensorSource>,
        dir: &Path,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            kind,
            files,
            config_path: find_beside(dir, "config.json"),
            tokenizer_path: find_beside(dir, "tokenizer.json"),
            source,
            adapter: None,
        }
    }

    /// The path the user gave.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the weights are stored.
    #[must_use]
    pub fn kind(&self) -> CheckpointKind {
        self.kind
    }

    /// The tensors.
    #[must_use]
    pub fn source(&self) -> &dyn TensorSource {
        self.source.as_ref()
    }

    /// `config.json` beside the weights (or the base's, for an adapter).
    #[must_use]
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// `tokenizer.json` beside the weights (or the base's, for an adapter).
    #[must_use]
    pub fn tokenizer_path(&self) -> Option<&Path> {
        self.tokenizer_path.as_deref()
    }

    /// The LoRA adapter, when this is the tuned side of a base + adapter pair.
    #[must_use]
    pub fn adapter(&self) -> Option<&LoraSource> {
        self.adapter.as_deref()
    }

    /// Describes this checkpoint for the report's `inputs`.
    #[must_use]
    pub fn describe(&self) -> ModelInput {
        let tensors = self.source.tensors();
        let mut dtypes = BTreeMap::new();
        for info in tensors.values() {
            *dtypes.entry(info.dtype.clone()).or_insert(0) += 1;
        }
        let (config, config_problem) = match self.config_path.as_deref().map(read_config_summary) {
            Some(Ok(summary)) => (Some(summary), None),
            Some(Err(problem)) => (None, Some(problem)),
            None => (None, None),
        };
        ModelInput {
            path: self.path.display().to_string(),
            kind: self.kind,
            size_bytes: self.files.iter().map(|f| f.size_bytes).sum(),
            files: self.files.clone(),
            num_tensors: tensors.len(),
            num_parameters: tensors.values().map(TensorInfo::num_elements).sum(),
            dtypes,
            config,
            config_problem,
            tokenizer: self.tokenizer_path.as_ref().map(|p| p.display().to_string()),
            lora: self.adapter.as_ref().map(|a| a.summary()),
        }
    }
}

fn input_file(file: &SafetensorsFile) -> InputFile {
    InputFile {
        path: file.path().display().to_string(),
        size_bytes: file.size_bytes(),
        header_sha256: Some(file.header_sha256()),
    }
}

/// The files of `dir` ending in `.{ext}`, sorted.
fn list_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut found = entries_with_extension(dir, ext)?;
    found.retain(|p| p.is_file());
    Ok(found)
}

/// Every entry of `dir` ending in `.{ext}`, files or not, sorted.
fn entries_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
