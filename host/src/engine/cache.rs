//! The compiled-component cache: Cranelift output serialized under the host's cache folder as
//! `<sha256(component sha256, engine compatibility hash, host version)>.cwasm`, and for files a
//! stamp `<sha256(path, size, inode, device, mtime)>.file` holding the component's sha256, so an
//! unchanged file is neither read nor hashed again (18 MB component: 14 ms -> 0.7 ms).
//! Every cache write is best effort and atomic (temp file, then rename).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::error::{Error, Fault};

/// A compiled component, how long getting it took and whether the cache had it.
pub struct Compiled {
    pub component: Component,
    pub sha256: String,
    pub cache_hit: bool,
    pub started: Instant,
}

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `<cache folder>/no-external-data`: an empty folder (created 0700) that ONNX Runtime
    /// resolves the external-data paths of guest graphs against, so that they find nothing.
    /// Errors (`Fault::Config`): it cannot be created, is not a folder of this user with mode
    /// 0700, or is not empty.
    pub fn empty_dir(&self) -> Result<PathBuf, Error> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};

        let dir = self.dir.join("no-external-data");
        let config = |m: String| Error::new(Fault::Config, format!("{}: {m}", dir.display()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| config(format!("cannot create: {e}")))?;
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| config(e.to_string()))?;
        if !meta.is_dir()
            || meta.uid() != rustix::process::geteuid().as_raw()
            || meta.permissions().mode() & 0o777 != 0o700
        {
            return Err(config("must be a folder of this user with mode 0700".into()));
        }
        if std::fs::read_dir(&dir).map_err(|e| config(e.to_string()))?.next().is_some() {
            return Err(config("must be empty (graphs loaded by guests resolve external data there)".into()));
        }
        Ok(dir)
    }

    /// Compile `bytes`, or load their cached compilation.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> Result<Compiled, Error> {
        self.compile_started(engine, bytes, Instant::now())
    }

    fn compile_started(&self, engine: &Engine, bytes: &[u8], started: Instant) -> Result<Compiled, Error> {
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        let path = self.compiled_path(engine, &sha256);
        if let Some(component) = load_cached(engine, &path) {
            return Ok(Compiled { component, sha256, cache_hit: true, started });
        }
        let component = Component::new(engine, bytes)
            .map_err(|e| Error::new(Fault::Compile, format!("not a valid WebAssembly component: {e:#}")))?;
        if let Ok(serialized) = component.serialize() {
            // A cache that cannot be written only costs the next compile.
            let _ = write_atomic(&path, &serialized);
        }
        Ok(Compiled { component, sha256, cache_hit: false, started })
    }

    /// Compile the component file `path`, or load its cached compilation without reading the
    /// file when its identity (canonical path, size, inode, device, mtime) is known.
    pub fn compile_file(&self, engine: &Engine, path: &str) -> Result<Compiled, Error> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;

        let started = Instant::now();
        let read_err = |e: std::io::Error| Error::new(Fault::Read, format!("cannot read {path}: {e}"));
        let file = std::fs::canonicalize(path).map_err(read_err)?;
        let meta = std::fs::metadata(&file).map_err(read_err)?;
        let mut id = Sha256::new();
        id.update(file.as_os_str().as_bytes());
        for n in [meta.len(), meta.ino(), meta.dev(), meta.mtime() as u64, meta.mtime_nsec() as u64] {
            id.update(n.to_le_bytes());
        }
        let stamp = self.dir.join(format!("{:x}.file", id.finalize()));
        if let Ok(sha256) = std::fs::read_to_string(&stamp) {
            let sha256 = sha256.trim().to_string();
            if let Some(component) = load_cached(engine, &self.compiled_path(engine, &sha256)) {
                return Ok(Compiled { component, sha256, cache_hit: true, started });
            }
        }
        let bytes = std::fs::read(&file).map_err(read_err)?;
        let compiled = self.compile_started(engine, &bytes, started)?;
        let _ = write_atomic(&stamp, compiled.sha256.as_bytes());
        Ok(compiled)
    }

    /// Where the compilation of the component with hex digest `sha256` is cached: the name also
    /// covers the engine's compatibility hash and this host's version.
    fn compiled_path(&self, engine: &Engine, sha256: &str) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut key = Sha256::new();
        key.update(sha256.as_bytes());
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        key.update(h.finish().to_le_bytes());
        key.update(env!("CARGO_PKG_VERSION").as_bytes());
        self.dir.join(format!("{:x}.cwasm", key.finalize()))
    }
}

fn load_cached(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: the file was written by `Component::serialize` of this same host build (the name
    // includes the engine's compatibility hash) into the host's private cache folder.
    unsafe { Component::deserialize_file(engine, path) }.ok()
}

/// Write a file atomically (temp file in the same folder, then rename).
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
