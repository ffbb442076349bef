//! What a path that cannot be opened as a checkpoint really is. The OS only says "not found" or "too many levels of
//! symbolic links", and a folder that holds a directory named `model.safetensors` looks like a folder with no
//! weights; these helpers name a folder where a file belongs, a symbolic link loop, and a link to nothing.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Links followed before a chain is called too long (Linux's own limit).
const MAX_LINKS: usize = 40;

/// The metadata of `path`, following links; when that fails, an error that says what the path is.
pub(crate) fn metadata(path: &Path) -> Result<Metadata> {
    std::fs::metadata(path).map_err(|source| unreadable(path, source))
}

/// The error for a path whose metadata cannot be read: what the link is when it is a broken one, else the I/O error.
fn unreadable(path: &Path, source: std::io::Error) -> Error {
    match link_problem(path) {
        Some(what) => Error::UnusablePath {
            path: path.to_path_buf(),
            what,
        },
        None => Error::Read {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// `dir/name` when it is a file (or a link to one); `None` when nothing is there; an error when something else
/// is (a folder, a link loop, a link to nothing), since a model folder that holds one can only be broken.
pub(crate) fn file_in(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    let path = dir.join(name);
    if path.is_file() {
        return Ok(Some(path));
    }
    match unusable(&path) {
        Some(error) => Err(error),
        None => Ok(None),
    }
}

/// Why `path` cannot be read as a file, when something stands there that is not one; `None` when it is a file or
/// nothing is there at all.
pub(crate) fn unusable(path: &Path) -> Option<Error> {
    std::fs::symlink_metadata(path).ok()?;
    let what = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => return None,
        Ok(meta) if meta.is_dir() => "a folder, not a file; a checkpoint keeps this as a file (remove the folder, \
                                      or pass the file it should have been)"
            .to_string(),
        Ok(_) => "not a regular file (a pipe, socket or device); pass the weights file itself".to_string(),
        Err(source) => return Some(unreadable(path, source)),
    };
    Some(Error::UnusablePath {
        path: path.to_path_buf(),
        what,
    })
}

/// When `path` is a symbolic link that leads nowhere: a loop, a chain too long, or a link to nothing.
fn link_problem(path: &Path) -> Option<String> {
    let mut chain: Vec<PathBuf> = Vec::new();
    let mut current = path.to_path_buf();
    loop {
        let Ok(meta) = std::fs::symlink_metadata(&current) else {
            // The first path missing is the ordinary "not found"; a later one is where a link points.
            return (!chain.is_empty()).then(|| {
                format!(
                    "a symbolic link to {}, which does not exist; fix the link or pass the model's own path",
                    current.display()
                )
            });
        };
        if !meta.file_type().is_symlink() {
            return None;
        }
        if chain.contains(&current) {
            chain.push(current);
            let shown: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
            return Some(format!(
                "a symbolic link loop ({}); point the link at the model's file or folder",
                shown.join(" → ")
            ));
        }
        if chain.len() >= MAX_LINKS {
            return Some(format!(
                "a chain of more than {MAX_LINKS} symbolic links; point the link at the model's file or folder"
            ));
        }
        let target = std::fs::read_link(&current).ok()?;
        let next = match current.parent() {
            Some(parent) if target.is_relative() => parent.join(&target),
            _ => target,
        };
        chain.push(current);
        current = next;
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn loops_dangling_links_and_folders_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        symlink("b", &a).unwrap();
        symlink("a", &b).unwrap();
        let e = metadata(&a).unwrap_err().to_string();
        assert!(e.contains("symbolic link loop") && e.contains(" → "), "{e}");

        let dangling = dir.path().join("dangling");
        symlink("nowhere", &dangling).unwrap();
        let e = metadata(&dangling).unwrap_err().to_string();
        assert!(e.contains("does not exist") && e.contains("nowhere"), "{e}");

        std::fs::create_dir(dir.path().join("model.safetensors")).unwrap();
        let e = file_in(dir.path(), "model.safetensors").unwrap_err().to_string();
        assert!(e.contains("a folder, not a file"), "{e}");

        assert!(file_in(dir.path(), "absent.json").unwrap().is_none());
        assert!(matches!(metadata(&dir.path().join("absent")), Err(Error::Read { .. })));
    }
}
