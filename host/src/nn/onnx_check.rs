//! Finds every tensor of a serialized ONNX `ModelProto` whose bytes are stored outside it
//! (external data), before ONNX Runtime sees the model: ONNX Runtime would read such a tensor's
//! `location` as a file path, so a guest's graph could read host files.
//!
//! A walk over the protobuf wire format with `prost`'s decoding primitives; no generated types.
//! It borrows the bytes (no copy) and visits every message that can hold a tensor, at any depth:
//! graph initializers and sparse initializers, tensors in node attributes (`Constant`'s `value`,
//! any `t` / `tensors` / `sparse_tensor` / `sparse_tensors`), the graphs of `If` / `Loop` / `Scan`
//! (attributes `g` / `graphs`, recursively), functions (their nodes and attribute defaults) and
//! training info. Field numbers are those of onnx/onnx.proto (ONNX 1.23, IR version 14), cited
//! at each constant below. Malformed protobuf, a tensor-bearing field with the wrong wire type,
//! protobuf groups (never written by ONNX) and nesting deeper than [`MAX_DEPTH`] are refused:
//! what this walk cannot read, ONNX Runtime does not get.

use prost::encoding::{decode_key, decode_varint, WireType};

use super::Error;
use crate::bindings::wasi::nn::errors::ErrorCode;

/// Deepest message nesting accepted: 100, protobuf C++'s default recursion limit
/// (`io::CodedInputStream::kDefaultRecursionLimit`), so ONNX Runtime's own parser refuses
/// anything deeper too.
pub const MAX_DEPTH: usize = 100;

/// The longest name or location quoted in a message, characters.
const MAX_QUOTED: usize = 120;

// ModelProto (onnx.proto `message ModelProto`).
const MODEL_GRAPH: u32 = 7;
const MODEL_TRAINING_INFO: u32 = 20;
const MODEL_FUNCTIONS: u32 = 25;
// GraphProto.
const GRAPH_NODE: u32 = 1;
const GRAPH_NAME: u32 = 2;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_SPARSE_INITIALIZER: u32 = 15;
// NodeProto.
const NODE_NAME: u32 = 3;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
// AttributeProto.
const ATTRIBUTE_NAME: u32 = 1;
const ATTRIBUTE_T: u32 = 5;
const ATTRIBUTE_G: u32 = 6;
const ATTRIBUTE_TENSORS: u32 = 10;
const ATTRIBUTE_GRAPHS: u32 = 11;
const ATTRIBUTE_SPARSE_TENSOR: u32 = 22;
const ATTRIBUTE_SPARSE_TENSORS: u32 = 23;
// FunctionProto.
const FUNCTION_NAME: u32 = 1;
const FUNCTION_NODE: u32 = 7;
const FUNCTION_ATTRIBUTE_PROTO: u32 = 11;
// TrainingInfoProto.
const TRAINING_INITIALIZATION: u32 = 1;
const TRAINING_ALGORITHM: u32 = 2;
// SparseTensorProto.
const SPARSE_VALUES: u32 = 1;
const SPARSE_INDICES: u32 = 2;
// TensorProto.
const TENSOR_NAME: u32 = 8;
const TENSOR_EXTERNAL_DATA: u32 = 13;
const TENSOR_DATA_LOCATION: u32 = 14;
// StringStringEntryProto (the entries of `external_data`).
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;

/// A tensor that says its bytes are stored outside the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalTensor {
    /// The tensor's name (`TensorProto.name`, may be empty).
    pub name: String,
    /// Where it sits, e.g. `graph 'main' > node 'c' (Constant) > attribute 'value'`.
    pub place: String,
    /// Its `external_data` `location` entry, if any (a path relative to the model's folder, or
    /// whatever the graph's author wrote there).
    pub location: Option<String>,
}

impl ExternalTensor {
    /// `tensor 'w' (initializer of graph 'main', external data 'w.bin')`, quoted safely.
    pub fn describe(&self) -> String {
        let location = match &self.location {
            Some(l) => format!(", external data '{}'", quoted(l)),
            None => String::new(),
        };
        format!("tensor '{}' ({}{location})", quoted(&self.name), self.place)
    }
}

/// Every tensor of the serialized ModelProto `model` stored outside it (`TensorProto`
/// `data_location` not DEFAULT (onnx.proto field 14, `EXTERNAL` = 1) or any `external_data`
/// entry (field 13)), in wire order.
///
/// Errors: `invalid-encoding` when the bytes are not a well-formed protobuf the walk can follow
/// (truncated, bad varint, a tensor-bearing field of the wrong wire type, a group, or nesting
/// deeper than [`MAX_DEPTH`]).
pub fn external_tensors(model: &[u8]) -> Result<Vec<ExternalTensor>, Error> {
    let mut walk = Walk { found: Vec::new(), path: Vec::new() };
    walk.message(Kind::Model, model, 1)?;
    Ok(walk.found)
}

/// The message types that can (transitively) hold a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Model,
    Graph,
    Node,
    Attribute,
    Function,
    TrainingInfo,
    SparseTensor,
    Tensor,
}

impl Kind {
    /// The message type of field `field` of a `self` message, when it can hold a tensor, and how
    /// the walk's path names the step.
    fn child(self, field: u32) -> Option<(Kind, &'static str)> {
        Some(match (self, field) {
            (Kind::Model, MODEL_GRAPH) => (Kind::Graph, "graph"),
            (Kind::Model, MODEL_TRAINING_INFO) => (Kind::TrainingInfo, "training info"),
            (Kind::Model, MODEL_FUNCTIONS) => (Kind::Function, "function"),
            (Kind::Graph, GRAPH_NODE) => (Kind::Node, "node"),
            (Kind::Graph, GRAPH_INITIALIZER) => (Kind::Tensor, "initializer"),
            (Kind::Graph, GRAPH_SPARSE_INITIALIZER) => (Kind::SparseTensor, "sparse initializer"),
            (Kind::Node, NODE_ATTRIBUTE) => (Kind::Attribute, "attribute"),
            (Kind::Attribute, ATTRIBUTE_T | ATTRIBUTE_TENSORS) => (Kind::Tensor, "tensor"),
            (Kind::Attribute, ATTRIBUTE_G | ATTRIBUTE_GRAPHS) => (Kind::Graph, "graph"),
            (Kind::Attribute, ATTRIBUTE_SPARSE_TENSOR | ATTRIBUTE_SPARSE_TENSORS) => {
                (Kind::SparseTensor, "sparse tensor")
            }
            (Kind::Function, FUNCTION_NODE) => (Kind::Node, "node"),
            (Kind::Function, FUNCTION_ATTRIBUTE_PROTO) => (Kind::Attribute, "attribute default"),
            (Kind::TrainingInfo, TRAINING_INITIALIZATION) => (Kind::Graph, "initialization graph"),
            (Kind::TrainingInfo, TRAINING_ALGORITHM) => (Kind::Graph, "algorithm graph"),
            (Kind::SparseTensor, SPARSE_VALUES) => (Kind::Tensor, "values"),
            (Kind::SparseTensor, SPARSE_INDICES) => (Kind::Tensor, "indices"),
            _ => return None,
        })
    }
}

struct Walk {
    found: Vec<ExternalTensor>,
    /// Names of the enclosing messages (graph, node, attribute, ...), outermost first.
    path: Vec<String>,
}

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::InvalidEncoding, format!("the graph is not a well-formed ONNX protobuf: {what}"))
}

/// A guest-chosen string made safe to quote: control characters escaped, at most
/// [`MAX_QUOTED`] characters.
fn quoted(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_QUOTED).flat_map(char::escape_debug).collect();
    if s.chars().nth(MAX_QUOTED).is_some() {
        out.push_str("...");
    }
    out
}

/// The bytes of a length-delimited field whose key was just read, advancing `buf` past them.
fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Error> {
    let len = decode_varint(buf).map_err(malformed)?;
    let len = usize::try_from(len).ok().filter(|&n| n <= buf.len()).ok_or_else(|| malformed("truncated field"))?;
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

/// Skip a field that cannot hold a tensor. Groups are refused (ONNX never writes them).
fn skip(wire_type: WireType, buf: &mut &[u8]) -> Result<(), Error> {
    let fixed = |buf: &mut &[u8], n: usize| {
        if buf.len() < n {
            return Err(malformed("truncated field"));
        }
        *buf = &buf[n..];
        Ok(())
    };
    match wire_type {
        WireType::Varint => decode_varint(buf).map(drop).map_err(malformed),
        WireType::SixtyFourBit => fixed(buf, 8),
        WireType::ThirtyTwoBit => fixed(buf, 4),
        WireType::LengthDelimited => length_delimited(buf).map(drop),
        WireType::StartGroup | WireType::EndGroup => Err(malformed("protobuf groups are not used by ONNX")),
    }
}

/// The last value of the string fields `fields` of a message (protobuf: the last one wins),
/// scanning only its top level.
fn strings<const N: usize>(mut buf: &[u8], fields: [u32; N]) -> Result<[Option<String>; N], Error> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(malformed)?;
        match fields.iter().position(|&f| f == tag) {
            Some(i) if wire_type == WireType::LengthDelimited => {
                out[i] = Some(String::from_utf8_lossy(length_delimited(&mut buf)?).into_owned());
            }
            _ => skip(wire_type, &mut buf)?,
        }
    }
    Ok(out)
}

impl Walk {
    fn message(&mut self, kind: Kind, mut buf: &[u8], depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!("messages nested deeper than {MAX_DEPTH}")));
        }
        if kind == Kind::Tensor {
            return self.tensor(buf);
        }
        let label = self.label(kind, buf)?;
        if let Some(label) = &label {
            self.path.push(label.clone());
        }
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).map_err(malformed)?;
            match kind.child(tag) {
                Some((child, step)) => {
                    if wire_type != WireType::LengthDelimited {
                        return Err(malformed(format!("field {tag} ({step}) is not a message")));
                    }
                    let bytes = length_delimited(&mut buf)?;
                    // Steps that hold a tensor directly are named here (the tensor has no label
                    // of its own); graphs, nodes and attributes name themselves.
                    let named = matches!(child, Kind::Tensor | Kind::SparseTensor | Kind::TrainingInfo);
                    if named {
                        self.path.push(step.to_string());
                    }
                    self.message(child, bytes, depth + 1)?;
                    if named {
                        self.path.pop();
                    }
                }
                None => skip(wire_type, &mut buf)?,
            }
        }
        if label.is_some() {
            self.path.pop();
        }
        Ok(())
    }

    /// How the path names a graph, node, attribute or function (None for the others).
    fn label(&self, kind: Kind, buf: &[u8]) -> Result<Option<String>, Error> {
        Ok(match kind {
            Kind::Graph => {
                let [name] = strings(buf, [GRAPH_NAME])?;
                Some(format!("graph '{}'", quoted(name.as_deref().unwrap_or(""))))
            }
            Kind::Node => {
                let [name, op] = strings(buf, [NODE_NAME, NODE_OP_TYPE])?;
                Some(format!(
                    "node '{}' ({})",
                    quoted(name.as_deref().unwrap_or("")),
                    quoted(op.as_deref().unwrap_or("?"))
                ))
            }
            Kind::Attribute => {
                let [name] = strings(buf, [ATTRIBUTE_NAME])?;
                Some(format!("attribute '{}'", quoted(name.as_deref().unwrap_or(""))))
            }
            Kind::Function => {
                let [name] = strings(buf, [FUNCTION_NAME])?;
                Some(format!("function '{}'", quoted(name.as_deref().unwrap_or(""))))
            }
            Kind::Model | Kind::TrainingInfo | Kind::SparseTensor | Kind::Tensor => None,
        })
    }

    /// A TensorProto: recorded when `data_location` is not DEFAULT or `external_data` has an
    /// entry (either field may come anywhere in the message, any number of times).
    fn tensor(&mut self, mut buf: &[u8]) -> Result<(), Error> {
        let mut name = String::new();
        let mut external = false;
        let mut location = None;
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).map_err(malformed)?;
            match (tag, wire_type) {
                (TENSOR_NAME, WireType::LengthDelimited) => {
                    name = String::from_utf8_lossy(length_delimited(&mut buf)?).into_owned();
                }
                (TENSOR_DATA_LOCATION, WireType::Varint) => {
                    external |= decode_varint(&mut buf).map_err(malformed)? != 0;
                }
                (TENSOR_EXTERNAL_DATA, WireType::LengthDelimited) => {
                    external = true;
                    let [key, value] = strings(length_delimited(&mut buf)?, [ENTRY_KEY, ENTRY_VALUE])?;
                    if key.as_deref() == Some("location") {
                        location = value;
                    }
                }
                (TENSOR_DATA_LOCATION | TENSOR_EXTERNAL_DATA, _) => {
                    return Err(malformed(format!("tensor field {tag} has the wrong wire type")));
                }
                _ => skip(wire_type, &mut buf)?,
            }
        }
        if external {
            let place = if self.path.is_empty() { "model".to_string() } else { self.path.join(" > ") };
            self.found.push(ExternalTensor { name, place, location });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf encoding helpers for hand-built messages.
    fn key(field: u32, wire: u8) -> Vec<u8> {
        varint(((field as u64) << 3) | wire as u64)
    }
    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
    fn msg(field: u32, body: &[u8]) -> Vec<u8> {
        [key(field, 2), varint(body.len() as u64), body.to_vec()].concat()
    }

    fn external_tensor(name: &str, location: &str) -> Vec<u8> {
        let entry = [msg(ENTRY_KEY, b"location"), msg(ENTRY_VALUE, location.as_bytes())].concat();
        [msg(TENSOR_NAME, name.as_bytes()), msg(TENSOR_EXTERNAL_DATA, &entry), key(TENSOR_DATA_LOCATION, 0), vec![1]]
            .concat()
    }

    #[test]
    fn finds_an_external_tensor_in_an_if_branch_constant() {
        let constant = [
            msg(NODE_NAME, b"c"),
            msg(NODE_OP_TYPE, b"Constant"),
            msg(
                NODE_ATTRIBUTE,
                &[msg(ATTRIBUTE_NAME, b"value"), msg(ATTRIBUTE_T, &external_tensor("w", "s.txt"))].concat(),
            ),
        ]
        .concat();
        let branch = [msg(GRAPH_NAME, b"then"), msg(GRAPH_NODE, &constant)].concat();
        let if_node = [
            msg(NODE_NAME, b"if"),
            msg(NODE_OP_TYPE, b"If"),
            msg(NODE_ATTRIBUTE, &[msg(ATTRIBUTE_NAME, b"then_branch"), msg(ATTRIBUTE_G, &branch)].concat()),
        ]
        .concat();
        let model =
            [key(1, 0), vec![9], msg(MODEL_GRAPH, &[msg(GRAPH_NAME, b"main"), msg(GRAPH_NODE, &if_node)].concat())]
                .concat();
        let found = external_tensors(&model).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "w");
        assert_eq!(found[0].location.as_deref(), Some("s.txt"));
        assert_eq!(
            found[0].place,
            "graph 'main' > node 'if' (If) > attribute 'then_branch' > graph 'then' > node 'c' (Constant) > \
             attribute 'value' > tensor"
        );
    }

    #[test]
    fn finds_sparse_and_function_tensors_and_passes_inline_ones() {
        let inline = [msg(TENSOR_NAME, b"ok"), msg(9, &[1, 2, 3, 4])].concat();
        let sparse = msg(SPARSE_VALUES, &external_tensor("sv", "a"));
        let graph = [msg(GRAPH_INITIALIZER, &inline), msg(GRAPH_SPARSE_INITIALIZER, &sparse)].concat();
        let function = [
            msg(FUNCTION_NAME, b"f"),
            msg(
                FUNCTION_ATTRIBUTE_PROTO,
                &[msg(ATTRIBUTE_NAME, b"d"), msg(ATTRIBUTE_TENSORS, &external_tensor("fd", "b"))].concat(),
            ),
        ]
        .concat();
        let model = [msg(MODEL_GRAPH, &graph), msg(MODEL_FUNCTIONS, &function)].concat();
        let names: Vec<String> = external_tensors(&model).unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["sv", "fd"]);
        assert!(external_tensors(&msg(MODEL_GRAPH, &msg(GRAPH_INITIALIZER, &inline))).unwrap().is_empty());
    }

    #[test]
    fn data_location_alone_counts_and_names_are_escaped() {
        let tensor = [msg(TENSOR_NAME, b"\x1b[2Jx"), key(TENSOR_DATA_LOCATION, 0), vec![1]].concat();
        let found = external_tensors(&msg(MODEL_GRAPH, &msg(GRAPH_INITIALIZER, &tensor))).unwrap();
        assert_eq!(found[0].location, None);
        assert_eq!(found[0].describe(), "tensor '\\u{1b}[2Jx' (graph '' > initializer)");
    }

    #[test]
    fn refuses_what_it_cannot_follow() {
        let code = |bytes: &[u8]| external_tensors(bytes).unwrap_err().code;
        // Truncated length, a group, a graph field that is a varint.
        assert!(matches!(code(&[0x3a, 0x05, 0x00]), ErrorCode::InvalidEncoding));
        assert!(matches!(code(&[0x0b]), ErrorCode::InvalidEncoding));
        assert!(matches!(code(&[0x38, 0x01]), ErrorCode::InvalidEncoding));
        // Graph -> node -> attribute -> graph ... deeper than MAX_DEPTH.
        let mut graph = Vec::new();
        for _ in 0..MAX_DEPTH {
            graph = msg(GRAPH_NODE, &msg(NODE_ATTRIBUTE, &msg(ATTRIBUTE_G, &graph)));
        }
        let err = external_tensors(&msg(MODEL_GRAPH, &graph)).unwrap_err();
        assert!(err.data.contains("deeper than 100"), "{}", err.data);
    }
}
