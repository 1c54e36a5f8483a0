//! wasi-nn plumbing: the graph is loaded lazily once and its execution context reused;
//! input tensors are checked against the manifest before they reach the host; wasi-nn errors
//! become `error::backend` carrying the wasi-nn error code and the host's message.

use std::cell::RefCell;

use crate::bindings::wasi::nn::errors::Error as NnError;
use crate::bindings::wasi::nn::graph::{self, Graph};
use crate::bindings::wasi::nn::inference::GraphExecutionContext;
use crate::bindings::wasi::nn::tensor::{Tensor as NnTensor, TensorType};
use crate::bindings::wasmai::inference::types::{BackendError, Error, Tensor};
use crate::model;
use crate::spec::{dtype_name, dtype_size, load_embedded, Dim, Placement, Spec};

/// A loaded graph and its execution context. Fields drop in declaration order, so the
/// context is released before the graph it belongs to.
struct Loaded {
    context: GraphExecutionContext,
    _graph: Graph,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

fn backend(err: NnError) -> Error {
    Error::Backend(BackendError { code: err.code(), message: err.data() })
}

fn open() -> Result<Loaded, Error> {
    let graph = match model::PLACEMENT {
        Placement::Embedded(bytes) => load_embedded(bytes, model::MODEL_SHA256),
        Placement::ByName(name) => graph::load_by_name(name),
    }
    .map_err(backend)?;
    let context = graph.init_execution_context().map_err(backend)?;
    Ok(Loaded { context, _graph: graph })
}

/// `model.load`: load the graph and create the execution context unless already done.
pub fn load() -> Result<(), Error> {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        if state.is_none() {
            *state = Some(open()?);
        }
        Ok(())
    })
}

/// `model.release`: drop the execution context and the graph.
pub fn release() {
    STATE.with(|state| drop(state.borrow_mut().take()));
}

fn shape_text(dims: &[u32]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn spec_shape_text(spec: &Spec) -> String {
    let parts: Vec<String> = spec
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Dynamic(name) => (*name).to_string(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Check a tensor's type, rank and fixed axes against its spec: the byte length its shape needs.
fn check_signature(spec: &Spec, dtype: TensorType, shape: &[u32]) -> Result<usize, Error> {
    if dtype != spec.dtype {
        return Err(Error::BadInput(format!(
            "input {:?}: type {} but the model takes {}",
            spec.name,
            dtype_name(dtype),
            dtype_name(spec.dtype)
        )));
    }
    let fits = shape.len() == spec.shape.len()
        && spec.shape.iter().zip(shape).all(|(d, n)| match d {
            Dim::Fixed(want) => want == n,
            Dim::Dynamic(_) => *n > 0,
        });
    if !fits {
        return Err(Error::BadInput(format!(
            "input {:?}: shape {} does not match the model's {}",
            spec.name,
            shape_text(shape),
            spec_shape_text(spec)
        )));
    }
    shape
        .iter()
        .try_fold(dtype_size(dtype), |acc, d| acc.checked_mul(*d as usize))
        .ok_or_else(|| Error::BadInput(format!("input {:?}: shape {} is too large", spec.name, shape_text(shape))))
}

/// Check one tensor against its spec: type, rank, fixed axes and byte length.
pub fn check_tensor(spec: &Spec, tensor: &Tensor) -> Result<(), Error> {
    let n = check_signature(spec, tensor.dtype, &tensor.shape)?;
    if n != tensor.data.len() {
        return Err(Error::BadInput(format!(
            "input {:?}: {} data bytes, shape {} of {} needs {}",
            spec.name,
            tensor.data.len(),
            shape_text(&tensor.shape),
            dtype_name(tensor.dtype),
            n
        )));
    }
    Ok(())
}

/// Order `inputs` like the model's inputs: by `name`, or by position when every name is empty.
/// Every model input must be given exactly once.
fn order_inputs<T>(inputs: Vec<T>, name: impl Fn(&T) -> &str) -> Result<Vec<T>, Error> {
    let specs = model::INPUTS;
    if inputs.len() != specs.len() {
        return Err(Error::BadInput(format!(
            "got {} input tensors, the model takes {} ({})",
            inputs.len(),
            specs.len(),
            specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        )));
    }
    let positional = inputs.iter().all(|t| name(t).is_empty());
    let mut slots: Vec<Option<T>> = (0..specs.len()).map(|_| None).collect();
    for (position, tensor) in inputs.into_iter().enumerate() {
        let index = if positional {
            position
        } else {
            specs.iter().position(|s| s.name == name(&tensor)).ok_or_else(|| {
                Error::BadInput(format!(
                    "unknown input {:?} (the model takes {})",
                    name(&tensor),
                    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ))
            })?
        };
        if slots[index].is_some() {
            return Err(Error::BadInput(format!("input {:?} given twice", specs[index].name)));
        }
        slots[index] = Some(tensor);
    }
    specs
        .iter()
        .zip(slots)
        .map(|(spec, slot)| slot.ok_or_else(|| Error::BadInput(format!("missing input {:?}", spec.name))))
        .collect()
}

/// Order the given tensors like the model's inputs (see [`order_inputs`]) and check each.
fn match_inputs(inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
    let ordered = order_inputs(inputs, |t| t.name.as_str())?;
    for (spec, tensor) in model::INPUTS.iter().zip(&ordered) {
        check_tensor(spec, tensor)?;
    }
    Ok(ordered)
}

/// Load the graph if needed and run `compute` on `named` (in the model's input order, named like
/// its inputs): the outputs in model order (host order if the host names them differently).
fn compute(named: Vec<(String, NnTensor)>) -> Result<Vec<(String, NnTensor)>, Error> {
    load()?;
    let outputs = STATE.with(|state| {
        let state = state.borrow();
        let loaded = state.as_ref().ok_or_else(|| Error::Internal("graph not loaded".to_string()))?;
        loaded.context.compute(named).map_err(backend)
    })?;
    let positions: Option<Vec<usize>> =
        model::OUTPUTS.iter().map(|spec| outputs.iter().position(|(name, _)| name == spec.name)).collect();
    match positions {
        Some(positions) if positions.len() == outputs.len() => {
            let mut slots: Vec<Option<(String, NnTensor)>> = outputs.into_iter().map(Some).collect();
            Ok(positions.iter().filter_map(|&i| slots[i].take()).collect())
        }
        _ => Ok(outputs),
    }
}

/// `model.infer`: check the inputs, make them wasi-nn tensors (a copy of each input's bytes into
/// the host), run the graph, return the outputs' bytes (a copy of each into this memory).
pub fn infer(inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
    let ordered = match_inputs(inputs)?;
    let named: Vec<(String, NnTensor)> = model::INPUTS
        .iter()
        .zip(&ordered)
        .map(|(spec, t)| (spec.name.to_string(), NnTensor::new(&t.shape, spec.dtype, &t.data)))
        .collect();
    drop(ordered);
    Ok(compute(named)?
        .into_iter()
        .map(|(name, t)| Tensor { name, dtype: t.ty(), shape: t.dimensions(), data: t.data() })
        .collect())
}

/// `model-tensors.infer-tensors`: `model.infer` on the host's wasi-nn tensors; their bytes never
/// enter this memory (the host checked each tensor's byte length against its dimensions).
pub fn infer_tensors(inputs: Vec<(String, NnTensor)>) -> Result<Vec<(String, NnTensor)>, Error> {
    let ordered = order_inputs(inputs, |(name, _)| name.as_str())?;
    let mut named = Vec::with_capacity(ordered.len());
    for (spec, (_, tensor)) in model::INPUTS.iter().zip(ordered) {
        check_signature(spec, tensor.ty(), &tensor.dimensions())?;
        named.push((spec.name.to_string(), tensor));
    }
    compute(named)
}

#[cfg(test)]
mod tests {
    //! Native unit tests of the input checks (`cargo test`; wasi-nn is not called).

    use super::*;

    /// A valid tensor for `spec` (dynamic axes = 1).
    fn valid(spec: &Spec) -> Tensor {
        let shape: Vec<u32> = spec
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Dynamic(_) => 1,
            })
            .collect();
        let len = shape.iter().map(|&d| d as usize).product::<usize>() * dtype_size(spec.dtype);
        Tensor { name: spec.name.to_string(), dtype: spec.dtype, shape, data: vec![0; len] }
    }

    fn all_valid() -> Vec<Tensor> {
        model::INPUTS.iter().map(valid).collect()
    }

    #[test]
    fn valid_inputs_pass_by_name_and_by_position() {
        assert_eq!(match_inputs(all_valid()).unwrap().len(), model::INPUTS.len());
        let mut reversed = all_valid();
        reversed.reverse();
        let ordered = match_inputs(reversed).unwrap();
        for (spec, t) in model::INPUTS.iter().zip(&ordered) {
            assert_eq!(t.name, spec.name);
        }
        let unnamed: Vec<Tensor> = all_valid().into_iter().map(|t| Tensor { name: String::new(), ..t }).collect();
        assert!(match_inputs(unnamed).is_ok());
    }

    #[test]
    fn bad_inputs_are_bad_input_errors() {
        if model::INPUTS.is_empty() {
            return;
        }
        let bad = |inputs: Vec<Tensor>| matches!(match_inputs(inputs), Err(Error::BadInput(_)));
        let mut extra = all_valid();
        extra.push(valid(&model::INPUTS[0]));
        assert!(bad(extra));
        let mut unknown = all_valid();
        unknown[0].name = "no-such-input".to_string();
        assert!(bad(unknown));
        let mut short = all_valid();
        short[0].data.pop();
        assert!(bad(short));
        let mut wrong_type = all_valid();
        let other = if model::INPUTS[0].dtype == TensorType::U8 { TensorType::I64 } else { TensorType::U8 };
        wrong_type[0].dtype = other;
        assert!(bad(wrong_type));
        let mut wrong_rank = all_valid();
        wrong_rank[0].shape.push(1);
        assert!(bad(wrong_rank));
    }
}
