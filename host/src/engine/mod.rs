//! The wasmtime side: one [`HostEngine`] (engine, linker, compiled-component cache, sandbox
//! grants, epoch ticker for timeouts) makes [`Ready`] components and [`Instance`]s; each
//! instance has its own [`State`] (WASI context, resource table, wasi-nn state, limiter).

pub mod cache;
pub mod limits;
pub mod sandbox;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::exports::wasmai::inference::{image_classification, metadata, model, model_tensors};
use crate::bindings::wasi::nn::tensor::TensorType;
use crate::bindings::wasmai::inference::types as wtypes;
use crate::budget::Budget;
use crate::error::{Error, Fault};
use crate::nn::{self, WasiNnConfig, WasiNnCtx, WasiNnView};
use cache::Cache;
use limits::Limiter;
use sandbox::{Captured, Grants};

/// Epoch ticks per second when a timeout is configured.
const TICK: Duration = Duration::from_millis(10);

/// The data of one Store.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub nn: WasiNnCtx,
    pub limiter: Limiter,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// `wasmai:inference/types` has types only.
impl wtypes::Host for State {}

/// Everything a host is created with (validated by the caller, `wasmai.sandbox`).
pub struct Settings {
    pub cache_dir: PathBuf,
    pub nn: WasiNnConfig,
    pub memory_limit_bytes: usize,
    pub timeout: Option<Duration>,
    pub grants: Grants,
    /// 0: every instance's memories and tables are allocated when it is created (wasmtime's
    /// on-demand allocator). N: wasmtime's pooling allocator with room for N live instances.
    pub instance_slots: usize,
}

/// Core instances, linear memories and tables a pool slot leaves room for per component
/// instance (a wasmai component has one core module, the WASI adapter and its shims: 4 core
/// instances, 2 memories, 2 tables).
const CORE_INSTANCES_PER_SLOT: u32 = 8;
const MEMORIES_PER_SLOT: u32 = 2;
const TABLES_PER_SLOT: u32 = 4;

/// wasmtime's pooling allocator for `slots` live component instances, each linear memory up to
/// `memory_limit_bytes` (the instance's budget; the limiter still charges every growth). The
/// pool reserves the address space of every slot once (`slots` x 2 memories x the budget, never
/// committed) and recycles memories with their copy-on-write image reset by `madvise`, so an
/// instantiation maps nothing new; the `slots + 1`-th live instance is refused.
fn pooling(slots: usize, memory_limit_bytes: usize) -> PoolingAllocationConfig {
    let slots = u32::try_from(slots).unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_SLOT))
        .total_memories(slots.saturating_mul(MEMORIES_PER_SLOT))
        .total_tables(slots.saturating_mul(TABLES_PER_SLOT))
        .max_memory_size(memory_limit_bytes);
    pool
}

pub struct HostEngine {
    engine: Engine,
    linker: Linker<State>,
    nn: Arc<WasiNnConfig>,
    cache: Cache,
    memory_limit_bytes: usize,
    pub timeout: Option<Duration>,
    ticker_stop: Arc<AtomicBool>,
    grants: Grants,
}

impl Drop for HostEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl HostEngine {
    pub fn new(mut settings: Settings) -> Result<Self, Error> {
        let cache = Cache::open(settings.cache_dir)?;
        settings.grants.check_apart_from(cache.dir())?;
        settings.nn.options.no_external_data_dir = cache.empty_dir()?;
        let engine_err = |e: wasmtime::Error| Error::new(Fault::Engine, format!("{e:#}"));
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        config.epoch_interruption(settings.timeout.is_some());
        if settings.instance_slots > 0 {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(
                settings.instance_slots,
                settings.memory_limit_bytes,
            )));
        }
        let engine = Engine::new(&config).map_err(engine_err)?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        nn::add_to_linker(&mut linker, |s: &mut State| WasiNnView::new(&mut s.nn, &mut s.table)).map_err(engine_err)?;
        wtypes::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(engine_err)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        if settings.timeout.is_some() {
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
                .map_err(|e| Error::new(Fault::Engine, format!("cannot start the epoch thread: {e}")))?;
        }
        Ok(Self {
            engine,
            linker,
            nn: Arc::new(settings.nn),
            cache,
            memory_limit_bytes: settings.memory_limit_bytes,
            timeout: settings.timeout,
            ticker_stop,
            grants: settings.grants,
        })
    }

    /// Compile (or load from the cache) a component from its bytes and link it.
    pub fn load(&self, bytes: &[u8]) -> Result<Ready, Error> {
        self.link(self.cache.compile(&self.engine, bytes)?)
    }

    /// Compile (or load from the cache) a component file and link it.
    pub fn load_file(&self, path: &str) -> Result<Ready, Error> {
        self.link(self.cache.compile_file(&self.engine, path)?)
    }

    /// Link a compiled component against this host and check it exports our worlds.
    fn link(&self, compiled: cache::Compiled) -> Result<Ready, Error> {
        let compile_ms = compiled.started.elapsed().as_secs_f64() * 1e3;
        let pre = self.linker.instantiate_pre(&compiled.component).map_err(|e| {
            Error::new(Fault::Link, format!("the component needs imports this host does not provide: {e:#}"))
        })?;
        let has_classifier = image_classification::GuestIndices::new(&pre).is_ok();
        let has_model_tensors = model_tensors::GuestIndices::new(&pre).is_ok();
        if metadata::GuestIndices::new(&pre).is_err() || model::GuestIndices::new(&pre).is_err() {
            return Err(Error::new(
                Fault::Link,
                "the component does not export wasmai:inference/metadata and wasmai:inference/model \
                 (it was not built for the tensor-model or image-classifier world)",
            ));
        }
        Ok(Ready {
            pre,
            compile_ms,
            cache_hit: compiled.cache_hit,
            sha256: compiled.sha256,
            has_classifier,
            has_model_tensors,
            digests: Arc::default(),
        })
    }

    /// The counters of the host's shared graphs ([`nn::cache`]).
    pub fn graph_cache_stats(&self) -> nn::cache::Stats {
        self.nn.cache.stats()
    }

    /// A new Store and instance of `ready` (runs no export).
    pub fn instantiate(&self, ready: &Ready) -> Result<Instance, Error> {
        let start = Instant::now();
        let (wasi, captured) = self.grants.wasi_ctx()?;
        let budget = Budget::new(self.memory_limit_bytes);
        let state = State {
            wasi,
            table: ResourceTable::new(),
            nn: WasiNnCtx::new(self.nn.clone(), budget.clone(), ready.digests.clone()),
            limiter: Limiter::new(budget),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        self.set_deadline(&mut store);
        let instance = ready.pre.instantiate(&mut store).map_err(|e| {
            let message = format!("cannot instantiate the component: {e:#}");
            match store.data().limiter.refusal_note() {
                Some(note) => Error::new(Fault::MemoryLimit, format!("{message} ({note})")),
                None => Error::new(Fault::Instantiate, message),
            }
        })?;
        let load = |e: wasmtime::Error| Error::new(Fault::Instantiate, format!("{e:#}"));
        let meta = metadata::GuestIndices::new(&ready.pre).and_then(|g| g.load(&mut store, &instance)).map_err(load)?;
        let model = model::GuestIndices::new(&ready.pre).and_then(|g| g.load(&mut store, &instance)).map_err(load)?;
        // The optional exports, found at link time (`Ready`).
        let classifier = ready
            .has_classifier
            .then(|| image_classification::GuestIndices::new(&ready.pre).and_then(|g| g.load(&mut store, &instance)))
            .transpose()
            .map_err(load)?;
        let model_tensors = ready
            .has_model_tensors
            .then(|| model_tensors::GuestIndices::new(&ready.pre).and_then(|g| g.load(&mut store, &instance)))
            .transpose()
            .map_err(load)?;
        Ok(Instance {
            store,
            instance,
            meta,
            model,
            model_tensors,
            classifier,
            captured,
            dead: None,
            instantiate_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }

    fn set_deadline(&self, store: &mut Store<State>) {
        if let Some(t) = self.timeout {
            let ticks = (t.as_nanos() / TICK.as_nanos()).max(1) as u64 + 1;
            store.set_epoch_deadline(ticks);
        }
    }
}

/// A compiled and linked component, ready to instantiate.
pub struct Ready {
    pre: InstancePre<State>,
    /// Milliseconds to compile, or to load the cached compilation when `cache_hit`.
    pub compile_ms: f64,
    pub cache_hit: bool,
    /// Hex sha256 of the component bytes.
    pub sha256: String,
    /// Exports wasmai:inference/image-classification.
    pub has_classifier: bool,
    /// Exports wasmai:inference/model-tensors (`infer` without tensor bytes in linear memory).
    pub has_model_tensors: bool,
    /// The digests of the graphs this component's instances loaded (`load-by-name("sha256:..")`).
    digests: Arc<nn::cache::Digests>,
}

/// One Store and instance with its typed exports.
pub struct Instance {
    pub store: Store<State>,
    pub instance: wasmtime::component::Instance,
    pub meta: metadata::Guest,
    pub model: model::Guest,
    pub model_tensors: Option<model_tensors::Guest>,
    pub classifier: Option<image_classification::Guest>,
    pub captured: Captured,
    /// Set once a call trapped: the instance must not be used again.
    pub dead: Option<String>,
    pub instantiate_ms: f64,
}

/// An output of `model-tensors.infer-tensors`: name, type, dimensions and the host's buffer.
pub struct HostTensor {
    pub name: String,
    pub dtype: TensorType,
    pub shape: Vec<u32>,
    pub data: nn::TensorData,
}

/// A tensor the host hands to `model-tensors.infer-tensors`: name, type, dimensions, bytes.
pub type TensorIn<'a> = (&'a str, TensorType, &'a [u32], nn::TensorData);

impl Instance {
    /// `model-tensors.infer-tensors` (only when the component exports it: `model_tensors`): each
    /// input becomes a `wasi:nn` tensor in the store's table over its bytes (the caller's, lent:
    /// `nn::Lent`, no copy) once the tensor limit and the instance's budget admit them (refused:
    /// `backend` `too-large`, as the guest would see it from `compute`; a byte length that does
    /// not match the dimensions: `bad-input`); the guest never sees the bytes. The output tensors
    /// are taken out of the table as they are (ONNX Runtime's output, copied once by `compute`);
    /// a malformed one (refused, or bytes that do not match its dimensions) is `internal`.
    /// Call through [`Instance::call`].
    pub fn infer_tensors(
        &mut self,
        inputs: Vec<TensorIn<'_>>,
    ) -> wasmtime::Result<Result<Vec<HostTensor>, wtypes::Error>> {
        let Some(exports) = self.model_tensors.as_ref() else {
            return Err(wasmtime::format_err!("the component does not export wasmai:inference/model-tensors"));
        };
        // Every input admitted before any enters the table, so a refusal leaves nothing behind.
        let mut tensors = Vec::with_capacity(inputs.len());
        for (name, dtype, shape, data) in inputs {
            if nn::byte_len(dtype, shape) != Some(data.len()) {
                return Ok(Err(wtypes::Error::BadInput(format!(
                    "input {name:?}: {} data bytes do not match {} dimensions {shape:?}",
                    data.len(),
                    nn::dtype_name(dtype)
                ))));
            }
            let state = self.store.data_mut();
            let charge = match WasiNnView::new(&mut state.nn, &mut state.table).admit_tensor(data.len()) {
                Ok(charge) => charge,
                Err(e) => {
                    let message = format!("input tensor '{name}': {}", e.data);
                    return Ok(Err(wtypes::Error::Backend(wtypes::BackendError { code: e.code, message })));
                }
            };
            tensors.push((name, nn::Tensor::new(shape.to_vec(), dtype, data, Some(charge))));
        }
        let table = &mut self.store.data_mut().table;
        let handles = tensors
            .into_iter()
            .map(|(name, tensor)| Ok((name, table.push(tensor)?)))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        let outputs = match exports.call_infer_tensors(&mut self.store, &handles)? {
            Ok(outputs) => outputs,
            Err(e) => return Ok(Err(e)),
        };
        let table = &mut self.store.data_mut().table;
        let mut result = Vec::with_capacity(outputs.len());
        for (name, handle) in outputs {
            let t = table.delete(handle)?;
            if t.refused.is_some() || nn::byte_len(t.dtype, &t.shape) != Some(t.data.len()) {
                return Ok(Err(wtypes::Error::Internal(format!(
                    "the component returned output '{name}' with {} bytes for {} dimensions {:?}{}",
                    t.data.len(),
                    nn::dtype_name(t.dtype),
                    t.shape,
                    t.refused.map_or(String::new(), |e| format!(" (the host had refused it: {})", e.data))
                ))));
            }
            result.push(HostTensor { name, dtype: t.dtype, shape: t.shape, data: t.data });
        }
        Ok(Ok(result))
    }

    /// Run `f` (a call into the guest) under the host's deadline. A trap marks the instance dead
    /// and becomes [`Fault::Trap`] (or `Timeout`, or `MemoryLimit` when the limiter had refused
    /// a growth), carrying the trap and the tail of the guest's stderr.
    pub fn call<T>(
        &mut self,
        host: &HostEngine,
        what: &str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<T>,
    ) -> Result<T, Error> {
        if let Some(reason) = &self.dead {
            return Err(Error::new(
                Fault::Dead,
                format!("the instance is unusable after an earlier trap ({reason}); instantiate again"),
            ));
        }
        host.set_deadline(&mut self.store);
        self.store.data_mut().nn.deadline = host.timeout.map(|t| Instant::now() + t);
        self.store.data_mut().limiter.refusal = None;
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let trap = e.downcast_ref::<wasmtime::Trap>();
                let stopped = e.downcast_ref::<nn::DeadlineExceeded>();
                let timed_out = matches!(trap, Some(wasmtime::Trap::Interrupt)) || stopped.is_some();
                let after = host.timeout.map_or(0.0, |t| t.as_secs_f64());
                let mut message = match (trap, stopped) {
                    (_, Some(inner)) => format!("{what} timed out after {after:.3} s ({inner})"),
                    (Some(wasmtime::Trap::Interrupt), None) => format!("{what} timed out after {after:.3} s"),
                    (Some(trap), None) => format!("guest trapped in {what}: {trap}"),
                    (None, None) => format!("{what} failed: {}", e.root_cause()),
                };
                let memory_note = self.store.data().limiter.refusal_note();
                if let Some(note) = &memory_note {
                    message.push_str(&format!(" after {note}"));
                }
                let stderr = self.captured.stderr.contents();
                let text = String::from_utf8_lossy(&stderr);
                let tail: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                if !tail.is_empty() {
                    message.push_str(&format!(" (guest stderr: {})", tail[tail.len().saturating_sub(3)..].join(" | ")));
                }
                self.dead = Some(message.clone());
                let fault = if timed_out {
                    Fault::Timeout
                } else if memory_note.is_some() {
                    Fault::MemoryLimit
                } else {
                    Fault::Trap
                };
                Err(Error::new(fault, message))
            }
            Err(panic) => {
                self.dead = Some("host panic".into());
                std::panic::resume_unwind(panic)
            }
        }
    }
}
