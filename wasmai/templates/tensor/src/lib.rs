//! A wasmai guest component for the `wasmai:inference/tensor-model` world: one ONNX model
//! behind wasi:nn, described by `model.rs` (rendered by `wasmai build` from the manifest).
//!
//! Build: `cargo component build --release --locked` (cargo-component generates
//! `src/bindings.rs` from `wit/`).

#[allow(warnings)]
mod bindings;
mod component;
mod model;
mod nn;
mod spec;

use component::Component;

bindings::export!(Component with_types_in bindings);
