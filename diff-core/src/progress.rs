//! Progress reporting from long loops. The library never prints: the CLI turns these calls into a progress bar.
//! The same object carries the stop request: long loops poll [`Progress::cancelled`] through [`checkpoint`].

use crate::error::{Error, Result};

/// Receives progress of a long-running stage. All methods default to doing nothing.
pub trait Progress: Sync {
    /// A stage with `total` steps starts.
    fn begin(&self, _stage: &str, _total: u64) {}
    /// `steps` more steps are done.
    fn advance(&self, _steps: u64) {}
    /// A short line on how the stage is going (a loss, a rate), shown beside the bar.
    fn status(&self, _message: &str) {}
    /// The stage is over.
    fn end(&self) {}
    /// Why the run should stop now (e.g. `interrupted by SIGINT`), or `None` to go on. Polled between steps, so
    /// it must be cheap (an atomic load).
    fn cancelled(&self) -> Option<String> {
        None
    }
}

/// Stops a long loop when the run was cancelled: call it between steps.
///
/// # Errors
/// [`Error::Interrupted`] with the reason [`Progress::cancelled`] gave.
pub fn checkpoint(progress: &dyn Progress) -> Result<()> {
    match progress.cancelled() {
        Some(reason) => Err(Error::Interrupted { reason }),
        None => Ok(()),
    }
}

/// Discards progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
