//! `wasmai._host`: the embedded wasmtime host for wasmai components, as a PyO3 extension.
//!
//! Components built for `wasmai:inference/image-classifier` or `tensor-model` (../wit) import
//! wasi:nn@0.2.0-rc-2024-10-28 and export `metadata`, `model` and optionally
//! `image-classification`. The layers, bottom up (see host/README.md):
//!
//! * [`nn`]: wasi-nn, laid out like wasmtime's `crates/wasi-nn`: the WIT glue (`nn::wit`)
//!   implements the imports against a view of the store, over a [`nn::backend::Backend`]
//!   trait (ONNX Runtime in `nn::onnx`), the load-by-name registry and the per-instance quota.
//! * [`engine`]: the wasmtime engine, the compiled-component cache, the sandbox (WASI context,
//!   memory limiter, epoch deadline) and instances.
//! * [`py`]: the Python classes and the one error type Python sees.

mod budget;
mod engine;
mod error;
mod nn;
mod py;

use pyo3::prelude::*;

/// Bindings of the `image-classifier` world (a superset of `tensor-model`; a component without
/// the `image-classification` export is detected per component). The wasi-nn resources are our
/// own types in [`nn`]; every import returns `wasmtime::Result` so a host failure traps.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "image-classifier",
        path: "../wasmai/wit",
        imports: { default: trappable },
        // Export parameters are borrowed (`TensorParam<'a>` with `data: &'a [u8]`), so `infer`
        // lowers the caller's bytes straight into the guest's memory; results stay owned.
        ownership: Borrowing { duplicate_if_necessary: true },
        with: {
            "wasi:nn/tensor.tensor": crate::nn::Tensor,
            "wasi:nn/graph.graph": crate::nn::Graph,
            "wasi:nn/inference.graph-execution-context": crate::nn::ExecutionContext,
            "wasi:nn/errors.error": crate::nn::Error,
        },
    });
}

/// The wasi-nn version this host implements (the `@` version of every `wasi:nn` import).
const WASI_NN_VERSION: &str = "0.2.0-rc-2024-10-28";

#[pymodule]
fn _host(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<py::NativeHost>()?;
    m.add_class::<py::NativeComponent>()?;
    m.add_class::<py::NativeInstance>()?;
    m.add_class::<py::NativeBaseline>()?;
    m.add_function(wrap_pyfunction!(py::available_providers, m)?)?;
    m.add_function(wrap_pyfunction!(py::onnxruntime_log, m)?)?;
    m.add_function(wrap_pyfunction!(py::prepare, m)?)?;
    m.add("HostError", m.py().get_type::<py::HostError>())?;
    m.add("WASI_NN_VERSION", WASI_NN_VERSION)?;
    Ok(())
}
