//! `NativeBaseline`: the model file in ONNX Runtime through the host's own library, with none of
//! the host around it (`wasmai bench`'s same-library baseline; [`onnx::LibraryBaseline`]).

use std::path::PathBuf;

use pyo3::prelude::*;

use super::guarded;
use super::instance::{tensor_from_py, PyTensorIn};
use crate::error::{Error, Fault};
use crate::nn::onnx;

#[pyclass(module = "wasmai._host")]
pub struct NativeBaseline(onnx::LibraryBaseline);

fn ort_error(e: crate::nn::Error) -> Error {
    Error::new(Fault::OnnxRuntime, e.data)
}

#[pymethods]
impl NativeBaseline {
    /// NativeBaseline(path, intra_op_threads, profile_prefix=None): a session of the ONNX file at
    /// `path` (0 threads: ONNX Runtime's default), profiled when `profile_prefix` is given. Needs
    /// a `NativeHost` made first (it loads ONNX Runtime). Errors (`onnxruntime`): ONNX Runtime not
    /// loaded, or refusing the file.
    #[new]
    #[pyo3(signature = (path, intra_op_threads, profile_prefix=None))]
    fn new(py: Python<'_>, path: PathBuf, intra_op_threads: usize, profile_prefix: Option<PathBuf>) -> PyResult<Self> {
        py.detach(|| {
            guarded(|| {
                onnx::LibraryBaseline::load(&path, intra_op_threads, profile_prefix.as_deref()).map_err(ort_error)
            })
        })
        .map(Self)
    }

    /// end_profiling() -> str: the path of the profile's JSON file. Errors (`onnxruntime`): not
    /// profiled, or the file cannot be written.
    fn end_profiling(&mut self) -> PyResult<String> {
        guarded(|| self.0.end_profiling().map_err(ort_error))
    }

    /// run(inputs) -> ns: one run on (name, dtype, shape, bytes) tuples, outputs discarded; the
    /// wall time of ONNX Runtime's `Run` in nanoseconds. Errors: `argument` for a tensor that is
    /// not one, `onnxruntime` for a missing input, bytes that do not fit, or a failed run.
    fn run(&self, py: Python<'_>, inputs: Vec<PyTensorIn<'_>>) -> PyResult<u64> {
        let mut tensors = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            tensors.push(tensor_from_py(index, input)?);
        }
        let args: Vec<_> = tensors.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.data)).collect();
        py.detach(|| guarded(|| self.0.run(&args).map_err(ort_error)))
    }
}
