//! The compiled-component cache: Cranelift output serialized under the host's cache folder as
//! `<sha256(component sha256, engine compatibility hash, host version)>.cwasm`, and for files a
//! stamp `<sha256(path, size, inode, device, mtime, ctime)>.file` holding the component's sha256,
//! so an unchanged file is neither read nor hashed again (18 MB component: 14 ms -> 0.7 ms).
//!
//! Loading a `.cwasm` runs the native code inside it, so the cache is only as trustworthy as the
//! folder. Hence:
//! * the folder is created 0700 and refused (`Fault::Config`) when it is group- or
//!   world-writable or belongs to another user;
//! * every entry and stamp ends with an HMAC-SHA256 tag (RFC 2104) over its name and content,
//!   keyed by `cache.key` (32 random bytes from the OS, a 0600 file of this user in the folder,
//!   created atomically: written to a temp file, then linked without replacing). An entry is
//!   read once into memory, checked, and only those bytes are deserialized; one that fails the
//!   check is ignored and overwritten by a fresh compilation. The file identity (ctime
//!   included) of an entry this host wrote or verified is recorded in a signed `<entry>.ok`, so
//!   an unchanged entry is mapped without being read and hashed again;
//! * files are opened with `O_NOFOLLOW` (a symlink is never followed) and must be regular files;
//!   writes go to a temp file created `O_EXCL` with a random name, then renamed over the entry.
//!
//! Cache writes are best effort: a cache that cannot be written only costs the next compile.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::error::{Error, Fault};

/// Bytes of the HMAC-SHA256 tag that ends every entry and stamp (SHA-256 output size).
const TAG_BYTES: usize = 32;
/// Bytes of the cache key (the HMAC-SHA256 block is 64; 32 random bytes give 256-bit security).
const KEY_BYTES: usize = 32;
/// Name of the key file in the cache folder.
const KEY_FILE: &str = "cache.key";

/// A compiled component, how long getting it took and whether the cache had it.
pub struct Compiled {
    pub component: Component,
    pub sha256: String,
    pub cache_hit: bool,
    pub started: Instant,
}

/// The cache folder and its key.
pub struct Cache {
    dir: PathBuf,
    key: [u8; KEY_BYTES],
}

fn config(dir: &Path, m: impl std::fmt::Display) -> Error {
    Error::new(Fault::Config, format!("compiled-code cache {}: {m}", dir.display()))
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Open an existing regular file without following a symlink.
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

impl Cache {
    /// Open (creating it 0700 if missing) the cache folder `dir` and its key.
    ///
    /// Errors (`Fault::Config`, one line naming the folder): it cannot be created; it is not a
    /// folder; it belongs to another user or is group- or world-writable (anyone who can write
    /// it could make this host run native code of their choosing); the key file is not a
    /// regular 0600-or-stricter file of this user with [`KEY_BYTES`] bytes.
    pub fn open(dir: PathBuf) -> Result<Self, Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| config(&dir, format!("cannot create it: {e}")))?;
        let meta = std::fs::metadata(&dir).map_err(|e| config(&dir, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_dir() {
            return Err(config(&dir, "is not a folder"));
        }
        if meta.uid() != euid() {
            return Err(config(&dir, format!("belongs to user {}, not to this user ({})", meta.uid(), euid())));
        }
        if mode & 0o022 != 0 {
            return Err(config(
                &dir,
                format!(
                    "is group- or world-writable (mode {mode:04o}): whoever can write it could make this host \
                     run their native code; chmod 700 it or choose another folder (WASMAI_CACHE_DIR)"
                ),
            ));
        }
        let key = load_or_create_key(&dir)?;
        Ok(Self { dir, key })
    }

    /// `<cache folder>/no-external-data`: an empty folder (created 0700) that ONNX Runtime
    /// resolves the external-data paths of guest graphs against, so that they find nothing.
    /// Errors (`Fault::Config`): it cannot be created, is not a folder of this user with mode
    /// 0700, or is not empty.
    pub fn empty_dir(&self) -> Result<PathBuf, Error> {
        let dir = self.dir.join("no-external-data");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| config(&dir, format!("cannot create it: {e}")))?;
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| config(&dir, e))?;
        if !meta.is_dir() || meta.uid() != euid() || meta.permissions().mode() & 0o777 != 0o700 {
            return Err(config(&dir, "must be a folder of this user with mode 0700"));
        }
        if std::fs::read_dir(&dir).map_err(|e| config(&dir, e))?.next().is_some() {
            return Err(config(&dir, "must be empty (graphs loaded by guests resolve external data there)"));
        }
        Ok(dir)
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Compile `bytes`, or load their cached compilation.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> Result<Compiled, Error> {
        self.compile_started(engine, bytes, Instant::now())
    }

    fn compile_started(&self, engine: &Engine, bytes: &[u8], started: Instant) -> Result<Compiled, Error> {
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        let path = self.compiled_path(engine, &sha256);
        if let Some(component) = self.load_cached(engine, &path) {
            return Ok(Compiled { component, sha256, cache_hit: true, started });
        }
        let component = Component::new(engine, bytes)
            .map_err(|e| Error::new(Fault::Compile, format!("not a valid WebAssembly component: {e:#}")))?;
        if let Ok(serialized) = component.serialize() {
            if let Ok(entry) = self.write_signed(&path, serialized) {
                // This host just wrote the entry: record its identity (of the open file, after the
                // rename) so that the next load maps it without hashing it (~1 ms per MiB).
                if let Ok(meta) = entry.metadata() {
                    let _ = self.write_signed(&path.with_extension("ok"), file_identity(&meta).to_vec());
                }
            }
        }
        Ok(Compiled { component, sha256, cache_hit: false, started })
    }

    /// Compile the component file `path`, or load its cached compilation without reading the
    /// file when its identity (canonical path, size, inode, device, mtime, ctime) is known.
    pub fn compile_file(&self, engine: &Engine, path: &str) -> Result<Compiled, Error> {
        use std::os::unix::ffi::OsStrExt;

        let started = Instant::now();
        let read_err = |e: std::io::Error| Error::new(Fault::Read, format!("cannot read {path}: {e}"));
        let file = std::fs::canonicalize(path).map_err(read_err)?;
        let meta = std::fs::metadata(&file).map_err(read_err)?;
        let mut id = Sha256::new();
        id.update(file.as_os_str().as_bytes());
        for n in [
            meta.len(),
            meta.ino(),
            meta.dev(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ] {
            id.update(n.to_le_bytes());
        }
        let stamp = self.dir.join(format!("{:x}.file", id.finalize()));
        if let Some(sha256) = self.read_signed(&stamp).and_then(|b| String::from_utf8(b).ok()) {
            if let Some(component) = self.load_cached(engine, &self.compiled_path(engine, &sha256)) {
                return Ok(Compiled { component, sha256, cache_hit: true, started });
            }
        }
        let bytes = std::fs::read(&file).map_err(read_err)?;
        let compiled = self.compile_started(engine, &bytes, started)?;
        let _ = self.write_signed(&stamp, compiled.sha256.clone().into_bytes());
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

    /// HMAC-SHA256 of a cache file's name and content under the cache key.
    fn tag(&self, path: &Path, content: &[u8]) -> Hmac<Sha256> {
        let name = path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name);
        mac.update(content);
        mac
    }

    /// The content of the cache file `path` if it is a regular file (not a symlink) whose tag
    /// verifies; None otherwise (missing, tampered, written by another key).
    fn read_signed(&self, path: &Path) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        open_regular(path).ok()?.read_to_end(&mut bytes).ok()?;
        let split = bytes.len().checked_sub(TAG_BYTES)?;
        let (content, tag) = bytes.split_at(split);
        self.tag(path, content).verify_slice(tag).ok()?;
        bytes.truncate(split);
        Some(bytes)
    }

    /// Write `content` and its tag to `path`: a temp file created `O_EXCL` with a random name in
    /// the cache folder (mode 0600), then renamed over `path` (a symlink there is replaced, not
    /// followed). Returns the written file, open.
    fn write_signed(&self, path: &Path, mut content: Vec<u8>) -> std::io::Result<std::fs::File> {
        let tag = self.tag(path, &content).finalize().into_bytes();
        content.extend_from_slice(&tag);
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&self.dir)?;
        tmp.write_all(&content)?;
        tmp.persist(path).map_err(|e| e.error)
    }

    /// The cached compilation at `path`, when its tag verifies.
    ///
    /// Checking the tag reads and hashes the whole entry (~0.1 s for a 45 MiB model), so a verified
    /// entry's file identity (device, inode, size, mtime, ctime) is recorded in a signed sidecar
    /// `<entry>.ok`; while the entry still has that identity it is mapped without being read
    /// (`deserialize_file`). Any write to the entry changes its ctime, which the owner cannot set
    /// back, so a modified entry fails the identity check and is verified in full again.
    fn load_cached(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let identity = file_identity(&open_regular(path).ok()?.metadata().ok()?);
        let record = path.with_extension("ok");
        if self.read_signed(&record).as_deref() == Some(&identity[..]) {
            // SAFETY: the file at `path` had, when opened above, the identity recorded after its
            // tag verified under this user's private key: bytes this host's `Component::serialize`
            // wrote (wasmtime checks the engine and version again).
            let component = unsafe { Component::deserialize_file(engine, path) }.ok()?;
            // Still the same file after wasmtime opened it (not replaced in between).
            let now = std::fs::symlink_metadata(path).ok()?;
            if file_identity(&now) == identity {
                return Some(component);
            }
        }
        let bytes = self.read_signed(path)?;
        // SAFETY: `bytes` are exactly the bytes whose HMAC under this user's private cache key
        // verified, i.e. bytes `Component::serialize` of this host wrote (the name covers the
        // engine's compatibility hash and the host version, and wasmtime checks both again).
        let component = unsafe { Component::deserialize(engine, &bytes) }.ok()?;
        let _ = self.write_signed(&record, identity.to_vec());
        Some(component)
    }
}

/// Device, inode, size, mtime and ctime (seconds and nanoseconds) of a file, little-endian.
fn file_identity(meta: &std::fs::Metadata) -> [u8; 56] {
    let mut out = [0u8; 56];
    let fields = [
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        meta.ctime() as u64,
        meta.ctime_nsec() as u64,
    ];
    for (chunk, n) in out.chunks_exact_mut(8).zip(fields) {
        chunk.copy_from_slice(&n.to_le_bytes());
    }
    out
}

/// The cache key in `dir`, created if missing: 32 bytes from the OS's random source written to
/// a 0600 temp file, then linked as `cache.key` only if none exists (another process may win the
/// race; its key is read then).
fn load_or_create_key(dir: &Path) -> Result<[u8; KEY_BYTES], Error> {
    let path = dir.join(KEY_FILE);
    if std::fs::symlink_metadata(&path).is_err() {
        let mut key = [0u8; KEY_BYTES];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut key))
            .map_err(|e| config(dir, format!("cannot read random bytes for the cache key: {e}")))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-key-")
            .tempfile_in(dir)
            .map_err(|e| config(dir, format!("cannot create the cache key: {e}")))?;
        tmp.write_all(&key).and_then(|_| tmp.as_file().sync_all()).map_err(|e| config(dir, e))?;
        if let Err(e) = tmp.persist_noclobber(&path) {
            if e.error.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(config(dir, format!("cannot create the cache key: {}", e.error)));
            }
        }
    }
    let bad_key = |m: String| config(dir, format!("{KEY_FILE}: {m}"));
    let mut file = open_regular(&path).map_err(|e| bad_key(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad_key(e.to_string()))?;
    if meta.uid() != euid() || meta.permissions().mode() & 0o077 != 0 || meta.len() != KEY_BYTES as u64 {
        return Err(bad_key(format!("must be a {KEY_BYTES}-byte file of this user with mode 0600")));
    }
    let mut key = [0u8; KEY_BYTES];
    file.read_exact(&mut key).map_err(|e| bad_key(e.to_string()))?;
    Ok(key)
}
