//! A wasmai guest component for the `wasmai:inference/image-classifier` world: one ONNX
//! image classifier behind wasi:nn, with decoding, preprocessing and top-k inside the
//! component. `model.rs` (rendered by `wasmai build` from the manifest) holds the model's
//! description; `vision.rs` the image pipeline; `nn.rs` the wasi-nn calls; `component.rs` (from
//! the tensor template) the `metadata` and `model` exports.
//!
//! Build: `cargo component build --release --locked` (cargo-component generates
//! `src/bindings.rs` from `wit/`).

#[allow(warnings)]
mod bindings;
mod component;
mod image_io;
mod model;
mod nn;
mod spec;
mod vision;

use bindings::exports::wasmai::inference::image_classification::{self, Prediction, Timings};
use bindings::wasmai::inference::types::{Error, Tensor};
use component::Component;

impl image_classification::Guest for Component {
    fn preprocess(image: Vec<u8>) -> Result<Tensor, Error> {
        vision::preprocess(&image)
    }

    fn postprocess(outputs: Vec<Tensor>, top_k: u32) -> Result<Vec<Prediction>, Error> {
        vision::postprocess(&outputs, top_k)
    }

    fn classify(image: Vec<u8>, top_k: u32) -> Result<Vec<Prediction>, Error> {
        vision::classify(&image, top_k)
    }

    fn last_timings() -> Timings {
        vision::last_timings()
    }
}

bindings::export!(Component with_types_in bindings);
