//! The precompiled component cache: compiled machine code on disk, so that a restart with
//! unchanged components skips compilation (seconds for a Python or JavaScript component).
//!
//! An entry's name is a hash of the component's bytes and of the engine's compatibility hash
//! (wasmtime's version and every setting that affects compiled code), so a changed component, a
//! new sluicegate or another engine configuration misses the cache instead of loading stale code.
//! Entries are written to a temporary file and renamed into place, so a reader never sees a
//! partial one; an entry that does not load is compiled again and replaced.
//!
//! Loading an entry runs the machine code in it: the directory must be writable only by the user
//! sluicegate runs as (like any directory of executables).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Feeds what a [`Hash`] impl writes into a digest (the compatibility hash is only `Hash`).
struct DigestWriter(sha2::Sha256);

impl Hasher for DigestWriter {
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    fn finish(&self) -> u64 {
        0 // never read: the digest is the result
    }
}

/// Compiled components on disk, by their hash (see the module docs).
pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    /// A cache in `dir`, created if missing.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("component cache {}: {e}", dir.display()))?;
        Ok(ComponentCache { dir: dir.to_path_buf() })
    }

    /// The entry's file: named by SHA-256 over the engine's compatibility hash and the
    /// component's bytes. A cryptographic hash, because a collision here would load one
    /// component's machine code for another.
    fn entry(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        use sha2::Digest as _;
        let mut digest = DigestWriter(sha2::Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut digest);
        wasm.hash(&mut digest);
        let name: String = digest.0.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The compiled component: from the cache if it holds it, else compiled and stored.
    #[allow(unsafe_code)] // loading machine code: see the SAFETY comments
    pub fn get_or_compile(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
        let entry = self.entry(engine, wasm);
        // Read into memory rather than mapped: a mapped file that someone truncates would crash
        // the process (SIGBUS), a copy cannot.
        if let Ok(bytes) = std::fs::read(&entry) {
            // SAFETY: the entry was written by `Engine::precompile_component` for an engine with
            // the same compatibility hash (wasmtime checks it again, and rejects other bytes); the
            // directory is trusted (see the module docs).
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(component) => {
                    tracing::debug!(entry = %entry.display(), "loaded a precompiled component");
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(entry = %entry.display(), "compiling again: the cache entry did not load: {e}")
                }
            }
        }
        let compiled = engine.precompile_component(wasm)?;
        // SAFETY: these bytes were just produced by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        let temporary = entry.with_extension(format!("tmp{}", std::process::id()));
        let stored = std::fs::write(&temporary, &compiled).and_then(|()| std::fs::rename(&temporary, &entry));
        match stored {
            Ok(()) => tracing::info!(entry = %entry.display(), "stored a precompiled component"),
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                tracing::warn!(dir = %self.dir.display(), "could not store a precompiled component: {e}");
            }
        }
        Ok(component)
    }
}
