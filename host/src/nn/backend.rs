//! The interface between the wasi-nn glue and an ML framework (cf. wasmtime-wasi-nn's
//! `BackendInner` / `BackendGraph`). The glue matches and checks inputs ([`super::check_inputs`])
//! and enforces the quota; a backend loads graphs and runs them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::quota::Limits;
use super::{CheckedInput, Error, IoSpec, Tensor};
use crate::bindings::wasi::nn::graph::{ExecutionTarget, GraphEncoding};
use crate::budget::Budget;

/// Session settings the host passes to every backend.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run a gpu/tpu execution target on the CPU when the framework has no such device
    /// (otherwise `unsupported-operation`).
    pub allow_target_fallback: bool,
    /// An empty folder only the host's user can write (0700): where a backend that resolves a
    /// graph's external-data paths against a folder is pointed for graphs a guest loads, so they
    /// resolve to nothing (`engine::cache::Cache::empty_dir`).
    pub no_external_data_dir: PathBuf,
    /// `None`: the graphs run on the framework's one process-wide thread pool. `Some(n)`: this
    /// host asked for another size than that pool's, so each of its graphs gets a pool of its own
    /// with `n` intra-op threads.
    pub own_intra_threads: Option<usize>,
}

/// One ML framework.
pub trait Backend: Send + Sync {
    /// The graph encoding it loads.
    fn encoding(&self) -> GraphEncoding;
    /// Whether `bytes` look like a graph of this encoding (for `autodetect`).
    fn detect(&self, bytes: &[u8]) -> bool;
    /// Load a graph from its builders (the bytes the guest passed to `graph.load`). The graph
    /// must be self-contained: a backend refuses (`invalid-argument`) anything that would read
    /// other files.
    fn load(
        &self,
        builders: &[Vec<u8>],
        target: ExecutionTarget,
        options: &Options,
    ) -> Result<Arc<dyn BackendGraph>, Error>;
    /// Load a graph registered by the host from its file (for `load-by-name`); files it
    /// references must lie in the graph file's own folder.
    fn load_file(&self, path: &Path, options: &Options) -> Result<Arc<dyn BackendGraph>, Error>;
}

/// The outputs of one `compute`, in graph order, and the framework's own run time.
pub struct Computed {
    pub outputs: Vec<(String, Tensor)>,
    pub run_ns: u64,
}

/// A loaded graph. Shared by every execution context made from it (and, for registered graphs,
/// by every instance), so `compute` takes `&self`.
pub trait BackendGraph: Send + Sync {
    /// The graph's inputs, in graph order (what `compute` checks its inputs against).
    fn inputs(&self) -> &[IoSpec];
    /// The framework's name for the device the graph runs on (e.g. `CPUExecutionProvider`).
    fn execution_provider(&self) -> &str;
    /// Run the graph on checked inputs in graph order. Outputs over `limits.max_tensor_bytes`
    /// or the instance's `budget` are refused with `too-large` before they are copied; the
    /// outputs returned hold their charge. When `deadline` passes (while
    /// waiting for the graph or while it runs) the run is stopped and the error's code is
    /// `timeout`; the glue then traps the guest call.
    fn compute(
        &self,
        inputs: &[CheckedInput],
        limits: &Limits,
        budget: &Arc<Budget>,
        deadline: Option<Instant>,
    ) -> Result<Computed, Error>;
}
