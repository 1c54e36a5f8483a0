//! The ONNX Runtime backend (the `ort` crate, with `libonnxruntime` loaded at run time from the
//! Python onnxruntime wheel, so the host and Python share one ONNX Runtime; see host/README.md).
//!
//! All seven wasi-nn tensor types cross as raw little-endian bytes: inputs whose bytes are
//! aligned for their element type are read in place; others are copied once into a tensor ONNX
//! Runtime allocates; outputs are copied out of ONNX Runtime's buffer with one memcpy (or written
//! in place, from 1 MiB), so fp16/bf16 need no conversion. Nothing here panics on guest input.

use std::collections::VecDeque;
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::path::{Component, Path};
use std::ptr::NonNull;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError, Weak};
use std::time::{Duration, Instant};

use ort::ep::ExecutionProvider;
use ort::memory::Allocator;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::sys::OrtStatusPtr;
use ort::value::{DynTensor, TensorElementType, ValueType};
use ort::AsPointer;

use super::backend::{Backend, BackendGraph, Computed, Options};
use super::onnx_check::{external_tensors, ExternalTensor};
use super::quota::Limits;
use super::{CheckedInput, Error, IoSpec, Tensor, TensorData};
use crate::bindings::wasi::nn::errors::ErrorCode;
use crate::bindings::wasi::nn::graph::{ExecutionTarget, GraphEncoding};
use crate::bindings::wasi::nn::tensor::TensorType;
use crate::budget::{Budget, Charge, Kind};

/// The ONNX Runtime environment shared by every host in the process (ONNX Runtime allows one) and
/// the intra-op thread count its global pool was asked for (0 = ONNX Runtime's default).
static ORT_ENV: OnceLock<Result<(ort::environment::Environment, usize), String>> = OnceLock::new();

/// The cap in bytes of the CPU arena registered in [`ORT_ENV`] (by the first host).
static ORT_ARENA: OnceLock<Result<usize, String>> = OnceLock::new();

/// Load ONNX Runtime from `lib_path` (the `libonnxruntime.so.*` inside the Python onnxruntime
/// wheel). Later calls keep the first library. Errors: the library cannot be loaded or is older
/// than the API level this crate is built for (`ort` feature `api-19`).
pub fn load_library(lib_path: &str) -> Result<(), String> {
    ort::init_from(lib_path).map(drop).map_err(|e| format!("cannot load ONNX Runtime from {lib_path}: {e}"))
}

/// Create the process-wide ONNX Runtime environment with ONE global intra-op thread pool of
/// `intra_op_threads` threads (0 = ONNX Runtime's default, one per physical core; the calling
/// thread counts as one, so 1 starts no pool thread) and no inter-op pool. Every session runs on
/// that pool (`ort` disables per-session threads when the environment has a global pool), so
/// loading a graph starts no thread, unless its host asked for another size
/// (`Options::own_intra_threads`). Only the first call creates it (ONNX Runtime's environment,
/// hence its pool, is one per process); every call returns the thread count the pool was
/// created with.
///
/// Every session allocates its CPU memory (weights, constant folding at load, intermediate and
/// output tensors during runs) from ONE arena registered in the environment and capped at
/// `ort_memory_limit` bytes (`session.use_env_allocators`), so a graph whose load or run needs
/// more gets ONNX Runtime's allocation error instead of the host's memory. Like the pool, the
/// first call's cap holds for the process.
///
/// Errors: the environment or its arena cannot be created (the first error is returned again by
/// later calls). Requires [`load_library`] first.
pub fn environment(intra_op_threads: usize, ort_memory_limit: usize) -> Result<usize, String> {
    let pool = pooled_environment(intra_op_threads, true)?;
    ORT_ARENA
        .get_or_init(|| register_capped_arena(env_unchecked()?, ort_memory_limit).map(|()| ort_memory_limit))
        .clone()?;
    Ok(pool)
}

/// The first half of [`environment`], which a process can make ahead of its host's settings
/// (`prepare` in `py::host`: `wasmai run`'s worker process, while it imports Python modules): the
/// environment and its pool of `intra_op_threads`, without the arena (whose cap is a host
/// setting). `spin`: the pool's threads spin-wait for work before they block (ONNX Runtime's
/// default), which shortens the next parallel section's start but burns a core after each one
/// and after the pool's start. Like the pool, the first call's `spin` holds for the process.
/// Returns the pool's thread count, like [`environment`].
pub fn pooled_environment(intra_op_threads: usize, spin: bool) -> Result<usize, String> {
    ORT_ENV
        .get_or_init(|| {
            let pool = ort::environment::GlobalThreadPoolOptions::default()
                .with_intra_threads(intra_op_threads)
                .and_then(|p| p.with_inter_threads(1))
                .and_then(|p| if spin { Ok(p) } else { p.with_spin_control(false) })
                .map_err(|e| format!("cannot configure ONNX Runtime's thread pool: {e}"))?;
            let env = ort::init()
                .with_name("wasmai")
                .with_logger(Arc::new(record_log))
                .with_global_thread_pool(pool)
                .build()
                .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))?;
            // `ort` creates an environment with a custom logger at the verbose level, so ONNX
            // Runtime would format every verbose and info message for `record_log` to drop.
            env.set_log_level(ort::logging::LogLevel::Warning);
            Ok((env, intra_op_threads))
        })
        .as_ref()
        .map(|(_, pool)| *pool)
        .map_err(|e| e.clone())
}

/// The environment [`pooled_environment`] made, or its error.
fn env_unchecked() -> Result<&'static ort::environment::Environment, String> {
    match ORT_ENV.get() {
        Some(Ok((env, _))) => Ok(env),
        Some(Err(e)) => Err(e.clone()),
        None => Err("ONNX Runtime is not initialised".into()),
    }
}

/// The last [`LOG_LINES`] messages ONNX Runtime logged (warning and above), oldest first.
static ORT_LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// How many ONNX Runtime log messages the host keeps.
const LOG_LINES: usize = 64;

/// ONNX Runtime's logger: messages go to the host's bounded log ([`recent_log`]), never to the
/// process's stderr, so a guest's graph cannot write to the host's terminal or logs; failures
/// reach the guest as wasi-nn errors anyway.
fn record_log(level: ort::logging::LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    if matches!(level, ort::logging::LogLevel::Verbose | ort::logging::LogLevel::Info) {
        return;
    }
    let mut log = ORT_LOG.lock().unwrap_or_else(|p| p.into_inner());
    if log.len() == LOG_LINES {
        log.pop_front();
    }
    log.push_back(format!("{level:?} {category} {location}: {message}"));
}

/// The last messages ONNX Runtime logged in this process (warnings and errors), oldest first.
pub fn recent_log() -> Vec<String> {
    ORT_LOG.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
}

/// Register a CPU arena allocator capped at `max_bytes` in `env` (ONNX Runtime's
/// `CreateArenaCfgV2` keys `max_mem` and `arena_extend_strategy` = 1, kSameAsRequested, so the
/// arena grows by what is asked and not by doubling; `CreateAndRegisterAllocator`).
fn register_capped_arena(env: &ort::environment::Environment, max_bytes: usize) -> Result<(), String> {
    use ort::sys::{OrtAllocatorType, OrtMemType};
    let api = ort::api();
    let check = |status: OrtStatusPtr| {
        status_result(status).map_err(|message| format!("cannot register ONNX Runtime's capped CPU arena: {message}"))
    };
    let keys = [c"max_mem".as_ptr(), c"arena_extend_strategy".as_ptr()];
    let values = [max_bytes, 1usize];
    // SAFETY: plain ONNX Runtime C API calls on valid out-pointers; the memory info and the arena
    // config are released after registration (the environment keeps its own copies).
    unsafe {
        let mut info = std::ptr::null_mut();
        check((api.CreateCpuMemoryInfo)(
            OrtAllocatorType::OrtArenaAllocator,
            OrtMemType::OrtMemTypeDefault,
            &mut info,
        ))?;
        let mut cfg = std::ptr::null_mut();
        let made = check((api.CreateArenaCfgV2)(keys.as_ptr(), values.as_ptr(), keys.len(), &mut cfg));
        let registered = made.and_then(|()| check((api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info, cfg)));
        if !cfg.is_null() {
            (api.ReleaseArenaCfg)(cfg);
        }
        (api.ReleaseMemoryInfo)(info);
        registered
    }
}

/// `Err(message)` for a non-null status of an ONNX Runtime C API call (the status is released).
fn status_result(status: OrtStatusPtr) -> Result<(), String> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status from the ONNX Runtime API; its message is a C string owned by the
    // status, copied before the status is released.
    unsafe {
        let text = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned();
        (api.ReleaseStatus)(status.0);
        Err(text)
    }
}

/// The environment, once a host made it with its arena ([`environment`]).
fn env() -> Result<&'static ort::environment::Environment, Error> {
    match (ORT_ENV.get(), ORT_ARENA.get()) {
        (Some(Ok((env, _))), Some(Ok(_))) => Ok(env),
        _ => Err(Error::runtime("ONNX Runtime is not initialised")),
    }
}

/// A session builder on the environment at ONNX Runtime's highest optimization level. Its C API
/// defaults to the layout level, its Python API (the benchmarks' native baseline) to all levels:
/// EfficientNet-Lite0 fp32 at 1 thread ran 1.1-1.2% faster with all than with layout, two
/// sessions in one process, interleaved (issue 13). Errors: ONNX Runtime not initialised.
fn session_builder() -> Result<ort::session::builder::SessionBuilder, Error> {
    Session::builder(env()?)
        .map_err(|e| ort_err("session builder", e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| ort_err("optimization level", e))
}

/// Names of the execution providers compiled into the loaded ONNX Runtime (CPU first).
pub fn available_providers() -> Vec<String> {
    let mut out = vec!["CPUExecutionProvider".to_string()];
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        out.push("CUDAExecutionProvider".into());
    }
    if ort::ep::ROCm::is_available().unwrap_or(false) {
        out.push("ROCMExecutionProvider".into());
    }
    out
}

/// GPU execution providers this backend knows how to register, in order of preference.
fn gpu_provider() -> Option<(&'static str, ort::ep::ExecutionProviderDispatch)> {
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        return Some(("CUDAExecutionProvider", ort::ep::CUDA::default().build().error_on_failure()));
    }
    if ort::ep::ROCm::is_available().unwrap_or(false) {
        return Some(("ROCMExecutionProvider", ort::ep::ROCm::default().build().error_on_failure()));
    }
    None
}

/// `too-large` naming the cap when ONNX Runtime's message is its arena's allocation failure
/// (BFCArena: "Available memory of N is smaller than requested bytes of M", "Failed to allocate
/// memory for requested buffer of size M").
fn arena_exhausted(what: &str, e: &ort::Error) -> Option<Error> {
    let text = e.to_string();
    let hit = text.contains("Available memory of") || text.contains("Failed to allocate memory");
    let cap = match ORT_ARENA.get() {
        Some(Ok(cap)) => *cap,
        _ => 0,
    };
    hit.then(|| {
        Error::new(
            ErrorCode::TooLarge,
            format!(
                "{what} needs more memory than ONNX Runtime may use in this host (max-ort-memory {} MiB): {text}",
                cap >> 20
            ),
        )
    })
}

fn ort_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::runtime(format!("{context}: {e}"))
}

fn from_onnx(ty: TensorElementType) -> Option<TensorType> {
    Some(match ty {
        TensorElementType::Float16 => TensorType::Fp16,
        TensorElementType::Float32 => TensorType::Fp32,
        TensorElementType::Float64 => TensorType::Fp64,
        TensorElementType::Bfloat16 => TensorType::Bf16,
        TensorElementType::Uint8 => TensorType::U8,
        TensorElementType::Int32 => TensorType::I32,
        TensorElementType::Int64 => TensorType::I64,
        _ => return None,
    })
}

fn to_onnx(ty: TensorType) -> TensorElementType {
    match ty {
        TensorType::Fp16 => TensorElementType::Float16,
        TensorType::Fp32 => TensorElementType::Float32,
        TensorType::Fp64 => TensorElementType::Float64,
        TensorType::Bf16 => TensorElementType::Bfloat16,
        TensorType::U8 => TensorElementType::Uint8,
        TensorType::I32 => TensorElementType::Int32,
        TensorType::I64 => TensorElementType::Int64,
    }
}

fn io_specs(outlets: &[ort::value::Outlet]) -> Vec<IoSpec> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => IoSpec {
                name: o.name().to_string(),
                backend_type: ty.to_string(),
                dtype: from_onnx(*ty),
                shape: shape.iter().copied().collect(),
            },
            other => IoSpec { name: o.name().to_string(), backend_type: other.to_string(), dtype: None, shape: vec![] },
        })
        .collect()
}

/// Session config key: the model format ONNX Runtime parses (`ONNX` or `ORT`); set to `ONNX` so
/// bytes are never read as an ORT-format flatbuffer (onnxruntime_session_options_config_keys.h,
/// `kOrtSessionOptionsConfigLoadModelFormat`).
const LOAD_MODEL_FORMAT: &str = "session.load_model_format";

/// Session config key: the folder ONNX Runtime resolves external-data locations against for a
/// model loaded from memory (otherwise the process's current directory)
/// (`kOrtSessionOptionsModelExternalInitializersFileFolderPath`, ONNX Runtime >= 1.21).
const EXTERNAL_DATA_FOLDER: &str = "session.model_external_initializers_file_folder_path";

/// Session config key: optimizers (by name, `;`-separated) the session must not run
/// (`kOrtSessionOptionsDisableSpecifiedOptimizers`).
const DISABLED_OPTIMIZERS: &str = "optimization.disable_specified_optimizers";

/// Session config key: allocate from the allocators registered in the environment, i.e. the
/// capped CPU arena of [`environment`] (`kOrtSessionOptionsConfigUseEnvAllocators`).
const USE_ENV_ALLOCATORS: &str = "session.use_env_allocators";

/// Looks like a serialized ONNX ModelProto: protobuf field 1 (`ir_version`, varint) comes first,
/// which every ONNX serializer writes (fields are emitted in field-number order).
fn looks_like_onnx(bytes: &[u8]) -> bool {
    bytes.len() > 2 && bytes[0] == 0x08
}

/// `invalid-encoding` unless `bytes` look like an ONNX ModelProto.
fn check_onnx(bytes: &[u8]) -> Result<(), Error> {
    if looks_like_onnx(bytes) {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::InvalidEncoding,
        format!("graph is not an ONNX model ({} bytes; an ONNX ModelProto starts with 0x08)", bytes.len()),
    ))
}

/// A registered graph file's external tensor must name a file inside the model's own folder
/// (`folder`, canonical): a relative path without `..`, not ONNX Runtime's in-memory address form
/// (`*/_ORT_MEM_ADDR_/*`), that still resolves inside `folder` once symlinks are followed.
/// Otherwise `invalid-argument` naming the tensor.
fn check_beside(t: &ExternalTensor, folder: &Path) -> Result<(), Error> {
    let refuse = |why: &str| Error::invalid(format!("{}: {why}", t.describe()));
    let location = t.location.as_deref().ok_or_else(|| refuse("external data without a location"))?;
    if location.contains("_ORT_MEM_ADDR_") {
        return Err(refuse("in-memory external data addresses are refused"));
    }
    let relative = Path::new(location);
    if location.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(refuse("the location must be a path inside the model's folder (no absolute path, no '..')"));
    }
    let target = std::fs::canonicalize(folder.join(relative))
        .map_err(|e| Error::new(ErrorCode::NotFound, format!("{}: {e}", t.describe())))?;
    if !target.starts_with(folder) {
        return Err(refuse("the location resolves outside the model's folder (through a symlink)"));
    }
    Ok(())
}

/// The ONNX Runtime backend.
pub struct OnnxBackend;

impl Backend for OnnxBackend {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Onnx
    }

    fn detect(&self, bytes: &[u8]) -> bool {
        looks_like_onnx(bytes)
    }

    fn load(
        &self,
        builders: &[Vec<u8>],
        target: ExecutionTarget,
        options: &Options,
    ) -> Result<Arc<dyn BackendGraph>, Error> {
        let bytes = match builders {
            [bytes] => bytes,
            _ => return Err(Error::invalid(format!("an ONNX graph is one builder, got {}", builders.len()))),
        };
        check_onnx(bytes)?;
        if let Some(t) = external_tensors(bytes)?.first() {
            return Err(Error::invalid(format!(
                "{} is stored outside the graph: a graph loaded through wasi-nn must carry all its bytes \
                 (external data is refused)",
                t.describe()
            )));
        }
        Ok(Arc::new(OnnxGraph::load(bytes, target, options, &options.no_external_data_dir, true)?))
    }

    fn load_file(&self, path: &Path, options: &Options) -> Result<Arc<dyn BackendGraph>, Error> {
        let not_found =
            |e: std::io::Error| Error::new(ErrorCode::NotFound, format!("cannot read {}: {e}", path.display()));
        let file = std::fs::canonicalize(path).map_err(not_found)?;
        let folder = file.parent().ok_or_else(|| Error::invalid(format!("{} has no folder", file.display())))?;
        let bytes = std::fs::read(&file).map_err(not_found)?;
        check_onnx(&bytes)?;
        for t in external_tensors(&bytes)? {
            check_beside(&t, folder)?;
        }
        Ok(Arc::new(OnnxGraph::load(&bytes, ExecutionTarget::Cpu, options, folder, false)?))
    }
}

/// A loaded graph: one ONNX Runtime session and its signature. Shared by every execution
/// context, instance and thread that loaded it; on the CPU execution provider concurrent
/// `compute` calls run in parallel on it ([`OnnxGraph::run`]).
pub struct OnnxGraph {
    session: Session,
    /// `Some` on a GPU execution provider: its runs take turns (held for each run).
    exclusive: Option<Mutex<()>>,
    /// The inputs' and outputs' names as C strings, in graph order (what each run passes and asks
    /// for; made once here rather than on every run).
    input_names: Vec<CString>,
    output_names: Vec<CString>,
    inputs: Vec<IoSpec>,
    outputs: Vec<IoSpec>,
    execution_provider: String,
    /// CPU memory, for the values made over the host's bytes on every run ([`RawValue`]).
    memory_info: ort::memory::MemoryInfo<'static>,
}

impl OnnxGraph {
    /// Create an ONNX Runtime session for the ONNX (never ORT-format) model `bytes` on `target`,
    /// resolving external data only inside `external_data_dir` (the model's own folder for a
    /// registered file, an empty private folder for a guest's bytes). A gpu target without a GPU
    /// execution provider is `unsupported-operation` unless `options.allow_target_fallback`.
    /// A guest's graph (`from_guest`) is loaded without ONNX Runtime's constant folding, which
    /// allocates outside the capped arena (a 200-byte ConstantOfShape graph took 2 GiB at load);
    /// graphs `wasmai convert` writes are folded already by its offline optimizer. Every other
    /// optimization runs, at ONNX Runtime's highest level (`ORT_ENABLE_ALL`, as its Python API).
    fn load(
        bytes: &[u8],
        target: ExecutionTarget,
        options: &Options,
        external_data_dir: &Path,
        from_guest: bool,
    ) -> Result<Self, Error> {
        let dir = external_data_dir
            .to_str()
            .ok_or_else(|| Error::runtime(format!("{} is not UTF-8", external_data_dir.display())))?;
        let mut builder = session_builder()?;
        let mut entries = vec![(LOAD_MODEL_FORMAT, "ONNX"), (EXTERNAL_DATA_FOLDER, dir), (USE_ENV_ALLOCATORS, "1")];
        if from_guest {
            entries.push((DISABLED_OPTIMIZERS, "ConstantFolding"));
        }
        for (key, value) in entries {
            builder = builder.with_config_entry(key, value).map_err(|e| ort_err(key, e))?;
        }
        if let Some(threads) = options.own_intra_threads {
            builder = builder.with_independent_thread_pool().map_err(|e| ort_err("thread pool", e))?;
            builder = builder.with_intra_threads(threads).map_err(|e| ort_err("intra-op threads", e))?;
        }
        let mut provider = "CPUExecutionProvider".to_string();
        let mut exclusive = None;
        if !matches!(target, ExecutionTarget::Cpu) {
            let wanted = if matches!(target, ExecutionTarget::Gpu) { "gpu" } else { "tpu" };
            match (matches!(target, ExecutionTarget::Gpu), gpu_provider()) {
                (true, Some((name, ep))) => {
                    builder = builder.with_execution_providers([ep]).map_err(|e| {
                        Error::new(ErrorCode::UnsupportedOperation, format!("cannot enable {name}: {e}"))
                    })?;
                    provider = name.to_string();
                    exclusive = Some(Mutex::new(()));
                }
                _ if options.allow_target_fallback => {
                    provider =
                        format!("CPUExecutionProvider (fallback: no {wanted} execution provider in this ONNX Runtime)");
                }
                _ => {
                    return Err(Error::new(
                        ErrorCode::UnsupportedOperation,
                        format!(
                            "execution target {wanted}: this ONNX Runtime has no {wanted} execution provider \
                             (the host can allow a CPU fallback: allow-target-fallback)"
                        ),
                    ))
                }
            }
        }
        let session = builder.commit_from_memory(bytes).map_err(|e| {
            if let Some(err) = arena_exhausted("loading the graph", &e) {
                return err;
            }
            let code = match e.code() {
                ort::ErrorCode::InvalidProtobuf => ErrorCode::InvalidEncoding,
                ort::ErrorCode::InvalidGraph | ort::ErrorCode::NotImplemented => ErrorCode::InvalidArgument,
                _ => ErrorCode::RuntimeError,
            };
            Error::new(code, format!("ONNX Runtime cannot load the graph: {e}"))
        })?;
        Self::from_session(session, exclusive, provider)
    }

    /// A committed `session` with its signature, its names as C strings and the CPU memory
    /// description its runs' values use. Errors: `invalid-argument` for a name with a NUL byte.
    fn from_session(session: Session, exclusive: Option<Mutex<()>>, execution_provider: String) -> Result<Self, Error> {
        let inputs = io_specs(session.inputs());
        let outputs = io_specs(session.outputs());
        let c_names = |specs: &[IoSpec]| {
            specs
                .iter()
                .map(|o| CString::new(o.name.as_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::invalid(format!("a graph input or output name holds a NUL byte: {e}")))
        };
        let (input_names, output_names) = (c_names(&inputs)?, c_names(&outputs)?);
        let memory_info = ort::memory::MemoryInfo::new(
            ort::memory::AllocationDevice::CPU,
            0,
            ort::memory::AllocatorType::Device,
            ort::memory::MemoryType::Default,
        )
        .map_err(|e| ort_err("memory info", e))?;
        Ok(Self { session, exclusive, input_names, output_names, inputs, outputs, execution_provider, memory_info })
    }
}

impl OnnxGraph {
    /// On a GPU execution provider: the turn to run this graph, waiting while another caller runs
    /// it, but not past `deadline` (then `timeout`). On the CPU: `None` at once (runs overlap).
    fn lock_session(&self, deadline: Option<Instant>) -> Result<Option<MutexGuard<'_, ()>>, Error> {
        let Some(exclusive) = &self.exclusive else { return Ok(None) };
        let poisoned = || Error::runtime("the graph's session is poisoned by an earlier panic");
        let Some(deadline) = deadline else {
            return exclusive.lock().map(Some).map_err(|_| poisoned());
        };
        loop {
            match exclusive.try_lock() {
                Ok(guard) => return Ok(Some(guard)),
                Err(TryLockError::Poisoned(_)) => return Err(poisoned()),
                Err(TryLockError::WouldBlock) if Instant::now() >= deadline => {
                    return Err(Error::new(
                        ErrorCode::Timeout,
                        "the deadline passed while waiting for the graph (another instance was running it)",
                    ))
                }
                Err(TryLockError::WouldBlock) => std::thread::sleep(LOCK_POLL),
            }
        }
    }

    /// One run of the session on `values` (every graph input, in graph order, as
    /// [`check_inputs`](super::check_inputs) orders them) with `run_options` (None: ONNX Runtime's
    /// defaults, for a run nothing will stop); the outputs in graph order. Through `&self`, so callers on several threads run the session at once: ONNX
    /// Runtime documents `OrtApi::Run` as safe to call concurrently on one session (its C API
    /// header and "Thread safety" FAQ; microsoft/onnxruntime#19301 fixed the TensorRT EP to keep
    /// that guarantee), but ort 2.0.0-rc.15's `Session::run*` take `&mut self` because GPU
    /// execution providers have broken it; those sessions take turns ([`Self::lock_session`]).
    ///
    /// The wall time of `OrtApi::Run` alone is added to `run_ns` (what the host reports as ONNX
    /// Runtime's run; wrapping the inputs and reading the outputs are the host's).
    fn run(
        &self,
        values: &[InputValue<'_>],
        run_options: Option<&RunOptions>,
        preset: &[Option<RawValue>],
        run_ns: &mut u64,
    ) -> Result<Vec<Option<RawValue>>, ort::Error> {
        if values.len() != self.input_names.len() {
            return Err(ort::Error::new(format!(
                "{} input values for {} graph inputs",
                values.len(),
                self.input_names.len()
            )));
        }
        let input_name_ptrs: Vec<_> = self.input_names.iter().map(|n| n.as_ptr()).collect();
        let input_ptrs: Vec<_> = values.iter().map(|v| v.ptr()).collect();
        let output_name_ptrs: Vec<_> = self.output_names.iter().map(|n| n.as_ptr()).collect();
        let is_preset = |i: usize| preset.get(i).is_some_and(Option::is_some);
        let mut output_ptrs: Vec<*mut ort::sys::OrtValue> = (0..output_name_ptrs.len())
            .map(|i| preset.get(i).and_then(Option::as_ref).map_or(std::ptr::null_mut(), |v| v.0.as_ptr()))
            .collect();
        let start = Instant::now();
        // SAFETY: the session and run options (or null: the C API's defaults) are alive for the
        // call; the name and value arrays hold `len` valid pointers each (C strings owned by
        // `self.input_names`/`self.output_names`, values borrowed from `values`); `output_ptrs`
        // has room for every requested output.
        let status = unsafe {
            (ort::api().Run)(
                self.session.ptr().cast_mut(),
                run_options.map_or(std::ptr::null(), |o| o.ptr()),
                input_name_ptrs.as_ptr(),
                input_ptrs.as_ptr(),
                input_ptrs.len(),
                output_name_ptrs.as_ptr(),
                output_name_ptrs.len(),
                output_ptrs.as_mut_ptr(),
            )
        };
        *run_ns += start.elapsed().as_nanos() as u64;
        status_result(status).map_err(ort::Error::new)?;
        // The values the run made are ours to release (each RawValue, dropped before the session,
        // which `self` keeps); a preset output is the caller's value, written in place.
        let outputs: Vec<Option<RawValue>> = output_ptrs
            .into_iter()
            .enumerate()
            .map(|(i, p)| if is_preset(i) { None } else { NonNull::new(p).map(RawValue) })
            .collect();
        if outputs.iter().enumerate().any(|(i, v)| v.is_none() && !is_preset(i)) {
            return Err(ort::Error::new("ONNX Runtime returned no output value"));
        }
        Ok(outputs)
    }
}

/// How often a call with a deadline retries the lock of a graph another instance is running.
const LOCK_POLL: Duration = Duration::from_millis(1);

/// The process's run watchdog: one thread (started on first use) that calls
/// `RunOptions::terminate` on every run whose deadline passed and is still running. ONNX
/// Runtime checks that flag between node executions (also inside `Loop`/`If`/`Scan` bodies), so
/// a run stops at the next node boundary; one long kernel runs to its end first.
static WATCHDOG: OnceLock<Result<mpsc::Sender<Watched>, String>> = OnceLock::new();

/// A run the watchdog stops at its deadline unless it has finished (its options dropped).
type Watched = (Instant, Weak<RunOptions>);

/// Have the watchdog stop the run of `run_options` at `deadline` (a no-op once they are
/// dropped). Errors: the watchdog thread cannot be started (`runtime-error`).
fn watch(deadline: Instant, run_options: &Arc<RunOptions>) -> Result<(), Error> {
    let sender = WATCHDOG
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Watched>();
            std::thread::Builder::new()
                .name("wasmai-ort-watchdog".into())
                .spawn(move || watchdog(rx))
                .map(|_| tx)
                .map_err(|e| format!("cannot start the ONNX Runtime watchdog: {e}"))
        })
        .as_ref()
        .map_err(|e| Error::runtime(e.clone()))?;
    sender
        .send((deadline, Arc::downgrade(run_options)))
        .map_err(|_| Error::runtime("the ONNX Runtime watchdog has stopped"))
}

/// The watchdog's loop: sleep until the earliest pending deadline (or a new run), terminate the
/// runs whose deadline passed, forget finished ones.
fn watchdog(rx: mpsc::Receiver<Watched>) {
    let mut pending: Vec<Watched> = Vec::new();
    loop {
        let now = Instant::now();
        pending.retain(|(deadline, run)| match run.upgrade() {
            Some(run) if *deadline <= now => {
                let _ = run.terminate();
                false
            }
            Some(_) => true,
            None => false,
        });
        let next = pending.iter().map(|(d, _)| *d).min();
        let received = match next {
            Some(d) => rx.recv_timeout(d.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(run) => pending.push(run),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// An ONNX Runtime value the host holds, released on drop: a tensor over bytes it does not own
/// (an input read in place, an output buffer a run writes into, [`Placed`]), made with
/// `CreateTensorWithDataAsOrtValue` over the graph's one memory info, or an output a run
/// allocated, read by [`RawValue::tensor`]. Both straight from the C API: ort's `TensorRef` and
/// `DynValue` also build a memory description, a shared value record and the type with its
/// symbolic dimensions for every value, which costs more than moving the tiny MLP's bytes (on the
/// 2-core development VM: its input 1.1-1.2 us with `TensorRef`, 0.5-0.7 us this way; its output
/// as a `DynValue` 0.9-1.9 us).
struct RawValue(NonNull<ort::sys::OrtValue>);

impl RawValue {
    /// A tensor of `dtype` and `shape` over the `len` bytes at `data`, described by `info` (CPU).
    /// Errors: ONNX Runtime's message.
    ///
    /// # Safety
    /// `data` stays valid for `len` bytes while the value lives, and `len` is the shape's product
    /// times the element size of `dtype`. ONNX Runtime writes the bytes only when the value is
    /// passed as a run's output.
    unsafe fn over(
        info: &ort::memory::MemoryInfo<'_>,
        data: *mut std::ffi::c_void,
        len: usize,
        shape: &[i64],
        dtype: TensorType,
    ) -> Result<Self, String> {
        let mut value = std::ptr::null_mut();
        // SAFETY: the caller's promise for `data` and `len`; `shape` is read during the call only.
        let status = unsafe {
            (ort::api().CreateTensorWithDataAsOrtValue)(
                info.ptr(),
                data,
                len,
                shape.as_ptr(),
                shape.len(),
                to_onnx(dtype).into(),
                &mut value,
            )
        };
        status_result(status)?;
        NonNull::new(value).map(Self).ok_or_else(|| "no value".to_string())
    }

    /// The element type, dimensions and CPU bytes of a tensor a run returned (`output` names it
    /// in errors, `declared` is the graph's type for it). The bytes live as long as the value.
    /// Errors: `unsupported-operation` for a value that is not a tensor or of a type wasi-nn
    /// cannot express, `runtime-error` for one outside CPU memory or when ONNX Runtime fails.
    fn tensor(&self, output: &str, declared: &str) -> Result<(TensorType, Vec<i64>, *const u8), Error> {
        let (api, value) = (ort::api(), self.0.as_ptr());
        let failed = |m: String| Error::runtime(format!("output '{output}': {m}"));
        let unsupported = |m: String| Error::new(ErrorCode::UnsupportedOperation, m);
        let mut is_tensor = 0;
        // SAFETY (every call below): `value` is a live value we own; the out-pointers are valid,
        // `dims` has room for `count` dimensions, and the type info is released once.
        status_result(unsafe { (api.IsTensor)(value, &mut is_tensor) }).map_err(failed)?;
        if is_tensor == 0 {
            return Err(unsupported(format!("output '{output}' is a {declared}, not a tensor")));
        }
        let mut info = std::ptr::null_mut();
        status_result(unsafe { (api.GetTensorTypeAndShape)(value, &mut info) }).map_err(failed)?;
        let mut element = ort::sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
        let (mut count, mut dims) = (0usize, Vec::new());
        let described = status_result(unsafe { (api.GetTensorElementType)(info, &mut element) })
            .and_then(|()| status_result(unsafe { (api.GetDimensionsCount)(info, &mut count) }))
            .and_then(|()| {
                dims = vec![0i64; count];
                status_result(unsafe { (api.GetDimensions)(info, dims.as_mut_ptr(), count) })
            });
        unsafe { (api.ReleaseTensorTypeAndShapeInfo)(info) };
        described.map_err(failed)?;
        let onnx_ty = TensorElementType::from(element);
        let dtype = from_onnx(onnx_ty).ok_or_else(|| {
            unsupported(format!("output '{output}' has type {onnx_ty}, which wasi-nn cannot express"))
        })?;
        let mut memory = std::ptr::null();
        status_result(unsafe { (api.GetTensorMemoryInfo)(value, &mut memory) }).map_err(failed)?;
        let mut device = ort::sys::OrtMemoryInfoDeviceType::OrtMemoryInfoDeviceType_CPU;
        unsafe { (api.MemoryInfoGetDeviceType)(memory, &mut device) };
        if device != ort::sys::OrtMemoryInfoDeviceType::OrtMemoryInfoDeviceType_CPU {
            return Err(Error::runtime(format!("output '{output}' is not in CPU memory")));
        }
        let mut data = std::ptr::null_mut();
        status_result(unsafe { (api.GetTensorMutableData)(value, &mut data) }).map_err(failed)?;
        Ok((dtype, dims, data.cast_const().cast()))
    }
}

impl Drop for RawValue {
    fn drop(&mut self) {
        // SAFETY: a value made for us (`CreateTensorWithDataAsOrtValue` or a run), released once.
        unsafe { (ort::api().ReleaseValue)(self.0.as_ptr()) }
    }
}

/// A run's input: a value over the tensor's own bytes, or a copy ONNX Runtime allocated.
enum InputValue<'a> {
    /// Reads the tensor's bytes in place; the borrow keeps them alive and unchanged.
    Lent(RawValue, std::marker::PhantomData<&'a [u8]>),
    Copied(DynTensor),
}

impl InputValue<'_> {
    fn ptr(&self) -> *const ort::sys::OrtValue {
        match self {
            InputValue::Lent(value, _) => value.0.as_ptr(),
            InputValue::Copied(value) => value.ptr(),
        }
    }
}

/// Input `name` for a run: a value over `data` when it is aligned for `dtype`
/// (every wasi-nn type; a Python `bytes` or an `Arc<[u8]>` buffer is), else a copy into a tensor
/// ONNX Runtime allocates (misaligned or empty bytes). Errors: `runtime-error` naming the input.
fn input_value<'a>(
    info: &ort::memory::MemoryInfo<'_>,
    name: &str,
    data: &'a [u8],
    dtype: TensorType,
    shape: &[i64],
) -> Result<InputValue<'a>, Error> {
    if !data.is_empty() && (data.as_ptr() as usize).is_multiple_of(super::dtype_size(dtype)) {
        // SAFETY: `data` is `data.len()` bytes (product(shape) * element size, checked by
        // `check_inputs`) borrowed for 'a, which the value's PhantomData ties it to; an input's
        // bytes are only read.
        let value = unsafe { RawValue::over(info, data.as_ptr().cast_mut().cast(), data.len(), shape, dtype) }
            .map_err(|m| Error::runtime(format!("input '{name}': cannot wrap the tensor: {m}")))?;
        return Ok(InputValue::Lent(value, std::marker::PhantomData));
    }
    let mut value = DynTensor::new(&Allocator::default(), to_onnx(dtype), shape.to_vec())
        .map_err(|e| ort_err(&format!("input '{name}': cannot allocate the tensor"), e))?;
    if !data.is_empty() {
        let dst = value.data_ptr_mut() as *mut u8;
        if dst.is_null() {
            return Err(Error::runtime(format!("input '{name}': no tensor buffer")));
        }
        // SAFETY: ONNX Runtime allocated product(shape) * size-of(dtype) == data.len() bytes on
        // the CPU allocator for this tensor (checked by `check_inputs`); the regions are disjoint.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }
    Ok(InputValue::Copied(value))
}

/// Admit output `name` of `len` bytes: within the tensor limit, and charged to the instance's
/// budget (the charge goes with the host's tensor). Errors: `too-large`.
fn admit_output(limits: &Limits, budget: &Arc<Budget>, name: &str, len: usize) -> Result<Charge, Error> {
    if let Some(e) = limits.tensor_too_large(&format!("output '{name}'"), len) {
        return Err(e);
    }
    budget
        .charge(Kind::Tensor, len, &format!("the host refused output '{name}' of"))
        .map_err(|m| Error::new(ErrorCode::TooLarge, m))
}

/// Outputs at least this long (bytes) and of a fixed shape are written by ONNX Runtime straight
/// into the host's tensor buffer (smaller ones are copied out of its arena, which costs less than
/// making the value).
const PLACE_OUTPUT_BYTES: usize = 1 << 20;

/// Per graph output: the value `run` writes into, and its buffer (both None: ONNX Runtime allocates).
type PlacedOutputs = (Vec<Option<RawValue>>, Vec<Option<Placed>>);

/// An output buffer the run writes into: the host tensor's bytes, their charge, dims and type.
struct Placed {
    buffer: Arc<[MaybeUninit<u8>]>,
    charge: Charge,
    dims: Vec<u32>,
    dtype: TensorType,
}

impl OnnxGraph {
    /// For each output of a fixed shape and at least [`PLACE_OUTPUT_BYTES`] (CPU sessions only):
    /// its buffer, admitted by the tensor limit and charged to the budget first (the same checks
    /// as a copied output), and an ONNX Runtime value over it for `run` to write into; `None` for
    /// the others. Errors: `too-large` (limit or budget), or ONNX Runtime's when the value cannot
    /// be made.
    fn place_outputs(&self, limits: &Limits, budget: &Arc<Budget>) -> Result<PlacedOutputs, Error> {
        let (mut preset, mut placed) = (Vec::new(), Vec::new());
        if self.exclusive.is_some() {
            return Ok((preset, placed));
        }
        for spec in &self.outputs {
            let name = &spec.name;
            // Fixed: every dimension known (a dynamic one is negative) and within wasi-nn's u32.
            let dims: Option<Vec<u32>> = spec.shape.iter().map(|&d| u32::try_from(d).ok()).collect();
            let sized =
                spec.dtype.zip(dims).and_then(|(dtype, dims)| Some((dtype, super::byte_len(dtype, &dims)?, dims)));
            let Some((dtype, len, dims)) = sized.filter(|&(_, len, _)| len >= PLACE_OUTPUT_BYTES) else {
                preset.push(None);
                placed.push(None);
                continue;
            };
            let charge = admit_output(limits, budget, name, len)?;
            let mut buffer: Arc<[MaybeUninit<u8>]> = Arc::new_uninit_slice(len);
            let ptr =
                Arc::get_mut(&mut buffer).map(|b| b.as_mut_ptr()).ok_or_else(|| Error::runtime("buffer shared"))?;
            // SAFETY: `ptr` is `len` writable bytes owned by `buffer`, which outlives the value
            // (the value is dropped right after the run, the buffer kept); the shape's product
            // times the element size is `len`.
            let value = unsafe { RawValue::over(&self.memory_info, ptr.cast(), len, &spec.shape, dtype) }
                .map_err(|m| Error::runtime(format!("output '{name}': cannot make its value: {m}")))?;
            preset.push(Some(value));
            let dims = if dims.is_empty() { vec![1] } else { dims };
            placed.push(Some(Placed { buffer, charge, dims, dtype }));
        }
        Ok((preset, placed))
    }
}

impl BackendGraph for OnnxGraph {
    fn inputs(&self) -> &[IoSpec] {
        &self.inputs
    }

    fn execution_provider(&self) -> &str {
        &self.execution_provider
    }

    fn compute(
        &self,
        inputs: &[CheckedInput],
        limits: &Limits,
        budget: &Arc<Budget>,
        deadline: Option<Instant>,
    ) -> Result<Computed, Error> {
        let values = inputs
            .iter()
            .map(|input| {
                input_value(&self.memory_info, &input.name, &input.tensor.data, input.tensor.dtype, &input.shape)
            })
            .collect::<Result<Vec<_>, _>>()?;

        let _turn = self.lock_session(deadline)?;
        // Run options only for a run the watchdog may have to stop (one per run: terminating them
        // is sticky).
        let run_options = match deadline {
            Some(deadline) => {
                let options = Arc::new(RunOptions::new().map_err(|e| ort_err("run options", e))?);
                watch(deadline, &options)?;
                Some(options)
            }
            None => None,
        };
        let (preset, mut placed) = self.place_outputs(limits, budget)?;
        let (start, mut run_ns) = (Instant::now(), 0);
        let mut ran = self.run(&values, run_options.as_deref(), &preset, &mut run_ns);
        drop(preset);
        let refused_buffer = |e: &ort::Error| {
            let text = e.to_string();
            text.contains("pre-allocated output") || text.contains("re-use buffer")
        };
        if ran.as_ref().is_err_and(refused_buffer) && placed.iter().any(Option::is_some) {
            // A graph that computes another shape than it declares: ONNX Runtime refuses the
            // buffer of the declared shape ("The output OrtValue provided for output 'y' ... has
            // shape {262144} but the computed output shape for this run is {524288} ... with
            // pre-allocated output OrtValues" in 1.32; "Shape mismatch attempting to re-use
            // buffer" in older releases), so run again and let it allocate the output.
            placed.clear();
            ran = self.run(&values, run_options.as_deref(), &[], &mut run_ns);
        }
        let outputs = ran.map_err(|e| {
            if let Some(err) = arena_exhausted("the run", &e) {
                return err;
            }
            match deadline {
                Some(d) if Instant::now() >= d => Error::new(
                    ErrorCode::Timeout,
                    format!(
                        "ONNX Runtime run stopped at the deadline after {:.3} s: {e}",
                        start.elapsed().as_secs_f64()
                    ),
                ),
                _ => Error::runtime(format!("ONNX Runtime run failed: {e}")),
            }
        })?;

        let mut result = Vec::with_capacity(self.outputs.len());
        for (i, (spec, value)) in self.outputs.iter().zip(&outputs).enumerate() {
            let name = &spec.name;
            let value = match (value, placed.get_mut(i).and_then(Option::take)) {
                (_, Some(p)) => {
                    // SAFETY: the run succeeded, so ONNX Runtime wrote the whole output (its fixed
                    // shape is the buffer's) into the buffer.
                    let data: Arc<[u8]> = unsafe { p.buffer.assume_init() };
                    result.push((name.clone(), Tensor::new(p.dims, p.dtype, TensorData::Shared(data), Some(p.charge))));
                    continue;
                }
                (Some(value), None) => value,
                (None, None) => {
                    return Err(Error::runtime(format!("ONNX Runtime returned no value for output '{name}'")))
                }
            };
            let (dtype, shape, src) = value.tensor(name, &spec.backend_type)?;
            let mut dims = Vec::with_capacity(shape.len().max(1));
            for &d in &shape {
                dims.push(
                    u32::try_from(d)
                        .map_err(|_| Error::runtime(format!("output '{name}': dimension {d} does not fit u32")))?,
                );
            }
            if dims.is_empty() {
                dims.push(1);
            }
            let len = super::byte_len(dtype, &dims)
                .ok_or_else(|| Error::new(ErrorCode::TooLarge, format!("output '{name}' does not fit in memory")))?;
            let charge = admit_output(limits, budget, name, len)?;
            // The output's one copy on the host: ONNX Runtime's buffer (in its arena, reused by
            // the next run) into the tensor's shared buffer, which `data()` hands to wasmtime to
            // lower into the guest without another copy.
            let mut data: Arc<[u8]> = Arc::from([]);
            if len > 0 {
                if src.is_null() {
                    return Err(Error::runtime(format!("output '{name}' has no data")));
                }
                // SAFETY: ONNX Runtime owns `len` bytes of CPU memory for this tensor until
                // `outputs` is dropped at the end of this function.
                data = Arc::from(unsafe { std::slice::from_raw_parts(src, len) });
            }
            result.push((name.clone(), Tensor::new(dims, dtype, TensorData::Shared(data), Some(charge))));
        }
        Ok(Computed { outputs: result, run_ns })
    }
}

/// ONNX Runtime with nothing of the host around it, for `wasmai bench`'s same-library baseline:
/// a session of the model file at `path` on the library the host loaded, with ONNX Runtime's
/// default session options but for the optimization level (`ORT_ENABLE_ALL`, as its Python API
/// defaults to) and the thread count: its own arena, its own intra-op pool of `intra_op_threads`
/// threads (0: ONNX Runtime's default, one per physical core), constant folding on. The Python
/// `onnxruntime` package runs another build of the same release (statically linked into its
/// extension module), so comparing the host with this baseline leaves out the difference between
/// the two binaries (benchmarks/README.md measures it). Not for guest graphs: no external-data
/// folder, memory cap or deadline applies.
pub struct LibraryBaseline(OnnxGraph);

impl LibraryBaseline {
    /// Load the model file at `path` with `intra_op_threads` (0: ONNX Runtime's default), with
    /// ONNX Runtime's profiler writing to a JSON file named from `profile_prefix` when given
    /// ([`Self::end_profiling`]). Errors: ONNX Runtime not initialised or refusing the file
    /// (`runtime-error`).
    pub fn load(path: &Path, intra_op_threads: usize, profile_prefix: Option<&Path>) -> Result<Self, Error> {
        let mut builder = session_builder()?.with_independent_thread_pool().map_err(|e| ort_err("thread pool", e))?;
        if intra_op_threads > 0 {
            builder = builder.with_intra_threads(intra_op_threads).map_err(|e| ort_err("intra-op threads", e))?;
        }
        if let Some(prefix) = profile_prefix {
            builder = builder.with_profiling(prefix).map_err(|e| ort_err("profiling", e))?;
        }
        let session = builder
            .commit_from_file(path)
            .map_err(|e| Error::runtime(format!("ONNX Runtime cannot load {}: {e}", path.display())))?;
        Ok(Self(OnnxGraph::from_session(session, None, "CPUExecutionProvider".into())?))
    }

    /// One run on `inputs`, each (name, dtype, shape, little-endian bytes), matched to the graph's
    /// inputs by name; the outputs are released unread. Returns the wall time of `OrtApi::Run`
    /// in nanoseconds. Errors: `invalid-argument` for a missing input or bytes that do not fit
    /// the shape, `runtime-error` from ONNX Runtime.
    pub fn run(&self, inputs: &[(&str, TensorType, &[u32], &[u8])]) -> Result<u64, Error> {
        let graph = &self.0;
        let mut values = Vec::with_capacity(graph.inputs.len());
        for spec in &graph.inputs {
            let &(name, dtype, dims, data) = inputs
                .iter()
                .find(|(name, ..)| *name == spec.name)
                .ok_or_else(|| Error::invalid(format!("no tensor for the graph input '{}'", spec.name)))?;
            if super::byte_len(dtype, dims) != Some(data.len()) {
                return Err(Error::invalid(format!("tensor '{name}': {} bytes do not fit its shape", data.len())));
            }
            let shape: Vec<i64> = dims.iter().map(|&d| i64::from(d)).collect();
            values.push(input_value(&graph.memory_info, name, data, dtype, &shape)?);
        }
        let mut run_ns = 0;
        graph
            .run(&values, None, &[], &mut run_ns)
            .map_err(|e| Error::runtime(format!("ONNX Runtime run failed: {e}")))?;
        Ok(run_ns)
    }

    /// Stop the profiler and write its JSON file (one event per node per run, in ONNX Runtime's
    /// chrome-trace format); its path. Errors: the session was loaded without a profile prefix,
    /// or ONNX Runtime cannot write the file (`runtime-error`).
    pub fn end_profiling(&mut self) -> Result<String, Error> {
        let file = self.0.session.end_profiling().map_err(|e| ort_err("end profiling", e))?;
        // ONNX Runtime answers an empty name for a session it was not profiling.
        if file.is_empty() {
            return Err(Error::runtime("the baseline was loaded without a profile prefix"));
        }
        Ok(file)
    }
}
