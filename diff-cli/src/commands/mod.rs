//! One module per subcommand.

mod behaviour_summary;
pub mod compare;
pub mod crosscoder;
mod crosscoder_summary;
pub mod gate;
mod gate_junit;
mod gate_markdown;
pub mod inspect;
mod lens_summary;
mod localize_summary;
pub mod serve;
pub mod view;

use std::io::Write;

/// Writes `text` to stdout; a closed pipe surfaces as an error that exits 0.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}
