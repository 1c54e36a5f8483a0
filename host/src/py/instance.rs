//! `NativeComponent` (compiled, linked) and `NativeInstance` (one Store): the typed
//! `wasmai:inference` exports, statistics, captured output and `call_export` for any export.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use wasmtime::component::{Type, Val};

use super::guarded;
use super::values::{py_to_val, val_to_py};
use crate::bindings::wasmai::inference::types as wtypes;
use crate::engine::{HostEngine, Instance, Ready, TensorIn};
use crate::error::{Error, Fault};
use crate::nn::{dtype_name, parse_dtype, Lent, TensorData};

/// A compiled component, ready to instantiate.
#[pyclass(frozen, module = "wasmai._host")]
pub struct NativeComponent {
    pub(super) ready: Ready,
}

impl From<Ready> for NativeComponent {
    fn from(ready: Ready) -> Self {
        Self { ready }
    }
}

#[pymethods]
impl NativeComponent {
    /// Milliseconds to compile, or to load the cached compilation when `cache_hit`.
    #[getter]
    fn compile_ms(&self) -> f64 {
        self.ready.compile_ms
    }
    #[getter]
    fn cache_hit(&self) -> bool {
        self.ready.cache_hit
    }
    /// Hex sha256 of the component bytes.
    #[getter]
    fn sha256(&self) -> &str {
        &self.ready.sha256
    }
    /// Exports wasmai:inference/image-classification.
    #[getter]
    fn has_classifier(&self) -> bool {
        self.ready.has_classifier
    }
}

/// One Store and instance. Calls release the GIL; concurrent calls on one instance are refused.
#[pyclass(frozen, module = "wasmai._host")]
pub struct NativeInstance {
    engine: Arc<HostEngine>,
    #[pyo3(get)]
    instantiate_ms: f64,
    /// The component exports wasmai:inference/model-tensors: `infer` passes wasi-nn tensors.
    #[pyo3(get)]
    model_tensors: bool,
    inner: Mutex<Instance>,
}

/// (name, dtype, shape, bytes): a tensor as Python receives it (the shape a tuple, as
/// `wasmai.tensors.Tensor` keeps it).
type PyTensor<'py> = (String, &'static str, Bound<'py, PyTuple>, Bound<'py, PyBytes>);

/// (name, dtype, shape, bytes): a tensor as Python passes it. Name, dtype and shape are
/// converted by [`tensor_from_py`], so a bad one is an `argument` error naming the tensor rather
/// than a bare Python OverflowError / TypeError.
pub(super) type PyTensorIn<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyBytes>);

/// An input converted from Python, its bytes still the caller's `bytes` object (borrowed: the
/// guest call lowers them straight into the guest's memory, the only copy of an input before
/// wasi-nn's tensor constructor).
pub(super) struct InputTensor<'a> {
    pub(super) name: String,
    pub(super) dtype: wtypes::TensorType,
    pub(super) shape: Vec<u32>,
    pub(super) data: &'a [u8],
}

impl InputTensor<'_> {
    /// As the `infer` export's parameter type (borrows every field).
    fn param(&self) -> wtypes::TensorParam<'_> {
        wtypes::TensorParam { name: &self.name, dtype: self.dtype, shape: &self.shape, data: self.data }
    }
}

/// Input `index` as a `wasmai:inference` tensor. Errors (`argument`): a name or dtype that is not
/// a str (or not encodable as UTF-8), an unknown dtype, a shape that is not an iterable of ints
/// in `0..=u32::MAX` (wasi-nn dimensions are u32).
pub(super) fn tensor_from_py<'a>(
    index: usize,
    (name, dtype, shape, data): &'a PyTensorIn<'_>,
) -> Result<InputTensor<'a>, Error> {
    let argument = |m: String| Error::new(Fault::Argument, m);
    let name: String = name.extract().map_err(|e| argument(format!("tensor #{index}: the name is not a str: {e}")))?;
    let dtype: String =
        dtype.extract().map_err(|e| argument(format!("tensor '{name}': the dtype is not a str: {e}")))?;
    let dtype = parse_dtype(&dtype).ok_or_else(|| argument(format!("tensor '{name}': unknown dtype '{dtype}'")))?;
    let not_a_shape = |e: PyErr| argument(format!("tensor '{name}': the shape is not a sequence of ints: {e}"));
    let mut dims = Vec::new();
    for dim in shape.try_iter().map_err(not_a_shape)? {
        let dim = dim.map_err(not_a_shape)?;
        dims.push(dim.extract::<u32>().map_err(|_| {
            argument(format!(
                "tensor '{name}': dimension {} is not an int in 0..={} (wasi-nn dimensions are u32)",
                dim.repr().map_or_else(|_| "?".to_string(), |r| r.to_string()),
                u32::MAX
            ))
        })?);
    }
    Ok(InputTensor { name, dtype, shape: dims, data: data.as_bytes() })
}

fn busy() -> Error {
    Error::new(Fault::Busy, "this instance is in use by another thread (use one instance per thread)")
}

impl NativeInstance {
    pub(super) fn new(engine: Arc<HostEngine>, instance: Instance) -> Self {
        Self {
            engine,
            instantiate_ms: instance.instantiate_ms,
            model_tensors: instance.model_tensors.is_some(),
            inner: Mutex::new(instance),
        }
    }

    /// The instance, unless another thread is calling it. A mutex poisoned by a host panic is
    /// taken anyway: the instance is already marked dead, so the next call is refused.
    fn try_lock(&self) -> Result<MutexGuard<'_, Instance>, Error> {
        match self.inner.try_lock() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(busy()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Instance> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Call into the guest without the GIL (see `Instance::call`).
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        what: &str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| guarded(|| self.try_lock()?.call(&self.engine, what, f)))
    }

    /// Like `call` for an export that returns the guest's `result<T, error>`.
    fn call_result<T: Send>(
        &self,
        py: Python<'_>,
        what: &str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, wtypes::Error>> + Send,
    ) -> PyResult<T> {
        self.call(py, what, f)?.map_err(|e| Error::Guest(e).into())
    }

    fn classifier_call<T: Send>(
        &self,
        py: Python<'_>,
        what: &str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<T> + Send,
    ) -> PyResult<T> {
        if self.lock().classifier.is_none() {
            return Err(Error::new(
                Fault::Unsupported,
                "this component does not export wasmai:inference/image-classification (it is a tensor-model)",
            )
            .into());
        }
        self.call(py, what, f)
    }
}

fn spec_dict<'py>(py: Python<'py>, spec: &wtypes::TensorSpec) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &spec.name)?;
    d.set_item("dtype", dtype_name(spec.dtype))?;
    let shape = PyList::empty(py);
    for dim in &spec.shape {
        match dim {
            wtypes::Dim::Fixed(n) => shape.append(*n)?,
            wtypes::Dim::Dynamic(s) => shape.append(s)?,
        }
    }
    d.set_item("shape", shape)?;
    Ok(d)
}

#[pymethods]
impl NativeInstance {
    /// metadata.info() as a dict (WIT field names with '-' -> '_'; dtypes lower case; tensor
    /// specs as {"name", "dtype", "shape"}).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = self.call(py, "metadata.info", |i| i.meta.call_info(&mut i.store))?;
        let d = PyDict::new(py);
        d.set_item("name", &info.name)?;
        d.set_item("version", &info.version)?;
        d.set_item("task", &info.task)?;
        for (key, specs) in [("inputs", &info.inputs), ("outputs", &info.outputs)] {
            let list = PyList::empty(py);
            for s in specs {
                list.append(spec_dict(py, s)?)?;
            }
            d.set_item(key, list)?;
        }
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
        self.call_result(py, "model.load", |i| i.model.call_load(&mut i.store))
    }

    /// model.infer(inputs): inputs and outputs are (name, dtype, shape, bytes) tuples. Through
    /// `model-tensors.infer-tensors` when the component exports it (each input's `bytes` lent to a
    /// wasi-nn tensor, not copied; each output copied once, into its `bytes`), else `model.infer`
    /// (the bytes pass through the guest's memory). host/README.md lists every copy.
    fn infer<'py>(&self, py: Python<'py>, inputs: Vec<PyTensorIn<'py>>) -> PyResult<Vec<PyTensor<'py>>> {
        let mut tensors = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            tensors.push(tensor_from_py(index, input)?);
        }
        if self.model_tensors {
            // Each input's `bytes` object is lent to its wasi-nn tensor (kept alive by it, read in
            // place by ONNX Runtime), so no input byte is copied.
            let args: Vec<TensorIn<'_>> = tensors
                .iter()
                .zip(&inputs)
                .map(|(t, (_, _, _, bytes))| {
                    let owner: Py<PyBytes> = bytes.clone().unbind();
                    // SAFETY: a `bytes` object's buffer is immutable and lives as long as the
                    // object, which `owner` keeps alive; `t.data` is that buffer.
                    let lent = unsafe { Lent::new(Box::new(owner), t.data.as_ptr(), t.data.len()) };
                    (t.name.as_str(), t.dtype, t.shape.as_slice(), TensorData::Lent(lent))
                })
                .collect();
            let outputs = self.call_result(py, "model-tensors.infer-tensors", move |i| i.infer_tensors(args))?;
            return outputs
                .into_iter()
                .map(|t| Ok((t.name, dtype_name(t.dtype), PyTuple::new(py, t.shape)?, PyBytes::new(py, &t.data))))
                .collect();
        }
        // The `bytes` objects stay alive (held by `inputs`) and immutable while the call runs
        // without the GIL, so the guest call can read them in place.
        let params: Vec<wtypes::TensorParam<'_>> = tensors.iter().map(InputTensor::param).collect();
        let outputs = self.call_result(py, "model.infer", move |i| i.model.call_infer(&mut i.store, &params))?;
        // The output bytes were lifted out of the guest's memory by the call; `PyBytes::new` copies
        // them into the Python object (a `bytes` cannot adopt a Rust buffer).
        outputs
            .into_iter()
            .map(|t| Ok((t.name, dtype_name(t.dtype), PyTuple::new(py, t.shape)?, PyBytes::new(py, &t.data))))
            .collect()
    }

    /// image-classification.classify(image, top_k) -> [(label, index, score)].
    fn classify(&self, py: Python<'_>, image: &Bound<'_, PyBytes>, top_k: u32) -> PyResult<Vec<(String, u32, f32)>> {
        // Read in place without the GIL (the `bytes` object is alive and immutable for the call):
        // lowered straight into the guest's memory.
        let bytes = image.as_bytes();
        let preds = self.classifier_call(py, "image-classification.classify", move |i| match &i.classifier {
            Some(c) => c.call_classify(&mut i.store, bytes, top_k),
            None => Err(wasmtime::format_err!("not an image classifier")),
        })?;
        Ok(preds.map_err(Error::Guest)?.into_iter().map(|p| (p.label, p.index, p.score)).collect())
    }

    /// image-classification.last-timings() as a dict of microseconds.
    fn last_timings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = self.classifier_call(py, "image-classification.last-timings", |i| match &i.classifier {
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

    /// Host-side statistics of this instance: the last backend run (ns), compute calls, the
    /// execution provider and the peak linear memory (bytes).
    fn host_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.lock();
        let data = inner.store.data();
        let d = PyDict::new(py);
        d.set_item("ort_run_ns", data.nn.stats.run_ns)?;
        d.set_item("compute_calls", data.nn.stats.compute_calls)?;
        d.set_item("execution_provider", &data.nn.stats.execution_provider)?;
        d.set_item("linear_memory_bytes", data.limiter.peak_bytes)?;
        d.set_item("memory_budget_bytes", data.limiter.budget.max())?;
        d.set_item("memory_budget_used_bytes", data.limiter.budget.total())?;
        d.set_item("memory_budget_peak_bytes", data.limiter.budget.peak())?;
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
    /// world-level function (`read-file`) or `<interface>#<function>`. See `values.rs` for the
    /// mapping. Same sandbox, timeout and trap handling as every call.
    #[pyo3(signature = (name, *args))]
    fn call_export<'py>(&self, py: Python<'py>, name: String, args: Vec<Bound<'py, PyAny>>) -> PyResult<Py<PyAny>> {
        let (func, params, n_results) = {
            let mut guard = self.try_lock()?;
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
                .ok_or_else(|| Error::new(Fault::Unsupported, format!("the component exports no function '{name}'")))?;
            let ty = func.ty(&inner.store);
            let params: Vec<(String, Type)> = ty.params().map(|(n, t)| (n.to_string(), t)).collect();
            let n_results = ty.results().len();
            (func, params, n_results)
        };
        let argument = |m: String| PyErr::from(Error::new(Fault::Argument, m));
        if args.len() != params.len() {
            return Err(argument(format!("{name} takes {} argument(s), got {}", params.len(), args.len())));
        }
        let mut values = Vec::with_capacity(args.len());
        for (arg, (pname, ty)) in args.iter().zip(&params) {
            values.push(py_to_val(arg, ty).map_err(|m| argument(format!("{name}({pname}): {m}")))?);
        }
        let out = self.call(py, &name, move |i| {
            let mut out = vec![Val::Bool(false); n_results];
            func.call(&mut i.store, &values, &mut out)?;
            Ok(out)
        })?;
        match out.first() {
            None => Ok(py.None()),
            Some(v) => val_to_py(py, v).map_err(|m| Error::new(Fault::Unsupported, format!("{name}: {m}")).into()),
        }
    }

    /// The guest's captured (stdout, stderr) so far: at most 64 KiB each, empty when the host
    /// inherits stdio.
    fn output<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, Bound<'py, PyBytes>) {
        let inner = self.lock();
        (PyBytes::new(py, &inner.captured.stdout.contents()), PyBytes::new(py, &inner.captured.stderr.contents()))
    }
}
