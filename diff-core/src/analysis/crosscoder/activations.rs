//! Paired activations on disk: what `mdiff crosscoder collect` writes and the crosscoder reads, documented so that
//! activations made elsewhere can be brought in.
//!
//! A directory holds
//! - `shard-00000.safetensors`, … with `base` and `tuned` (F32 `[n, d_model]`: row i of both is the same token),
//!   `token_ids`, `sequence` and `position` (U32 `[n]`: the token, its sequence, and its position there);
//! - `sequences.safetensors` with `ids` (U32, every sequence's tokens one after another) and `offsets` (U64
//!   `[sequences + 1]`: sequence s is `ids[offsets[s]..offsets[s + 1]]`), for the contexts around a row;
//! - `activations.json`, the [`Manifest`], written last: a directory without it is an unfinished collection.
//!
//! Every file is written to a temporary name and renamed, so a killed collection leaves no partial file. While a
//! collection runs, `.mdiff-collecting` holds its process id; a directory of only an unfinished collection's
//! files is recognised by [`prepare_collect_dir`], which clears it for a new collection once that process is gone.
//!
//! Shard paths in a manifest are relative to its directory and may not leave it (no `..`, no absolute paths),
//! and both scales must be finite and positive: a manifest made elsewhere is checked before anything is read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::tensor_file::{Raw, Shape, TensorFile, write_safetensors};

/// Name of the manifest file.
pub const MANIFEST: &str = "activations.json";
/// Name of the sequences file.
pub const SEQUENCES: &str = "sequences.safetensors";
/// `format` of a manifest.
pub const FORMAT: &str = "mdiff-paired-activations";
/// Version of the format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Present while a collection writes into its directory; holds the collecting process's id.
const IN_PROGRESS: &str = ".mdiff-collecting";

/// What a directory of paired activations holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// TransformerLens name of the hook read in both models.
    pub hook: String,
    /// Width of one activation row.
    pub d_model: usize,
    /// Rows over all shards.
    pub num_tokens: u64,
    /// Sequences in `sequences.safetensors`.
    pub num_sequences: usize,
    /// Whether positions holding the beginning-of-sequence token were left out (their norms dwarf the rest).
    pub bos_dropped: bool,
    /// The shards in order.
    pub shards: Vec<Shard>,
    /// Squared-norm statistics of each model's rows, and the scale that makes E‖a‖² = d_model.
    pub base_norm: ModelNorm,
    /// As `base_norm`, for the tuned model.
    pub tuned_norm: ModelNorm,
    /// Where the activations came from (model paths, prompt source), for people.
    pub source: String,
}

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// File name inside the directory.
    pub file: String,
    /// Rows it holds.
    pub tokens: u64,
}

/// Statistics of ‖a‖² over one model's rows (Welford's algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelNorm {
    /// Mean of ‖a‖².
    pub mean_sq_norm: f64,
    /// Standard deviation of ‖a‖².
    pub std_sq_norm: f64,
    /// √(d_model / mean ‖a‖²): multiplying every row by it makes E‖a‖² = d_model.
    pub scale: f64,
}

/// Welford's running mean and variance.
#[derive(Debug, Clone, Copy, Default)]
struct Welford {
    count: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn push(&mut self, x: f64) {
        self.count += 1;
        #[allow(clippy::cast_precision_loss, reason = "token counts are far below 2^52")]
        let n = self.count as f64;
        let delta = x - self.mean;
        self.mean += delta / n;
        self.m2 += delta * (x - self.mean);
    }

    /// The statistics, for rows of width `d_model`.
    fn norm(self, d_model: usize) -> ModelNorm {
        #[allow(clippy::cast_precision_loss, reason = "counts and widths are far below 2^52")]
        let (n, d) = (self.count as f64, d_model as f64);
        ModelNorm {
            mean_sq_norm: self.mean,
            std_sq_norm: if self.count > 1 {
                (self.m2 / (n - 1.0)).sqrt()
            } else {
                0.0
            },
            scale: if self.mean > 0.0 { (d / self.mean).sqrt() } else { 1.0 },
        }
    }
}

/// The rows of one shard, in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardRows {
    /// `[n · d_model]`, row-major.
    pub base: Vec<f32>,
    /// `[n · d_model]`, row-major.
    pub tuned: Vec<f32>,
    /// Token of each row.
    pub token_ids: Vec<u32>,
    /// Sequence of each row.
    pub sequence: Vec<u32>,
    /// Position of each row in its sequence.
    pub position: Vec<u32>,
}

impl ShardRows {
    /// Rows held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether there are no rows.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Writes the rows as a shard file, atomically.
    pub(crate) fn write(&self, path: &Path, d_model: usize) -> Result<()> {
        let n = self.len();
        let tensors = [
            ("base", Raw::f32(&self.base, vec![n, d_model])),
            ("tuned", Raw::f32(&self.tuned, vec![n, d_model])),
            ("token_ids", Raw::u32(&self.token_ids)),
            ("sequence", Raw::u32(&self.sequence)),
            ("position", Raw::u32(&self.position)),
        ];
        write_safetensors(path, &tensors)
    }
}

/// A directory of paired activations, checked.
#[derive(Debug, Clone)]
pub struct ActivationSet {
    dir: PathBuf,
    manifest: Manifest,
}

impl ActivationSet {
    /// Reads and checks `dir/activations.json`: the format, the version, and that every shard exists.
    ///
    /// # Errors
    /// [`Error::InvalidActivations`] naming what is wrong; [`Error::Read`].
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let bad = |reason: String| Error::InvalidActivations {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound if unfinished_files(dir).is_some_and(|files| !files.is_empty()) => bad(format!(
                "no {MANIFEST}: the collection that wrote it did not finish; collecting again with `-o {}` replaces \
                 its files",
                dir.display()
            )),
            std::io::ErrorKind::NotFound => bad(format!("no {MANIFEST}; an unfinished collection has none")),
            _ => Error::Read {
                path: path.clone(),
                source,
            },
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if manifest.format != FORMAT || manifest.version > FORMAT_VERSION {
            return Err(bad(format!(
                "format {} version {}; this mdiff reads {FORMAT} up to version {FORMAT_VERSION}",
                manifest.format, manifest.version
            )));
        }
        let total: u64 = manifest.shards.iter().map(|s| s.tokens).sum();
        if total != manifest.num_tokens {
            return Err(bad(format!(
                "the shards hold {total} rows but num_tokens says {}",
                manifest.num_tokens
            )));
        }
        check_manifest(&manifest).map_err(bad)?;
        if let Some(missing) = manifest.shards.iter().find(|s| !dir.join(&s.file).is_file()) {
            return Err(bad(format!("shard {} is missing", missing.file)));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every sequence's token ids, from `sequences.safetensors`.
    ///
    /// # Errors
    /// [`Error::InvalidActivations`] for a file whose offsets do not fit its ids; [`Error::Read`].
    pub fn sequences(&self) -> Result<Vec<Vec<u32>>> {
        let file = TensorFile::read(&self.dir.join(SEQUENCES), invalid_activations, "a sequences file holds")?;
        let ids = file.u32("ids", Shape::Vector)?;
        let offsets = file.u64("offsets", Shape::Vector)?;
        if offsets.len() != self.manifest.num_sequences + 1
            || offsets.windows(2).any(|w| w[0] > w[1])
            || offsets.last().copied() != Some(ids.len() as u64)
        {
            return Err(file.invalid(format!(
                "offsets do not split {} ids into {} sequences",
                ids.len(),
                self.manifest.num_sequences
            )));
        }
        Ok(offsets
            .windows(2)
            .map(|w| ids[w[0] as usize..w[1] as usize].to_vec())
            .collect())
    }

    /// Reads shard `index`, checking its tensors against the manifest.
    ///
    /// # Errors
    /// [`Error::InvalidActivations`] for a shard whose names, dtypes or shapes do not match, or that holds a
    /// non-finite activation (with the row); [`Error::Read`].
    pub fn read_shard(&self, index: usize) -> Result<ShardRows> {
        let shard = self
            .manifest
            .shards
            .get(index)
            .ok_or_else(|| Error::Usage(format!("no shard {index}")))?;
        let file = TensorFile::read(&self.dir.join(&shard.file), invalid_activations, "the manifest says")?;
        let n = usize::try_from(shard.tokens).map_err(|_| file.invalid("too many rows".into()))?;
        let d = self.manifest.d_model;
        let rows = ShardRows {
            base: file.f32("base", Shape::Exactly(&[n, d]))?,
            tuned: file.f32("tuned", Shape::Exactly(&[n, d]))?,
            token_ids: file.u32("token_ids", Shape::Exactly(&[n]))?,
            sequence: file.u32("sequence", Shape::Exactly(&[n]))?,
            position: file.u32("position", Shape::Exactly(&[n]))?,
        };
        for (model, values) in [("base", &rows.base), ("tuned", &rows.tuned)] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(file.invalid(format!(
                    "{model} row {} (sequence {}, position {}) is not finite",
                    i / d.max(1),
                    rows.sequence[i / d.max(1)],
                    rows.position[i / d.max(1)]
                )));
            }
        }
        Ok(rows)
    }
}

/// Writes an activation set row by row: shards as they fill, then the sequences file and the manifest. For
/// activations made elsewhere as much as for `mdiff crosscoder collect`.
#[derive(Debug)]
pub struct ActivationWriter {
    out: PathBuf,
    hook: String,
    d_model: usize,
    shard_tokens: usize,
    rows: ShardRows,
    shards: Vec<Shard>,
    base_norm: Welford,
    tuned_norm: Welford,
    written: u64,
}

impl ActivationWriter {
    /// Starts a set in `out` (created, or an empty directory) for activations at `hook` of width `d_model`, in
    /// shards of `shard_tokens` rows.
    ///
    /// # Errors
    /// [`Error::Usage`] when `out` holds files or `d_model` is 0; [`Error::Read`], [`Error::Write`].
    pub fn create(out: &Path, hook: &str, d_model: usize, shard_tokens: usize) -> Result<Self> {
        if d_model == 0 {
            return Err(Error::Usage("activations must have at least one dimension".into()));
        }
        prepare_collect_dir(out)?;
        crate::report::write_atomic(std::process::id().to_string().as_bytes(), &out.join(IN_PROGRESS))?;
        Ok(Self {
            out: out.to_path_buf(),
            hook: hook.to_string(),
            d_model,
            shard_tokens: shard_tokens.max(1),
            rows: ShardRows::default(),
            shards: Vec::new(),
            base_norm: Welford::default(),
            tuned_norm: Welford::default(),
            written: 0,
        })
    }

    /// Adds one token's activations of both models.
    ///
    /// # Errors
    /// [`Error::Usage`] for rows of the wrong width or indices beyond u32; [`Error::InvalidActivations`] for a
    /// non-finite value; write failures.
    pub fn push(&mut self, base: &[f32], tuned: &[f32], token: u32, sequence: usize, position: usize) -> Result<()> {
        if base.len() != self.d_model || tuned.len() != self.d_model {
            return Err(Error::Usage(format!(
                "rows of width {} and {} for a set of width {}",
                base.len(),
                tuned.len(),
                self.d_model
            )));
        }
        for (model, row) in [("base", base), ("tuned", tuned)] {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(Error::InvalidActivations {
                    path: self.out.clone(),
                    reason: format!(
                        "the {model} model's {} is not finite at prompt {sequence}, position {position}; check the \
                         model for NaN weights",
                        self.hook
                    ),
                });
            }
        }
        let index = |v: usize| u32::try_from(v).map_err(|_| Error::Usage(format!("index {v} does not fit in u32")));
        self.base_norm.push(squared_norm(base));
        self.tuned_norm.push(squared_norm(tuned));
        self.rows.base.extend_from_slice(base);
        self.rows.tuned.extend_from_slice(tuned);
        self.rows.token_ids.push(token);
        self.rows.sequence.push(index(sequence)?);
        self.rows.position.push(index(position)?);
        self.written += 1;
        if self.rows.len() >= self.shard_tokens {
            self.flush()?;
        }
        Ok(())
    }

    /// Rows pushed so far.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the last shard, `sequences` (every sequence's token ids, indexed by the rows' `sequence`) and the
    /// manifest, last.
    ///
    /// # Errors
    /// [`Error::Usage`] when no row was pushed; write failures.
    pub fn finish(mut self, sequences: &[Vec<u32>], bos_dropped: bool, source: &str) -> Result<Manifest> {
        if self.written == 0 {
            return Err(Error::Usage(
                "no activations to write: every position was left out (only beginning-of-sequence tokens?)".into(),
            ));
        }
        self.flush()?;
        write_sequences(&self.out.join(SEQUENCES), sequences)?;
        let manifest = Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            hook: self.hook,
            d_model: self.d_model,
            num_tokens: self.written,
            num_sequences: sequences.len(),
            bos_dropped,
            shards: self.shards,
            base_norm: self.base_norm.norm(self.d_model),
            tuned_norm: self.tuned_norm.norm(self.d_model),
            source: source.to_string(),
        };
        // Written last: its presence marks a finished set.
        crate::report::write_atomic(&serde_json::to_vec_pretty(&manifest)?, &self.out.join(MANIFEST))?;
        let _ = std::fs::remove_file(self.out.join(IN_PROGRESS));
        Ok(manifest)
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let file = format!("shard-{:05}.safetensors", self.shards.len());
        self.rows.write(&self.out.join(&file), self.d_model)?;
        self.shards.push(Shard {
            file,
            tokens: self.rows.len() as u64,
        });
        self.rows = ShardRows::default();
        Ok(())
    }
}

/// What a collection left in `dir`, when it holds nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectDir {
    /// The directory is new or empty.
    Empty,
    /// It held only the files of a collection that did not finish (its process is gone); this many were removed.
    Cleared(usize),
}

/// Makes `out` ready for a collection: creates it, accepts it empty, or clears the files of an unfinished
/// collection (shards, the sequences file, temporary files; no `activations.json`) whose process has ended. Call it
/// before loading the models, so that a wrong directory is found at once.
///
/// # Errors
/// [`Error::Usage`] when `out` holds a finished set, other files, or the files of a collection still running;
/// [`Error::Read`], [`Error::Write`].
pub fn prepare_collect_dir(out: &Path) -> Result<CollectDir> {
    let Some(files) = unfinished_files(out) else {
        // Not a directory of an unfinished collection: new, empty or refused, as for any new directory.
        super::collect::prepare_dir(out)?;
        return Ok(CollectDir::Empty);
    };
    if files.is_empty() {
        return Ok(CollectDir::Empty);
    }
    if let Some(pid) = collecting_process(out) {
        return Err(Error::Usage(format!(
            "{} is being written by another collection (process {pid}); wait for it, or give another directory",
            out.display()
        )));
    }
    for file in &files {
        std::fs::remove_file(file).map_err(|source| Error::Write {
            path: file.clone(),
            source,
        })?;
    }
    Ok(CollectDir::Cleared(files.len()))
}

/// The files of `dir` when every one is what a collection writes before it finishes (and `activations.json` is
/// absent); `None` when `dir` holds anything else or cannot be listed.
fn unfinished_files(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_str()?;
        let collected = name == SEQUENCES
            || name == IN_PROGRESS
            || crate::report::atomic::is_temp_file_name(name)
            || is_shard_name(name);
        if !collected || !entry.file_type().ok()?.is_file() {
            return None;
        }
        files.push(entry.path());
    }
    Some(files)
}

/// `shard-00000.safetensors` and on, as [`ActivationWriter`] names them.
fn is_shard_name(name: &str) -> bool {
    name.strip_prefix("shard-")
        .and_then(|rest| rest.strip_suffix(".safetensors"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The process still collecting into `dir`, if its marker names one that runs.
fn collecting_process(dir: &Path) -> Option<u32> {
    let marker = dir.join(IN_PROGRESS);
    let pid: u32 = std::fs::read_to_string(&marker).ok()?.trim().parse().ok()?;
    (!crate::report::atomic::process_gone(pid, &marker)).then_some(pid)
}

/// A manifest's own consistency: scales that can multiply activations, and shard files inside the directory.
fn check_manifest(manifest: &Manifest) -> std::result::Result<(), String> {
    for (model, norm) in [("base_norm", &manifest.base_norm), ("tuned_norm", &manifest.tuned_norm)] {
        if !(norm.scale.is_finite() && norm.scale > 0.0) {
            return Err(format!(
                "{model}.scale is {}; it must be a finite number above 0",
                norm.scale
            ));
        }
        if !(norm.mean_sq_norm.is_finite() && norm.mean_sq_norm >= 0.0) {
            return Err(format!(
                "{model}.mean_sq_norm is {}; it must be a finite number ≥ 0",
                norm.mean_sq_norm
            ));
        }
    }
    if manifest.d_model == 0 {
        return Err("d_model is 0".into());
    }
    for shard in &manifest.shards {
        let inside = !shard.file.is_empty()
            && Path::new(&shard.file)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(format!(
                "shard {:?} is not a path inside the directory; shard files are named relative to it, without `..`",
                shard.file
            ));
        }
    }
    Ok(())
}

fn squared_norm(row: &[f32]) -> f64 {
    row.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

fn invalid_activations(path: PathBuf, reason: String) -> Error {
    Error::InvalidActivations { path, reason }
}

/// Writes the sequences file: every sequence's token ids and where each starts.
fn write_sequences(path: &Path, sequences: &[Vec<u32>]) -> Result<()> {
    let ids: Vec<u32> = sequences.iter().flatten().copied().collect();
    let mut offsets = vec![0u64];
    for s in sequences {
        offsets.push(offsets.last().copied().unwrap_or(0) + s.len() as u64);
    }
    write_safetensors(path, &[("ids", Raw::u32(&ids)), ("offsets", Raw::u64(&offsets))])
}
