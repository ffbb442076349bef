//! A progress bar on stderr for `mdiff_core`'s progress callbacks; hidden when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mdiff_core::progress::Progress;

use crate::interrupt::Interrupts;

/// Draws one bar per stage, and passes on a stop request from SIGINT or SIGTERM when it watches them.
pub struct Bar {
    bar: ProgressBar,
    interrupts: Option<Interrupts>,
}

impl Bar {
    /// A bar that draws only when stderr is a terminal.
    pub fn new() -> Self {
        let bar = ProgressBar::hidden();
        if std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        Self { bar, interrupts: None }
    }

    /// Also asks the run to stop once one of `interrupts` arrives.
    pub fn stopped_by(mut self, interrupts: Interrupts) -> Self {
        self.interrupts = Some(interrupts);
        self
    }

    /// The signal that stopped the run, if one did.
    pub fn signal(&self) -> Option<crate::interrupt::Signal> {
        self.interrupts.as_ref().and_then(Interrupts::received)
    }
}

impl Progress for Bar {
    fn begin(&self, stage: &str, total: u64) {
        // Style first: every setter redraws, and the default style would flash a bare "0/N".
        // No ETA: steps differ in cost (a tensor, a swapped part, a patched cell), so early estimates swing wildly.
        self.bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:40}] {percent:>3}% {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.bar.set_prefix(stage.to_string());
        self.bar.set_message("");
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn advance(&self, steps: u64) {
        self.bar.inc(steps);
    }

    fn status(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }

    fn end(&self) {
        self.bar.finish_and_clear();
    }

    fn cancelled(&self) -> Option<String> {
        self.signal().map(|signal| format!("interrupted by {}", signal.name()))
    }
}
