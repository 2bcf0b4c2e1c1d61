//! On-disk cache of compiled components, keyed by the wasm's sha256 and the
//! engine's compatibility hash, so a restart compiles nothing; each entry
//! carries the sha256 of its artifact, checked before the artifact is turned
//! back into native code.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::digest::sha256_hex;

/// First line of every cache entry, followed by ` sha256=<hex of the
/// artifact>` and a newline; the serialized artifact follows.
const HEADER: &str = "mailplug-cwasm-v1";

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// Loaded from the cache: nothing was compiled.
    Hit,
    /// Compiled and written to the cache.
    Stored,
    /// The cache entry failed its integrity check or did not load; compiled
    /// again and the entry replaced.
    Recompiled,
    /// Compiled; no cache directory is configured (or writing failed).
    Compiled,
}

/// Why a cache entry was not used.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("reading the entry: {0}")]
    Read(#[source] std::io::Error),
    #[error("no `{HEADER}` header (written by another version, or truncated)")]
    Header,
    #[error("artifact sha256 is {actual}, the header says {expected} (corrupted)")]
    Digest { expected: String, actual: String },
}

/// Hex of the engine's compatibility hash: wasmtime version, compiler and
/// tunables. Any change yields a different file name, so stale artifacts are
/// never loaded.
fn engine_key(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn cache_path(dir: &Path, engine: &Engine, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}-{}.cwasm", engine_key(engine)))
}

/// Loads `wasm` as a component, from `dir` when cached, compiling (and
/// storing) it otherwise. An entry that fails its digest check or does not
/// deserialize is logged, recompiled and replaced.
pub(crate) fn load(
    engine: &Engine,
    wasm: &[u8],
    sha256: &str,
    dir: Option<&Path>,
) -> anyhow::Result<(Component, CacheOutcome)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, wasm)?, CacheOutcome::Compiled));
    };
    let path = cache_path(dir, engine, sha256);
    let replacing = match read_verified(&path) {
        Ok(None) => false,
        Ok(Some(artifact)) => match deserialize(engine, &artifact) {
            Ok(component) => return Ok((component, CacheOutcome::Hit)),
            Err(err) => {
                tracing::warn!(path = %path.display(), "compiled-plugin cache entry does not load; recompiling: {err:#}");
                true
            }
        },
        Err(err) => {
            tracing::warn!(path = %path.display(), "compiled-plugin cache entry is unusable; recompiling: {err}");
            true
        }
    };
    let component = Component::new(engine, wasm)?;
    match store(&component, dir, &path) {
        Ok(()) if replacing => Ok((component, CacheOutcome::Recompiled)),
        Ok(()) => Ok((component, CacheOutcome::Stored)),
        Err(err) => {
            tracing::warn!(dir = %dir.display(), "cannot write the compiled-plugin cache: {err:#}");
            Ok((component, CacheOutcome::Compiled))
        }
    }
}

/// The artifact of the entry at `path` once its digest matches; `None` when
/// there is no entry.
fn read_verified(path: &Path) -> Result<Option<Vec<u8>>, EntryError> {
    let mut bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EntryError::Read(e)),
    };
    let prefix = format!("{HEADER} sha256=");
    let header_len = prefix.len() + 64 + 1;
    let expected = bytes
        .get(..header_len)
        .and_then(|h| h.strip_prefix(prefix.as_bytes()))
        .and_then(|h| h.strip_suffix(b"\n"))
        .and_then(|hex| std::str::from_utf8(hex).ok())
        .map(str::to_owned)
        .ok_or(EntryError::Header)?;
    let actual = sha256_hex(&bytes[header_len..]);
    if actual != expected {
        return Err(EntryError::Digest { expected, actual });
    }
    Ok(Some(bytes.split_off(header_len)))
}

#[allow(
    unsafe_code,
    reason = "wasmtime marks loading precompiled code unsafe; see the SAFETY note"
)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: wasmtime requires that the bytes are the output of `serialize`
    // by a compatible engine. These bytes were just read from an entry that
    // only `store` below writes (atomically, via rename, into mailplug's own
    // data directory, named after the engine's compatibility hash) and
    // matched the sha256 `store` recorded beside them, so a corrupted or
    // truncated file never reaches native code; wasmtime also checks its own
    // header and version. The bytes are deserialized from memory (wasmtime
    // copies them), so a later change to the file cannot affect them. The
    // digest is an integrity check, not a signature: whoever can write the
    // directory can write a matching digest and so run native code as
    // mailplug, which is why the data directory must be writable by mailplug
    // alone (README) — such a writer could equally replace the binary.
    Ok(unsafe { Component::deserialize(engine, artifact) }?)
}

/// Writes the entry for `component` to `path`: a fresh temporary file in
/// `dir` (unique per writer, so concurrent loads never interleave), renamed
/// over `path` only once complete.
fn store(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let artifact = component.serialize()?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".cwasm-")
        .tempfile_in(dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))?;
    let header = format!("{HEADER} sha256={}\n", sha256_hex(&artifact));
    tmp.write_all(header.as_bytes())
        .and_then(|()| tmp.write_all(&artifact))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("write {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}
