//! Finding and reading configuration files: recursive discovery, size and
//! content guards (binary, non-UTF-8; non-regular files such as FIFOs are
//! refused by the shared [`crate::fsread`] open), and
//! clear errors for everything the filesystem can throw at us (symlink
//! loops, unreadable files and directories, no YAML). Discovery also says
//! which paths could not be read, so a transient error is never mistaken
//! for a deletion.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::diagnostic::Diagnostic;
use super::yaml::Pos;

/// Largest configuration file accepted. Connection files are a few hundred
/// bytes; anything this large is a mistake (or an attack) and would only slow
/// every reload.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Whether a path names a YAML file by extension.
pub fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Hidden entries are skipped: `.git`, editor swap files, and the
/// `..data`/`..2024_...` directories of Kubernetes ConfigMap mounts (whose
/// files are also reachable through the visible top-level symlinks).
fn is_hidden(entry: &walkdir::DirEntry) -> bool {
    entry.depth() > 0
        && entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with('.'))
}

/// What [`discover`] found.
#[derive(Debug, Default)]
pub struct Discovered {
    /// The YAML files to load, in a stable order. Special files (FIFOs,
    /// sockets, devices) with a YAML name are included so [`read`] refuses
    /// them with an error naming them.
    pub files: Vec<PathBuf>,
    /// Paths (roots, directories, entries) that exist or may exist but could
    /// not be read: permission denied, descriptors exhausted, I/O errors, or
    /// a configured root that vanished. Whatever was loaded from under them
    /// before is not known to be gone.
    pub unreadable: Vec<PathBuf>,
}

/// Expands the given paths into the YAML files to load.
/// Problems (missing paths, loops, directories without YAML) become diagnostics.
pub fn discover(paths: &[PathBuf], diags: &mut Vec<Diagnostic>) -> Discovered {
    let mut found = Discovered::default();
    let mut seen = HashSet::new();
    for root in paths {
        let meta = match hooks::injected(root).map_or_else(|| std::fs::metadata(root), Err) {
            Ok(m) => m,
            Err(e) => {
                diags.push(Diagnostic::file_error(root, format!("cannot read: {e}")));
                // A configured root that is gone (`rm -rf`, mid rename-swap)
                // is an outage of the directory, not a request to drop
                // every file in it.
                found.unreadable.push(root.clone());
                continue;
            }
        };
        if !meta.is_dir() {
            if seen.insert(canonical(root)) {
                found.files.push(root.clone());
            }
            continue;
        }
        let before = found.files.len();
        let mut root_unreadable = false;
        let mut walker = walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !is_hidden(e));
        while let Some(entry) = walker.next() {
            match entry {
                Ok(e) if e.file_type().is_dir() => {
                    if let Some(io) = hooks::injected(e.path()) {
                        diags.push(Diagnostic::file_error(
                            e.path(),
                            format!("cannot read: {io}"),
                        ));
                        root_unreadable |= e.depth() == 0;
                        found.unreadable.push(e.into_path());
                        walker.skip_current_dir();
                    }
                }
                Ok(e) if is_yaml(e.path()) => {
                    if seen.insert(canonical(e.path())) {
                        found.files.push(e.into_path());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let message = if let Some(ancestor) = e.loop_ancestor() {
                        format!("symlink loop: points back to {}", ancestor.display())
                    } else if let Some(io) = e.io_error() {
                        // Only "not found" below a directory just listed is
                        // a definite absence (a dangling link, a directory
                        // removed mid-walk); anything else may be transient.
                        if io.kind() != std::io::ErrorKind::NotFound || e.depth() == 0 {
                            root_unreadable |= e.depth() == 0;
                            found.unreadable.push(path.clone());
                        }
                        format!("cannot read: {io}")
                    } else {
                        format!("cannot read: {e}")
                    };
                    diags.push(Diagnostic::file_error(&path, message));
                }
            }
        }
        if found.files.len() == before && !root_unreadable {
            diags.push(
                Diagnostic::file_error(root, "no *.yaml or *.yml files in this directory")
                    .with_hint("point mailplug at the directory that holds your connection files"),
            );
        }
    }
    found
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The filesystem refused (including "not found").
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// A directory where a file was expected.
    #[error("is a directory, expected a YAML file")]
    Directory,
    /// A FIFO, socket or device: reading it could block forever or never end.
    #[error("is {0}, not a regular file; only regular files are read")]
    NotRegular(&'static str),
    /// Larger than [`MAX_FILE_BYTES`].
    #[error(
        "file is {:.1} MiB; configuration files are limited to {} MiB",
        *.0 as f64 / (1024.0 * 1024.0),
        MAX_FILE_BYTES / (1024 * 1024)
    )]
    TooLarge(u64),
    /// Contains a NUL byte at this position.
    #[error("binary file (contains NUL bytes), expected YAML text")]
    Binary(Pos),
    /// Not UTF-8 from this byte offset (at this position) on.
    #[error("not valid UTF-8 (byte offset {0}); configuration files must be UTF-8")]
    NotUtf8(usize, Pos),
}

impl ReadError {
    /// Whether the file is definitely gone (removed after it was listed),
    /// as opposed to present but unreadable.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }

    /// The error as a diagnostic on `path`.
    pub fn to_diagnostic(&self, path: &Path) -> Diagnostic {
        match self {
            Self::Binary(pos) | Self::NotUtf8(_, pos) => {
                Diagnostic::error(path, *pos, "", self.to_string())
            }
            _ => Diagnostic::file_error(path, self.to_string()),
        }
    }
}

/// Reads one file as UTF-8 text, refusing special, oversized, binary and
/// non-UTF-8 input.
pub fn read(path: &Path) -> Result<String, ReadError> {
    if let Some(e) = hooks::injected(path) {
        return Err(e.into());
    }
    let bytes = crate::fsread::read_bounded(path, MAX_FILE_BYTES).map_err(|e| match e {
        crate::fsread::Error::Io(e) => ReadError::Io(e),
        crate::fsread::Error::Directory => ReadError::Directory,
        crate::fsread::Error::NotRegular(kind) => ReadError::NotRegular(kind),
        crate::fsread::Error::TooLarge { len, .. } => ReadError::TooLarge(len),
    })?;
    if let Some(i) = bytes.iter().position(|&b| b == 0) {
        return Err(ReadError::Binary(position_of(&bytes, i)));
    }
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .map(<[u8]>::to_vec)
        .unwrap_or(bytes);
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        ReadError::NotUtf8(at, position_of(e.as_bytes(), at))
    })
}

/// Line and column (in characters, lossy for invalid bytes) of a byte offset.
fn position_of(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Pos { line, col }
}

/// Fault injection: in tests, reads of chosen paths fail with a chosen OS
/// error (descriptor exhaustion, permission denied), which cannot be
/// produced for one test without affecting the whole process or, as root,
/// at all. Outside tests nothing is ever injected.
pub(crate) mod hooks {
    use std::path::Path;

    #[cfg(not(test))]
    pub(super) fn injected(_path: &Path) -> Option<std::io::Error> {
        None
    }

    #[cfg(test)]
    static FAIL: std::sync::Mutex<Vec<(std::path::PathBuf, i32)>> =
        std::sync::Mutex::new(Vec::new());

    /// Reads of `path` and everything under it fail with `errno` until
    /// [`clear`] is called for it.
    #[cfg(test)]
    pub(crate) fn fail_reads_under(path: &Path, errno: i32) {
        if let Ok(mut fail) = FAIL.lock() {
            fail.push((path.to_path_buf(), errno));
        }
    }

    /// Reads of `path` work again.
    #[cfg(test)]
    pub(crate) fn clear(path: &Path) {
        if let Ok(mut fail) = FAIL.lock() {
            fail.retain(|(p, _)| p != path);
        }
    }

    #[cfg(test)]
    pub(super) fn injected(path: &Path) -> Option<std::io::Error> {
        let fail = FAIL.lock().ok()?;
        fail.iter()
            .find(|(p, _)| path.starts_with(p))
            .map(|(_, errno)| std::io::Error::from_raw_os_error(*errno))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsread::mkfifo;

    #[test]
    fn a_fifo_is_refused_by_name_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        mkfifo(&fifo);
        // No writer ever opens the FIFO: a blocking open would hang here.
        let err = read(&fifo).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular(_)), "{err:?}");
        let d = err.to_diagnostic(&fifo);
        assert!(d.to_string().contains("pipe.yaml"), "{d}");
        assert!(d.to_string().contains("FIFO"), "{d}");
        assert!(d.is_error());
    }

    #[test]
    fn a_fifo_inside_a_walked_directory_is_listed_so_it_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1\n").unwrap();
        mkfifo(&dir.path().join("b.yaml"));
        let mut diags = Vec::new();
        let found = discover(&[dir.path().to_path_buf()], &mut diags);
        assert_eq!(
            found.files,
            [dir.path().join("a.yaml"), dir.path().join("b.yaml")]
        );
        assert!(matches!(
            read(&found.files[1]),
            Err(ReadError::NotRegular(_))
        ));
        assert!(found.unreadable.is_empty());
    }

    #[test]
    fn a_device_is_refused() {
        let err = read(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(err, ReadError::NotRegular("a character device")),
            "{err:?}"
        );
    }

    #[test]
    fn a_vanished_root_and_an_injected_error_are_unreadable_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let mut diags = Vec::new();
        let found = discover(std::slice::from_ref(&gone), &mut diags);
        assert_eq!(found.unreadable, [gone]);

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a.yaml"), "x: 1\n").unwrap();
        std::fs::write(dir.path().join("top.yaml"), "x: 1\n").unwrap();
        hooks::fail_reads_under(&sub, libc::EMFILE);
        let mut diags = Vec::new();
        let found = discover(&[dir.path().to_path_buf()], &mut diags);
        hooks::clear(&sub);
        assert_eq!(found.files, [dir.path().join("top.yaml")]);
        assert_eq!(found.unreadable, [sub]);
        assert!(
            diags
                .iter()
                .any(|d| d.to_string().contains("Too many open files")),
            "{diags:?}"
        );
    }

    #[test]
    fn a_file_removed_after_listing_is_gone_but_a_refused_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read(&dir.path().join("missing.yaml"))
                .unwrap_err()
                .is_gone()
        );
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "x: 1\n").unwrap();
        hooks::fail_reads_under(&f, libc::EACCES);
        let err = read(&f).unwrap_err();
        hooks::clear(&f);
        assert!(!err.is_gone(), "{err:?}");
        assert_eq!(read(&f).unwrap(), "x: 1\n");
    }
}
