//! Reading and writing reports: version checks, atomic writes, the JSON Schema.

#[cfg(not(target_arch = "wasm32"))]
use std::io::Write;
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
    write_atomic(&super::to_readable_json(report)?, path)
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one, never a part.
///
/// # Errors
/// [`Error::Write`] when the temp file cannot be created, written, synced or renamed.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_atomic(bytes: &[u8], path: &Path) -> Result<()> {
    // tempfile adds its random temp name to OS errors; the user only knows the path they asked for.
    let write_err = |source: std::io::Error| Error::Write {
        path: path.to_path_buf(),
        source: source.raw_os_error().map_or(source, std::io::Error::from_raw_os_error),
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".mdiff-").suffix(".tmp");
    // tempfile creates 0600 files; a report is an ordinary output, so ask for 0666 and let the umask decide.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(write_err)?;
    tmp.write_all(bytes).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
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
/// [`Error::InvalidReport`] for malformed JSON or a missing version, [`Error::NewerSchema`].
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
    let peek: Version = serde_json::from_slice(bytes).map_err(|e| invalid(format!("bad JSON: {e}")))?;
    let Some(version) = peek.schema_version.as_ref().and_then(serde_json::Value::as_str) else {
        return Err(invalid("no schema_version field".into()));
    };
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| invalid(format!("schema_version {version:?} is not MAJOR.MINOR")))?;
    if major > SCHEMA_MAJOR {
        return Err(Error::NewerSchema {
            path: source.to_path_buf(),
            found: version.to_string(),
            supported: SCHEMA_MAJOR,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))
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
