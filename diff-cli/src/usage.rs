//! Command-line usage errors as one line, like every other error of mdiff: what is wrong, naming the flag and what
//! it expects, then where to read more (`see mdiff compare --help`). clap's own rendering is 3 to 15 lines without
//! the `mdiff: error:` prefix, and answers `--seed -1` with a tip about `-- -1`.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// Parses the command line `args` (the program name first). A value that looks like a negative number is handed
/// to its flag's parser, so that `--seed -1` is refused for what it is (not a whole number ≥ 0) rather than taken
/// for an unknown flag `-1`.
///
/// # Errors
/// clap's error, for [`one_line`] (or, for --help and --version, to print as it is).
pub fn parse(args: &[OsString]) -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

fn command() -> clap::Command {
    negative_numbers_as_values(Cli::command())
}

fn negative_numbers_as_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            if arg.get_action().takes_values() && !arg.is_positional() {
                arg.allow_negative_numbers(true)
            } else {
                arg
            }
        })
        .mut_subcommands(negative_numbers_as_values)
}

/// The error in one line, without the `mdiff: error:` prefix; `args` is the command line it came from.
pub fn one_line(err: &clap::Error, args: &[OsString]) -> String {
    let (path, subcommands) = command_path(args);
    let context = |kind| err.get(kind).map(text).filter(|t| !t.is_empty());
    let arg = context(ContextKind::InvalidArg).unwrap_or_default();
    let value = context(ContextKind::InvalidValue);
    let suggestion = |kind| {
        context(kind).map_or_else(String::new, |s| {
            // clap suggests `--flag` or a subcommand name; for a subcommand it is a list of one.
            format!(" (did you mean {}?)", s.trim_start_matches("'").trim_end_matches("'"))
        })
    };
    let what = match err.kind() {
        ErrorKind::UnknownArgument => format!(
            "unknown argument {}{}",
            quoted(&arg),
            suggestion(ContextKind::SuggestedArg)
        ),
        ErrorKind::InvalidSubcommand => format!(
            "unknown command {}{}",
            quoted(&context(ContextKind::InvalidSubcommand).unwrap_or(arg)),
            suggestion(ContextKind::SuggestedSubcommand)
        ),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => match value.as_deref() {
            None | Some("") => format!("{arg} needs a value"),
            Some(value) => format!("{arg}: {} is not valid: {}", quoted(value), expected(err)),
        },
        ErrorKind::MissingRequiredArgument => format!("missing {arg}"),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            format!("{path} needs a command: {}", subcommands.join(", "))
        }
        ErrorKind::ArgumentConflict => match context(ContextKind::PriorArg) {
            Some(prior) => format!("{arg} cannot be used with {prior}"),
            None => format!("{arg} cannot be used here"),
        },
        ErrorKind::TooManyValues => format!(
            "{arg} takes fewer values; {} is one too many",
            quoted(value.as_deref().unwrap_or_default())
        ),
        ErrorKind::WrongNumberOfValues | ErrorKind::TooFewValues => {
            format!(
                "{arg} takes {} values",
                context(ContextKind::ExpectedNumValues).unwrap_or_default()
            )
        }
        ErrorKind::NoEquals => format!("{arg} needs its value after `=`"),
        ErrorKind::InvalidUtf8 => "an argument is not valid UTF-8".into(),
        _ => clap_first_line(err),
    };
    format!("{what}; see `{path} --help`")
}

/// What the flag expects, from the parser's complaint or the list of valid values.
fn expected(err: &clap::Error) -> String {
    if let Some(valid) = err.get(ContextKind::ValidValue).map(text).filter(|t| !t.is_empty()) {
        return format!("expected one of {valid}");
    }
    let Some(source) = std::error::Error::source(err) else {
        return "see the expected form in the help".into();
    };
    if source.is::<std::num::ParseIntError>() {
        "expected a whole number ≥ 0".into()
    } else if source.is::<std::num::ParseFloatError>() {
        "expected a number".into()
    } else {
        // The project's own parsers (layer lists, methods) and clap's ranges ("0 is not in 1..=1024") say it.
        source.to_string().replace('\n', " ")
    }
}

fn text(value: &ContextValue) -> String {
    match value {
        ContextValue::String(s) => s.clone(),
        ContextValue::Strings(v) => v.join(", "),
        ContextValue::StyledStr(s) => s.to_string(),
        ContextValue::StyledStrs(v) => v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        ContextValue::Number(n) => n.to_string(),
        ContextValue::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn quoted(text: &str) -> String {
    format!("'{text}'")
}

/// The (sub)command `args` name, as `mdiff crosscoder train`, and the subcommands it has: the words of `args` that
/// name subcommands, followed down the command tree until the first that does not.
fn command_path(args: &[OsString]) -> (String, Vec<String>) {
    let mut command = command();
    let mut path = vec!["mdiff".to_string()];
    for arg in args.iter().skip(1) {
        let Some(word) = arg.to_str().filter(|w| !w.starts_with('-')) else {
            continue;
        };
        let Some(sub) = command.find_subcommand(word).cloned() else {
            break;
        };
        path.push(sub.get_name().to_string());
        command = sub;
    }
    let subcommands = command
        .get_subcommands()
        .filter(|c| c.get_name() != "help")
        .map(|c| c.get_name().to_string())
        .collect();
    (path.join(" "), subcommands)
}

/// clap's message without its `error: ` prefix, tips and usage: the first line.
fn clap_first_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> String {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        match parse(&args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(err) => one_line(&err, &args),
        }
    }

    #[test]
    fn every_usage_error_is_one_line_naming_the_flag_and_the_help() {
        let cases: [(&[&str], &[&str]); 7] = [
            (
                &["mdiff", "compare", "a", "b", "--sed", "1"],
                &["'--sed'", "--seed", "mdiff compare --help"],
            ),
            (
                &["mdiff", "compare", "a", "b", "--seed", "-1"],
                &["--seed", "'-1'", "whole number", "compare --help"],
            ),
            (
                &["mdiff", "compare", "a", "b", "--threads", "0"],
                &["--threads", "'0'", "1..=1024"],
            ),
            (
                &["mdiff", "compare", "a"],
                &["missing", "<TUNED>", "mdiff compare --help"],
            ),
            (
                &["mdiff", "comprae"],
                &["unknown command 'comprae'", "compare", "mdiff --help"],
            ),
            (
                &["mdiff", "gate", "r.json", "--policy", "p", "--format", "xml"],
                &["--format", "'xml'", "table, json"],
            ),
            (
                &["mdiff", "crosscoder"],
                &["needs a command: collect, train, analyze", "mdiff crosscoder --help"],
            ),
        ];
        for (args, needles) in cases {
            let line = line(args);
            assert!(!line.contains('\n'), "{line}");
            for needle in needles {
                assert!(line.contains(needle), "{args:?}: {needle:?} not in {line:?}");
            }
        }
    }
}
