//! A wasmai guest component for the `wasmai:inference/tensor-model` world: one ONNX model
//! behind wasi:nn, described by `model.rs` (rendered by `wasmai build` from the manifest).
//!
//! Build: `cargo component build --release --locked` (cargo-component generates
//! `src/bindings.rs` from `wit/`).

#[allow(warnings)]
mod bindings;
mod model;
mod nn;
mod spec;

use bindings::exports::wasmai::inference::{metadata, model as model_api};
use bindings::wasmai::inference::types::{Error, ModelInfo, Tensor};

struct Component;

impl metadata::Guest for Component {
    fn info() -> ModelInfo {
        spec::model_info()
    }
}

impl model_api::Guest for Component {
    fn load() -> Result<(), Error> {
        nn::load()
    }

    fn infer(inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        nn::infer(inputs)
    }

    fn release() {
        nn::release()
    }
}

bindings::export!(Component with_types_in bindings);
