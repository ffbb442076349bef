//! Exit codes: 0 ok, 1 gate failed, 2 bad input or usage, 3 internal error.

use std::process::ExitCode;

/// How `mdiff` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success (also when stdout was closed early, as by `| head`).
    Ok = 0,
    /// `mdiff gate` found a policy violation.
    #[allow(dead_code, reason = "used by `mdiff gate`, which lands in its own issue")]
    GateFailed = 1,
    /// The input or the command line is wrong; the message says what to change.
    BadInput = 2,
    /// A bug in mdiff.
    Internal = 3,
}

impl Exit {
    /// Classifies an error: input errors from `mdiff_core` and I/O on user paths are 2, the rest 3.
    pub fn of_error(err: &anyhow::Error) -> Self {
        if err.chain().any(is_broken_pipe) {
            return Self::Ok;
        }
        if let Some(core) = err.chain().find_map(|e| e.downcast_ref::<mdiff_core::Error>()) {
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
    }
}
