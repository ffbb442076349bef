//! SIGINT and SIGTERM during `mdiff compare`: the first asks the run to stop at the next step and write the
//! sections it finished (a report marked incomplete); a second one ends the process at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// The signals received so far.
pub struct Interrupts {
    /// Set by the first signal; a second one with it set exits at once.
    received: Arc<AtomicBool>,
    /// The last signal's number.
    signal: Arc<AtomicUsize>,
}

impl Interrupts {
    /// Installs the handlers for the rest of the process.
    ///
    /// # Errors
    /// When the operating system refuses a handler.
    pub fn install() -> anyhow::Result<Self> {
        let received = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as the previous signal left it: the second signal exits.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&received))?;
            // The number is stored before the flag is raised, so a poll that sees the flag reads which signal it was.
            #[allow(clippy::cast_sign_loss, reason = "signal numbers are small and positive")]
            signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)?;
            signal_hook::flag::register(sig, Arc::clone(&received))?;
        }
        Ok(Self { received, signal })
    }

    /// The signal received, if one was: `SIGINT` or `SIGTERM`.
    pub fn received(&self) -> Option<Signal> {
        if !self.received.load(Ordering::SeqCst) {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_possible_wrap,
            reason = "set from a signal number"
        )]
        let number = self.signal.load(Ordering::SeqCst) as i32;
        Some(if number == SIGTERM { Signal::Term } else { Signal::Int })
    }
}

/// A stop request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C.
    Int,
    /// `kill`, a CI timeout, a container stop.
    Term,
}

impl Signal {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Int => "SIGINT",
            Self::Term => "SIGTERM",
        }
    }
}
