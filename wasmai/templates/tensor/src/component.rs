//! The component type and the exports every template shares (`metadata`, `model`,
//! `model-tensors`); a task's `lib.rs` adds its own interface's impl for [`Component`] and
//! exports it.

use crate::bindings::exports::wasmai::inference::{metadata, model as model_api, model_tensors};
use crate::bindings::wasi::nn::tensor::Tensor as NnTensor;
use crate::bindings::wasmai::inference::types::{Error, ModelInfo, Tensor};
use crate::{nn, spec};

pub struct Component;

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

impl model_tensors::Guest for Component {
    fn infer_tensors(inputs: Vec<(String, NnTensor)>) -> Result<Vec<(String, NnTensor)>, Error> {
        nn::infer_tensors(inputs)
    }
}
