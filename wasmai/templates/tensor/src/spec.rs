//! Static model description types (the values live in the generated `model.rs`) and their
//! conversion to `wasmai:inference/types`. Tensor types are wasi-nn's own `tensor-type`, used
//! as is by the WIT records, wasi-nn calls and `model.rs`.

// Which variants are constructed depends on the manifest rendered into model.rs.
#![allow(dead_code)]

use crate::bindings::wasi::nn::errors::Error as NnError;
use crate::bindings::wasi::nn::graph::{self, Graph, GraphEncoding};
use crate::bindings::wasi::nn::tensor::TensorType;
use crate::bindings::wasmai::inference::types::{Dim as WitDim, ModelInfo, PreprocessInfo, TensorSpec};
use crate::model;

/// Bytes per element of a tensor type.
pub const fn dtype_size(dtype: TensorType) -> usize {
    match dtype {
        TensorType::U8 => 1,
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
        TensorType::Fp64 | TensorType::I64 => 8,
    }
}

/// Lower-case name as in the manifest ("fp32", ...).
pub const fn dtype_name(dtype: TensorType) -> &'static str {
    match dtype {
        TensorType::Fp16 => "fp16",
        TensorType::Fp32 => "fp32",
        TensorType::Fp64 => "fp64",
        TensorType::Bf16 => "bf16",
        TensorType::U8 => "u8",
        TensorType::I32 => "i32",
        TensorType::I64 => "i64",
    }
}

/// One axis: a fixed size or a named dynamic axis.
#[derive(Clone, Copy, Debug)]
pub enum Dim {
    Fixed(u32),
    Dynamic(&'static str),
}

/// A graph input or output as declared in the manifest.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub dtype: TensorType,
    pub shape: &'static [Dim],
}

impl Spec {
    pub fn to_wit(self) -> TensorSpec {
        TensorSpec {
            name: self.name.to_string(),
            dtype: self.dtype,
            shape: self
                .shape
                .iter()
                .map(|d| match *d {
                    Dim::Fixed(n) => WitDim::Fixed(n),
                    Dim::Dynamic(name) => WitDim::Dynamic(name.to_string()),
                })
                .collect(),
        }
    }
}

/// Where the ONNX bytes come from.
#[derive(Clone, Copy, Debug)]
pub enum Placement {
    /// Inside the component; loaded with `wasi:nn/graph.load(.., onnx, EXECUTION_TARGET)`.
    Embedded(&'static [u8]),
    /// Registered with the host under this name; loaded with `wasi:nn/graph.load-by-name`.
    ByName(&'static str),
}

/// Load embedded ONNX bytes whose hex sha256 is `sha256`: first by the name `sha256:<hex>`, which
/// wasmai's host answers with the graph another instance of this component already loaded from
/// these bytes (the bytes are then never read, so they add nothing to the process's resident
/// memory), then, on any error (another instance has not loaded them, or another wasi-nn host),
/// with `graph.load` of the bytes on `model::EXECUTION_TARGET`. Errors: `graph.load`'s.
pub fn load_embedded(onnx: &[u8], sha256: &str) -> Result<Graph, NnError> {
    graph::load_by_name(&format!("sha256:{sha256}"))
        .or_else(|_| graph::load(&[onnx], GraphEncoding::Onnx, model::EXECUTION_TARGET))
}

impl Placement {
    pub fn describe(&self) -> String {
        match self {
            Placement::Embedded(_) => "embedded".to_string(),
            Placement::ByName(name) => format!("by-name:{name}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Rgb,
    Bgr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Image preprocessing from the manifest's `[preprocess]` table. Pixel values are 0..=255;
/// channel `c` (in the model's channel order, i.e. after the RGB/BGR conversion) becomes
/// `(x - mean[c]) / std[c]`.
#[derive(Clone, Copy, Debug)]
pub struct Preprocess {
    pub resize_shorter: Option<u32>,
    pub crop_height: u32,
    pub crop_width: u32,
    pub color: Color,
    pub layout: Layout,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    pub fn to_wit(self) -> PreprocessInfo {
        PreprocessInfo {
            resize_shorter: self.resize_shorter,
            crop_height: self.crop_height,
            crop_width: self.crop_width,
            layout: match self.layout {
                Layout::Nchw => "NCHW",
                Layout::Nhwc => "NHWC",
            }
            .to_string(),
            color: match self.color {
                Color::Rgb => "RGB",
                Color::Bgr => "BGR",
            }
            .to_string(),
            mean: self.mean.to_vec(),
            std: self.std.to_vec(),
        }
    }
}

/// `wasmai:inference/metadata.info`: everything in `model.rs`.
pub fn model_info() -> ModelInfo {
    ModelInfo {
        name: model::NAME.to_string(),
        version: model::VERSION.to_string(),
        task: model::TASK.to_string(),
        inputs: model::INPUTS.iter().map(|s| s.to_wit()).collect(),
        outputs: model::OUTPUTS.iter().map(|s| s.to_wit()).collect(),
        labels: model::LABELS.iter().map(|s| s.to_string()).collect(),
        model_sha256: model::MODEL_SHA256.to_string(),
        placement: model::PLACEMENT.describe(),
        wasmai_version: model::WASMAI_VERSION.to_string(),
        toolchain: model::TOOLCHAIN.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        preprocess: model::PREPROCESS.map(Preprocess::to_wit),
    }
}
