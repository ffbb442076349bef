//! Atomic file writes, and the cleaning of what a killed writer left behind.
//!
//! A file is written to a temporary name beside it, synced, then renamed over the target, so readers see either the
//! old file or the whole new one. The temporary name says whose it is: `.NAME.mdiff-tmp-PID-N` (the target's name,
//! the writing process, a counter). A run killed between the write and the rename leaves such a file; the next run
//! that writes into the folder removes those whose process is gone ([`remove_stale_temp_files`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// What marks a temporary file of [`write_atomic`], between the target's name and the process id.
const TEMP_MARK: &str = ".mdiff-tmp-";

/// Before temporary names carried a process id, the writer used `.mdiff-XXXXXX.tmp` (tempfile's random names).
/// Such a file cannot be traced to its process; one older than this cannot belong to a write still under way.
const LEGACY_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A temporary file is written and renamed within seconds; one younger than this is kept even when its process
/// looks gone, since a writer in another PID namespace (a container sharing the volume), behind `hidepid` or on
/// another NFS host is invisible in our `/proc`.
const TEMP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Where the process of a file cannot be asked about (not Linux, or no `/proc`), a file older than this is stale:
/// no single file write of mdiff takes a day.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one, never a part.
///
/// # Errors
/// [`Error::Write`] when the temp file cannot be created, written, synced or renamed.
pub fn write_atomic(bytes: &[u8], path: &Path) -> Result<()> {
    let write_err = |source: std::io::Error| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = TempFile::create(path).map_err(write_err)?;
    tmp.write_synced(bytes).map_err(write_err)?;
    tmp.persist(path).map_err(write_err)
}

/// The folder `path` is written into (`.` for a bare file name).
#[must_use]
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Checks that a file can be created in `dir` by creating one of [`write_atomic`]'s temporary files there and
/// removing it: the permission bits alone do not tell (read-only mounts, ACLs, root).
///
/// # Errors
/// The OS error of the creation.
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    TempFile::create(&dir.join("probe")).map(drop)
}

/// Removes the temporary files of [`write_atomic`] in `dir` whose writing process is gone (and, from older mdiff
/// versions, those older than an hour). Returns how many were removed; a folder that cannot be listed has none.
#[must_use]
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = match temp_file_pid(name) {
            Some(pid) => older_than(&entry.path(), TEMP_MIN_AGE) && process_gone(pid, &entry.path()),
            None => is_legacy_temp_name(name) && older_than(&entry.path(), LEGACY_STALE_AFTER),
        };
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether `name` is a temporary file of [`write_atomic`] (of this or an older version).
#[must_use]
pub fn is_temp_file_name(name: &str) -> bool {
    temp_file_pid(name).is_some() || is_legacy_temp_name(name)
}

/// The writing process of a temporary file named `.NAME.mdiff-tmp-PID-N`.
fn temp_file_pid(name: &str) -> Option<u32> {
    let (head, tail) = name.rsplit_once(TEMP_MARK)?;
    if !head.starts_with('.') {
        return None;
    }
    let (pid, counter) = tail.split_once('-')?;
    counter.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// tempfile's names exactly: `.mdiff-`, six alphanumerics, `.tmp` (so a user's `.mdiff-notes.tmp` is not ours).
fn is_legacy_temp_name(name: &str) -> bool {
    name.strip_prefix(".mdiff-")
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|random| random.len() == 6 && random.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn older_than(path: &Path, age: std::time::Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Whether process `pid`, which wrote `file`, has ended. Linux answers through `/proc`; elsewhere a file older than a
/// day is taken to be abandoned.
#[must_use]
pub fn process_gone(pid: u32, file: &Path) -> bool {
    if pid == std::process::id() {
        return false;
    }
    // Without a mounted /proc (a chroot) every process would look gone: fall back on the file's age.
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        !Path::new("/proc").join(pid.to_string()).exists()
    } else {
        older_than(file, STALE_AFTER)
    }
}

/// A temporary file beside its target, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl TempFile {
    /// Creates `.NAME.mdiff-tmp-PID-N` beside `target`. The counter makes the name unique within this process; a
    /// name already taken (a process of the same id in another PID namespace, or a dead one's leftover) is never
    /// removed here, the next counter value is tried instead.
    fn create(target: &Path) -> std::io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = target
            .file_name()
            .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
        let mut attempts = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = parent_dir(target).join(format!(".{name}{TEMP_MARK}{}-{n}", std::process::id()));
            // Default permissions (0666 less the umask): a report is an ordinary output.
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok(Self { path, file: Some(file) }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 1000 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `bytes` and waits until they are on disk.
    fn write_synced(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let file = self.file.as_mut().ok_or(std::io::ErrorKind::NotFound)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    /// Renames the file over `target`.
    fn persist(mut self, target: &Path) -> std::io::Result<()> {
        drop(self.file.take());
        std::fs::rename(&self.path, target)?;
        // Renamed: nothing left to remove.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_the_target_and_the_process() {
        assert_eq!(temp_file_pid(".report.json.mdiff-tmp-123-0"), Some(123));
        assert_eq!(temp_file_pid(".a.mdiff-tmp-b.mdiff-tmp-7-12"), Some(7));
        assert_eq!(temp_file_pid("report.json.mdiff-tmp-123-0"), None);
        assert_eq!(temp_file_pid(".report.json.mdiff-tmp-x-0"), None);
        assert_eq!(temp_file_pid(".report.json"), None);
        assert!(is_temp_file_name(".mdiff-Ab12cD.tmp"));
        assert!(
            !is_temp_file_name(".mdiff-my-notes.tmp"),
            "a user's file of a similar name is not ours"
        );
        assert!(!is_temp_file_name("report.json"));
    }

    #[test]
    fn writes_whole_files_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(b"one", &path).unwrap();
        write_atomic(b"two", &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.json"]);
    }

    #[test]
    fn stale_temp_files_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A process that has exited: its id names no running process (until the system reuses it).
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".r.json{TEMP_MARK}{dead}-0"));
        let live = dir.path().join(format!(".r.json{TEMP_MARK}{}-99", std::process::id()));
        let other = dir.path().join("r.json");
        for path in [&stale, &live, &other] {
            std::fs::write(path, "x").unwrap();
        }
        let young = dir.path().join(format!(".q.json{TEMP_MARK}{dead}-0"));
        std::fs::write(&young, "x").unwrap();
        // A dead writer's file is removed once it is older than any write takes; a young one may be a writer we
        // cannot see (another PID namespace) and is kept.
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for path in [&stale, &live] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(hour_ago)
                .unwrap();
        }
        if cfg!(target_os = "linux") {
            assert!(young.exists());
            assert_eq!(remove_stale_temp_files(dir.path()), 1);
            assert!(!stale.exists());
        }
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn probing_a_folder_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        probe_writable(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(probe_writable(&dir.path().join("missing")).is_err());
    }
}
