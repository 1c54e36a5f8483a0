//! A wasmai guest component for the `wasmai:inference/face-detector` world: MTCNN face detection
//! with its three ONNX graphs behind wasi:nn. `model.rs` (rendered by `wasmai build` from the
//! multi-graph manifest) holds the graphs and the detection defaults; `nn.rs` loads and runs the
//! graphs; `mtcnn.rs` is the detection pipeline (pyramid, NMS, regression, crops, landmarks);
//! `draw.rs` the annotated PNG; `component.rs` (from the tensor template) the `metadata` and
//! `model` exports.
//!
//! Build: `cargo component build --release --locked` (cargo-component generates
//! `src/bindings.rs` from `wit/`).

#[allow(warnings)]
mod bindings;
mod component;
mod draw;
mod image_io;
mod model;
mod mtcnn;
mod nn;
mod spec;

use bindings::exports::wasmai::inference::face_detection::{self, DetectOptions, Face, Timings};
use bindings::wasmai::inference::types::Error;
use component::Component;

impl face_detection::Guest for Component {
    fn default_options() -> DetectOptions {
        mtcnn::default_options()
    }

    fn detect(image: Vec<u8>, options: Option<DetectOptions>) -> Result<Vec<Face>, Error> {
        mtcnn::detect(&image, options.unwrap_or_else(mtcnn::default_options))
    }

    fn annotate(image: Vec<u8>, faces: Vec<Face>) -> Result<Vec<u8>, Error> {
        draw::annotate(&image, &faces)
    }

    fn last_timings() -> Timings {
        mtcnn::last_timings()
    }
}

bindings::export!(Component with_types_in bindings);
