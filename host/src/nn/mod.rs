//! wasi:nn@0.2.0-rc-2024-10-28, laid out like wasmtime's `crates/wasi-nn`:
//!
//! * [`wit`]: the WIT glue. Implements the four imported interfaces against a [`WasiNnView`]
//!   (the store's [`WasiNnCtx`] and resource table) and knows nothing of any framework.
//! * [`backend`]: the [`backend::Backend`] / [`backend::BackendGraph`] traits a framework
//!   implements; [`onnx`] is ONNX Runtime. A second backend (OpenVINO, a GPU build) is a new
//!   module registered in [`WasiNnConfig::new`]; the glue does not change. [`onnx_check`] finds
//!   externally stored tensors in ONNX bytes before ONNX Runtime sees them.
//! * [`registry`]: graphs registered by name for `load-by-name`, loaded once and shared.
//! * [`cache`]: graphs guests load, shared by content among the host's instances (LRU under a
//!   byte budget).
//! * [`quota`]: the sandbox's wasi-nn limits (tensor bytes, live graphs per instance).
//!
//! This module holds what they share: the resource types, the tensor-type table and the input
//! checks every backend relies on (name or position, dtype, rank, fixed axes, byte length).

pub mod backend;
pub mod cache;
pub mod onnx;
pub mod onnx_check;
pub mod quota;
pub mod registry;
pub mod wit;

use std::sync::Arc;

pub use wit::{add_to_linker, WasiNnConfig, WasiNnCtx, WasiNnView};

use crate::bindings::wasi::nn::errors::ErrorCode;
use crate::bindings::wasi::nn::tensor::TensorType;
use crate::budget::Charge;
use backend::BackendGraph;
use quota::LiveToken;

/// A wasi-nn `error` resource: the error code and the host's message (`data`).
#[derive(Debug, Clone)]
pub struct Error {
    pub code: ErrorCode,
    pub data: String,
}

impl Error {
    pub fn new(code: ErrorCode, data: impl Into<String>) -> Self {
        Self { code, data: data.into() }
    }
    pub fn invalid(data: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, data)
    }
    pub fn runtime(data: impl Into<String>) -> Self {
        Self::new(ErrorCode::RuntimeError, data)
    }
}

/// The trap a wasi-nn import raises when the guest call's deadline passed inside it (e.g. an ONNX
/// Runtime run stopped by the watchdog); the engine reports it as the call's timeout.
#[derive(Debug)]
pub struct DeadlineExceeded(pub String);

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeadlineExceeded {}

/// The case name of a wasi-nn error code, as written in wasi-nn.wit (`invalid-argument`, ...).
pub fn error_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "invalid-argument",
        ErrorCode::InvalidEncoding => "invalid-encoding",
        ErrorCode::Timeout => "timeout",
        ErrorCode::RuntimeError => "runtime-error",
        ErrorCode::UnsupportedOperation => "unsupported-operation",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::NotFound => "not-found",
        ErrorCode::Security => "security",
        ErrorCode::Unknown => "unknown",
    }
}

/// Bytes per element of a wasi-nn tensor type.
pub fn dtype_size(ty: TensorType) -> usize {
    match ty {
        TensorType::U8 => 1,
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
        TensorType::Fp64 | TensorType::I64 => 8,
    }
}

/// Bytes of a tensor of `ty` with dimensions `dims` (an empty shape is one element, as wasi-nn's
/// scalar `[1]`); None when it does not fit in `usize`.
pub fn byte_len(ty: TensorType, dims: &[u32]) -> Option<usize> {
    dims.iter().try_fold(dtype_size(ty), |acc, &d| acc.checked_mul(d as usize))
}

/// Lower-case wasi-nn name of a tensor type (as in `wasmai.vocab.DTYPES`).
pub fn dtype_name(ty: TensorType) -> &'static str {
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
pub fn parse_dtype(name: &str) -> Option<TensorType> {
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

/// `[1, ?, 224]`: a shape with dynamic axes (negative) as `?`.
pub fn fmt_shape(shape: &[i64]) -> String {
    let parts: Vec<String> = shape.iter().map(|&d| if d < 0 { "?".to_string() } else { d.to_string() }).collect();
    format!("[{}]", parts.join(", "))
}

/// A caller's immutable bytes lent to a tensor: `owner` keeps them alive and unchanged (a Python
/// `bytes` object, `py::instance`), `ptr`/`len` are its buffer.
pub struct Lent {
    owner: Box<dyn Send + Sync>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the buffer is immutable for as long as `owner` lives (the contract of `Lent::new`), so
// reading it from any thread is sound.
unsafe impl Send for Lent {}
unsafe impl Sync for Lent {}

impl Lent {
    /// # Safety
    /// `ptr` must point to `len` bytes that stay valid and unchanged while `owner` lives.
    pub unsafe fn new(owner: Box<dyn Send + Sync>, ptr: *const u8, len: usize) -> Self {
        Self { owner, ptr, len }
    }
}

/// A tensor's bytes: the host's own shared buffer or a caller's lent one.
pub enum TensorData {
    /// Written once (copied from the guest's memory by the constructor, or from ONNX Runtime's
    /// output by `compute`) and handed to wasmtime by `data()` without a clone (wasmtime lowers
    /// it into the guest's memory with one memcpy).
    Shared(Arc<[u8]>),
    /// The caller's buffer, for an input the host makes for `model-tensors.infer-tensors`: no
    /// copy; ONNX Runtime reads it in place.
    Lent(Lent),
}

impl std::ops::Deref for TensorData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Shared(bytes) => bytes,
            // SAFETY: `Lent::new`'s contract: valid and unchanged while the owner lives (it lives
            // as long as `self`).
            Self::Lent(lent) => {
                let _alive = &lent.owner;
                unsafe { std::slice::from_raw_parts(lent.ptr, lent.len) }
            }
        }
    }
}

impl std::fmt::Debug for TensorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if matches!(self, Self::Shared(_)) { "shared" } else { "lent" };
        write!(f, "TensorData::{kind}({} bytes)", self.len())
    }
}

impl TensorData {
    /// The bytes as a shared buffer, for wasmtime to lower into the guest (`tensor.data()`):
    /// the buffer itself, or a copy of lent bytes.
    pub fn shared(&self) -> Arc<[u8]> {
        match self {
            Self::Shared(bytes) => bytes.clone(),
            Self::Lent(_) => Arc::from(&**self),
        }
    }
}

/// A wasi-nn `tensor` resource: shape, element type and row-major little-endian bytes, charged
/// to the instance's memory budget while the host holds it. The bytes are immutable and read in
/// place by ONNX Runtime when aligned for their element type (`onnx::input_value`).
#[derive(Debug)]
pub struct Tensor {
    pub shape: Vec<u32>,
    pub dtype: TensorType,
    pub data: TensorData,
    /// Set when the constructor refused the data (over the tensor limit or the instance's memory
    /// budget): `data` is then empty and `compute` answers this error (`too-large`).
    pub refused: Option<Error>,
    /// The bytes of `data` charged to the instance's budget (None: not charged).
    pub _charge: Option<Charge>,
}

impl Tensor {
    pub fn new(shape: Vec<u32>, dtype: TensorType, data: TensorData, charge: Option<Charge>) -> Self {
        Self { shape, dtype, data, refused: None, _charge: charge }
    }
}

/// One graph input or output as the backend reports it (dynamic axes are negative).
#[derive(Debug, Clone)]
pub struct IoSpec {
    pub name: String,
    /// The backend's own name for the element type (shown when wasi-nn cannot express it).
    pub backend_type: String,
    /// None when no wasi-nn tensor type matches.
    pub dtype: Option<TensorType>,
    pub shape: Vec<i64>,
}

/// An input matched to a graph input and checked against it.
pub struct CheckedInput {
    /// The graph's name for the input.
    pub name: String,
    pub tensor: Tensor,
    /// The shape to give the backend (a wasi-nn scalar `[1]` becomes rank 0 for a rank-0 input).
    pub shape: Vec<i64>,
}

/// Match `inputs` to the graph's `specs` — by name; an empty or numeric name means by position —
/// and check each: every input given once, dtype equal, rank equal, fixed axes equal, byte length
/// `product(shape) * dtype_size`. Returns the inputs in graph order; errors are `invalid-argument`
/// (or `unsupported-operation` for a graph input wasi-nn cannot express) naming the tensor.
pub fn check_inputs(specs: &[IoSpec], inputs: Vec<(String, Tensor)>) -> Result<Vec<CheckedInput>, Error> {
    let n = specs.len();
    let mut slots: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
    for (pos, (name, t)) in inputs.into_iter().enumerate() {
        let idx = if name.is_empty() {
            pos
        } else if let Ok(i) = name.parse::<usize>() {
            i
        } else {
            specs.iter().position(|s| s.name == name).ok_or_else(|| {
                let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                Error::invalid(format!("unknown input '{name}' (model inputs: {})", known.join(", ")))
            })?
        };
        if idx >= n {
            return Err(Error::invalid(format!("input #{idx} ('{name}') is out of range: the model has {n} input(s)")));
        }
        if slots[idx].is_some() {
            return Err(Error::invalid(format!("input '{}' is given more than once", specs[idx].name)));
        }
        slots[idx] = Some(t);
    }

    let mut checked = Vec::with_capacity(n);
    for (spec, slot) in specs.iter().zip(slots) {
        let name = &spec.name;
        let want = spec.dtype.ok_or_else(|| {
            Error::new(
                ErrorCode::UnsupportedOperation,
                format!("input '{name}' has type {}, which wasi-nn cannot express", spec.backend_type),
            )
        })?;
        let t = slot.ok_or_else(|| {
            Error::invalid(format!("missing input '{name}' ({} {})", dtype_name(want), fmt_shape(&spec.shape)))
        })?;
        if t.dtype != want {
            return Err(Error::invalid(format!(
                "input '{name}': expected type {}, got {}",
                dtype_name(want),
                dtype_name(t.dtype)
            )));
        }
        let got: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        // A wasi-nn scalar is `[1]`; an ONNX scalar has rank 0.
        let shape: Vec<i64> = if spec.shape.is_empty() && got == [1] { vec![] } else { got.clone() };
        let fits = shape.len() == spec.shape.len() && shape.iter().zip(&spec.shape).all(|(&g, &w)| w < 0 || g == w);
        if !fits {
            return Err(Error::invalid(format!(
                "input '{name}': expected dimensions {}, got {}",
                fmt_shape(&spec.shape),
                fmt_shape(&got)
            )));
        }
        let elems = got.iter().try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
        let expected = elems.and_then(|e| e.checked_mul(dtype_size(t.dtype) as u128));
        if expected != Some(t.data.len() as u128) {
            return Err(Error::invalid(format!(
                "input '{name}': {} {} needs {} bytes, got {}",
                dtype_name(t.dtype),
                fmt_shape(&got),
                expected.map_or("too many".to_string(), |e| e.to_string()),
                t.data.len()
            )));
        }
        checked.push(CheckedInput { name: name.clone(), tensor: t, shape });
    }
    Ok(checked)
}

/// A wasi-nn `graph` resource. `live` is this load's token: the graph counts against the
/// instance's graph quota, and its bytes (`charge`; None for a graph registered by the host)
/// against its memory budget, while the handle or any execution context created from it exists.
pub struct Graph {
    pub inner: Arc<dyn BackendGraph>,
    pub live: LiveToken,
    pub charge: Option<Arc<Charge>>,
}

/// A wasi-nn `graph-execution-context` resource (keeps its graph's `live` token and charge).
pub struct ExecutionContext {
    pub inner: Arc<dyn BackendGraph>,
    pub _live: LiveToken,
    pub _charge: Option<Arc<Charge>>,
}
