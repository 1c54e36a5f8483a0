//! The Python classes (`NativeHost`, `NativeComponent`, `NativeInstance`, `NativeBaseline`) over
//! [`crate::engine`], and the one exception Python sees: `HostError(kind, code, message)` made
//! from [`crate::error::Error`]. `wasmai.host` is the only Python module that uses them.

mod baseline;
mod host;
mod instance;
mod values;

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::error::{Error, Fault};

pub use baseline::NativeBaseline;
pub use host::{available_providers, onnxruntime_log, prepare, NativeHost};
pub use instance::{NativeComponent, NativeInstance};

create_exception!(_host, HostError, PyException, "A failure in the native host: args (kind, code, message).");

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let (kind, code, message) = e.parts();
        HostError::new_err((kind, code, message))
    }
}

/// Run `f` with panics turned into [`Fault::HostPanic`] (the last guard: the host never aborts
/// Python).
fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(PyErr::from),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(Error::new(Fault::HostPanic, format!("internal error in the native host: {msg}")).into())
        }
    }
}
