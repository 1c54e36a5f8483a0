//! A wasmai guest component for the `wasmai:inference/text-embedder` world: one ONNX
//! sentence-embedding model behind wasi:nn, with its Hugging Face tokenizer, mean pooling and
//! L2 normalization inside the component. `model.rs` and `text_model.rs` (rendered by
//! `wasmai build` from the manifest) describe the model and the tokenizer; `text.rs` is the
//! text pipeline; `nn.rs` the wasi-nn calls; `component.rs` (from the tensor template) the
//! `metadata` and `model` exports.
//!
//! Build: `cargo component build --release --locked` (cargo-component generates
//! `src/bindings.rs` from `wit/`).

#[allow(warnings)]
mod bindings;
mod component;
mod model;
mod nn;
mod spec;
mod text;
mod text_model;

use bindings::exports::wasmai::inference::text_embedding::{self, EmbeddingInfo, Encoding, Timings};
use bindings::wasmai::inference::types::Error;
use component::Component;

impl text_embedding::Guest for Component {
    fn dimension() -> u32 {
        text_model::DIMENSION
    }

    fn info() -> EmbeddingInfo {
        text::info()
    }

    fn tokenize(texts: Vec<String>) -> Result<Vec<Encoding>, Error> {
        text::tokenize(&texts)
    }

    fn embed(texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        text::embed(&texts)
    }

    fn last_timings() -> Timings {
        text::last_timings()
    }
}

bindings::export!(Component with_types_in bindings);
