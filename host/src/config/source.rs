//! Finding and reading configuration files: recursive discovery, size and
//! content guards (binary, non-UTF-8), and clear errors for everything the
//! filesystem can throw at us (symlink loops, unreadable files, no YAML).

use std::collections::HashSet;
use std::io::Read;
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

/// Expands the given paths into the YAML files to load, in a stable order.
/// Problems (missing paths, loops, directories without YAML) become diagnostics.
pub fn discover(paths: &[PathBuf], diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    for root in paths {
        let meta = match std::fs::metadata(root) {
            Ok(m) => m,
            Err(e) => {
                diags.push(Diagnostic::file_error(root, format!("cannot read: {e}")));
                continue;
            }
        };
        if !meta.is_dir() {
            if seen.insert(canonical(root)) {
                files.push(root.clone());
            }
            continue;
        }
        let before = files.len();
        let walker = walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !is_hidden(e));
        for entry in walker {
            match entry {
                Ok(e) if e.file_type().is_file() && is_yaml(e.path()) => {
                    if seen.insert(canonical(e.path())) {
                        files.push(e.into_path());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let message = if let Some(ancestor) = e.loop_ancestor() {
                        format!("symlink loop: points back to {}", ancestor.display())
                    } else if let Some(io) = e.io_error() {
                        format!("cannot read: {io}")
                    } else {
                        format!("cannot read: {e}")
                    };
                    diags.push(Diagnostic::file_error(&path, message));
                }
            }
        }
        if files.len() == before {
            diags.push(
                Diagnostic::file_error(root, "no *.yaml or *.yml files in this directory")
                    .with_hint("point mailplug at the directory that holds your connection files"),
            );
        }
    }
    files
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reads one file as UTF-8 text, refusing oversized, binary and non-UTF-8 input.
pub fn read(path: &Path) -> Result<String, Diagnostic> {
    let fail = |message: String| Diagnostic::file_error(path, message);
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if meta.is_dir() {
        return Err(fail("is a directory, expected a YAML file".to_owned()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(path, meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take` also bounds files that grow while read or lie about their size.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path, bytes.len() as u64));
    }
    if let Some(i) = bytes.iter().position(|&b| b == 0) {
        let pos = position_of(&bytes, i);
        return Err(Diagnostic::error(
            path,
            pos,
            "",
            "binary file (contains NUL bytes), expected YAML text",
        ));
    }
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .map(<[u8]>::to_vec)
        .unwrap_or(bytes);
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let pos = position_of(e.as_bytes(), at);
        Diagnostic::error(
            path,
            pos,
            "",
            format!("not valid UTF-8 (byte offset {at}); configuration files must be UTF-8"),
        )
    })
}

fn too_large(path: &Path, len: u64) -> Diagnostic {
    Diagnostic::file_error(
        path,
        format!(
            "file is {:.1} MiB; configuration files are limited to {} MiB",
            len as f64 / (1024.0 * 1024.0),
            MAX_FILE_BYTES / (1024 * 1024)
        ),
    )
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
