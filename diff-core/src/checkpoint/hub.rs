//! Hugging Face Hub ids (`org/name`, optionally `@revision`) given where a path is expected, resolved the way
//! `transformers` users expect: from the local Hub cache, else downloaded into it.
//!
//! The cache is `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, in `huggingface_hub`'s
//! layout: `models--org--name/refs/<revision>` holds a commit hash and `models--org--name/snapshots/<commit>/` the
//! files; a 40-hex revision names its snapshot directly. An argument that exists on disk is always a path, never
//! an id. Downloads (the `hub-download` feature, on by default) happen only when `HF_HUB_OFFLINE` is not set, and
//! fetch only what mdiff reads: the top-level JSON, safetensors and chat-template files.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The revision used when the id names none, as in `transformers`.
const DEFAULT_REVISION: &str = "main";

/// A parsed Hub model id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `org/name`.
    pub repo: String,
    /// The branch, tag or commit after `@`, if any.
    pub revision: Option<String>,
}

impl HubId {
    /// Parses `org/name` or `org/name@revision` as the Hub names repositories: two names of letters, digits, `-`,
    /// `_` and `.`, neither starting with `.` or `-` nor holding `..`. Anything else (`./x`, `a/b/c`, `/abs`) is
    /// not an id.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (repo, revision) = match text.split_once('@') {
            // A revision names a file under refs/ (a branch such as `refs/pr/1` has slashes), so it may not climb
            // out of the cache folder or be absolute.
            Some((repo, revision))
                if !revision.is_empty()
                    && !revision.contains("..")
                    && !revision.starts_with('/')
                    && revision
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) =>
            {
                (repo, Some(revision.to_string()))
            }
            Some(_) => return None,
            None => (text, None),
        };
        let (org, name) = repo.split_once('/')?;
        let valid = |part: &str| {
            !part.is_empty()
                && !part.starts_with(['.', '-'])
                && !part.contains("..")
                && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        (valid(org) && valid(name)).then(|| Self {
            repo: repo.to_string(),
            revision,
        })
    }

    /// `org/name[@revision]` as the user wrote it.
    #[must_use]
    pub fn shown(&self) -> String {
        match &self.revision {
            Some(r) => format!("{}@{r}", self.repo),
            None => self.repo.clone(),
        }
    }

    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }

    /// The command that puts this id into the cache by hand.
    fn download_command(&self) -> String {
        match &self.revision {
            Some(r) => format!("huggingface-cli download {} --revision {r}", self.repo),
            None => format!("huggingface-cli download {}", self.repo),
        }
    }

    /// `models--org--name` under the cache.
    fn cache_folder(&self, cache: &Path) -> PathBuf {
        cache.join(format!("models--{}", self.repo.replace('/', "--")))
    }
}

/// The path to open for `arg`: `arg` itself when anything exists there (or it cannot be a Hub id), else the
/// snapshot folder of the Hub id it names, from the cache or downloaded into it.
///
/// # Errors
/// [`Error::HubNotCached`] when the id is not cached and cannot be downloaded now (offline, or built without
/// downloads); [`Error::HubDownload`] when the download fails.
pub fn resolve(arg: &Path) -> Result<PathBuf> {
    if std::fs::symlink_metadata(arg).is_ok() {
        return Ok(arg.to_path_buf());
    }
    let Some(id) = arg.to_str().and_then(HubId::parse) else {
        return Ok(arg.to_path_buf());
    };
    let Some(cache) = cache_dir() else {
        return Err(Error::HubNotCached {
            download: id.download_command(),
            id: id.shown(),
            cache: PathBuf::from("~/.cache/huggingface/hub"),
            reason: "neither HF_HUB_CACHE, HF_HOME nor HOME is set".into(),
        });
    };
    match cached_snapshot(&id, &cache) {
        Ok(snapshot) => Ok(snapshot),
        Err(missing) if offline() => Err(Error::HubNotCached {
            download: id.download_command(),
            id: id.shown(),
            cache,
            reason: format!("{missing}; HF_HUB_OFFLINE is set, so it was not downloaded"),
        }),
        Err(missing) => download(&id, &cache, missing),
    }
}

/// Where the Hub cache is, as `huggingface_hub` decides it.
fn cache_dir() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("HF_HUB_CACHE")
        .or_else(|| set("HF_HOME").map(|home| home.join("hub")))
        .or_else(|| set("HOME").map(|home| home.join(".cache").join("huggingface").join("hub")))
}

/// `HF_HUB_OFFLINE` set to a true value, as `huggingface_hub` reads it.
fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| ["1", "ON", "YES", "TRUE"].contains(&v.trim().to_uppercase().as_str()))
}

/// The snapshot folder of `id` in `cache`, or what is missing there.
fn cached_snapshot(id: &HubId, cache: &Path) -> Result<PathBuf, String> {
    let folder = id.cache_folder(cache);
    let revision = id.revision();
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        let reference = folder.join("refs").join(revision);
        let text = std::fs::read_to_string(&reference).map_err(|_| match folder.is_dir() {
            true => format!(
                "no {} in {}",
                Path::new("refs").join(revision).display(),
                folder.display()
            ),
            false => format!("no {}", folder.display()),
        })?;
        let commit = text.trim();
        // The ref names the snapshot folder: anything but a commit hash would lead elsewhere.
        if !is_commit_hash(commit) {
            return Err(format!(
                "{} holds {commit:?}, not a commit hash (a damaged cache: download the model again)",
                reference.display()
            ));
        }
        commit.to_string()
    };
    let snapshot = folder.join("snapshots").join(&commit);
    if snapshot.is_dir() {
        Ok(snapshot)
    } else {
        Err(format!("no snapshot {} (revision {revision})", snapshot.display()))
    }
}

/// A full commit hash, which names a snapshot without a ref.
fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The files of a repository that mdiff reads: configs, tokenizer and chat template at the top level (subfolders
/// hold other formats: `onnx/`, `runs/`, ...), and the weights it would open: the `transformers` or PEFT files
/// when the repository has them (Mistral's repositories also carry a `consolidated.safetensors` copy of every
/// weight), else every top-level `.safetensors`.
#[cfg_attr(not(feature = "hub-download"), allow(dead_code))]
fn wanted<'a>(files: &[&'a str]) -> Vec<&'a str> {
    let standard = |f: &str| {
        f == "model.safetensors"
            || f == "adapter_model.safetensors"
            || (f.starts_with("model-") && f.ends_with(".safetensors"))
    };
    let has_standard = files.iter().any(|f| standard(f));
    files
        .iter()
        .copied()
        .filter(|f| !f.contains('/'))
        .filter(|f| {
            f.ends_with(".json")
                || f.ends_with(".jinja")
                || (f.ends_with(".safetensors") && (!has_standard || standard(f)))
        })
        .collect()
}

#[cfg(not(feature = "hub-download"))]
fn download(id: &HubId, cache: &Path, missing: String) -> Result<PathBuf> {
    Err(Error::HubNotCached {
        download: id.download_command(),
        id: id.shown(),
        cache: cache.to_path_buf(),
        reason: format!("{missing}; this mdiff was built without Hub downloads (feature hub-download)"),
    })
}

/// Downloads the files mdiff reads of `id` into `cache` and returns their snapshot folder.
#[cfg(feature = "hub-download")]
fn download(id: &HubId, cache: &Path, _missing: String) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Cache, Repo, RepoType};

    let failed = |reason: String| Error::HubDownload {
        id: id.shown(),
        reason,
        download: id.download_command(),
    };
    // The token file beside the cache (`huggingface-cli login`) is read by the builder; HF_TOKEN wins over it.
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf())).with_progress(false);
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder.build().map_err(|e| failed(e.to_string()))?;
    let repo = api.repo(Repo::with_revision(
        id.repo.clone(),
        RepoType::Model,
        id.revision().to_string(),
    ));
    let info = repo.info().map_err(|e| failed(explain(&e, id)))?;
    let all: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let files = wanted(&all);
    if !files.iter().any(|f| f.ends_with(".safetensors")) {
        return Err(failed(format!(
            "the repository has no .safetensors weights (it holds {}); mdiff reads safetensors only",
            all.join(", ")
        )));
    }
    for file in files {
        repo.get(file)
            .map_err(|e| failed(format!("{file}: {}", explain(&e, id))))?;
    }
    // The download wrote refs/<revision> and snapshots/<commit>/; read them back as an offline run would.
    cached_snapshot(id, cache).map_err(failed)
}

/// The Hub answers 401 for a repository that does not exist as well as for a private one.
#[cfg(feature = "hub-download")]
fn explain(error: &hf_hub::api::sync::ApiError, id: &HubId) -> String {
    use hf_hub::api::sync::ApiError;
    match error {
        ApiError::RequestError(e) => match e.as_ref() {
            ureq::Error::Status(401 | 403 | 404, _) => format!(
                "the Hub has no model {} at revision {} that this machine may read (a typo, a local path that does \
                 not exist, or a gated model: set HF_TOKEN)",
                id.repo,
                id.revision()
            ),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_paths_are_told_apart() {
        let id = HubId::parse("HuggingFaceTB/SmolLM2-135M").unwrap();
        assert_eq!((id.repo.as_str(), id.revision), ("HuggingFaceTB/SmolLM2-135M", None));
        let id = HubId::parse("org/model.v1@refs/pr/3").unwrap();
        assert_eq!(id.revision.as_deref(), Some("refs/pr/3"));
        for not_an_id in [
            "gpt2",
            "./org/name",
            "/abs/path",
            "a/b/c",
            "../name",
            "org/..",
            "org/name@",
            "org/na me",
            "org/name@../x",
            "org/name@/etc/passwd",
            "org/name@a\\b",
        ] {
            assert_eq!(HubId::parse(not_an_id), None, "{not_an_id}");
        }
    }

    #[test]
    fn snapshots_are_found_by_ref_or_by_commit() {
        let cache = tempfile::tempdir().unwrap();
        let id = HubId::parse("org/name").unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let folder = id.cache_folder(cache.path());
        std::fs::create_dir_all(folder.join("snapshots").join(commit)).unwrap();
        let missing = cached_snapshot(&id, cache.path()).unwrap_err();
        assert!(missing.contains("refs/main"), "{missing}");
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::write(folder.join("refs/main"), format!("{commit}\n")).unwrap();
        let snapshot = folder.join("snapshots").join(commit);
        assert_eq!(cached_snapshot(&id, cache.path()).unwrap(), snapshot);
        let pinned = HubId::parse(&format!("org/name@{commit}")).unwrap();
        assert_eq!(cached_snapshot(&pinned, cache.path()).unwrap(), snapshot);
        // A ref that is not a commit hash would name a folder outside snapshots/: a damaged cache, said as such.
        std::fs::write(folder.join("refs/dev"), "../../../elsewhere\n").unwrap();
        let dev = HubId::parse("org/name@dev").unwrap();
        let damaged = cached_snapshot(&dev, cache.path()).unwrap_err();
        assert!(damaged.contains("not a commit hash"), "{damaged}");
        let other = HubId::parse("org/other").unwrap();
        assert!(
            cached_snapshot(&other, cache.path())
                .unwrap_err()
                .contains("models--org--other")
        );
    }

    #[test]
    fn only_the_files_mdiff_reads_are_downloaded() {
        let mistral = [
            "config.json",
            "consolidated.safetensors",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "onnx/model.json",
            "tokenizer.json",
            "chat_template.jinja",
            "model.gguf",
        ];
        assert_eq!(
            wanted(&mistral),
            [
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
                "tokenizer.json",
                "chat_template.jinja"
            ]
        );
        // Weights under another name are all a folder has: take them.
        assert_eq!(wanted(&["weights.safetensors", "README.md"]), ["weights.safetensors"]);
    }
}
