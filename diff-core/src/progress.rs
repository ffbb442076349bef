//! Progress reporting from long loops. The library never prints: the CLI turns these calls into a progress bar.

/// Receives progress of a long-running stage. All methods default to doing nothing.
pub trait Progress: Sync {
    /// A stage with `total` steps starts.
    fn begin(&self, _stage: &str, _total: u64) {}
    /// `steps` more steps are done.
    fn advance(&self, _steps: u64) {}
    /// The stage is over.
    fn end(&self) {}
}

/// Discards progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
