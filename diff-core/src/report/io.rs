//! Reading and writing reports: version checks, atomic writes, the JSON Schema.

use std::path::Path;

use super::Report;
use crate::error::{Error, Result};

/// Major version of the report schema this build writes and reads. Bump on breaking changes.
pub const SCHEMA_MAJOR: u32 = 1;

/// Full `MAJOR.MINOR` version written into reports. Bump the minor on additive changes.
pub const SCHEMA_VERSION: &str = "1.6";

/// Writes `report` as JSON (indented, per-token rows folded: [`to_readable_json`](super::to_readable_json)) to
/// `path`, atomically (temp file in the same directory, then rename).
///
/// # Errors
/// [`Error::Write`] when the directory is not writable; [`Error::Serialize`] on a serialization bug.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_report(report: &Report, path: &Path) -> Result<()> {
    super::atomic::write_atomic(&super::to_readable_json(report)?, path)
}

/// Reads a report, refusing one written with a newer major schema version.
///
/// # Errors
/// [`Error::Read`], [`Error::InvalidReport`] for malformed JSON or a missing version, [`Error::NewerSchema`].
pub fn read_report(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_report(&bytes, path)
}

/// Parses a report from its bytes; `source` names it in errors (a path, a URL, a dropped file's name).
///
/// # Errors
/// [`Error::InvalidReport`] for malformed JSON, JSON that is not an object, or a missing or malformed
/// `schema_version`; [`Error::NewerSchema`].
pub fn parse_report(bytes: &[u8], source: &Path) -> Result<Report> {
    let invalid = |reason: String| Error::InvalidReport {
        path: source.to_path_buf(),
        reason,
    };
    // Check the version before the full parse, so a newer report fails on its version rather than on some field.
    // The peek skips every other field without allocating, so it costs a fraction of the full parse.
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: Option<serde_json::Value>,
    }
    let peek: Version = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        // Valid JSON of another shape: say what was found, in JSON's words, not serde's type names.
        serde_json::error::Category::Data => invalid(format!(
            "expected a JSON object with a schema_version, found {}",
            json_kind(bytes)
        )),
        _ => invalid(format!("bad JSON: {e}")),
    })?;
    let version = match &peek.schema_version {
        Some(serde_json::Value::String(version)) => version.as_str(),
        None => return Err(invalid("no schema_version field".into())),
        Some(other) => {
            return Err(invalid(format!(
                "schema_version must be a string like \"{SCHEMA_VERSION}\", found {}",
                describe_value(other)
            )));
        }
    };
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| {
            invalid(format!(
                "schema_version {version:?} is not MAJOR.MINOR (like \"{SCHEMA_VERSION}\")"
            ))
        })?;
    if major > SCHEMA_MAJOR {
        return Err(Error::NewerSchema {
            path: source.to_path_buf(),
            found: version.to_string(),
            supported: SCHEMA_MAJOR,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))
}

/// What kind of JSON value `bytes` holds, judged by its first character (the document parsed as JSON).
fn json_kind(bytes: &[u8]) -> &'static str {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'{') => "an object of another shape",
        _ => "a number",
    }
}

/// A JSON value for a message: its kind and, for a scalar, itself.
fn describe_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::Bool(b) => format!("the boolean {b}"),
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Array(_) => "an array".into(),
        serde_json::Value::Object(_) => "an object".into(),
        serde_json::Value::String(s) => format!("the string {s:?}"),
    }
}

/// The JSON Schema of [`Report`], as committed in `docs/report.schema.json`.
#[must_use]
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Report)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_major_is_rejected_with_the_versions_in_the_message() {
        let err = parse_report(br#"{"schema_version": "2.0", "whatever": 1}"#, Path::new("r.json")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NewerSchema { .. }), "{msg}");
        assert!(
            msg.contains("2.0") && msg.contains("1.x") && msg.contains("upgrade"),
            "{msg}"
        );
    }

    /// Issue #15: `[]` named serde's internal type, and a numeric version was called missing.
    #[test]
    fn wrong_shapes_are_named_in_json_terms() {
        let reason = |text: &str| match parse_report(text.as_bytes(), Path::new("r.json")) {
            Err(Error::InvalidReport { reason, .. }) => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            reason("[]"),
            "expected a JSON object with a schema_version, found an array"
        );
        assert_eq!(
            reason(" 3"),
            "expected a JSON object with a schema_version, found a number"
        );
        assert_eq!(
            reason("\"r\""),
            "expected a JSON object with a schema_version, found a string"
        );
        let numeric = reason(r#"{"schema_version": 1.5}"#);
        assert!(
            numeric.contains("must be a string like") && numeric.contains("the number 1.5"),
            "{numeric}"
        );
        assert!(!reason("[]").contains("Version"));
        assert_eq!(reason("{}"), "no schema_version field");
    }

    #[test]
    fn missing_version_and_bad_json_are_invalid_reports() {
        for text in [
            "{}",
            "not json",
            r#"{"schema_version": "x"}"#,
            r#"{"schema_version": "1.0"#,
        ] {
            let err = parse_report(text.as_bytes(), Path::new("r.json")).unwrap_err();
            assert!(matches!(err, Error::InvalidReport { .. }), "{text}: {err}");
        }
    }
}
