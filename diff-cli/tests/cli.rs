//! The binary's own surface: help with examples, version, usage errors. (The end-to-end suite is in `tests/`;

#![allow(clippy::expect_used, reason = "test code: a failed expect is a failed test")]
//! having an integration test here also makes `cargo test --workspace` build `mdiff` before that suite runs.)

use std::process::Command;

fn mdiff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mdiff"))
        .args(args)
        .output()
        .expect("running mdiff")
}

#[test]
fn help_shows_examples_and_succeeds() {
    let out = mdiff(&["compare", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Examples:") && text.contains("mdiff compare"), "{text}");
}

#[test]
fn version_matches_the_crate() {
    let out = mdiff(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn usage_errors_exit_2() {
    let out = mdiff(&["compare"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
