"""Tiny real ONNX models built with ``onnx.helper`` for tests (shared by every stage's tests).

All models use opset 17 and IR version 8 (loadable by onnxruntime >= 1.15), deterministic
weights (numpy seed), and graph-order inputs/outputs. Shapes use ints for fixed axes and strings
for dynamic axes, like the manifest. Each builder returns an ``onnx.ModelProto``; :func:`save`
writes it and returns the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from wasmai import vocab

OPSET = 17
IR_VERSION = 8

#: wasi-nn tensor type -> ONNX element type, from wasmai.vocab's one dtype table.
ONNX_TYPES = {name: d.onnx for name, d in vocab.DTYPES.items()}

#: The seven wasi-nn tensor types, in wasi-nn's order.
DTYPES = tuple(vocab.DTYPES)


def _model(graph: onnx.GraphProto, name: str) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="wasmai-tests", doc_string=name)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def identity(dtype: str, shape: Sequence[int | str] = (2, 3), *, name_in: str = "x",
             name_out: str = "y") -> onnx.ModelProto:
    """``y = Identity(x)`` for one wasi-nn ``dtype`` (all seven work in onnxruntime's CPU EP).
    Round-trip test: the output bytes must equal the input bytes."""
    t = ONNX_TYPES[dtype]
    graph = helper.make_graph([helper.make_node("Identity", [name_in], [name_out])], f"identity_{dtype}",
                              [helper.make_tensor_value_info(name_in, t, list(shape))],
                              [helper.make_tensor_value_info(name_out, t, list(shape))])
    return _model(graph, f"identity {dtype}")


def add(dtype: str = "fp32", shape: Sequence[int | str] = (2, 3)) -> onnx.ModelProto:
    """``sum = a + b`` with two inputs ``a`` and ``b`` (for fp32, fp64, i32, i64): tests input
    matching by name and by position."""
    t = ONNX_TYPES[dtype]
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], f"add_{dtype}",
                              [helper.make_tensor_value_info("a", t, list(shape)),
                               helper.make_tensor_value_info("b", t, list(shape))],
                              [helper.make_tensor_value_info("sum", t, list(shape))])
    return _model(graph, f"add {dtype}")


def mlp_weights(n_in: int = 16, hidden: int = 32, n_out: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """The weights :func:`mlp` uses (for computing the reference output in numpy)."""
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((n_in, hidden)).astype(np.float32) * 0.5,
        "b1": rng.standard_normal(hidden).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((hidden, n_out)).astype(np.float32) * 0.5,
        "b2": rng.standard_normal(n_out).astype(np.float32) * 0.1,
    }


def mlp_reference(x: np.ndarray, n_in: int = 16, hidden: int = 32, n_out: int = 4, seed: int = 0) -> np.ndarray:
    """numpy reference of :func:`mlp`: ``relu(x @ w1 + b1) @ w2 + b2`` (fp32)."""
    w = mlp_weights(n_in, hidden, n_out, seed)
    return np.maximum(x @ w["w1"] + w["b1"], 0) @ w["w2"] + w["b2"]


def mlp(n_in: int = 16, hidden: int = 32, n_out: int = 4, *, batch: int | str = "batch",
        seed: int = 0) -> onnx.ModelProto:
    """A two-layer fp32 MLP: input ``x`` [batch, n_in] -> output ``y`` [batch, n_out]."""
    w = mlp_weights(n_in, hidden, n_out, seed)
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_out])],
                              initializer=inits)
    return _model(graph, "mlp")


def cnn_classifier(num_classes: int = 10, size: int = 32, channels: int = 8, *, seed: int = 0,
                   batch: int | str = 1) -> onnx.ModelProto:
    """A tiny fp32 image classifier: ``input`` [batch, 3, size, size] (NCHW) -> Conv 3x3 ->
    Relu -> GlobalAveragePool -> Flatten -> Gemm -> ``logits`` [batch, num_classes]."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.2, "conv_w"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32) * 0.1, "conv_b"),
        numpy_helper.from_array(rng.standard_normal((channels, num_classes)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(num_classes).astype(np.float32) * 0.1, "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, num_classes])],
        initializer=inits)
    return _model(graph, "cnn classifier")


def random_input(dtype: str, shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A random array of wasi-nn ``dtype`` (bf16 as uint16 bit patterns of finite values)."""
    rng = np.random.default_rng(seed)
    if dtype == "bf16":
        f = rng.standard_normal(shape).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16)
    np_dtype = np.dtype(vocab.dtype(dtype).numpy)
    if dtype in ("u8", "i32", "i64"):
        info = np.iinfo(np_dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=info.dtype, endpoint=True)
    return (rng.standard_normal(shape) * 100).astype(np_dtype)


def identity_all_types(shape: Sequence[int | str] = (2, 3)) -> onnx.ModelProto:
    """Seven Identity nodes, one per wasi-nn type: inputs ``x_<dtype>`` -> outputs ``y_<dtype>``
    (in :data:`DTYPES` order). One component built from it round-trips every tensor type."""
    nodes, inputs, outputs = [], [], []
    for dtype, t in ONNX_TYPES.items():
        nodes.append(helper.make_node("Identity", [f"x_{dtype}"], [f"y_{dtype}"]))
        inputs.append(helper.make_tensor_value_info(f"x_{dtype}", t, list(shape)))
        outputs.append(helper.make_tensor_value_info(f"y_{dtype}", t, list(shape)))
    return _model(helper.make_graph(nodes, "identity_all_types", inputs, outputs), "identity all types")
