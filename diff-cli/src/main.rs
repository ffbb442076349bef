//! `mdiff`: tells you what changed when a language model was fine-tuned.

mod cli;
mod commands;
mod exit;
mod format;
mod interrupt;
mod outputs;
mod progress;
mod usage;

use std::process::ExitCode;

use crate::cli::Command;
use crate::exit::Exit;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match usage::parse(&args) {
        Ok(cli) => cli,
        // --help and --version are "errors" that print to stdout and succeed.
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return Exit::Ok.into();
        }
        Err(err) => {
            eprintln!("mdiff: error: {}", usage::one_line(&err, &args));
            return Exit::BadInput.into();
        }
    };
    let result = match cli.command {
        Command::Compare(args) => commands::compare::run(&args),
        Command::Inspect(args) => commands::inspect::run(&args),
        Command::Gate(args) => commands::gate::run(&args),
        Command::View(args) => commands::view::run(&args),
        Command::Serve(args) => commands::serve::run(&args),
        Command::Crosscoder(cli::CrosscoderCommand::Collect(args)) => commands::crosscoder::collect(&args),
        Command::Crosscoder(cli::CrosscoderCommand::Train(args)) => commands::crosscoder::train(&args),
        Command::Crosscoder(cli::CrosscoderCommand::Analyze(args)) => commands::crosscoder::analyze(&args),
    };
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(err) => {
            let exit = Exit::of_error(&err);
            match exit {
                Exit::Ok => {}
                // Not an error in mdiff or its input: the rules said no, and the table said why.
                Exit::GateFailed => eprintln!("mdiff: {err}"),
                _ => eprintln!("mdiff: error: {}", one_line(&err)),
            }
            exit.into()
        }
    }
}

/// The context chain joined by ": ", stopping at the first `mdiff_core::Error`: it already names its cause.
fn one_line(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        parts.push(cause.to_string());
        if cause.is::<mdiff_core::Error>() {
            break;
        }
    }
    parts.join(": ").replace('\n', " ")
}
