//! The one guarded way to read a file an operator names (configuration
//! files, `file:` secrets, CA files, plugin `.wasm` files): the open never
//! blocks (a FIFO without a writer, a device), only regular files are read,
//! and every read is bounded, so a mistaken or hostile path cannot hang a
//! command or the daemon nor exhaust its memory.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filesystem refused (including "not found").
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A directory where a file was expected.
    #[error("is a directory, expected a file")]
    Directory,
    /// A FIFO, socket or device: reading it could block forever or never end.
    #[error("is {0}, not a regular file; only regular files are read")]
    NotRegular(&'static str),
    /// Larger than the caller's limit (`len` bytes, at least).
    #[error("file is {}; the limit is {}", human(*.len), human(*.limit))]
    TooLarge {
        /// The size seen (from `fstat`, or the bytes read so far).
        len: u64,
        /// The limit that applied.
        limit: u64,
    },
}

/// A byte count as MiB from 1 MiB on, else in bytes (so two sizes that
/// differ never print the same).
fn human(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes < MIB {
        format!("{bytes} bytes")
    } else if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

/// What kind of special file this is, or `None` for a regular file.
fn special_kind(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else {
        Some("not a regular file")
    }
}

/// Opens a regular file for reading without ever blocking on it: the open
/// is non-blocking (a FIFO without a writer opens at once instead of
/// stalling), and the opened file's own metadata decides. One `fstat` per
/// file, no separate `stat` of the path: this runs for every file on every
/// reload.
fn open_regular(path: &Path) -> Result<(std::fs::File, u64), Error> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(Error::Directory);
    }
    if let Some(kind) = special_kind(meta.file_type()) {
        return Err(Error::NotRegular(kind));
    }
    Ok((file, meta.len()))
}

/// Reads a regular file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let (file, len) = open_regular(path)?;
    if len > limit {
        return Err(Error::TooLarge { len, limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // `take` also bounds files that grow while read or lie about their size.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge {
            len: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// Creates a FIFO at `path` (unit tests of every guarded read).
#[cfg(test)]
pub(crate) fn mkfifo(path: &std::path::Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        // No writer ever opens the FIFO: a blocking open would hang here.
        let err = read_bounded(&fifo, 10).unwrap_err();
        assert!(
            matches!(err, Error::NotRegular("a FIFO (named pipe)")),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, [b'x'; 2048]).unwrap();
        let err = read_bounded(&f, 2047).unwrap_err();
        assert_eq!(
            err.to_string(),
            "file is 2048 bytes; the limit is 2047 bytes"
        );
        assert_eq!(read_bounded(&f, 2048).unwrap().len(), 2048);
        assert!(matches!(
            read_bounded(dir.path(), 10),
            Err(Error::Directory)
        ));
        assert!(matches!(
            read_bounded(Path::new("/dev/zero"), 10),
            Err(Error::NotRegular("a character device"))
        ));
    }

    #[test]
    fn sizes_read_in_their_unit() {
        assert_eq!(human(1024 * 1024), "1 MiB");
        assert_eq!(human(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human(100), "100 bytes");
    }
}
