//! Exit codes: 0 ok, 1 gate failed, 2 bad input or usage, 3 internal error, 130 and 143 stopped by SIGINT and
//! SIGTERM (128 + the signal, as shells report a process the signal killed).

use std::process::ExitCode;

use crate::interrupt::Signal;

/// How `mdiff` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success (also when stdout was closed early, as by `| head`).
    Ok = 0,
    /// `mdiff gate` (or `compare --gate`) found a rule that does not hold.
    GateFailed = 1,
    /// The input or the command line is wrong; the message says what to change.
    BadInput = 2,
    /// A bug in mdiff.
    Internal = 3,
    /// Stopped by SIGINT (Ctrl-C); `compare` wrote the finished sections first.
    Interrupted = 130,
    /// Stopped by SIGTERM; `compare` wrote the finished sections first.
    Terminated = 143,
}

impl Exit {
    /// Classifies an error: input errors from `mdiff_core` and I/O on user paths are 2, the rest 3.
    pub fn of_error(err: &anyhow::Error) -> Self {
        if err.chain().any(|e| e.is::<GateFailed>()) {
            return Self::GateFailed;
        }
        if let Some(stopped) = err.chain().find_map(|e| e.downcast_ref::<Stopped>()) {
            return match stopped.signal {
                Signal::Int => Self::Interrupted,
                Signal::Term => Self::Terminated,
            };
        }
        if err.chain().any(is_broken_pipe) {
            return Self::Ok;
        }
        if let Some(core) = err.chain().find_map(|e| e.downcast_ref::<mdiff_core::Error>()) {
            if matches!(core, mdiff_core::Error::Interrupted { .. }) {
                return Self::Interrupted;
            }
            return if core.is_input_error() {
                Self::BadInput
            } else {
                Self::Internal
            };
        }
        if err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some()) {
            return Self::BadInput;
        }
        Self::Internal
    }
}

/// The error a gate returns when a rule failed: exit code 1, after the results were printed and written.
#[derive(Debug)]
pub struct GateFailed {
    /// Rules that failed.
    pub failed: usize,
    /// Rules evaluated.
    pub total: usize,
}

impl std::fmt::Display for GateFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gate failed: {} of {} rules did not hold", self.failed, self.total)
    }
}

impl std::error::Error for GateFailed {}

/// The error `compare` returns after a signal stopped it and the finished sections were written.
#[derive(Debug)]
pub struct Stopped {
    /// The signal.
    pub signal: Signal,
    /// What was written and what is missing.
    pub message: String,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Stopped {}

fn is_broken_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_are_2_internal_errors_are_3_broken_pipes_are_0() {
        let input = anyhow::Error::new(mdiff_core::Error::Usage("bad".into()));
        assert_eq!(Exit::of_error(&input), Exit::BadInput);
        let internal = anyhow::Error::new(mdiff_core::Error::Threads("x".into()));
        assert_eq!(Exit::of_error(&internal), Exit::Internal);
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(Exit::of_error(&pipe), Exit::Ok);
        assert_eq!(Exit::of_error(&anyhow::anyhow!("unexpected")), Exit::Internal);
        let gate = anyhow::Error::new(GateFailed { failed: 1, total: 3 });
        assert_eq!(Exit::of_error(&gate), Exit::GateFailed);
    }

    #[test]
    fn a_stopped_run_exits_128_plus_the_signal() {
        let stopped = |signal| {
            anyhow::Error::new(Stopped {
                signal,
                message: "interrupted".into(),
            })
            .context("compare")
        };
        assert_eq!(Exit::of_error(&stopped(Signal::Int)), Exit::Interrupted);
        assert_eq!(Exit::Interrupted as u8, 130);
        assert_eq!(Exit::of_error(&stopped(Signal::Term)), Exit::Terminated);
        assert_eq!(Exit::Terminated as u8, 143);
        let core = anyhow::Error::new(mdiff_core::Error::Interrupted {
            reason: "interrupted by SIGINT".into(),
        });
        assert_eq!(Exit::of_error(&core), Exit::Interrupted);
    }
}
