//! wasi-nn plumbing for a model of several graphs: every graph is loaded lazily once (all on the
//! first `load` or call) and keeps one execution context, reused until `release`. `model.infer`
//! runs the graph whose inputs the given tensors name. wasi-nn errors become `error::backend`
//! carrying the wasi-nn error code and the host's message.

use std::cell::RefCell;

use crate::bindings::wasi::nn::errors::Error as NnError;
use crate::bindings::wasi::nn::graph::Graph as NnGraph;
use crate::bindings::wasi::nn::inference::GraphExecutionContext;
use crate::bindings::wasi::nn::tensor::{Tensor as NnTensor, TensorType};
use crate::bindings::wasmai::inference::types::{BackendError, Error, Tensor};
use crate::model;
use crate::spec::{dtype_name, dtype_size, load_embedded, Dim, Spec};

/// One graph of the model: its name in the manifest, its ONNX bytes, inputs and outputs.
#[derive(Clone, Copy, Debug)]
pub struct Graph {
    pub name: &'static str,
    pub onnx: &'static [u8],
    /// Hex sha256 of `onnx`.
    pub sha256: &'static str,
    pub inputs: &'static [Spec],
    pub outputs: &'static [Spec],
}

/// A loaded graph and its execution context. Fields drop in declaration order, so the
/// context is released before the graph it belongs to.
struct Loaded {
    context: GraphExecutionContext,
    _graph: NnGraph,
}

thread_local! {
    static STATE: RefCell<Vec<Loaded>> = const { RefCell::new(Vec::new()) };
}

fn backend(err: NnError) -> Error {
    Error::Backend(BackendError { code: err.code(), message: err.data() })
}

fn open(g: &Graph) -> Result<Loaded, Error> {
    let graph = load_embedded(g.onnx, g.sha256).map_err(backend)?;
    let context = graph.init_execution_context().map_err(backend)?;
    Ok(Loaded { context, _graph: graph })
}

/// `model.load`: load every graph and create its execution context unless already done.
pub fn load() -> Result<(), Error> {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        if state.len() != model::GRAPHS.len() {
            let loaded = model::GRAPHS.iter().map(open).collect::<Result<Vec<_>, _>>()?;
            *state = loaded;
        }
        Ok(())
    })
}

/// `model.release`: drop every execution context and graph.
pub fn release() {
    STATE.with(|state| state.borrow_mut().clear());
}

/// Index of the graph called `name` in `model::GRAPHS`.
pub fn graph_index(name: &str) -> Result<usize, Error> {
    model::GRAPHS
        .iter()
        .position(|g| g.name == name)
        .ok_or_else(|| Error::Internal(format!("the model has no graph named {name:?}")))
}

fn shape_text(dims: &[u32]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Check a tensor's type, rank and fixed axes against its spec: the byte length its shape needs
/// (None when it does not fit in memory).
fn check_signature(spec: &Spec, dtype: TensorType, shape: &[u32]) -> Result<Option<usize>, Error> {
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
            "input {:?}: shape {} does not fit the model's (rank {})",
            spec.name,
            shape_text(shape),
            spec.shape.len()
        )));
    }
    Ok(shape.iter().try_fold(dtype_size(dtype), |acc, d| acc.checked_mul(*d as usize)))
}

/// Check one tensor against its spec: type, rank, fixed axes and byte length.
pub fn check_tensor(spec: &Spec, tensor: &Tensor) -> Result<(), Error> {
    if check_signature(spec, tensor.dtype, &tensor.shape)? != Some(tensor.data.len()) {
        return Err(Error::BadInput(format!(
            "input {:?}: {} data bytes do not match shape {}",
            spec.name,
            tensor.data.len(),
            shape_text(&tensor.shape)
        )));
    }
    Ok(())
}

/// Run graph `index` on `inputs` (already in its input order and checked): the output tensors in
/// the host's order.
fn compute_tensors(index: usize, inputs: Vec<(String, NnTensor)>) -> Result<Vec<(String, NnTensor)>, Error> {
    load()?;
    STATE.with(|state| {
        let state = state.borrow();
        let loaded = state.get(index).ok_or_else(|| Error::Internal("graph not loaded".to_string()))?;
        loaded.context.compute(inputs).map_err(backend)
    })
}

/// wasi-nn tensors as `(name, dtype, shape, bytes)` records (each tensor's bytes copied into this
/// memory).
fn records(tensors: Vec<(String, NnTensor)>) -> Vec<Tensor> {
    tensors.into_iter().map(|(name, t)| Tensor { name, dtype: t.ty(), shape: t.dimensions(), data: t.data() }).collect()
}

/// Run graph `index` on `inputs` (already in its input order and checked): outputs as
/// `(name, dtype, shape, bytes)` in the host's order.
pub fn compute(index: usize, inputs: Vec<(String, NnTensor)>) -> Result<Vec<Tensor>, Error> {
    compute_tensors(index, inputs).map(records)
}

/// Run graph `index` on one fp32 tensor of `shape`: the outputs.
pub fn run_f32(index: usize, shape: &[u32], values: &[f32]) -> Result<Vec<Tensor>, Error> {
    let g = &model::GRAPHS[index];
    let spec = g.inputs.first().ok_or_else(|| Error::Internal(format!("graph {} has no input", g.name)))?;
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensor = NnTensor::new(shape, TensorType::Fp32, &data);
    compute(index, vec![(spec.name.to_string(), tensor)])
}

/// The index of the graph whose inputs include `first` (the name of the first input tensor given).
fn graph_of(first: Option<&str>) -> Result<usize, Error> {
    let first = first.ok_or_else(|| Error::BadInput("no input tensors".to_string()))?;
    model::GRAPHS.iter().position(|g| g.inputs.iter().any(|s| s.name == first)).ok_or_else(|| {
        let names: Vec<&str> = model::GRAPHS.iter().flat_map(|g| g.inputs.iter().map(|s| s.name)).collect();
        Error::BadInput(format!("unknown input {first:?} (the graphs take {})", names.join(", ")))
    })
}

/// `inputs` in graph `g`'s input order, each of its inputs given once by `name`.
fn order_inputs<T>(g: &Graph, mut inputs: Vec<T>, name: impl Fn(&T) -> &str) -> Result<Vec<T>, Error> {
    if inputs.len() != g.inputs.len() {
        return Err(Error::BadInput(format!(
            "graph {} takes {} input tensors, got {}",
            g.name,
            g.inputs.len(),
            inputs.len()
        )));
    }
    let mut ordered = Vec::with_capacity(inputs.len());
    for spec in g.inputs {
        let at = inputs
            .iter()
            .position(|t| name(t) == spec.name)
            .ok_or_else(|| Error::BadInput(format!("graph {}: missing input {:?}", g.name, spec.name)))?;
        ordered.push(inputs.swap_remove(at));
    }
    Ok(ordered)
}

/// `outputs` in graph `g`'s output order (the host's order if the host names them otherwise).
fn order_outputs(g: &Graph, outputs: Vec<(String, NnTensor)>) -> Vec<(String, NnTensor)> {
    let positions: Option<Vec<usize>> =
        g.outputs.iter().map(|spec| outputs.iter().position(|(name, _)| name == spec.name)).collect();
    match positions {
        Some(positions) if positions.len() == outputs.len() => {
            let mut slots: Vec<Option<(String, NnTensor)>> = outputs.into_iter().map(Some).collect();
            positions.iter().filter_map(|&i| slots[i].take()).collect()
        }
        _ => outputs,
    }
}

/// `model.infer`: the graph whose input names the tensors carry (each graph's inputs given once,
/// by name), outputs in that graph's order.
pub fn infer(inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
    let index = graph_of(inputs.first().map(|t| t.name.as_str()))?;
    let g = &model::GRAPHS[index];
    let ordered = order_inputs(g, inputs, |t| t.name.as_str())?;
    let mut named = Vec::with_capacity(ordered.len());
    for (spec, tensor) in g.inputs.iter().zip(&ordered) {
        check_tensor(spec, tensor)?;
        named.push((spec.name.to_string(), NnTensor::new(&tensor.shape, spec.dtype, &tensor.data)));
    }
    drop(ordered);
    Ok(records(order_outputs(g, compute_tensors(index, named)?)))
}

/// `model-tensors.infer-tensors`: `model.infer` on the host's wasi-nn tensors, whose bytes never
/// enter this memory (the host checked each tensor's byte length against its dimensions).
pub fn infer_tensors(inputs: Vec<(String, NnTensor)>) -> Result<Vec<(String, NnTensor)>, Error> {
    let index = graph_of(inputs.first().map(|(name, _)| name.as_str()))?;
    let g = &model::GRAPHS[index];
    let ordered = order_inputs(g, inputs, |(name, _)| name.as_str())?;
    let mut named = Vec::with_capacity(ordered.len());
    for (spec, (_, tensor)) in g.inputs.iter().zip(ordered) {
        check_signature(spec, tensor.ty(), &tensor.dimensions())?;
        named.push((spec.name.to_string(), tensor));
    }
    Ok(order_outputs(g, compute_tensors(index, named)?))
}

/// The fp32 values of output `name` (or of output `position` when the host names it otherwise),
/// checked against `count` elements.
pub fn output_f32(outputs: &[Tensor], name: &str, position: usize, count: usize) -> Result<Vec<f32>, Error> {
    let t = outputs
        .iter()
        .find(|t| t.name == name)
        .or_else(|| outputs.get(position))
        .ok_or_else(|| Error::Internal(format!("output {name:?} missing")))?;
    if t.dtype != TensorType::Fp32 || t.data.len() != count * 4 {
        return Err(Error::Internal(format!(
            "output {name:?}: {} of {} bytes, expected {count} fp32 values",
            dtype_name(t.dtype),
            t.data.len()
        )));
    }
    Ok(t.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}
