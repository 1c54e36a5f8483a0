//! `NativeHost`: the engine, ONNX Runtime and the load-by-name registry.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::guarded;
use super::instance::{NativeComponent, NativeInstance};
use crate::engine::sandbox::{Grants, Preopen};
use crate::engine::{HostEngine, Settings};
use crate::error::{Error, Fault};
use crate::nn::backend::Options;
use crate::nn::quota::Limits;
use crate::nn::{onnx, WasiNnConfig};

#[pyclass(frozen, module = "wasmai._host")]
pub struct NativeHost {
    pub(super) engine: Arc<HostEngine>,
}

/// The thread [`prepare`] started, joined by the next host made.
static PREPARING: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

/// For a process that makes one host for one call (`wasmai run`'s worker process): start what
/// that host needs before its settings are known, on a thread of its own, and return at once:
/// load ONNX Runtime from `ort_library` and create its environment with a global pool of
/// `intra_op_threads` whose threads do not spin-wait for work (`onnx::pooled_environment`; the
/// arena is left to the host, whose `ort_memory_limit_mb` caps it). The worker calls it first, so
/// that this overlaps its Python imports (spinning pool threads would take a core from them and
/// from the command's process for ~40 ms, and a single call gains nothing from them); the next
/// `NativeHost` waits for the thread. A failure on the thread is left to that host, which tries
/// again and reports it. Errors: the thread cannot be started (`onnxruntime`).
#[pyfunction]
pub fn prepare(ort_library: String, intra_op_threads: usize) -> PyResult<()> {
    let mut slot = PREPARING.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        let thread = std::thread::Builder::new().name("wasmai-prepare".into()).spawn(move || {
            if init_ort(&ort_library).is_ok() {
                let _ = onnx::pooled_environment(intra_op_threads, false);
            }
        });
        *slot = Some(thread.map_err(|e| Error::new(Fault::OnnxRuntime, format!("cannot start a thread: {e}")))?);
    }
    Ok(())
}

/// Wait for the thread [`prepare`] started, if any (its failure is the caller's to find again).
fn prepared() {
    let thread = PREPARING.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}

fn init_ort(ort_library: &str) -> Result<(), Error> {
    onnx::load_library(ort_library).map_err(|m| Error::new(Fault::OnnxRuntime, m))
}

/// Create (first host) or join ONNX Runtime's process-wide environment and its one intra-op pool.
/// Returns `None` when this host's graphs run on that shared pool (`intra_op_threads` is the size
/// it was created with; 0 = ONNX Runtime's default), else `Some(intra_op_threads)`: the host asked
/// for another size (e.g. `bench --threads 1` after a default host in the same process, or the
/// default after `--threads 1`), so each of its graphs gets its own pool of that size (0: ONNX
/// Runtime's default), as `--threads` promises.
fn thread_pool(intra_op_threads: usize, ort_memory_limit: usize) -> Result<Option<usize>, Error> {
    let pool = onnx::environment(intra_op_threads, ort_memory_limit).map_err(|m| Error::new(Fault::OnnxRuntime, m))?;
    Ok((intra_op_threads != pool).then_some(intra_op_threads))
}

#[pymethods]
impl NativeHost {
    /// Create a host. `ort_library` is the path of libonnxruntime (loaded once per process);
    /// `graphs` are (name, path) pairs for wasi-nn load-by-name; `cache_dir` holds serialized
    /// compiled components; `memory_limit_mb` is each instance's memory budget (MiB: all its
    /// linear memories and tables, the wasi-nn tensors the host holds for it and the bytes of the
    /// graphs it loads); `ort_memory_limit_mb` caps ONNX Runtime's CPU arena for the whole
    /// process (MiB; default `memory_limit_mb`; the first host's value holds); `timeout_s` each
    /// guest call (seconds; epoch interruption, 10 ms resolution). `intra_op_threads` sizes ONNX
    /// Runtime's one process-wide intra-op pool, shared by every graph (0 = ONNX Runtime's
    /// default); the first host of a process creates it, and a later host asking for another
    /// non-zero size is refused (`config`).
    ///
    /// Sandbox grants (default: none): `dirs` are (host directory, guest path, read_only)
    /// preopens, `env` (name, value) environment variables, `inherit_stdio` sends guest
    /// stdout/stderr to the process's. Limits: `max_tensor_bytes` bounds each wasi-nn tensor
    /// (`too-large`), `max_graphs` the live wasi-nn graphs per instance (`security`).
    ///
    /// `graph_cache_mb`: the byte budget (MiB of graph bytes) of the graphs guests load, shared
    /// by content among this host's instances (`nn::cache`; 0 = no sharing). `instance_slots`:
    /// 0 allocates each instance's memories when it is created; N > 0 uses wasmtime's pooling
    /// allocator with room for N live instances (`instantiate` of one more fails).
    /// The values are validated by the caller (`wasmai.sandbox`). Releases the GIL while it waits
    /// for [`prepare`]'s thread (if one runs) and starts ONNX Runtime.
    #[new]
    #[pyo3(signature = (ort_library, cache_dir, graphs, allow_target_fallback, intra_op_threads, memory_limit_mb,
                        timeout_s=None, dirs=Vec::new(), env=Vec::new(), inherit_stdio=false,
                        max_tensor_bytes=None, max_graphs=None, ort_memory_limit_mb=None, graph_cache_mb=0, instance_slots=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
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
        ort_memory_limit_mb: Option<usize>,
        graph_cache_mb: usize,
        instance_slots: usize,
    ) -> PyResult<Self> {
        let ort_memory_limit = ort_memory_limit_mb.unwrap_or(memory_limit_mb).saturating_mul(1 << 20);
        // ONNX Runtime's start, most of a host's, without the GIL.
        let own_intra_threads = py.detach(|| {
            guarded(|| {
                prepared();
                init_ort(&ort_library)?;
                thread_pool(intra_op_threads, ort_memory_limit)
            })
        })?;
        guarded(|| {
            let timeout = timeout_s
                .map(Duration::try_from_secs_f64)
                .transpose()
                .map_err(|e| Error::new(Fault::Config, format!("timeout: {e}")))?;
            let nn = WasiNnConfig::new(
                graphs.into_iter().map(|(n, p)| (n, PathBuf::from(p))).collect(),
                // The empty folder is set by HostEngine::new (it lives in the cache folder).
                Options { allow_target_fallback, no_external_data_dir: PathBuf::new(), own_intra_threads },
                Limits { max_tensor_bytes, max_graphs },
                graph_cache_mb.saturating_mul(1 << 20),
            );
            let grants = Grants {
                dirs: dirs
                    .into_iter()
                    .map(|(host, guest, read_only)| Preopen { host: PathBuf::from(host), guest, read_only })
                    .collect(),
                env,
                inherit_stdio,
            };
            let settings = Settings {
                cache_dir: PathBuf::from(cache_dir),
                nn,
                memory_limit_bytes: memory_limit_mb.saturating_mul(1 << 20),
                timeout,
                grants,
                instance_slots,
            };
            Ok(Self { engine: Arc::new(HostEngine::new(settings)?) })
        })
    }

    /// Compile (or load from the on-disk cache) a component from its bytes. Releases the GIL.
    fn load_component(&self, py: Python<'_>, wasm: &Bound<'_, PyBytes>) -> PyResult<NativeComponent> {
        let bytes = wasm.as_bytes().to_vec();
        let engine = self.engine.clone();
        py.detach(move || guarded(|| engine.load(&bytes)).map(NativeComponent::from))
    }

    /// Load a component file: its compilation is cached by content, and an unchanged file (same
    /// path, size, inode, mtime) is neither read nor hashed again. Releases the GIL.
    fn load_component_file(&self, py: Python<'_>, path: String) -> PyResult<NativeComponent> {
        let engine = self.engine.clone();
        py.detach(move || guarded(|| engine.load_file(&path)).map(NativeComponent::from))
    }

    /// The shared graphs' counters: `graphs` (sessions cached now), `bytes` (their graph bytes),
    /// `max_bytes` (the budget), `hits` and `misses` (loads that shared a cached graph or made a
    /// new one), `by_digest` (the hits by a `sha256:<hex>` name, without graph bytes) and
    /// `evictions`.
    fn graph_cache_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.engine.graph_cache_stats();
        let d = PyDict::new(py);
        d.set_item("graphs", s.graphs)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("max_bytes", s.max_bytes)?;
        d.set_item("hits", s.hits)?;
        d.set_item("by_digest", s.by_digest)?;
        d.set_item("misses", s.misses)?;
        d.set_item("evictions", s.evictions)?;
        Ok(d)
    }

    /// Create a new Store and instance of `component` (runs no export). Releases the GIL.
    fn instantiate(&self, py: Python<'_>, component: &NativeComponent) -> PyResult<NativeInstance> {
        let engine = self.engine.clone();
        py.detach(move || guarded(|| engine.instantiate(&component.ready)).map(|i| NativeInstance::new(engine, i)))
    }
}

/// Names of the ONNX Runtime execution providers compiled into the loaded library (CPU first).
#[pyfunction]
pub fn available_providers(ort_library: String) -> PyResult<Vec<String>> {
    guarded(|| {
        init_ort(&ort_library)?;
        Ok(onnx::available_providers())
    })
}

/// The last messages ONNX Runtime logged in this process (warnings and errors, at most 64, oldest
/// first); the host keeps them instead of letting ONNX Runtime write to stderr.
#[pyfunction]
pub fn onnxruntime_log() -> Vec<String> {
    onnx::recent_log()
}
