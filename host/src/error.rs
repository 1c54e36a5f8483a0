//! The one error type of the host. Python sees it as `HostError(kind, code, message)` (see
//! `py::error`): kind "component" for a [`Fault`], "inference" for an error the guest returned.

use crate::bindings::wasmai::inference::types as wtypes;
use crate::nn::error_code_name;

/// Why the host or a component failed (not an `error` the guest returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A host setting wasmtime or ONNX Runtime refused.
    Config,
    /// ONNX Runtime could not be loaded.
    OnnxRuntime,
    /// The wasmtime engine or linker could not be set up.
    Engine,
    /// The component file could not be read.
    Read,
    /// Not a valid WebAssembly component.
    Compile,
    /// The component needs imports this host lacks, or lacks the wasmai exports.
    Link,
    Instantiate,
    /// A trap (or failed instantiation) after the limiter refused to grow linear memory.
    MemoryLimit,
    Trap,
    /// The epoch deadline passed.
    Timeout,
    /// The instance trapped earlier and must not be used again.
    Dead,
    /// The instance is in use by another thread.
    Busy,
    /// The component does not export what was called.
    Unsupported,
    /// Arguments that do not fit the export's WIT types.
    Argument,
    /// A panic inside the host (a bug), caught at the Python boundary.
    HostPanic,
}

impl Fault {
    /// The code Python sees (`ComponentError.code`).
    pub fn code(self) -> &'static str {
        match self {
            Fault::Config => "config",
            Fault::OnnxRuntime => "onnxruntime",
            Fault::Engine => "engine",
            Fault::Read => "read",
            Fault::Compile => "compile",
            Fault::Link => "link",
            Fault::Instantiate => "instantiate",
            Fault::MemoryLimit => "memory-limit",
            Fault::Trap => "trap",
            Fault::Timeout => "timeout",
            Fault::Dead => "dead",
            Fault::Busy => "busy",
            Fault::Unsupported => "unsupported",
            Fault::Argument => "argument",
            Fault::HostPanic => "host-panic",
        }
    }
}

/// A host failure or the guest's own error.
#[derive(Debug)]
pub enum Error {
    Component(Fault, String),
    /// The `error` variant a `wasmai:inference` export returned.
    Guest(wtypes::Error),
}

impl Error {
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        Error::Component(fault, message.into())
    }

    /// (kind, code, message), the triple Python's `HostError` carries.
    pub fn parts(self) -> (&'static str, String, String) {
        match self {
            Error::Component(fault, message) => ("component", fault.code().to_string(), message),
            Error::Guest(e) => {
                let (code, message) = match e {
                    wtypes::Error::BadImage(m) => ("bad-image", m),
                    wtypes::Error::BadInput(m) => ("bad-input", m),
                    wtypes::Error::Backend(b) => (error_code_name(b.code), b.message),
                    wtypes::Error::Internal(m) => ("internal", m),
                };
                ("inference", code.to_string(), message)
            }
        }
    }
}
