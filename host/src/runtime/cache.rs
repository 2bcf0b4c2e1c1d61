//! On-disk cache of compiled components, keyed by the wasm's sha256 and the
//! engine's compatibility hash, so a restart compiles nothing.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// Loaded from the cache: nothing was compiled.
    Hit,
    /// Compiled and written to the cache.
    Stored,
    /// Compiled; no cache directory is configured (or writing failed).
    Compiled,
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
/// storing) it otherwise. A corrupt or incompatible cache entry is replaced.
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
    if path.is_file() {
        match deserialize(engine, &path) {
            Ok(component) => return Ok((component, CacheOutcome::Hit)),
            Err(err) => {
                tracing::warn!(path = %path.display(), "ignoring unusable compiled-plugin cache entry: {err:#}")
            }
        }
    }
    let component = Component::new(engine, wasm)?;
    match store(&component, dir, &path) {
        Ok(()) => Ok((component, CacheOutcome::Stored)),
        Err(err) => {
            tracing::warn!(dir = %dir.display(), "cannot write the compiled-plugin cache: {err:#}");
            Ok((component, CacheOutcome::Compiled))
        }
    }
}

#[allow(
    unsafe_code,
    reason = "wasmtime marks loading precompiled code unsafe; see the SAFETY note"
)]
fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: wasmtime requires that the file was produced by `serialize` of
    // a compatible engine and is not modified while mapped. Entries are only
    // written by `store` below (atomically, via rename) into mailplug's own
    // data directory, named after the engine's compatibility hash, and
    // wasmtime still checks the header and version. Anyone able to write that
    // directory could equally replace the binary or the database.
    Ok(unsafe { Component::deserialize_file(engine, path) }?)
}

fn store(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}
