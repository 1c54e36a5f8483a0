//! The WASI context of an instance: nothing ambient (no arguments, sockets or stdin; guest
//! stdout/stderr in bounded in-memory pipes), plus only what the host grants: preopened
//! directories (read-write or read-only), environment variables, the process's stdio.
//! The settings are validated once, in Python (`wasmai.sandbox`), before they reach the host.

use std::path::{Path, PathBuf};

use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx};

use crate::error::{Error, Fault};

/// Bytes of guest stdout/stderr kept (the tail goes into trap messages).
const PIPE_CAPACITY: usize = 64 * 1024;

/// A host directory preopened in the guest.
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// What a host grants every instance beyond the empty default sandbox.
#[derive(Default)]
pub struct Grants {
    pub dirs: Vec<Preopen>,
    pub env: Vec<(String, String)>,
    /// Guest stdout/stderr go to the process's instead of in-memory pipes.
    pub inherit_stdio: bool,
}

/// The guest's captured output (empty when the host inherits stdio).
pub struct Captured {
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
}

impl Grants {
    /// Refuse (`Fault::Config`) a preopened directory that is, contains or lies inside the
    /// compiled-code cache folder `cache_dir` (compared as canonical paths, symlinks resolved):
    /// a guest that can write there could plant native code the host runs, and even a read-only
    /// one could read the cache key. Read-only preopens are refused too.
    pub fn check_apart_from(&self, cache_dir: &Path) -> Result<(), Error> {
        let resolve = |p: &Path| {
            std::fs::canonicalize(p)
                .map_err(|e| Error::new(Fault::Config, format!("cannot resolve {}: {e}", p.display())))
        };
        let cache = resolve(cache_dir)?;
        for d in &self.dirs {
            let host = resolve(&d.host)?;
            if host.starts_with(&cache) || cache.starts_with(&host) {
                return Err(Error::new(
                    Fault::Config,
                    format!(
                        "--dir {}: overlaps the compiled-code cache {} (a guest that can reach the cache could make \
                         this host run native code of its choosing); preopen another folder or move the cache \
                         (WASMAI_CACHE_DIR)",
                        d.host.display(),
                        cache.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A WASI context with these grants and the pipes capturing the guest's output.
    pub fn wasi_ctx(&self) -> Result<(WasiCtx, Captured), Error> {
        let captured =
            Captured { stdout: MemoryOutputPipe::new(PIPE_CAPACITY), stderr: MemoryOutputPipe::new(PIPE_CAPACITY) };
        let mut builder = WasiCtx::builder();
        // wasi:sockets is linked (add_to_linker_sync links all of WASI p2) but denied: no TCP, no
        // UDP, no name lookup, and every address refused should one of those be allowed later.
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        if self.inherit_stdio {
            builder.inherit_stdout().inherit_stderr();
        } else {
            builder.stdout(captured.stdout.clone()).stderr(captured.stderr.clone());
        }
        for (k, v) in &self.env {
            builder.env(k, v);
        }
        for d in &self.dirs {
            let perms = if d.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            builder.preopened_dir(&d.host, &d.guest, perms).map_err(|e| {
                Error::new(Fault::Instantiate, format!("cannot preopen {} as {}: {e:#}", d.host.display(), d.guest))
            })?;
        }
        Ok((builder.build(), captured))
    }
}
