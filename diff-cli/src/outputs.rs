//! Every path a command writes, checked before any work: a wrong `-o` fails in a second, not after the analysis,
//! and no command overwrites a file it reads (issue #15: `gate --junit report.json` deleted the report it was
//! about to gate; `compare -o tuned/model.safetensors` replaced the checkpoint with JSON).
//!
//! A file output must not be a directory, its folder must exist and take new files, and it must not be any file the
//! command reads, compared by identity (device and inode), so symlinks and hard links are seen through. A directory
//! output must not be a file, nor one of the directories read. Two outputs may not name the same file. The folders
//! written into are then cleared of temporary files that a killed run left there.

use std::path::{Path, PathBuf};

use mdiff_core::report::atomic::{parent_dir, probe_writable, remove_stale_temp_files};

/// The files a command reads from a model directory (or beside a weights file): weights, shard index, config,
/// tokenizer, chat template, adapter.
const MODEL_FILES: &[&str] = &[
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "adapter_config.json",
];

/// The files read from a directory of paired activations.
pub const ACTIVATION_FILES: &[&str] = &["activations.json", "*.safetensors"];

/// The files read from a crosscoder directory.
pub const CROSSCODER_FILES: &[&str] = &["crosscoder.json", "crosscoder.safetensors"];

/// What `mdiff compare` reads and writes.
pub fn compare(args: &crate::cli::CompareArgs) -> Paths<'_> {
    let gate = &args.gate_options;
    Paths::new()
        .reads_model("BASE", &args.base)
        .reads_model("TUNED", &args.tuned)
        .reads("--prompts", args.prompts.as_deref())
        .reads("--config", args.run.config.as_deref())
        .reads("--tokenizer", args.run.tokenizer.as_deref())
        .reads("the policy (--gate)", args.gate.as_deref())
        .reads("the baseline (--baseline)", gate.baseline.as_deref())
        .writes("-o", Some(&args.output))
        .writes("--junit", gate.junit.as_deref())
        .writes("--markdown", gate.markdown.as_deref())
        .writes_dir("--crosscoder-dir", args.crosscoder_dir.as_deref())
}

/// What a command reads.
enum Input<'a> {
    /// One file.
    File(&'a Path),
    /// A model: a directory, or a weights file with its config and tokenizer beside it.
    Model(&'a Path),
    /// The files of a directory that match these globs.
    Dir(&'a Path, &'static [&'static str]),
}

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

/// The paths one command reads and writes, to be checked together before it starts.
#[derive(Default)]
pub struct Paths<'a> {
    inputs: Vec<(String, Input<'a>)>,
    outputs: Vec<(String, &'a Path, Kind)>,
}

impl<'a> Paths<'a> {
    /// No paths yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The command reads the file `path`, named `name` in messages (`REPORT`, `--policy`), when given.
    #[must_use]
    pub fn reads(mut self, name: &str, path: Option<&'a Path>) -> Self {
        if let Some(path) = path {
            self.inputs.push((name.into(), Input::File(path)));
        }
        self
    }

    /// The command reads the model at `path` (a directory or a weights file).
    #[must_use]
    pub fn reads_model(mut self, name: &str, path: &'a Path) -> Self {
        self.inputs.push((name.into(), Input::Model(path)));
        self
    }

    /// The command reads the files of directory `path` that match `files`.
    #[must_use]
    pub fn reads_dir(mut self, name: &str, path: &'a Path, files: &'static [&'static str]) -> Self {
        self.inputs.push((name.into(), Input::Dir(path, files)));
        self
    }

    /// The command writes the file `path` (given as `flag`), when given.
    #[must_use]
    pub fn writes(mut self, flag: &str, path: Option<&'a Path>) -> Self {
        if let Some(path) = path {
            self.outputs.push((flag.into(), path, Kind::File));
        }
        self
    }

    /// The command writes into the directory `path`, when given.
    #[must_use]
    pub fn writes_dir(mut self, flag: &str, path: Option<&'a Path>) -> Self {
        if let Some(path) = path {
            self.outputs.push((flag.into(), path, Kind::Dir));
        }
        self
    }

    /// Checks every output, then removes stale temporary files where they will be written.
    ///
    /// # Errors
    /// [`mdiff_core::Error::BadOutput`] naming the flag, the path and what is wrong.
    pub fn check(&self) -> Result<(), mdiff_core::Error> {
        for (i, (flag, path, kind)) in self.outputs.iter().enumerate() {
            let bad = |reason: String| mdiff_core::Error::BadOutput {
                flag: flag.clone(),
                path: path.to_path_buf(),
                reason,
            };
            check_place(path, *kind).map_err(&bad)?;
            if let Some(reason) = self.read_by_command(path, *kind) {
                return Err(bad(reason));
            }
            if let Some((other, _, _)) = self.outputs[..i].iter().find(|(_, p, _)| same_target(p, path)) {
                return Err(bad(format!(
                    "{other} names the same file; give each output its own path"
                )));
            }
        }
        for (_, path, kind) in &self.outputs {
            let folder = match kind {
                Kind::File => parent_dir(path),
                Kind::Dir => path,
            };
            let _ = remove_stale_temp_files(folder);
        }
        Ok(())
    }

    /// Why writing `path` would change what this command reads, if it would.
    fn read_by_command(&self, path: &Path, kind: Kind) -> Option<String> {
        // A path that does not exist yet cannot be an input.
        if !path.exists() {
            return None;
        }
        let target = path;
        for (name, input) in &self.inputs {
            let (root, files) = match *input {
                Input::File(file) => {
                    if same_file(target, file) {
                        return Some(format!("is {name}, which this command reads; write it elsewhere"));
                    }
                    continue;
                }
                Input::Model(model) if model.is_file() => {
                    if same_file(target, model) {
                        return Some(format!(
                            "is the model {name}, which this command reads; write it elsewhere"
                        ));
                    }
                    (parent_dir(model), MODEL_FILES)
                }
                Input::Model(dir) => (dir, MODEL_FILES),
                Input::Dir(dir, files) => (dir, files),
            };
            if kind == Kind::Dir {
                if same_file(target, root) {
                    return Some(format!(
                        "is {name}, which this command reads; write into another directory"
                    ));
                }
                continue;
            }
            if let Some(file) = files_in(root, files).into_iter().find(|f| same_file(target, f)) {
                return Some(format!(
                    "is {}, a file of {name} that this command reads; write it elsewhere",
                    file.display()
                ));
            }
        }
        None
    }
}

/// Whether `path` can be written as `kind`: a file where a file is expected, in a folder that takes new files.
fn check_place(path: &Path, kind: Kind) -> Result<(), String> {
    let meta = std::fs::metadata(path).ok();
    let folder = match (kind, &meta) {
        (Kind::File, Some(m)) if m.is_dir() => {
            return Err("is a directory; name a file (such as report.json inside it)".into());
        }
        (Kind::Dir, Some(m)) if !m.is_dir() => return Err("is a file; name a new or empty directory".into()),
        (Kind::Dir, Some(_)) => path.to_path_buf(),
        // A new directory is created with its missing parents: the nearest existing one must take it.
        (Kind::Dir, None) => path
            .ancestors()
            .skip(1)
            .map(|a| if a.as_os_str().is_empty() { Path::new(".") } else { a })
            .find(|a| a.exists())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        (Kind::File, _) => {
            let folder = parent_dir(path);
            if !folder.is_dir() {
                return Err(if folder.exists() {
                    format!("{} is not a directory", folder.display())
                } else {
                    format!("the folder {} does not exist; create it first", folder.display())
                });
            }
            folder.to_path_buf()
        }
    };
    if !folder.is_dir() {
        return Err(format!("{} is not a directory", folder.display()));
    }
    probe_writable(&folder).map_err(|e| format!("cannot create files in {} ({e})", folder.display()))
}

/// The files of `dir` whose names match one of `globs` (none when it cannot be listed).
fn files_in(dir: &Path, globs: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            globs.iter().any(|g| mdiff_core::gate::tensors::glob_match(g, &name))
        })
        .map(|e| e.path())
        .collect()
}

/// Whether `a` and `b` are the same file or directory (symlinks followed, hard links alike).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        // No inode to compare: the canonical paths (which resolve symlinks, not hard links).
        matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
    }
}

/// Whether two output paths name the same file, existing or not: the same canonical folder and name.
fn same_target(a: &Path, b: &Path) -> bool {
    if a.exists() && b.exists() {
        return same_file(a, b);
    }
    let key = |p: &Path| {
        std::fs::canonicalize(parent_dir(p))
            .ok()
            .map(|folder| folder.join(p.file_name().unwrap_or_default()))
    };
    key(a).is_some_and(|k| Some(k) == key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_onto_inputs_through_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report.json");
        std::fs::write(&report, "{}").unwrap();
        let paths = |out: &'static str| {
            let out = dir.path().join(out);
            let result = Paths::new()
                .reads("REPORT", Some(&report))
                .writes("--junit", Some(&out))
                .check();
            result.map_err(|e| e.to_string())
        };
        assert!(paths("junit.xml").is_ok());
        assert!(paths("report.json").unwrap_err().contains("is REPORT"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&report, dir.path().join("link.json")).unwrap();
            std::fs::hard_link(&report, dir.path().join("hard.json")).unwrap();
            assert!(paths("link.json").unwrap_err().contains("is REPORT"));
            assert!(paths("hard.json").unwrap_err().contains("is REPORT"));
        }
        assert!(paths("missing/x.xml").unwrap_err().contains("does not exist"));
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(paths("d").unwrap_err().contains("is a directory"));
    }

    #[test]
    fn two_outputs_may_not_name_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("gate.md");
        let b = dir.path().join(".").join("gate.md");
        let err = Paths::new()
            .writes("--junit", Some(&a))
            .writes("--markdown", Some(&b))
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("--junit names the same file"), "{err}");
    }
}
