//! Compiled components, cached on disk.
//!
//! Compiling a component with Cranelift takes tens to hundreds of
//! milliseconds; loading a cached artifact takes well under one. The cache
//! key is the SHA-256 of the `.wasm` bytes plus the engine's compatibility
//! hash (which covers the wasmtime version and every setting that changes
//! code generation), so an upgrade or a config change never loads a stale
//! artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The SHA-256 of a rule file, as hex.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The cache file for `hash` under `dir`, for this engine.
fn cache_path(engine: &Engine, dir: &Path, hash: &str) -> PathBuf {
    // NOTE: DefaultHasher's algorithm may change between Rust releases; at
    // worst that misses the cache once.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    dir.join(format!("{hash}-{:016x}.cwasm", hasher.finish()))
}

/// Compiles `bytes`, or loads the artifact cached for them. Returns the
/// component and whether it came from the cache. Cache failures are logged
/// and fall back to compiling; only a compile error is returned.
pub(crate) fn compile(
    engine: &Engine,
    bytes: &[u8],
    hash: &str,
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, bool)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, bytes)?, false));
    };
    let path = cache_path(engine, dir, hash);
    // Step 1: a cached artifact, if one is there and this engine accepts it.
    if path.is_file() {
        // SAFETY: files in the cache directory are written only by
        // `store` below from `Component::serialize` of this same engine
        // configuration (the compatibility hash is in the name, and
        // wasmtime checks it again). The directory lives under the
        // worker's own data directory.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok((component, true)),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %error, "Cached rule artifact is unusable; recompiling.");
            }
        }
    }
    // Step 2: compile and store for next time.
    let component = Component::new(engine, bytes)?;
    if let Err(error) = store(&component, dir, &path) {
        tracing::warn!(path = %path.display(), error = %error, "Cannot cache a compiled rule.");
    }
    Ok((component, false))
}

/// Writes the artifact atomically (write, then rename).
fn store(component: &Component, dir: &Path, path: &Path) -> Result<(), String> {
    let bytes = component.serialize().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
