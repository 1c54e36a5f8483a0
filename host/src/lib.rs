//! `wasmai._host`: the embedded wasmtime host for wasmai components, as a PyO3 extension.
//!
//! Components built for `wasmai:inference/image-classifier` or `tensor-model` (wit/) import
//! wasi:nn@0.2.0-rc-2024-10-28, which this crate implements on ONNX Runtime (see `nn.rs`), and
//! export `metadata`, `model` and optionally `image-classification`, which Python calls through
//! the classes below. Lists cross the boundary with memcpy; calls release the GIL.
//!
//! Sandbox: each instance gets a WASI p2 context with nothing ambient by default (no preopens,
//! no env, no network, no args; stdout/stderr go to bounded in-memory pipes), a linear-memory
//! limit through a store limiter and an optional wall-clock timeout through epoch interruption.
//! The host may grant preopened directories (read-write or read-only), environment variables
//! and the process's stdout/stderr (`NativeHost::new`), and bounds wasi-nn tensor sizes and
//! live graphs per instance (see `nn.rs`).
//!
//! Python-visible errors are `HostError(kind, code, message)`: kind "component" (compile,
//! instantiate, trap, timeout, host bug) or "inference" (an `error` returned by the guest).

mod nn;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable, Type, Val};
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "image-classifier",
        path: "../wit",
        imports: { default: trappable },
        with: {
            "wasi:nn/tensor.tensor": crate::nn::NnTensor,
            "wasi:nn/graph.graph": crate::nn::NnGraph,
            "wasi:nn/inference.graph-execution-context": crate::nn::NnExecCtx,
            "wasi:nn/errors.error": crate::nn::NnError,
        },
    });
}

use bindings::exports::wasmai::inference::{image_classification, metadata, model};
use bindings::wasmai::inference::types as wtypes;

create_exception!(_host, HostError, PyException, "A failure in the native host: args (kind, code, message).");

/// Epoch ticks per second when a timeout is configured.
const TICK: Duration = Duration::from_millis(10);
/// Bytes of guest stdout/stderr kept (the tail goes into trap messages).
const PIPE_CAPACITY: usize = 64 * 1024;

/// Linear-memory limiter that also records the largest memory size seen and the last growth
/// it refused (so a trap that follows can be reported as the memory limit).
struct Limiter {
    max_bytes: usize,
    peak_bytes: usize,
    refused_bytes: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            // `memory.grow` returns -1: a guest may handle that; most abort (then a trap).
            self.refused_bytes = Some(desired);
            return Ok(false);
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The data of one Store: WASI context, resource table, wasi-nn state and limits.
pub struct State {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) nn: Arc<nn::NnShared>,
    pub(crate) stats: nn::NnStats,
    pub(crate) quota: nn::NnQuota,
    limiter: Limiter,
}

impl Limiter {
    /// ", after the host refused ..." when a growth was refused since `refused_bytes` was cleared.
    fn refusal_note(&self) -> Option<String> {
        self.refused_bytes.map(|b| {
            format!(
                "the host refused to grow linear memory to {:.1} MiB (memory limit {} MiB)",
                b as f64 / (1 << 20) as f64,
                self.max_bytes >> 20
            )
        })
    }
}

/// What a host grants every instance beyond the empty default sandbox.
struct Grants {
    /// (host directory, guest path, read-only) preopens.
    dirs: Vec<(PathBuf, String, bool)>,
    env: Vec<(String, String)>,
    /// Guest stdout/stderr go to the process's instead of in-memory pipes.
    inherit_stdio: bool,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wtypes::Host for State {}

struct HostInner {
    engine: Engine,
    linker: Linker<State>,
    nn: Arc<nn::NnShared>,
    cache_dir: PathBuf,
    memory_limit: usize,
    timeout: Option<Duration>,
    ticker_stop: Arc<AtomicBool>,
    grants: Grants,
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn err(kind: &str, code: &str, message: impl Into<String>) -> PyErr {
    HostError::new_err((kind.to_string(), code.to_string(), message.into()))
}

/// Run `f` with panics turned into a `HostError` (the last guard: the host never aborts Python).
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(err("component", "host-panic", format!("internal error in the native host: {msg}")))
        }
    }
}

/// The wasmtime engine, ONNX Runtime and the load-by-name registry.
#[pyclass(frozen, module = "wasmai._host")]
struct NativeHost {
    inner: Arc<HostInner>,
}

#[pymethods]
impl NativeHost {
    /// Create a host. `ort_library` is the path of libonnxruntime (loaded once per process);
    /// `graphs` are (name, path) pairs for wasi-nn load-by-name; `cache_dir` holds serialized
    /// compiled components; `memory_limit_mb` bounds each linear memory; `timeout_s` bounds
    /// each guest call (epoch interruption, 10 ms resolution).
    ///
    /// Sandbox grants (default: none): `dirs` are (host directory, guest path, read_only)
    /// preopens, `env` (name, value) environment variables, `inherit_stdio` sends guest
    /// stdout/stderr to the process's. Limits: `max_tensor_bytes` bounds each wasi-nn tensor
    /// (`too-large`), `max_graphs` the live wasi-nn graphs per instance (`security`).
    #[new]
    #[pyo3(signature = (ort_library, cache_dir, graphs, allow_target_fallback, intra_op_threads, memory_limit_mb,
                        timeout_s=None, dirs=Vec::new(), env=Vec::new(), inherit_stdio=false,
                        max_tensor_bytes=None, max_graphs=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        ort_library: String,
        cache_dir: String,
        graphs: Vec<(String, String)>,
        allow_target_fallback: bool,
        intra_op_threads: usize,
        memory_limit_mb: usize,
        timeout_s: Option<f64>,
        dirs: Vec<(String, String, bool)>,
        env: Vec<(String, String)>,
        inherit_stdio: bool,
        max_tensor_bytes: Option<usize>,
        max_graphs: Option<usize>,
    ) -> PyResult<Self> {
        guarded(|| {
            let mut preopens = Vec::with_capacity(dirs.len());
            for (host_dir, guest, read_only) in dirs {
                let path = PathBuf::from(&host_dir);
                if !path.is_dir() {
                    return Err(err("component", "config", format!("--dir: host directory not found: {host_dir}")));
                }
                if guest.is_empty() {
                    return Err(err("component", "config", format!("--dir {host_dir}: the guest path is empty")));
                }
                preopens.push((path, guest, read_only));
            }
            for (k, v) in &env {
                if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                    return Err(err("component", "config", format!("--env: invalid variable {k:?}")));
                }
            }
            nn::init_ort(&ort_library).map_err(|m| err("component", "onnxruntime", m))?;
            let mut config = Config::new();
            config.wasm_component_model(true);
            config.cranelift_opt_level(wasmtime::OptLevel::Speed);
            config.epoch_interruption(timeout_s.is_some());
            let engine = Engine::new(&config).map_err(|e| err("component", "engine", format!("{e:#}")))?;
            let mut linker: Linker<State> = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                .map_err(|e| err("component", "linker", format!("{e:#}")))?;
            bindings::ImageClassifier::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
                .map_err(|e| err("component", "linker", format!("{e:#}")))?;
            let timeout = match timeout_s {
                Some(t) if !(t > 0.0 && t.is_finite()) => {
                    return Err(err("component", "config", format!("timeout must be a positive number of seconds, not {t}")))
                }
                Some(t) => Some(Duration::from_secs_f64(t)),
                None => None,
            };
            let ticker_stop = Arc::new(AtomicBool::new(false));
            if timeout.is_some() {
                let engine = engine.clone();
                let stop = ticker_stop.clone();
                std::thread::Builder::new()
                    .name("wasmai-epoch".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(TICK);
                            engine.increment_epoch();
                        }
                    })
                    .map_err(|e| err("component", "thread", e.to_string()))?;
            }
            let nn = Arc::new(nn::NnShared::new(
                graphs.into_iter().map(|(n, p)| (n, PathBuf::from(p))).collect(),
                allow_target_fallback,
                intra_op_threads,
                max_tensor_bytes,
                max_graphs,
            ));
            Ok(Self {
                inner: Arc::new(HostInner {
                    engine,
                    linker,
                    nn,
                    cache_dir: PathBuf::from(cache_dir),
                    memory_limit: memory_limit_mb.saturating_mul(1 << 20),
                    timeout,
                    ticker_stop,
                    grants: Grants { dirs: preopens, env, inherit_stdio },
                }),
            })
        })
    }

    /// Compile (or load from the on-disk cache) a component from its bytes. Releases the GIL.
    fn load_component(&self, py: Python<'_>, wasm: &Bound<'_, PyBytes>) -> PyResult<NativeComponent> {
        let bytes = wasm.as_bytes().to_vec();
        let inner = self.inner.clone();
        py.detach(move || guarded(|| load_component(&inner, &bytes)))
    }

    /// Load a component file (see `load_component_file`). Releases the GIL.
    fn load_component_file(&self, py: Python<'_>, path: String) -> PyResult<NativeComponent> {
        let inner = self.inner.clone();
        py.detach(move || guarded(|| load_component_file(&inner, &path)))
    }

    /// Create a new Store and instance of `component` (runs no export). Releases the GIL.
    fn instantiate(&self, py: Python<'_>, component: &NativeComponent) -> PyResult<NativeInstance> {
        let inner = self.inner.clone();
        py.detach(move || guarded(|| instantiate(&inner, component)))
    }
}

fn load_component(host: &HostInner, bytes: &[u8]) -> PyResult<NativeComponent> {
    load_component_timed(host, bytes, Instant::now())
}

fn load_component_timed(host: &HostInner, bytes: &[u8], start: Instant) -> PyResult<NativeComponent> {
    let sha256 = format!("{:x}", Sha256::digest(bytes));
    let cache_path = compiled_cache_path(host, &sha256);
    let (component, cache_hit) = match load_cached(host, &cache_path) {
        Some(c) => (c, true),
        None => (compile_and_cache(host, bytes, &cache_path)?, false),
    };
    link(host, component, start, cache_hit, sha256)
}

/// Load a component file. Its compilation is cached by content (as `load_component`), and the
/// file's identity (canonical path, size, mtime, inode) is mapped to its sha256 in a small stamp
/// file, so loading an unchanged file again neither reads nor hashes it: for a component that
/// embeds a 45 MiB model this takes the cached load from ~30 ms (read + sha256) to ~1 ms.
fn load_component_file(host: &HostInner, path: &str) -> PyResult<NativeComponent> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    let start = Instant::now();
    let read_err = |e: std::io::Error| err("component", "read", format!("cannot read {path}: {e}"));
    let file = std::fs::canonicalize(path).map_err(read_err)?;
    let meta = std::fs::metadata(&file).map_err(read_err)?;
    let mut id = Sha256::new();
    id.update(file.as_os_str().as_bytes());
    for n in [meta.len(), meta.ino(), meta.dev(), meta.mtime() as u64, meta.mtime_nsec() as u64] {
        id.update(n.to_le_bytes());
    }
    let stamp = host.cache_dir.join(format!("{:x}.file", id.finalize()));
    if let Ok(sha256) = std::fs::read_to_string(&stamp) {
        let sha256 = sha256.trim().to_string();
        if let Some(c) = load_cached(host, &compiled_cache_path(host, &sha256)) {
            return link(host, c, start, true, sha256);
        }
    }
    let bytes = std::fs::read(&file).map_err(read_err)?;
    let loaded = load_component_timed(host, &bytes, start)?;
    // Best effort, like the compilation cache.
    let _ = write_cache_file(&stamp, loaded.sha256.as_bytes());
    Ok(loaded)
}

/// Where the compilation of the component with hex digest `sha256` is cached: the name also
/// covers the engine's compatibility hash and this host's version.
fn compiled_cache_path(host: &HostInner, sha256: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut key = Sha256::new();
    key.update(sha256.as_bytes());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    host.engine.precompile_compatibility_hash().hash(&mut h);
    key.update(h.finish().to_le_bytes());
    key.update(env!("CARGO_PKG_VERSION").as_bytes());
    host.cache_dir.join(format!("{:x}.cwasm", key.finalize()))
}

fn load_cached(host: &HostInner, cache_path: &std::path::Path) -> Option<Component> {
    if !cache_path.is_file() {
        return None;
    }
    // SAFETY: the file was written by `Component::serialize` of this same host build
    // (the name includes the engine's compatibility hash) into our private cache folder.
    unsafe { Component::deserialize_file(&host.engine, cache_path) }.ok()
}

fn compile_and_cache(host: &HostInner, bytes: &[u8], cache_path: &std::path::Path) -> PyResult<Component> {
    let c = Component::new(&host.engine, bytes)
        .map_err(|e| err("component", "compile", format!("not a valid WebAssembly component: {e:#}")))?;
    if let Ok(serialized) = c.serialize() {
        // Best effort: a cache that cannot be written only costs the next compile.
        let _ = write_cache_file(cache_path, &serialized);
    }
    Ok(c)
}

/// Write a cache file atomically (temp file in the same folder, then rename).
fn write_cache_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Link a compiled component against this host and check it exports our worlds.
fn link(
    host: &HostInner,
    component: Component,
    start: Instant,
    cache_hit: bool,
    sha256: String,
) -> PyResult<NativeComponent> {
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let pre = host.linker.instantiate_pre(&component).map_err(|e| {
        err("component", "link", format!("the component needs imports this host does not provide: {e:#}"))
    })?;
    let has_classifier = image_classification::GuestIndices::new(&pre).is_ok();
    let exports_model =
        metadata::GuestIndices::new(&pre).is_ok() && model::GuestIndices::new(&pre).is_ok();
    if !exports_model {
        return Err(err(
            "component",
            "link",
            "the component does not export wasmai:inference/metadata and wasmai:inference/model \
             (it was not built for the tensor-model or image-classifier world)",
        ));
    }
    Ok(NativeComponent { pre, compile_ms, cache_hit, sha256, has_classifier })
}

fn instantiate(host: &Arc<HostInner>, component: &NativeComponent) -> PyResult<NativeInstance> {
    let start = Instant::now();
    let stdout = MemoryOutputPipe::new(PIPE_CAPACITY);
    let stderr = MemoryOutputPipe::new(PIPE_CAPACITY);
    // Nothing ambient: no args or network, stdin is empty; env, preopens and the process's
    // stdout/stderr only as granted.
    let mut builder = WasiCtx::builder();
    let grants = &host.grants;
    if grants.inherit_stdio {
        builder.inherit_stdout().inherit_stderr();
    } else {
        builder.stdout(stdout.clone()).stderr(stderr.clone());
    }
    for (k, v) in &grants.env {
        builder.env(k, v);
    }
    for (dir, guest, read_only) in &grants.dirs {
        let perms = if *read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        builder.preopened_dir(dir, guest, perms).map_err(|e| {
            err("component", "instantiate", format!("cannot preopen {} as {guest}: {e:#}", dir.display()))
        })?;
    }
    let wasi = builder.build();
    let state = State {
        wasi,
        table: ResourceTable::new(),
        nn: host.nn.clone(),
        stats: nn::NnStats::default(),
        quota: nn::NnQuota::default(),
        limiter: Limiter { max_bytes: host.memory_limit, peak_bytes: 0, refused_bytes: None },
    };
    let mut store = Store::new(&host.engine, state);
    store.limiter(|s| &mut s.limiter);
    set_deadline(host, &mut store);
    let instance = component.pre.instantiate(&mut store).map_err(|e| {
        let mut msg = format!("cannot instantiate the component: {e:#}");
        let code = match store.data().limiter.refusal_note() {
            Some(note) => {
                msg.push_str(&format!(" ({note})"));
                "memory-limit"
            }
            None => "instantiate",
        };
        err("component", code, msg)
    })?;
    let load = |e: wasmtime::Error| err("component", "instantiate", format!("{e:#}"));
    let meta = metadata::GuestIndices::new(&component.pre).and_then(|g| g.load(&mut store, &instance)).map_err(load)?;
    let model = model::GuestIndices::new(&component.pre).and_then(|g| g.load(&mut store, &instance)).map_err(load)?;
    let classifier = if component.has_classifier {
        Some(
            image_classification::GuestIndices::new(&component.pre)
                .and_then(|g| g.load(&mut store, &instance))
                .map_err(load)?,
        )
    } else {
        None
    };
    let instantiate_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(NativeInstance {
        host: host.clone(),
        instantiate_ms,
        inner: Mutex::new(InstanceInner { store, instance, meta, model, classifier, stdout, stderr, dead: None }),
    })
}

fn set_deadline(host: &HostInner, store: &mut Store<State>) {
    if let Some(t) = host.timeout {
        let ticks = (t.as_nanos() / TICK.as_nanos()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
    }
}

/// A compiled component, ready to instantiate.
#[pyclass(frozen, module = "wasmai._host")]
struct NativeComponent {
    pre: InstancePre<State>,
    /// Milliseconds to compile, or to load the cached compilation when `cache_hit`.
    #[pyo3(get)]
    compile_ms: f64,
    #[pyo3(get)]
    cache_hit: bool,
    /// Hex sha256 of the component bytes.
    #[pyo3(get)]
    sha256: String,
    /// Exports wasmai:inference/image-classification.
    #[pyo3(get)]
    has_classifier: bool,
}

struct InstanceInner {
    store: Store<State>,
    instance: wasmtime::component::Instance,
    meta: metadata::Guest,
    model: model::Guest,
    classifier: Option<image_classification::Guest>,
    /// Captured guest output (empty when the host inherits stdio).
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// Set once a call trapped: the instance must not be used again.
    dead: Option<String>,
}

/// One Store and instance. Calls release the GIL; concurrent calls on one instance are refused.
#[pyclass(frozen, module = "wasmai._host")]
struct NativeInstance {
    host: Arc<HostInner>,
    #[pyo3(get)]
    instantiate_ms: f64,
    inner: Mutex<InstanceInner>,
}

type WasmTensor = wtypes::Tensor;

fn guest_error(e: wtypes::Error) -> PyErr {
    match e {
        wtypes::Error::BadImage(m) => err("inference", "bad-image", m),
        wtypes::Error::BadInput(m) => err("inference", "bad-input", m),
        wtypes::Error::Backend(b) => err("inference", &b.code, b.message),
        wtypes::Error::Internal(m) => err("inference", "internal", m),
    }
}

fn wit_type_name(t: wtypes::TensorType) -> &'static str {
    match t {
        wtypes::TensorType::Fp16 => "fp16",
        wtypes::TensorType::Fp32 => "fp32",
        wtypes::TensorType::Fp64 => "fp64",
        wtypes::TensorType::Bf16 => "bf16",
        wtypes::TensorType::U8 => "u8",
        wtypes::TensorType::I32 => "i32",
        wtypes::TensorType::I64 => "i64",
    }
}

fn parse_wit_type(name: &str) -> Option<wtypes::TensorType> {
    Some(match nn::parse_type(name)? {
        bindings::wasi::nn::tensor::TensorType::Fp16 => wtypes::TensorType::Fp16,
        bindings::wasi::nn::tensor::TensorType::Fp32 => wtypes::TensorType::Fp32,
        bindings::wasi::nn::tensor::TensorType::Fp64 => wtypes::TensorType::Fp64,
        bindings::wasi::nn::tensor::TensorType::Bf16 => wtypes::TensorType::Bf16,
        bindings::wasi::nn::tensor::TensorType::U8 => wtypes::TensorType::U8,
        bindings::wasi::nn::tensor::TensorType::I32 => wtypes::TensorType::I32,
        bindings::wasi::nn::tensor::TensorType::I64 => wtypes::TensorType::I64,
    })
}

impl NativeInstance {
    /// Lock the instance and run `f` on it without the GIL; a trap marks the instance dead and
    /// becomes a "component" HostError carrying the trap and the tail of the guest's stderr.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        what: &str,
        f: impl FnOnce(&mut InstanceInner) -> wasmtime::Result<T> + Send,
    ) -> PyResult<T> {
        let host = &self.host;
        py.detach(|| {
            guarded(|| {
                let mut inner = match self.inner.try_lock() {
                    Ok(guard) => guard,
                    // Poisoned by a host panic: `dead` is already set, so the next check refuses.
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        return Err(err(
                            "component",
                            "busy",
                            "this instance is in use by another thread (use one instance per thread)",
                        ))
                    }
                };
                if let Some(reason) = &inner.dead {
                    return Err(err(
                        "component",
                        "dead",
                        format!("the instance is unusable after an earlier trap ({reason}); instantiate again"),
                    ));
                }
                set_deadline(host, &mut inner.store);
                inner.store.data_mut().limiter.refused_bytes = None;
                let result = catch_unwind(AssertUnwindSafe(|| f(&mut inner)));
                match result {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => {
                        let mut msg = match e.downcast_ref::<wasmtime::Trap>() {
                            Some(wasmtime::Trap::Interrupt) => format!(
                                "{what} timed out after {:.3} s",
                                host.timeout.map_or(0.0, |t| t.as_secs_f64())
                            ),
                            Some(trap) => format!("guest trapped in {what}: {trap}"),
                            None => format!("{what} failed: {}", e.root_cause()),
                        };
                        let memory_note = inner.store.data().limiter.refusal_note();
                        if let Some(note) = &memory_note {
                            msg.push_str(&format!(" after {note}"));
                        }
                        let stderr = inner.stderr.contents();
                        let text = String::from_utf8_lossy(&stderr);
                        let tail: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                        if !tail.is_empty() {
                            let joined = tail[tail.len().saturating_sub(3)..].join(" | ");
                            msg.push_str(&format!(" (guest stderr: {joined})"));
                        }
                        inner.dead = Some(msg.clone());
                        let code = if matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) {
                            "timeout"
                        } else if memory_note.is_some() {
                            "memory-limit"
                        } else {
                            "trap"
                        };
                        Err(err("component", code, msg))
                    }
                    Err(panic) => {
                        inner.dead = Some("host panic".into());
                        std::panic::resume_unwind(panic)
                    }
                }
            })
        })
    }
}

fn spec_dict<'py>(py: Python<'py>, spec: &wtypes::TensorSpec) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &spec.name)?;
    d.set_item("dtype", wit_type_name(spec.ty))?;
    let dims = PyList::empty(py);
    for dim in &spec.dims {
        match dim {
            wtypes::Dim::Fixed(n) => dims.append(*n)?,
            wtypes::Dim::Dynamic(s) => dims.append(s)?,
        }
    }
    d.set_item("shape", dims)?;
    Ok(d)
}

#[pymethods]
impl NativeInstance {
    /// metadata.info() as a dict (WIT field names with '-' -> '_'; types lower case).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = self.call(py, "metadata.info", |i| i.meta.call_info(&mut i.store))?;
        let d = PyDict::new(py);
        d.set_item("name", &info.name)?;
        d.set_item("version", &info.version)?;
        d.set_item("task", &info.task)?;
        let inputs = PyList::empty(py);
        for s in &info.inputs {
            inputs.append(spec_dict(py, s)?)?;
        }
        d.set_item("inputs", inputs)?;
        let outputs = PyList::empty(py);
        for s in &info.outputs {
            outputs.append(spec_dict(py, s)?)?;
        }
        d.set_item("outputs", outputs)?;
        d.set_item("labels", &info.labels)?;
        d.set_item("model_sha256", &info.model_sha256)?;
        d.set_item("placement", &info.placement)?;
        d.set_item("wasmai_version", &info.wasmai_version)?;
        d.set_item("toolchain", info.toolchain.iter().map(|(a, b)| vec![a.clone(), b.clone()]).collect::<Vec<_>>())?;
        match &info.preprocess {
            None => d.set_item("preprocess", py.None())?,
            Some(p) => {
                let pd = PyDict::new(py);
                pd.set_item("resize_shorter", p.resize_shorter)?;
                pd.set_item("crop_height", p.crop_height)?;
                pd.set_item("crop_width", p.crop_width)?;
                pd.set_item("layout", &p.layout)?;
                pd.set_item("color", &p.color)?;
                pd.set_item("mean", &p.mean)?;
                pd.set_item("std", &p.std)?;
                d.set_item("preprocess", pd)?;
            }
        }
        Ok(d)
    }

    /// model.load().
    fn load(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, "model.load", |i| i.model.call_load(&mut i.store))?.map_err(guest_error)
    }

    /// model.infer(inputs): inputs and outputs are (name, dtype, dims, bytes) tuples.
    fn infer<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<(String, String, Vec<u32>, Bound<'py, PyBytes>)>,
    ) -> PyResult<Vec<(String, String, Vec<u32>, Bound<'py, PyBytes>)>> {
        let mut tensors = Vec::with_capacity(inputs.len());
        for (name, dtype, dims, data) in inputs {
            let ty = parse_wit_type(&dtype)
                .ok_or_else(|| err("inference", "invalid-argument", format!("tensor '{name}': unknown dtype '{dtype}'")))?;
            tensors.push(WasmTensor { name, ty, dimensions: dims, data: data.as_bytes().to_vec() });
        }
        let outputs = self.call(py, "model.infer", move |i| i.model.call_infer(&mut i.store, &tensors))?;
        let outputs = outputs.map_err(guest_error)?;
        Ok(outputs
            .into_iter()
            .map(|t| (t.name, wit_type_name(t.ty).to_string(), t.dimensions, PyBytes::new(py, &t.data)))
            .collect())
    }

    /// image-classification.classify(image, top_k) -> [(label, index, score)].
    fn classify(&self, py: Python<'_>, image: &Bound<'_, PyBytes>, top_k: u32) -> PyResult<Vec<(String, u32, f32)>> {
        let bytes = image.as_bytes().to_vec();
        let is_classifier = match self.inner.lock() {
            Ok(i) => i.classifier.is_some(),
            Err(p) => p.into_inner().classifier.is_some(),
        };
        if !is_classifier {
            return Err(err(
                "component",
                "unsupported",
                "this component does not export wasmai:inference/image-classification (it is a tensor-model)",
            ));
        }
        let preds = self.call(py, "image-classification.classify", move |i| match &i.classifier {
            Some(c) => c.call_classify(&mut i.store, &bytes, top_k),
            None => Err(wasmtime::format_err!("not an image classifier")),
        })?;
        Ok(preds.map_err(guest_error)?.into_iter().map(|p| (p.label, p.index, p.score)).collect())
    }

    /// image-classification.last-timings() as a dict of microseconds.
    fn last_timings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = self.call(py, "image-classification.last-timings", |i| match &i.classifier {
            Some(c) => c.call_last_timings(&mut i.store),
            None => Err(wasmtime::format_err!("not an image classifier")),
        })?;
        let d = PyDict::new(py);
        d.set_item("decode_us", t.decode_us)?;
        d.set_item("preprocess_us", t.preprocess_us)?;
        d.set_item("inference_us", t.inference_us)?;
        d.set_item("postprocess_us", t.postprocess_us)?;
        Ok(d)
    }

    /// Host-side statistics of this instance.
    fn host_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let data = inner.store.data();
        let d = PyDict::new(py);
        d.set_item("ort_run_ns", data.stats.ort_run_ns)?;
        d.set_item("compute_calls", data.stats.compute_calls)?;
        d.set_item("execution_provider", &data.stats.execution_provider)?;
        d.set_item("linear_memory_bytes", data.limiter.peak_bytes)?;
        Ok(d)
    }

    /// model.release().
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, "model.release", |i| i.model.call_release(&mut i.store))
    }

    /// Call any exported function by name, with arguments converted from Python by the
    /// function's WIT parameter types and the result converted back (None when it has none);
    /// a way for tests and diagnostics to reach exports beyond `wasmai:inference` (the
    /// component still had to pass the normal export check to be loaded). `name` is a
    /// world-level function (`read-file`) or `<interface>#<function>`. See `py_to_val` /
    /// `val_to_py` for the mapping. Same sandbox, timeout and trap handling as every call.
    #[pyo3(signature = (name, *args))]
    fn call_export<'py>(&self, py: Python<'py>, name: String, args: Vec<Bound<'py, PyAny>>) -> PyResult<Py<PyAny>> {
        let (func, params, n_results) = {
            let mut guard = match self.inner.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(err("component", "busy", "this instance is in use by another thread"))
                }
            };
            let inner = &mut *guard;
            let index = match name.split_once('#') {
                Some((iface, f)) => inner
                    .instance
                    .get_export_index(&mut inner.store, None, iface)
                    .and_then(|i| inner.instance.get_export_index(&mut inner.store, Some(&i), f)),
                None => inner.instance.get_export_index(&mut inner.store, None, &name),
            };
            let func = index
                .and_then(|i| inner.instance.get_func(&mut inner.store, i))
                .ok_or_else(|| err("component", "unsupported", format!("the component exports no function '{name}'")))?;
            let ty = func.ty(&inner.store);
            let params: Vec<(String, Type)> = ty.params().map(|(n, t)| (n.to_string(), t)).collect();
            let n_results = ty.results().len();
            (func, params, n_results)
        };
        if args.len() != params.len() {
            return Err(err(
                "component",
                "argument",
                format!("{name} takes {} argument(s), got {}", params.len(), args.len()),
            ));
        }
        let mut values = Vec::with_capacity(args.len());
        for (arg, (pname, ty)) in args.iter().zip(&params) {
            values.push(py_to_val(arg, ty).map_err(|m| err("component", "argument", format!("{name}({pname}): {m}")))?);
        }
        let out = self.call(py, &name, move |i| {
            let mut out = vec![Val::Bool(false); n_results];
            func.call(&mut i.store, &values, &mut out)?;
            Ok(out)
        })?;
        match out.first() {
            None => Ok(py.None()),
            Some(v) => val_to_py(py, v).map_err(|m| err("component", "unsupported", format!("{name}: {m}"))),
        }
    }

    /// The guest's captured (stdout, stderr) so far: at most 64 KiB each, empty when the host
    /// inherits stdio.
    fn output<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (PyBytes::new(py, &inner.stdout.contents()), PyBytes::new(py, &inner.stderr.contents()))
    }
}

/// Python value -> component value of type `ty`: bool, int, float, str (also for `char`),
/// list (or bytes for `list<u8>`), tuple, None / value for `option`, `("ok", v)` / `("err", v)`
/// for `result` (v None for no payload), str for `enum`, dict for `record`. Other types
/// (variants, flags, resources, maps, streams) are refused. Errors are messages.
fn py_to_val(obj: &Bound<'_, PyAny>, ty: &Type) -> Result<Val, String> {
    fn ex<'a, 'py, T: pyo3::FromPyObject<'a, 'py>>(obj: &'a Bound<'py, PyAny>, what: &str) -> Result<T, String> {
        obj.extract::<T>().map_err(|_| format!("expected {what}, got {}", obj.get_type().name().map_or("?".into(), |n| n.to_string())))
    }
    Ok(match ty {
        Type::Bool => Val::Bool(ex(obj, "bool")?),
        Type::S8 => Val::S8(ex(obj, "s8")?),
        Type::U8 => Val::U8(ex(obj, "u8")?),
        Type::S16 => Val::S16(ex(obj, "s16")?),
        Type::U16 => Val::U16(ex(obj, "u16")?),
        Type::S32 => Val::S32(ex(obj, "s32")?),
        Type::U32 => Val::U32(ex(obj, "u32")?),
        Type::S64 => Val::S64(ex(obj, "s64")?),
        Type::U64 => Val::U64(ex(obj, "u64")?),
        Type::Float32 => Val::Float32(ex(obj, "f32")?),
        Type::Float64 => Val::Float64(ex(obj, "f64")?),
        Type::Char => {
            let s: String = ex(obj, "a one-character str")?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(format!("expected a one-character str, got {s:?}")),
            }
        }
        Type::String => Val::String(ex(obj, "str")?),
        Type::List(list) => {
            let elem = list.ty();
            if let (Type::U8, Ok(bytes)) = (&elem, obj.cast::<PyBytes>()) {
                Val::List(bytes.as_bytes().iter().map(|&b| Val::U8(b)).collect())
            } else {
                let mut items = Vec::new();
                for item in obj.try_iter().map_err(|_| "expected a list".to_string())? {
                    items.push(py_to_val(&item.map_err(|e| e.to_string())?, &elem)?);
                }
                Val::List(items)
            }
        }
        Type::Tuple(tuple) => {
            let items: Vec<Bound<'_, PyAny>> = ex(obj, "a tuple")?;
            if items.len() != tuple.types().len() {
                return Err(format!("expected a tuple of {}, got {}", tuple.types().len(), items.len()));
            }
            Val::Tuple(items.iter().zip(tuple.types()).map(|(x, t)| py_to_val(x, &t)).collect::<Result<_, _>>()?)
        }
        Type::Option(option) => {
            if obj.is_none() {
                Val::Option(None)
            } else {
                Val::Option(Some(Box::new(py_to_val(obj, &option.ty())?)))
            }
        }
        Type::Result(result) => {
            let (tag, value): (String, Bound<'_, PyAny>) = ex(obj, "(\"ok\" | \"err\", value)")?;
            let payload = |t: Option<Type>| -> Result<Option<Box<Val>>, String> {
                match t {
                    Some(t) => Ok(Some(Box::new(py_to_val(&value, &t)?))),
                    None if value.is_none() => Ok(None),
                    None => Err(format!("the {tag} case has no payload: give None")),
                }
            };
            match tag.as_str() {
                "ok" => Val::Result(Ok(payload(result.ok())?)),
                "err" => Val::Result(Err(payload(result.err())?)),
                _ => return Err(format!("a result is (\"ok\", value) or (\"err\", value), not {tag:?}")),
            }
        }
        Type::Enum(e) => {
            let s: String = ex(obj, "str (an enum case)")?;
            if !e.names().any(|n| n == s) {
                return Err(format!("{s:?} is not a case of the enum"));
            }
            Val::Enum(s)
        }
        Type::Record(record) => {
            let dict = obj.cast::<PyDict>().map_err(|_| "expected a dict (record)".to_string())?;
            let mut fields = Vec::new();
            for f in record.fields() {
                let item = dict
                    .get_item(f.name)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("record field '{}' is missing", f.name))?;
                fields.push((f.name.to_string(), py_to_val(&item, &f.ty)?));
            }
            Val::Record(fields)
        }
        other => return Err(format!("arguments of type {other:?} are not supported")),
    })
}

/// Component value -> Python, the inverse of `py_to_val` (lists as lists, variants as
/// `(case, payload or None)`, flags as a list of names). Resources, maps and streams are refused.
fn val_to_py(py: Python<'_>, v: &Val) -> Result<Py<PyAny>, String> {
    use pyo3::IntoPyObjectExt;
    let r = |x: PyResult<Py<PyAny>>| x.map_err(|e| e.to_string());
    let tagged = |tag: &str, payload: &Option<Box<Val>>| -> Result<Py<PyAny>, String> {
        let value = match payload {
            Some(p) => val_to_py(py, p)?,
            None => py.None(),
        };
        r((tag.to_string(), value).into_py_any(py))
    };
    match v {
        Val::Bool(b) => r(b.into_py_any(py)),
        Val::S8(x) => r(x.into_py_any(py)),
        Val::U8(x) => r(x.into_py_any(py)),
        Val::S16(x) => r(x.into_py_any(py)),
        Val::U16(x) => r(x.into_py_any(py)),
        Val::S32(x) => r(x.into_py_any(py)),
        Val::U32(x) => r(x.into_py_any(py)),
        Val::S64(x) => r(x.into_py_any(py)),
        Val::U64(x) => r(x.into_py_any(py)),
        Val::Float32(x) => r(x.into_py_any(py)),
        Val::Float64(x) => r(x.into_py_any(py)),
        Val::Char(c) => r(c.to_string().into_py_any(py)),
        Val::String(s) => r(s.into_py_any(py)),
        Val::Enum(s) => r(s.into_py_any(py)),
        Val::List(items) | Val::FixedLengthList(items) | Val::Tuple(items) => {
            let converted = items.iter().map(|x| val_to_py(py, x)).collect::<Result<Vec<_>, _>>()?;
            if matches!(v, Val::Tuple(_)) {
                r(pyo3::types::PyTuple::new(py, converted).and_then(|t| t.into_py_any(py)))
            } else {
                r(converted.into_py_any(py))
            }
        }
        Val::Record(fields) => {
            let d = PyDict::new(py);
            for (k, x) in fields {
                d.set_item(k, val_to_py(py, x)?).map_err(|e| e.to_string())?;
            }
            r(d.into_py_any(py))
        }
        Val::Variant(case, payload) => tagged(case, payload),
        Val::Option(None) => Ok(py.None()),
        Val::Option(Some(x)) => val_to_py(py, x),
        Val::Result(Ok(payload)) => tagged("ok", payload),
        Val::Result(Err(payload)) => tagged("err", payload),
        Val::Flags(names) => r(names.clone().into_py_any(py)),
        other => Err(format!("results of this kind are not supported: {other:?}")),
    }
}

/// Names of the ONNX Runtime execution providers compiled into the loaded library.
#[pyfunction]
fn available_providers(ort_library: String) -> PyResult<Vec<String>> {
    guarded(|| {
        nn::init_ort(&ort_library).map_err(|m| err("component", "onnxruntime", m))?;
        use ort::ep::ExecutionProvider;
        let mut out = vec!["CPUExecutionProvider".to_string()];
        if ort::ep::CUDA::is_available().unwrap_or(false) {
            out.push("CUDAExecutionProvider".into());
        }
        if ort::ep::ROCm::is_available().unwrap_or(false) {
            out.push("ROCMExecutionProvider".into());
        }
        Ok(out)
    })
}

#[pymodule]
fn _host(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeHost>()?;
    m.add_class::<NativeComponent>()?;
    m.add_class::<NativeInstance>()?;
    m.add_function(wrap_pyfunction!(available_providers, m)?)?;
    m.add("HostError", m.py().get_type::<HostError>())?;
    m.add("WASI_NN_VERSION", "0.2.0-rc-2024-10-28")?;
    Ok(())
}
