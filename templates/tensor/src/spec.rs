//! Static model description types (the values live in the generated `model.rs`) and their
//! conversions to the WIT types of `wasmai:inference/types` and `wasi:nn/tensor`.

// Which variants are constructed depends on the manifest rendered into model.rs.
#![allow(dead_code)]

use crate::bindings::wasi::nn::graph::ExecutionTarget;
use crate::bindings::wasi::nn::tensor::TensorType as NnType;
use crate::bindings::wasmai::inference::types::{
    Dim as WitDim, ModelInfo, PreprocessInfo, TensorSpec, TensorType,
};
use crate::model;

/// Element type of a tensor; same cases and order as `wasi:nn/tensor.tensor-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Fp16,
    Fp32,
    Fp64,
    Bf16,
    U8,
    I32,
    I64,
}

impl Ty {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Ty::Fp16 | Ty::Bf16 => 2,
            Ty::Fp32 | Ty::I32 => 4,
            Ty::Fp64 | Ty::I64 => 8,
            Ty::U8 => 1,
        }
    }

    /// Lower-case name as in the manifest ("fp32", ...).
    pub const fn name(self) -> &'static str {
        match self {
            Ty::Fp16 => "fp16",
            Ty::Fp32 => "fp32",
            Ty::Fp64 => "fp64",
            Ty::Bf16 => "bf16",
            Ty::U8 => "u8",
            Ty::I32 => "i32",
            Ty::I64 => "i64",
        }
    }

    pub fn to_wit(self) -> TensorType {
        match self {
            Ty::Fp16 => TensorType::Fp16,
            Ty::Fp32 => TensorType::Fp32,
            Ty::Fp64 => TensorType::Fp64,
            Ty::Bf16 => TensorType::Bf16,
            Ty::U8 => TensorType::U8,
            Ty::I32 => TensorType::I32,
            Ty::I64 => TensorType::I64,
        }
    }

    pub fn from_wit(ty: TensorType) -> Ty {
        match ty {
            TensorType::Fp16 => Ty::Fp16,
            TensorType::Fp32 => Ty::Fp32,
            TensorType::Fp64 => Ty::Fp64,
            TensorType::Bf16 => Ty::Bf16,
            TensorType::U8 => Ty::U8,
            TensorType::I32 => Ty::I32,
            TensorType::I64 => Ty::I64,
        }
    }

    pub fn to_nn(self) -> NnType {
        match self {
            Ty::Fp16 => NnType::Fp16,
            Ty::Fp32 => NnType::Fp32,
            Ty::Fp64 => NnType::Fp64,
            Ty::Bf16 => NnType::Bf16,
            Ty::U8 => NnType::U8,
            Ty::I32 => NnType::I32,
            Ty::I64 => NnType::I64,
        }
    }

    pub fn from_nn(ty: NnType) -> Ty {
        match ty {
            NnType::Fp16 => Ty::Fp16,
            NnType::Fp32 => Ty::Fp32,
            NnType::Fp64 => Ty::Fp64,
            NnType::Bf16 => Ty::Bf16,
            NnType::U8 => Ty::U8,
            NnType::I32 => Ty::I32,
            NnType::I64 => Ty::I64,
        }
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
    pub ty: Ty,
    pub dims: &'static [Dim],
}

impl Spec {
    pub fn to_wit(&self) -> TensorSpec {
        TensorSpec {
            name: self.name.to_string(),
            ty: self.ty.to_wit(),
            dims: self
                .dims
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
    /// Inside the component; loaded with `wasi:nn/graph.load(.., onnx, DEVICE)`.
    Embedded(&'static [u8]),
    /// Registered with the host under this name; loaded with `wasi:nn/graph.load-by-name`.
    ByName(&'static str),
}

impl Placement {
    pub fn describe(&self) -> String {
        match self {
            Placement::Embedded(_) => "embedded".to_string(),
            Placement::ByName(name) => format!("by-name:{name}"),
        }
    }
}

/// wasi-nn execution target for embedded graphs.
#[derive(Clone, Copy, Debug)]
pub enum Device {
    Cpu,
    Gpu,
    Tpu,
}

impl Device {
    pub fn to_nn(self) -> ExecutionTarget {
        match self {
            Device::Cpu => ExecutionTarget::Cpu,
            Device::Gpu => ExecutionTarget::Gpu,
            Device::Tpu => ExecutionTarget::Tpu,
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
    pub fn to_wit(&self) -> PreprocessInfo {
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
        inputs: model::INPUTS.iter().map(Spec::to_wit).collect(),
        outputs: model::OUTPUTS.iter().map(Spec::to_wit).collect(),
        labels: model::LABELS.iter().map(|s| s.to_string()).collect(),
        model_sha256: model::MODEL_SHA256.to_string(),
        placement: model::PLACEMENT.describe(),
        wasmai_version: model::WASMAI_VERSION.to_string(),
        toolchain: model::TOOLCHAIN
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        preprocess: model::PREPROCESS.as_ref().map(Preprocess::to_wit),
    }
}
