//! The one error type of `mdiff_core`.
//!
//! Every variant renders as one line that says what is wrong, where, and what to do. Variants are grouped by
//! whether the user can fix them (bad input, exit code 2) or they are our fault (internal, exit code 3); see
//! [`Error::is_input_error`].

use std::path::PathBuf;

/// Result alias used throughout `mdiff_core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `mdiff_core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- inputs: files and directories --------------------------------------------------------------------
    /// A path could not be read (missing, permissions, not a regular file, ...).
    #[error("cannot read {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// A `.safetensors` file whose header or layout is broken.
    #[error("{}: not a valid safetensors file ({reason}); re-download or re-save the checkpoint", path.display())]
    InvalidSafetensors {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A directory with no weights we know how to read.
    #[error(
        "{}: no model.safetensors, model.safetensors.index.json or adapter_config.json found; \
         pass a .safetensors file, a Hugging Face model directory or a PEFT adapter directory",
        path.display()
    )]
    NoWeights {
        /// The directory searched.
        path: PathBuf,
    },

    /// A directory with several unrelated `.safetensors` files and no index to say which belong together.
    #[error(
        "{}: {count} .safetensors files but no model.safetensors.index.json; pass one file directly",
        path.display()
    )]
    AmbiguousWeights {
        /// The directory searched.
        path: PathBuf,
        /// How many candidate files it holds.
        count: usize,
    },

    /// A broken `model.safetensors.index.json` (bad JSON, a shard that does not hold what it claims, ...).
    #[error("{}: invalid shard index ({reason}); re-download the checkpoint", path.display())]
    InvalidShardIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The shard index names a file that is not there.
    #[error("{}: shard {shard} is missing; re-download the checkpoint", index.display())]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The missing shard's file name.
        shard: String,
    },

    /// A `.bin` (pickle) checkpoint, which we refuse to unpickle.
    #[error(
        "{}: PyTorch pickle checkpoints are not read (unsafe to load); convert it with \
         `safetensors.torch.save_file` or `save_pretrained(..., safe_serialization=True)`",
        path.display()
    )]
    PickleCheckpoint {
        /// The pickle file.
        path: PathBuf,
    },

    /// A tensor that cannot be read as floating point values.
    #[error("tensor {tensor}: dtype {dtype} cannot be converted to f32; only F32, F16 and BF16 are diffed")]
    UnsupportedDtype {
        /// Tensor name.
        tensor: String,
        /// Its dtype as written in the file.
        dtype: String,
    },

    /// A tensor name that the source does not hold.
    #[error("tensor {tensor} not found in {}", path.display())]
    TensorNotFound {
        /// Tensor name.
        tensor: String,
        /// Where we looked.
        path: PathBuf,
    },

    // ---- inputs: LoRA adapters -----------------------------------------------------------------------------
    /// An adapter directory whose config or tensors are inconsistent.
    #[error("{}: invalid PEFT adapter: {reason}", path.display())]
    InvalidAdapter {
        /// The adapter directory.
        path: PathBuf,
        /// What is inconsistent, and what to do.
        reason: String,
    },

    /// An adapter that targets a module the base model does not have.
    #[error(
        "{}: adapter targets {module} but the base has no tensor {tensor}; \
         is the adapter meant for another base model?",
        path.display()
    )]
    AdapterTargetMissing {
        /// The adapter directory.
        path: PathBuf,
        /// The adapter's module path (e.g. `model.layers.0.self_attn.q_proj`).
        module: String,
        /// The base tensor we looked for.
        tensor: String,
    },

    // ---- inputs: pairing -----------------------------------------------------------------------------------
    /// Base and tuned share no tensor names at all.
    #[error(
        "no tensor names in common between base ({base_count} tensors, e.g. {base_example}) and tuned \
         ({tuned_count} tensors, e.g. {tuned_example}); are they the same architecture?"
    )]
    NothingPaired {
        /// Number of base tensors.
        base_count: usize,
        /// One base tensor name.
        base_example: String,
        /// Number of tuned tensors.
        tuned_count: usize,
        /// One tuned tensor name.
        tuned_example: String,
    },

    // ---- inputs: models, tokenizers, prompts -------------------------------------------------------------
    /// A `config.json` that cannot describe a forward pass (missing or invalid fields).
    #[error("{}: {reason}", path.display())]
    ModelConfig {
        /// The config file.
        path: PathBuf,
        /// What is missing or wrong, and what to do.
        reason: String,
    },

    /// An architecture the hooked runtime does not implement.
    #[error(
        "{}: architecture {found} is not supported for behavioural analyses (supported: {supported})",
        path.display()
    )]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// `architectures[0]` or `model_type` as found.
        found: String,
        /// The supported ones, comma-separated.
        supported: String,
    },

    /// Weights that do not fit the architecture in `config.json` (missing tensor, wrong shape, NaN, ...).
    #[error("{model}: tensor {tensor} {reason}")]
    ModelWeights {
        /// The checkpoint path.
        model: String,
        /// Tensor name.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Base and tuned cannot be run side by side (different vocabularies, architectures or tokenizers).
    #[error("base and tuned are not comparable: {0}")]
    Incompatible(String),

    /// A `tokenizer.json` (or its `tokenizer_config.json`) that cannot be used.
    #[error("{}: cannot use tokenizer: {reason}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A chat template that failed to render the prompt's messages.
    #[error("chat template failed: {0}")]
    ChatTemplate(String),

    /// A prompt file with a malformed line.
    #[error("{}:{line}: {reason}", path.display())]
    PromptFile {
        /// The prompt file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with that line, and what is expected.
        reason: String,
    },

    /// A prompt file with no prompts in it.
    #[error(
        "{}: no prompts found; write one prompt per line (.txt) or one JSON object per line with \"text\" or \
         \"messages\" (.jsonl)",
        path.display()
    )]
    NoPrompts {
        /// The prompt file.
        path: PathBuf,
    },

    /// A device that is not available in this build or on this machine.
    #[error("{0}")]
    Device(String),

    // ---- inputs: what a path really is, and config against weights (issue #15) -----------------------------
    /// A path that exists but cannot be a checkpoint as it is: a directory where a file belongs, a symbolic link
    /// loop, a link to nothing.
    #[error("{}: {what}", path.display())]
    UnusablePath {
        /// The path as given or found.
        path: PathBuf,
        /// What it really is, and what to do.
        what: String,
    },

    /// A GGUF file (llama.cpp's format), recognised by its magic bytes.
    #[error(
        "{}: a GGUF file (llama.cpp's format), which mdiff does not read yet (issue #21); pass the Hugging Face \
         checkpoint it was made from (a folder with config.json and .safetensors weights)",
        path.display()
    )]
    GgufCheckpoint {
        /// The GGUF file.
        path: PathBuf,
    },

    /// A PEFT adapter's weights file passed instead of its folder.
    #[error(
        "{}: this is the weights file of a PEFT adapter; pass its folder {} (with adapter_config.json) as TUNED and \
         the base model as BASE",
        file.display(),
        folder.display()
    )]
    AdapterFileNotFolder {
        /// The `adapter_model.safetensors` (or other LoRA weights) file.
        file: PathBuf,
        /// The folder that holds it and its `adapter_config.json`.
        folder: PathBuf,
    },

    /// LoRA tensors with no `adapter_config.json` to say how to merge them.
    #[error(
        "{}: holds LoRA tensors ({tensor}) but no adapter_config.json beside them; pass the PEFT adapter folder as \
         save_pretrained wrote it, adapter_config.json included",
        path.display()
    )]
    AdapterConfigMissing {
        /// The file or folder given.
        path: PathBuf,
        /// One LoRA tensor name found.
        tensor: String,
    },

    /// A `config.json` whose sizes disagree with the tensors of the checkpoint it describes.
    #[error(
        "{}: does not match the weights in {weights}: {reason}; pass the config.json that belongs to these weights \
         (--config FILE)",
        config.display()
    )]
    ConfigContradictsWeights {
        /// The config file.
        config: PathBuf,
        /// The checkpoint, as the user named it.
        weights: String,
        /// Which value disagrees with which tensor.
        reason: String,
    },

    /// A Hugging Face Hub id that is neither a local path nor in the local Hub cache, and cannot be downloaded now.
    #[error(
        "{id} is not a file or folder here, and the Hugging Face Hub cache {} has no snapshot of it ({reason}); \
         download it with `{download}`, or check the path",
        cache.display()
    )]
    HubNotCached {
        /// The id as given (`org/name` or `org/name@revision`).
        id: String,
        /// The cache directory searched.
        cache: PathBuf,
        /// What was missing, and why it was not downloaded.
        reason: String,
        /// The command that downloads it.
        download: String,
    },

    /// Downloading a Hub id failed.
    #[error(
        "{id} is not a file or folder here, and downloading it from the Hugging Face Hub failed: {reason}; check \
         the path or the connection, or download it with `{download}` and run again"
    )]
    HubDownload {
        /// The id as given.
        id: String,
        /// What went wrong.
        reason: String,
        /// The command that downloads it by hand.
        download: String,
    },

    // ---- reports -------------------------------------------------------------------------------------------
    /// A report written by a newer mdiff with an incompatible schema.
    #[error(
        "{}: report schema {found} is newer than this mdiff reads ({supported}.x); upgrade mdiff",
        path.display()
    )]
    NewerSchema {
        /// The report file.
        path: PathBuf,
        /// The schema version found in it.
        found: String,
        /// The major version this build reads.
        supported: u32,
    },

    /// A file that is not an mdiff report.
    #[error("{}: not an mdiff report ({reason})", path.display())]
    InvalidReport {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A gate policy file that does not parse or names something that does not exist.
    #[error("{}: invalid gate policy: {reason}; see docs/ci.md", path.display())]
    InvalidPolicy {
        /// The policy file.
        path: PathBuf,
        /// What is wrong, with the line and column where the parser knows them.
        reason: String,
    },

    /// A baseline report that was not computed on the same inputs as the report it is compared with.
    #[error(
        "{}: not a baseline for this report ({reason}); pass a report of the same base model, prompts and seed, \
         or --allow-different-inputs",
        path.display()
    )]
    BaselineMismatch {
        /// The baseline report.
        path: PathBuf,
        /// Every difference found.
        reason: String,
    },

    /// A directory of paired activations that cannot be used for a crosscoder.
    #[error("{}: not a usable activation set ({reason}); collect it again with `mdiff crosscoder collect`", path.display())]
    InvalidActivations {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A crosscoder directory whose config or weights cannot be used.
    #[error("{}: not a usable crosscoder ({reason}); train it again with `mdiff crosscoder train`", path.display())]
    InvalidCrosscoder {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The output could not be written.
    #[error("cannot write {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        /// The output path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// An output path that cannot or must not be written, found before any work.
    #[error("{flag} {}: {reason} (nothing was written)", path.display())]
    BadOutput {
        /// The flag or argument that names it (`-o`, `--junit`).
        flag: String,
        /// The path given.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A request that makes no sense (bad option values and the like).
    #[error("{0}")]
    Usage(String),

    /// A report written by a run that was stopped ([`crate::report::Report::incomplete`]), given to the gate.
    #[error(
        "{}: incomplete report ({reason}; not finished: {unfinished}); run mdiff compare to the end before gating it",
        path.display()
    )]
    IncompleteReport {
        /// The report.
        path: PathBuf,
        /// Why its run stopped.
        reason: String,
        /// The methods it lacks, comma-separated.
        unfinished: String,
    },

    /// A method named in `--methods` cannot run on these inputs (a default method would be skipped instead).
    #[error("--methods {method} cannot run: {reason}")]
    MethodUnavailable {
        /// The method's name (`kl`, `lens`, ...).
        method: String,
        /// Why, and which flag fixes it.
        reason: String,
    },

    // ---- stopped -------------------------------------------------------------------------------------------
    /// The run was asked to stop ([`crate::progress::Progress::cancelled`]); `compare` turns it into a report
    /// marked incomplete.
    #[error("{reason}")]
    Interrupted {
        /// Why, e.g. `interrupted by SIGINT`.
        reason: String,
    },

    // ---- internal ------------------------------------------------------------------------------------------
    /// A tensor operation failed; this is a bug in mdiff.
    #[cfg(feature = "compute")]
    #[error("tensor computation failed: {0}; please report this as a bug")]
    Candle(#[from] candle_core::Error),

    /// The LoRA merge failed inside peft-rs; this is a bug in mdiff.
    #[cfg(feature = "compute")]
    #[error("LoRA merge failed for {module}: {source}; please report this as a bug")]
    Merge {
        /// Adapter module being merged.
        module: String,
        /// The peft-rs error.
        source: peft_rs::PeftError,
    },

    /// Serializing a report failed; this is a bug in mdiff.
    #[error("serializing the report failed: {0}; please report this as a bug")]
    Serialize(#[from] serde_json::Error),

    /// An invariant of mdiff's own code does not hold; this is a bug in mdiff.
    #[error("internal error: {0}; please report this as a bug")]
    Internal(String),

    /// A worker thread pool could not be built.
    #[error("could not start worker threads: {0}")]
    Threads(String),
}

impl Error {
    /// True when the user can fix this by changing the input (exit code 2); false for internal errors (exit 3).
    #[must_use]
    pub fn is_input_error(&self) -> bool {
        match self {
            Self::Serialize(_) | Self::Threads(_) | Self::Internal(_) => false,
            #[cfg(feature = "compute")]
            Self::Candle(_) | Self::Merge { .. } => false,
            _ => true,
        }
    }
}
