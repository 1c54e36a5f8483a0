//! wasi:nn@0.2.0-rc-2024-10-28 implemented on ONNX Runtime (the `ort` crate, loaded dynamically).
//!
//! All seven wasi-nn tensor types cross in both directions as raw little-endian bytes: tensors are
//! created with `DynTensor::new` of the matching ONNX element type and filled with one memcpy, and
//! outputs are copied out of ONNX Runtime's buffer the same way, so fp16/bf16 need no conversion.
//! Every failure becomes a wasi-nn `error` resource (code + message); nothing here panics on guest
//! input (the PyO3 boundary still has `catch_unwind` as the last guard).
//!
//! Sandbox limits (`NnShared`): `max_tensor_bytes` bounds every wasi-nn tensor. The tensor
//! constructor cannot return an error in this wasi-nn version, so an oversized tensor is kept
//! without its bytes (its `data` reads as empty) and `compute` answers `too-large`; outputs over
//! the limit are refused by `compute` the same way. `max_graphs` bounds the live graphs of one
//! instance (a graph stays live while its handle or any of its execution contexts exist):
//! `load` / `load-by-name` beyond it answer `security` (a policy refusal: the graph itself is
//! not too large, the sandbox denies another one).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use ort::ep::ExecutionProvider;
use ort::memory::Allocator;
use ort::session::{Session, SessionInputValue, SessionInputs};
use ort::value::{DynTensor, DynTensorValueType, TensorElementType, ValueType};
use wasmtime::component::{Resource, ResourceTable};

use crate::bindings::wasi::nn::errors::{self, ErrorCode};
use crate::bindings::wasi::nn::graph::{self, ExecutionTarget, GraphEncoding};
use crate::bindings::wasi::nn::inference;
use crate::bindings::wasi::nn::tensor::{self, TensorType};
use crate::State;

/// The ONNX Runtime environment shared by every host in the process (ONNX Runtime allows one).
static ORT_ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Load ONNX Runtime from `lib_path` (the `libonnxruntime.so.*` inside the Python onnxruntime
/// wheel) and create the process-wide environment. Later calls return the first result.
pub fn init_ort(lib_path: &str) -> Result<&'static ort::environment::Environment, String> {
    ORT_ENV
        .get_or_init(|| {
            let builder = ort::init_from(lib_path)
                .map_err(|e| format!("cannot load ONNX Runtime from {lib_path}: {e}"))?;
            builder
                .with_name("wasmai")
                .build()
                .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))
        })
        .as_ref()
        .map_err(|e| e.clone())
}

fn env() -> Result<&'static ort::environment::Environment, NnError> {
    match ORT_ENV.get() {
        Some(Ok(env)) => Ok(env),
        _ => Err(NnError::new(ErrorCode::RuntimeError, "ONNX Runtime is not initialised")),
    }
}

/// A wasi-nn `error` resource: the error code and the host's message.
#[derive(Debug, Clone)]
pub struct NnError {
    pub code: ErrorCode,
    pub data: String,
}

impl NnError {
    pub fn new(code: ErrorCode, data: impl Into<String>) -> Self {
        Self { code, data: data.into() }
    }
    fn invalid(data: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, data)
    }
}

/// A wasi-nn `tensor` resource: dimensions, element type and row-major little-endian bytes.
#[derive(Debug, Clone)]
pub struct NnTensor {
    pub dimensions: Vec<u32>,
    pub ty: TensorType,
    pub data: Vec<u8>,
    /// Set (to the byte length given) when the constructor refused the data for being over
    /// the host's `max_tensor_bytes`; `data` is then empty and `compute` answers `too-large`.
    pub refused_bytes: Option<usize>,
}

impl NnTensor {
    /// A tensor as returned by `compute` (never refused).
    pub fn new(dimensions: Vec<u32>, ty: TensorType, data: Vec<u8>) -> Self {
        Self { dimensions, ty, data, refused_bytes: None }
    }
}

/// Bytes per element of a wasi-nn tensor type.
pub fn type_size(ty: TensorType) -> usize {
    match ty {
        TensorType::U8 => 1,
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
        TensorType::Fp64 | TensorType::I64 => 8,
    }
}

/// Lower-case wasi-nn name of a tensor type (as in `wasmai.manifest.TENSOR_TYPES`).
pub fn type_name(ty: TensorType) -> &'static str {
    match ty {
        TensorType::Fp16 => "fp16",
        TensorType::Fp32 => "fp32",
        TensorType::Fp64 => "fp64",
        TensorType::Bf16 => "bf16",
        TensorType::U8 => "u8",
        TensorType::I32 => "i32",
        TensorType::I64 => "i64",
    }
}

/// Parse a lower-case wasi-nn tensor type name.
pub fn parse_type(name: &str) -> Option<TensorType> {
    Some(match name {
        "fp16" => TensorType::Fp16,
        "fp32" => TensorType::Fp32,
        "fp64" => TensorType::Fp64,
        "bf16" => TensorType::Bf16,
        "u8" => TensorType::U8,
        "i32" => TensorType::I32,
        "i64" => TensorType::I64,
        _ => return None,
    })
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

/// The bytes of an input as an ONNX Runtime tensor that reads them in place (no copy), for the
/// element types ort can view and when the bytes are aligned for that type; `None` = copy instead.
fn borrowed_input<'a>(ty: TensorType, shape: &[i64], data: &'a [u8]) -> Option<ort::Result<SessionInputValue<'a>>> {
    fn view<'a, T>(shape: &[i64], data: &'a [u8]) -> Option<ort::Result<SessionInputValue<'a>>>
    where
        T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
    {
        let size = std::mem::size_of::<T>();
        if data.is_empty() || data.len() % size != 0 || (data.as_ptr() as usize) % std::mem::align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: the pointer is aligned for T and the length a multiple of its size (checked
        // above); T is a plain number type, valid for every bit pattern; the slice borrows `data`.
        let slice = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, data.len() / size) };
        Some(ort::value::TensorRef::from_array_view((shape.to_vec(), slice)).map(SessionInputValue::from))
    }
    match ty {
        TensorType::Fp32 => view::<f32>(shape, data),
        TensorType::Fp64 => view::<f64>(shape, data),
        TensorType::U8 => view::<u8>(shape, data),
        TensorType::I32 => view::<i32>(shape, data),
        TensorType::I64 => view::<i64>(shape, data),
        // fp16/bf16 (no element type without ort's `half` feature): copied.
        TensorType::Fp16 | TensorType::Bf16 => None,
    }
}

/// The bytes of an input copied into a tensor that ONNX Runtime allocates (any element type).
fn copied_input(name: &str, t: &NnTensor, shape: Vec<i64>) -> Result<SessionInputValue<'static>, NnError> {
    let mut value = DynTensor::new(&Allocator::default(), to_onnx(t.ty), shape)
        .map_err(|e| ort_err(&format!("input '{name}': cannot allocate the tensor"), e))?;
    if !t.data.is_empty() {
        let dst = value.data_ptr_mut() as *mut u8;
        if dst.is_null() {
            return Err(NnError::new(ErrorCode::RuntimeError, format!("input '{name}': no tensor buffer")));
        }
        // SAFETY: ONNX Runtime allocated product(dims) * size-of(ty) == data.len() bytes on the
        // CPU allocator for this tensor (checked by the caller); the regions are disjoint.
        unsafe { std::ptr::copy_nonoverlapping(t.data.as_ptr(), dst, t.data.len()) };
    }
    Ok(SessionInputValue::from(value))
}

fn fmt_dims(dims: &[i64]) -> String {
    let parts: Vec<String> = dims.iter().map(|&d| if d < 0 { "?".to_string() } else { d.to_string() }).collect();
    format!("[{}]", parts.join(", "))
}

/// One graph input or output as ONNX Runtime reports it (dynamic axes are -1).
#[derive(Debug, Clone)]
pub struct IoSpec {
    pub name: String,
    pub onnx_type: String,
    pub ty: Option<TensorType>,
    pub shape: Vec<i64>,
}

/// A loaded graph: one ONNX Runtime session (its `run` needs `&mut`, hence the mutex) and its
/// signature. Shared between instances when it comes from the load-by-name registry.
pub struct GraphInner {
    session: Mutex<Session>,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    pub execution_provider: String,
}

/// wasi-nn `graph` resource. `live` is this load's token: the graph counts against
/// `max_graphs` while the handle or any execution context created from it holds the token.
pub struct NnGraph {
    pub inner: Arc<GraphInner>,
    live: Arc<()>,
}
/// wasi-nn `graph-execution-context` resource (keeps its graph's `live` token).
pub struct NnExecCtx {
    pub inner: Arc<GraphInner>,
    _live: Arc<()>,
}

/// Per-store wasi-nn bookkeeping for the sandbox limits.
#[derive(Debug, Default)]
pub struct NnQuota {
    /// One weak token per graph loaded by this instance; dead tokens are graphs fully dropped.
    graphs: Vec<Weak<()>>,
}

impl NnQuota {
    /// Refuse a new graph when `max` graphs are live; otherwise register it and return its token.
    fn admit(&mut self, max: Option<usize>) -> Result<Arc<()>, NnError> {
        self.graphs.retain(|w| w.strong_count() > 0);
        if let Some(max) = max {
            if self.graphs.len() >= max {
                return Err(NnError::new(
                    ErrorCode::Security,
                    format!(
                        "this instance already holds {} live graph(s), the host's limit (max-graphs {max}); \
                         drop a graph and its execution contexts first",
                        self.graphs.len()
                    ),
                ));
            }
        }
        let token = Arc::new(());
        self.graphs.push(Arc::downgrade(&token));
        Ok(token)
    }
}

/// Host-wide wasi-nn configuration: the load-by-name registry and session options.
pub struct NnShared {
    /// name -> (path, the graph once loaded). Each registered graph is loaded once and shared.
    registry: HashMap<String, (PathBuf, Mutex<Option<Arc<GraphInner>>>)>,
    pub allow_target_fallback: bool,
    pub intra_op_threads: usize,
    /// Largest wasi-nn tensor (input or output) in bytes; None = unbounded.
    pub max_tensor_bytes: Option<usize>,
    /// Most live graphs per instance; None = unbounded.
    pub max_graphs: Option<usize>,
}

impl NnShared {
    pub fn new(
        graphs: Vec<(String, PathBuf)>,
        allow_target_fallback: bool,
        intra_op_threads: usize,
        max_tensor_bytes: Option<usize>,
        max_graphs: Option<usize>,
    ) -> Self {
        let registry = graphs.into_iter().map(|(n, p)| (n, (p, Mutex::new(None)))).collect();
        Self { registry, allow_target_fallback, intra_op_threads, max_tensor_bytes, max_graphs }
    }

    /// The `too-large` error for a tensor of `bytes` bytes, if it is over `max_tensor_bytes`.
    pub fn tensor_too_large(&self, what: &str, bytes: usize) -> Option<NnError> {
        let max = self.max_tensor_bytes?;
        (bytes > max).then(|| {
            NnError::new(
                ErrorCode::TooLarge,
                format!("{what} is {bytes} bytes, over the host's limit of {max} bytes (max-tensor-bytes)"),
            )
        })
    }
}

/// Per-store wasi-nn statistics, read by `Instance.host_stats()`.
#[derive(Debug, Default, Clone)]
pub struct NnStats {
    /// Wall time of the last `session.run`, in nanoseconds.
    pub ort_run_ns: u64,
    pub compute_calls: u64,
    pub execution_provider: String,
}

/// GPU execution providers this host knows how to register, in order of preference.
fn gpu_provider() -> Option<(&'static str, ort::ep::ExecutionProviderDispatch)> {
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        return Some(("CUDAExecutionProvider", ort::ep::CUDA::default().build().error_on_failure()));
    }
    if ort::ep::ROCm::is_available().unwrap_or(false) {
        return Some(("ROCMExecutionProvider", ort::ep::ROCm::default().build().error_on_failure()));
    }
    None
}

fn ort_err(context: &str, e: impl std::fmt::Display) -> NnError {
    NnError::new(ErrorCode::RuntimeError, format!("{context}: {e}"))
}

fn io_specs(outlets: &[ort::value::Outlet]) -> Vec<IoSpec> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => IoSpec {
                name: o.name().to_string(),
                onnx_type: ty.to_string(),
                ty: from_onnx(*ty),
                shape: shape.iter().copied().collect(),
            },
            other => IoSpec { name: o.name().to_string(), onnx_type: other.to_string(), ty: None, shape: vec![] },
        })
        .collect()
}

/// Looks like a serialized ONNX ModelProto: protobuf field 1 (`ir_version`, varint) comes first,
/// which every ONNX serializer writes (fields are emitted in field-number order).
fn looks_like_onnx(bytes: &[u8]) -> bool {
    bytes.len() > 2 && bytes[0] == 0x08
}

/// Create an ONNX Runtime session for `bytes` on `target`.
pub fn load_graph(shared: &NnShared, bytes: &[u8], target: ExecutionTarget) -> Result<GraphInner, NnError> {
    if !looks_like_onnx(bytes) {
        return Err(NnError::new(
            ErrorCode::InvalidEncoding,
            format!("graph is not an ONNX model ({} bytes; an ONNX ModelProto starts with 0x08)", bytes.len()),
        ));
    }
    let mut builder = Session::builder(env()?).map_err(|e| ort_err("session builder", e))?;
    if shared.intra_op_threads > 0 {
        builder = builder.with_intra_threads(shared.intra_op_threads).map_err(|e| ort_err("intra-op threads", e))?;
    }
    let mut provider = "CPUExecutionProvider".to_string();
    if !matches!(target, ExecutionTarget::Cpu) {
        let wanted = if matches!(target, ExecutionTarget::Gpu) { "gpu" } else { "tpu" };
        match (matches!(target, ExecutionTarget::Gpu), gpu_provider()) {
            (true, Some((name, ep))) => {
                builder = builder
                    .with_execution_providers([ep])
                    .map_err(|e| NnError::new(ErrorCode::UnsupportedOperation, format!("cannot enable {name}: {e}")))?;
                provider = name.to_string();
            }
            _ if shared.allow_target_fallback => {
                provider = format!("CPUExecutionProvider (fallback: no {wanted} execution provider in this ONNX Runtime)");
            }
            _ => {
                return Err(NnError::new(
                    ErrorCode::UnsupportedOperation,
                    format!(
                        "execution target {wanted}: this ONNX Runtime has no {wanted} execution provider \
                         (allow the CPU fallback with --allow-target-fallback)"
                    ),
                ))
            }
        }
    }
    let session = builder.commit_from_memory(bytes).map_err(|e| {
        let code = match e.code() {
            ort::ErrorCode::InvalidProtobuf => ErrorCode::InvalidEncoding,
            ort::ErrorCode::InvalidGraph | ort::ErrorCode::NotImplemented => ErrorCode::InvalidArgument,
            _ => ErrorCode::RuntimeError,
        };
        NnError::new(code, format!("ONNX Runtime cannot load the graph: {e}"))
    })?;
    let inputs = io_specs(session.inputs());
    let outputs = io_specs(session.outputs());
    Ok(GraphInner { session: Mutex::new(session), inputs, outputs, execution_provider: provider })
}

impl GraphInner {
    /// Run the graph. Inputs are matched by name; an empty or numeric name means "by position".
    /// Returns the outputs in model order and the wall time of `session.run` in nanoseconds.
    /// Outputs over `shared.max_tensor_bytes` are refused with `too-large` before they are copied.
    pub fn compute(
        &self,
        shared: &NnShared,
        inputs: Vec<(String, NnTensor)>,
    ) -> Result<(Vec<(String, NnTensor)>, u64), NnError> {
        let n = self.inputs.len();
        let mut slots: Vec<Option<NnTensor>> = (0..n).map(|_| None).collect();
        for (pos, (name, t)) in inputs.into_iter().enumerate() {
            let idx = if name.is_empty() {
                pos
            } else if let Ok(i) = name.parse::<usize>() {
                i
            } else {
                self.inputs.iter().position(|s| s.name == name).ok_or_else(|| {
                    let known: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
                    NnError::invalid(format!("unknown input '{name}' (model inputs: {})", known.join(", ")))
                })?
            };
            if idx >= n {
                return Err(NnError::invalid(format!(
                    "input #{idx} ('{name}') is out of range: the model has {n} input(s)"
                )));
            }
            if slots[idx].is_some() {
                return Err(NnError::invalid(format!("input '{}' is given more than once", self.inputs[idx].name)));
            }
            slots[idx] = Some(t);
        }

        // Checked inputs (name, tensor, ONNX shape); they must outlive `run`, which may read them in place.
        let mut checked: Vec<(&str, NnTensor, Vec<i64>)> = Vec::with_capacity(n);
        for (spec, slot) in self.inputs.iter().zip(slots) {
            let name = &spec.name;
            let want_ty = spec.ty.ok_or_else(|| {
                NnError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("input '{name}' has ONNX type {}, which wasi-nn cannot express", spec.onnx_type),
                )
            })?;
            let t = slot.ok_or_else(|| {
                NnError::invalid(format!(
                    "missing input '{name}' ({} {})",
                    type_name(want_ty),
                    fmt_dims(&spec.shape)
                ))
            })?;
            if t.ty != want_ty {
                return Err(NnError::invalid(format!(
                    "input '{name}': expected type {}, got {}",
                    type_name(want_ty),
                    type_name(t.ty)
                )));
            }
            let got: Vec<i64> = t.dimensions.iter().map(|&d| d as i64).collect();
            // A wasi-nn scalar is `[1]`; an ONNX scalar has rank 0.
            let shape: Vec<i64> = if spec.shape.is_empty() && got == [1] { vec![] } else { got.clone() };
            let dims_ok = shape.len() == spec.shape.len()
                && shape.iter().zip(&spec.shape).all(|(&g, &w)| w < 0 || g == w);
            if !dims_ok {
                return Err(NnError::invalid(format!(
                    "input '{name}': expected dimensions {}, got {}",
                    fmt_dims(&spec.shape),
                    fmt_dims(&got)
                )));
            }
            let elems = got.iter().try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
            let expected = elems.and_then(|e| e.checked_mul(type_size(t.ty) as u128));
            if expected != Some(t.data.len() as u128) {
                return Err(NnError::invalid(format!(
                    "input '{name}': {} {} needs {} bytes, got {}",
                    type_name(t.ty),
                    fmt_dims(&got),
                    expected.map_or("too many".to_string(), |e| e.to_string()),
                    t.data.len()
                )));
            }
            checked.push((name.as_str(), t, shape));
        }

        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(n);
        for (name, t, shape) in &checked {
            let value = match borrowed_input(t.ty, shape, &t.data) {
                Some(view) => view.map_err(|e| ort_err(&format!("input '{name}': cannot wrap the tensor"), e))?,
                None => copied_input(name, t, shape.clone())?,
            };
            values.push((Cow::Borrowed(*name), value));
        }

        let mut session = self
            .session
            .lock()
            .map_err(|_| NnError::new(ErrorCode::RuntimeError, "the graph's session is poisoned by an earlier panic"))?;
        let start = Instant::now();
        let outputs = session
            .run(SessionInputs::<'_, '_, 0>::ValueMap(values))
            .map_err(|e| NnError::new(ErrorCode::RuntimeError, format!("ONNX Runtime run failed: {e}")))?;
        let ort_run_ns = start.elapsed().as_nanos() as u64;

        let mut result = Vec::with_capacity(self.outputs.len());
        for spec in &self.outputs {
            let name = &spec.name;
            let value = outputs
                .get(name.as_str())
                .ok_or_else(|| NnError::new(ErrorCode::RuntimeError, format!("output '{name}' missing")))?;
            let tensor = value.view().downcast::<DynTensorValueType>().map_err(|_| {
                NnError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("output '{name}' is a {}, not a tensor", value.dtype()),
                )
            })?;
            let (onnx_ty, shape) = match tensor.dtype() {
                ValueType::Tensor { ty, shape, .. } => (*ty, shape.iter().copied().collect::<Vec<i64>>()),
                other => {
                    return Err(NnError::new(ErrorCode::UnsupportedOperation, format!("output '{name}' is a {other}")))
                }
            };
            let ty = from_onnx(onnx_ty).ok_or_else(|| {
                NnError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("output '{name}' has ONNX type {onnx_ty}, which wasi-nn cannot express"),
                )
            })?;
            let mut dims = Vec::with_capacity(shape.len().max(1));
            for &d in &shape {
                dims.push(u32::try_from(d).map_err(|_| {
                    NnError::new(ErrorCode::RuntimeError, format!("output '{name}': dimension {d} does not fit u32"))
                })?);
            }
            if dims.is_empty() {
                dims.push(1);
            }
            let len = dims
                .iter()
                .try_fold(type_size(ty), |acc, &d| acc.checked_mul(d as usize))
                .ok_or_else(|| NnError::new(ErrorCode::TooLarge, format!("output '{name}' does not fit in memory")))?;
            if let Some(e) = shared.tensor_too_large(&format!("output '{name}'"), len) {
                return Err(e);
            }
            let mut data = vec![0u8; 0];
            if len > 0 {
                let src = tensor.data_ptr() as *const u8;
                if src.is_null() || !tensor.memory_info().is_cpu_accessible() {
                    return Err(NnError::new(ErrorCode::RuntimeError, format!("output '{name}' is not in CPU memory")));
                }
                // SAFETY: ONNX Runtime owns `len` bytes of CPU memory for this tensor until
                // `outputs` is dropped at the end of this function.
                data = unsafe { std::slice::from_raw_parts(src, len) }.to_vec();
            }
            result.push((name.clone(), NnTensor::new(dims, ty, data)));
        }
        Ok((result, ort_run_ns))
    }
}

fn push_err(table: &mut ResourceTable, e: NnError) -> wasmtime::Result<Resource<NnError>> {
    Ok(table.push(e)?)
}

impl errors::Host for State {}

impl errors::HostError for State {
    fn code(&mut self, self_: Resource<NnError>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&self_)?.code)
    }
    fn data(&mut self, self_: Resource<NnError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&self_)?.data.clone())
    }
    fn drop(&mut self, rep: Resource<NnError>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl tensor::Host for State {}

impl tensor::HostTensor for State {
    fn new(&mut self, dimensions: Vec<u32>, ty: TensorType, data: Vec<u8>) -> wasmtime::Result<Resource<NnTensor>> {
        // The constructor cannot return an error: lengths are checked when the tensor is used
        // (compute). Bytes over max-tensor-bytes are dropped here and refused there.
        let tensor = if self.nn.tensor_too_large("tensor", data.len()).is_some() {
            NnTensor { dimensions, ty, data: Vec::new(), refused_bytes: Some(data.len()) }
        } else {
            NnTensor::new(dimensions, ty, data)
        };
        Ok(self.table.push(tensor)?)
    }
    fn dimensions(&mut self, self_: Resource<NnTensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&self_)?.dimensions.clone())
    }
    fn ty(&mut self, self_: Resource<NnTensor>) -> wasmtime::Result<TensorType> {
        Ok(self.table.get(&self_)?.ty)
    }
    fn data(&mut self, self_: Resource<NnTensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&self_)?.data.clone())
    }
    fn drop(&mut self, rep: Resource<NnTensor>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl graph::Host for State {
    fn load(
        &mut self,
        builder: Vec<Vec<u8>>,
        encoding: GraphEncoding,
        target: ExecutionTarget,
    ) -> wasmtime::Result<Result<Resource<NnGraph>, Resource<NnError>>> {
        let token = match self.quota.admit(self.nn.max_graphs) {
            Ok(t) => t,
            Err(e) => return Ok(Err(push_err(&mut self.table, e)?)),
        };
        let result = match encoding {
            GraphEncoding::Onnx | GraphEncoding::Autodetect => {
                if builder.len() != 1 {
                    Err(NnError::invalid(format!("an ONNX graph is one builder, got {}", builder.len())))
                } else {
                    load_graph(&self.nn, &builder[0], target)
                }
            }
            other => Err(NnError::new(
                ErrorCode::InvalidEncoding,
                format!("graph encoding {other:?} is not supported by this host (onnx and autodetect are)"),
            )),
        };
        match result {
            Ok(g) => Ok(Ok(self.table.push(NnGraph { inner: Arc::new(g), live: token })?)),
            Err(e) => Ok(Err(push_err(&mut self.table, e)?)),
        }
    }

    fn load_by_name(&mut self, name: String) -> wasmtime::Result<Result<Resource<NnGraph>, Resource<NnError>>> {
        let token = match self.quota.admit(self.nn.max_graphs) {
            Ok(t) => t,
            Err(e) => return Ok(Err(push_err(&mut self.table, e)?)),
        };
        let result = match self.nn.registry.get(&name) {
            None => {
                let mut known: Vec<&str> = self.nn.registry.keys().map(|s| s.as_str()).collect();
                known.sort();
                Err(NnError::new(
                    ErrorCode::NotFound,
                    format!(
                        "no graph named '{name}' is registered (registered: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ))
            }
            Some((path, slot)) => match slot.lock() {
                Err(_) => Err(NnError::new(ErrorCode::RuntimeError, "graph registry poisoned")),
                Ok(mut slot) => match slot.as_ref() {
                    Some(g) => Ok(g.clone()),
                    None => match std::fs::read(path) {
                        Err(e) => Err(NnError::new(
                            ErrorCode::NotFound,
                            format!("graph '{name}': cannot read {}: {e}", path.display()),
                        )),
                        Ok(bytes) => load_graph(&self.nn, &bytes, ExecutionTarget::Cpu).map(|g| {
                            let g = Arc::new(g);
                            *slot = Some(g.clone());
                            g
                        }),
                    },
                },
            },
        };
        match result {
            Ok(g) => Ok(Ok(self.table.push(NnGraph { inner: g, live: token })?)),
            Err(e) => Ok(Err(push_err(&mut self.table, e)?)),
        }
    }
}

impl graph::HostGraph for State {
    fn init_execution_context(
        &mut self,
        self_: Resource<NnGraph>,
    ) -> wasmtime::Result<Result<Resource<NnExecCtx>, Resource<NnError>>> {
        let g = self.table.get(&self_)?;
        let ctx = NnExecCtx { inner: g.inner.clone(), _live: g.live.clone() };
        Ok(Ok(self.table.push(ctx)?))
    }
    fn drop(&mut self, rep: Resource<NnGraph>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl inference::Host for State {}

impl inference::HostGraphExecutionContext for State {
    fn compute(
        &mut self,
        self_: Resource<NnExecCtx>,
        inputs: Vec<(String, Resource<NnTensor>)>,
    ) -> wasmtime::Result<Result<Vec<(String, Resource<NnTensor>)>, Resource<NnError>>> {
        // The tensors are owned handles: take them out of the table (no copy).
        let mut tensors = Vec::with_capacity(inputs.len());
        let mut refused = None;
        for (name, r) in inputs {
            let t = self.table.delete(r)?;
            if let (None, Some(bytes)) = (&refused, t.refused_bytes) {
                refused = self.nn.tensor_too_large(&format!("input tensor '{name}'"), bytes);
            }
            tensors.push((name, t));
        }
        if let Some(e) = refused {
            return Ok(Err(push_err(&mut self.table, e)?));
        }
        let g = self.table.get(&self_)?.inner.clone();
        match g.compute(&self.nn, tensors) {
            Ok((outputs, ns)) => {
                self.stats.ort_run_ns = ns;
                self.stats.compute_calls += 1;
                self.stats.execution_provider = g.execution_provider.clone();
                let mut out = Vec::with_capacity(outputs.len());
                for (name, t) in outputs {
                    out.push((name, self.table.push(t)?));
                }
                Ok(Ok(out))
            }
            Err(e) => Ok(Err(push_err(&mut self.table, e)?)),
        }
    }
    fn drop(&mut self, rep: Resource<NnExecCtx>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}
