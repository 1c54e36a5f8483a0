//! The WIT glue: the four `wasi:nn` interfaces implemented against a [`WasiNnView`] (the store's
//! [`WasiNnCtx`] and its resource table), as wasmtime-wasi-nn's `wit.rs` does. Every failure
//! becomes a wasi-nn `error` resource; only a broken resource table traps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable, ResourceType, WasmList};
use wasmtime::StoreContextMut;

use super::backend::{Backend, Options};
use super::cache::{Digests, GraphCache};
use super::onnx::OnnxBackend;
use super::quota::{Limits, Quota};
use super::registry::Registry;
use super::{check_inputs, DeadlineExceeded, Error, ExecutionContext, Graph, Tensor, TensorData};
use crate::bindings::wasi::nn::errors::{self, ErrorCode};
use crate::bindings::wasi::nn::graph::{self, ExecutionTarget, GraphEncoding};
use crate::bindings::wasi::nn::inference;
use crate::bindings::wasi::nn::tensor::TensorType;
use crate::budget::{Budget, Charge, Kind};

/// Host-wide wasi-nn configuration, shared by every instance: the backends, the load-by-name
/// registry, the shared graphs guests loaded, session options and the sandbox's limits.
pub struct WasiNnConfig {
    backends: Vec<Box<dyn Backend>>,
    registry: Registry,
    pub cache: GraphCache,
    pub options: Options,
    pub limits: Limits,
}

impl WasiNnConfig {
    /// ONNX Runtime as the one backend; `graphs` are (name, file) pairs for `load-by-name`;
    /// `graph_cache_bytes` is the byte budget of the shared graphs (0: no sharing).
    pub fn new(graphs: Vec<(String, PathBuf)>, options: Options, limits: Limits, graph_cache_bytes: usize) -> Self {
        Self {
            backends: vec![Box::new(OnnxBackend)],
            registry: Registry::new(graphs),
            cache: GraphCache::new(graph_cache_bytes),
            options,
            limits,
        }
    }

    /// The backend for `encoding` (`autodetect`: the first whose `detect` accepts `bytes`).
    fn backend(&self, encoding: GraphEncoding, bytes: Option<&[u8]>) -> Result<&dyn Backend, Error> {
        let found = match encoding {
            GraphEncoding::Autodetect => {
                self.backends.iter().find(|b| bytes.is_some_and(|x| b.detect(x))).or(self.backends.first())
            }
            wanted => self.backends.iter().find(|b| b.encoding() == wanted),
        };
        found.map(|b| b.as_ref()).ok_or_else(|| {
            let supported: Vec<String> = self.backends.iter().map(|b| format!("{:?}", b.encoding())).collect();
            Error::new(
                ErrorCode::InvalidEncoding,
                format!(
                    "graph encoding {encoding:?} is not supported by this host ({} and autodetect are)",
                    supported.join(", ").to_lowercase()
                ),
            )
        })
    }
}

/// Per-instance statistics, read by `Instance.host_stats()`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Wall time of the last backend run, in nanoseconds.
    pub run_ns: u64,
    pub compute_calls: u64,
    pub execution_provider: String,
}

/// Per-instance wasi-nn state: the shared configuration, the graph quota and statistics.
pub struct WasiNnCtx {
    pub config: Arc<WasiNnConfig>,
    quota: Quota,
    pub stats: Stats,
    /// When the current guest call must end (set by the engine before each call; None = no
    /// timeout): a `compute` still running then is stopped and the call traps.
    pub deadline: Option<Instant>,
    /// The instance's memory budget: tensors held and graphs loaded are charged to it.
    pub budget: Arc<Budget>,
    /// The digests of the graphs its component's instances loaded (shared by those instances).
    digests: Arc<Digests>,
}

impl WasiNnCtx {
    /// The wasi-nn state of a new instance of the component whose instances share `digests`.
    pub fn new(config: Arc<WasiNnConfig>, budget: Arc<Budget>, digests: Arc<Digests>) -> Self {
        Self { config, quota: Quota::default(), stats: Stats::default(), deadline: None, budget, digests }
    }
}

/// What the glue works on: the instance's wasi-nn state and the store's resource table.
pub struct WasiNnView<'a> {
    ctx: &'a mut WasiNnCtx,
    table: &'a mut ResourceTable,
}

impl<'a> WasiNnView<'a> {
    pub fn new(ctx: &'a mut WasiNnCtx, table: &'a mut ResourceTable) -> Self {
        Self { ctx, table }
    }

    fn error(&mut self, e: Error) -> wasmtime::Result<Resource<Error>> {
        Ok(self.table.push(e)?)
    }

    /// Push a loaded graph, or the error, as the guest's result.
    fn graph_result(
        &mut self,
        result: Result<Graph, Error>,
    ) -> wasmtime::Result<Result<Resource<Graph>, Resource<Error>>> {
        match result {
            Ok(g) => Ok(Ok(self.table.push(g)?)),
            Err(e) => Ok(Err(self.error(e)?)),
        }
    }
}

struct WasiNn;

impl HasData for WasiNn {
    type Data<'a> = WasiNnView<'a>;
}

/// Add the `wasi:nn` imports to `linker`; `view` gives the glue its view of the store data.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, view: fn(&mut T) -> WasiNnView<'_>) -> wasmtime::Result<()> {
    errors::add_to_linker::<T, WasiNn>(linker, view)?;
    add_tensor_to_linker(linker, view)?;
    graph::add_to_linker::<T, WasiNn>(linker, view)?;
    inference::add_to_linker::<T, WasiNn>(linker, view)?;
    Ok(())
}

impl errors::Host for WasiNnView<'_> {}

impl errors::HostError for WasiNnView<'_> {
    fn code(&mut self, self_: Resource<Error>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&self_)?.code)
    }
    fn data(&mut self, self_: Resource<Error>) -> wasmtime::Result<String> {
        Ok(self.table.get(&self_)?.data.clone())
    }
    fn drop(&mut self, rep: Resource<Error>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl WasiNnView<'_> {
    /// Admit a new tensor of `len` bytes: its charge to the instance's budget, or the error
    /// `compute` will answer for it (`too-large`: over the tensor limit or the budget). The
    /// constructor cannot return an error, so lengths are checked when the tensor is used.
    pub fn admit_tensor(&mut self, len: usize) -> Result<Charge, Error> {
        if let Some(e) = self.ctx.config.limits.tensor_too_large("a tensor", len) {
            return Err(e);
        }
        self.ctx
            .budget
            .charge(Kind::Tensor, len, "the host refused a tensor of")
            .map_err(|m| Error::new(ErrorCode::TooLarge, m))
    }
}

/// The `wasi:nn/tensor` interface, linked by hand rather than through the generated
/// `tensor::add_to_linker` so that no tensor byte is copied more than once on the host:
///
/// * `constructor(dimensions, ty, data)` lifts `data` as a [`WasmList`] (a view of the guest's
///   memory, no copy) and copies it straight into the tensor's shared buffer; the generated glue
///   would lift it into a `Vec` first.
/// * `data()` returns the tensor's shared buffer (`Arc<[u8]>`), which wasmtime lowers into the
///   guest's memory with one memcpy; the generated glue would clone the bytes into a new `Vec`
///   first.
///
/// `dimensions`, `ty` and the resource's drop are as the generated glue does them.
fn add_tensor_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> WasiNnView<'_>,
) -> wasmtime::Result<()> {
    let mut inst = linker.instance(&format!("wasi:nn/tensor@{}", crate::WASI_NN_VERSION))?;
    inst.resource("tensor", ResourceType::host::<Tensor>(), move |mut store, rep| {
        view(store.data_mut()).table.delete(Resource::<Tensor>::new_own(rep))?;
        Ok(())
    })?;
    inst.func_wrap(
        "[constructor]tensor",
        move |mut store: StoreContextMut<'_, T>, (dimensions, ty, data): (Vec<u32>, TensorType, WasmList<u8>)| {
            // The one copy: from the guest's memory into the tensor's buffer, and only for bytes
            // the host admits (refused bytes are never copied).
            let tensor = match view(store.data_mut()).admit_tensor(data.len()) {
                Ok(charge) => {
                    Tensor::new(dimensions, ty, TensorData::Shared(Arc::from(data.as_le_slice(&store))), Some(charge))
                }
                Err(e) => Tensor {
                    shape: dimensions,
                    dtype: ty,
                    data: TensorData::Shared(Arc::from([])),
                    refused: Some(e),
                    _charge: None,
                },
            };
            Ok((view(store.data_mut()).table.push(tensor)?,))
        },
    )?;
    inst.func_wrap(
        "[method]tensor.dimensions",
        move |mut store: StoreContextMut<'_, T>, (this,): (Resource<Tensor>,)| {
            Ok((view(store.data_mut()).table.get(&this)?.shape.clone(),))
        },
    )?;
    inst.func_wrap("[method]tensor.ty", move |mut store: StoreContextMut<'_, T>, (this,): (Resource<Tensor>,)| {
        Ok((view(store.data_mut()).table.get(&this)?.dtype,))
    })?;
    inst.func_wrap("[method]tensor.data", move |mut store: StoreContextMut<'_, T>, (this,): (Resource<Tensor>,)| {
        Ok((view(store.data_mut()).table.get(&this)?.data.shared(),))
    })?;
    Ok(())
}

/// Charge a graph of `bytes` graph bytes to the instance's budget (`too-large` when over it).
fn charge_graph(budget: &Arc<Budget>, bytes: usize) -> Result<Arc<Charge>, Error> {
    let charge = budget.charge(Kind::Graph, bytes, "the host refused a graph of");
    charge.map(Arc::new).map_err(|m| Error::new(ErrorCode::TooLarge, m))
}

impl graph::Host for WasiNnView<'_> {
    fn load(
        &mut self,
        builder: Vec<Vec<u8>>,
        encoding: GraphEncoding,
        target: ExecutionTarget,
    ) -> wasmtime::Result<Result<Resource<Graph>, Resource<Error>>> {
        let config = self.ctx.config.clone();
        let budget = self.ctx.budget.clone();
        let digests = self.ctx.digests.clone();
        let result = self.ctx.quota.admit(config.limits.max_graphs).and_then(|live| {
            let bytes = builder.iter().map(Vec::len).sum();
            let charge = charge_graph(&budget, bytes)?;
            let backend = config.backend(encoding, builder.first().map(Vec::as_slice))?;
            // Identical bytes share one graph (nn::cache); the instance is charged its bytes
            // all the same, as if the graph were its own (SECURITY.md, shared graphs).
            let inner = config.cache.get_or_load(&builder, backend.encoding(), target, &digests, || {
                backend.load(&builder, target, &config.options)
            })?;
            Ok(Graph { inner, live, charge: Some(charge) })
        });
        self.graph_result(result)
    }

    /// A name the host registered (`--graph NAME=FILE`), or `sha256:<hex>`: the shared graph of
    /// those bytes if an instance of this component loaded them and it is still cached (charged
    /// like a load of the bytes; nn::cache), so an embedded graph's bytes need not be read again.
    fn load_by_name(&mut self, name: String) -> wasmtime::Result<Result<Resource<Graph>, Resource<Error>>> {
        let config = self.ctx.config.clone();
        let budget = self.ctx.budget.clone();
        let digests = self.ctx.digests.clone();
        let result = self.ctx.quota.admit(config.limits.max_graphs).and_then(|live| {
            if let Some((inner, bytes)) = config.cache.get_by_digest(&name, &digests) {
                return Ok(Graph { inner, live, charge: Some(charge_graph(&budget, bytes)?) });
            }
            let backend = config.backend(GraphEncoding::Onnx, None)?;
            let inner = config.registry.get(&name, backend, &config.options)?;
            Ok(Graph { inner, live, charge: None })
        });
        self.graph_result(result)
    }
}

impl graph::HostGraph for WasiNnView<'_> {
    fn init_execution_context(
        &mut self,
        self_: Resource<Graph>,
    ) -> wasmtime::Result<Result<Resource<ExecutionContext>, Resource<Error>>> {
        let g = self.table.get(&self_)?;
        let ctx = ExecutionContext { inner: g.inner.clone(), _live: g.live.clone(), _charge: g.charge.clone() };
        Ok(Ok(self.table.push(ctx)?))
    }
    fn drop(&mut self, rep: Resource<Graph>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl inference::Host for WasiNnView<'_> {}

impl inference::HostGraphExecutionContext for WasiNnView<'_> {
    fn compute(
        &mut self,
        self_: Resource<ExecutionContext>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> wasmtime::Result<Result<Vec<(String, Resource<Tensor>)>, Resource<Error>>> {
        // The tensors are owned handles: take them out of the table (no copy).
        let limits = self.ctx.config.limits;
        let mut tensors = Vec::with_capacity(inputs.len());
        let mut refused = None;
        for (name, r) in inputs {
            let mut t = self.table.delete(r)?;
            if let (None, Some(e)) = (&refused, t.refused.take()) {
                refused = Some(Error::new(e.code, format!("input tensor '{name}': {}", e.data)));
            }
            tensors.push((name, t));
        }
        let graph = self.table.get(&self_)?.inner.clone();
        let result = match refused {
            Some(e) => Err(e),
            None => check_inputs(graph.inputs(), tensors)
                .and_then(|checked| graph.compute(&checked, &limits, &self.ctx.budget, self.ctx.deadline)),
        };
        match result {
            Ok(computed) => {
                let stats = &mut self.ctx.stats;
                stats.run_ns = computed.run_ns;
                stats.compute_calls += 1;
                if stats.execution_provider != graph.execution_provider() {
                    stats.execution_provider = graph.execution_provider().to_string();
                }
                let mut out = Vec::with_capacity(computed.outputs.len());
                for (name, t) in computed.outputs {
                    out.push((name, self.table.push(t)?));
                }
                Ok(Ok(out))
            }
            // The call's deadline passed inside compute: trap, so the call ends as a timeout and
            // the instance is not used again.
            Err(e) if matches!(e.code, ErrorCode::Timeout) => Err(DeadlineExceeded(e.data).into()),
            Err(e) => Ok(Err(self.error(e)?)),
        }
    }
    fn drop(&mut self, rep: Resource<ExecutionContext>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}
