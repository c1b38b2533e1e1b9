//! Atomic, durable file replacement.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An I/O error and the file it happened on.
#[derive(Debug)]
pub struct FileError {
    /// The file (or temporary file) concerned.
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Replaces `path` with `bytes` atomically and durably.
///
/// The bytes go to a temporary file beside `path` (mode 0644 less the umask on Unix), which is
/// synced, renamed over `path`, and then the folder is synced so the rename itself survives a
/// crash. A crash at any moment leaves the old or the new contents; on error the temporary file is
/// removed and the error names the file that failed. The folder must exist: creating it is the
/// caller's decision.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    // A folder that is missing or not writable is the target's problem: name the target.
    let mut file = options.open(&tmp).map_err(|source| FileError { path: path.to_path_buf(), source })?;
    if let Err(source) = file.write_all(bytes).and_then(|_| file.sync_all()) {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(FileError { path: tmp, source });
    }
    drop(file);
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(FileError { path: path.to_path_buf(), source });
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_leaves_nothing_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        let missing = dir.path().join("no/such/folder/b.txt");
        let e = write_atomic(&missing, b"x").unwrap_err();
        assert!(e.to_string().contains("no/such/folder/b.txt"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing left after a failure");
    }
}
