"""Shared pieces of :mod:`wasmai.convert`: constants, options/result types, ONNX Runtime helpers."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from wasmai.errors import WasmaiError, first_line

# EMBED_LIMIT_BYTES lives in wasmai.manifest (build reads it without numpy); re-exported here.
from wasmai.manifest import Preprocess, TensorSpec
from wasmai.tensors import numpy_dtype
from wasmai.vocab import DTYPES, dtype_from_numpy

#: ONNX opset used by the PyTorch export. 17 is the first opset with LayerNormalization as a
#: standard op (transformer exports stay compact), it is implemented by every ONNX Runtime
#: release since 1.13 (late 2022) - so also by the ORT builds behind wasmtime's wasi-nn ONNX
#: backend - and it is well inside the range the TorchScript-based exporter supports.
DEFAULT_OPSET = 17


#: wasi-nn hosts and the tensor types they accept. wasmtime's own ONNX backend
#: (crates/wasi-nn/src/backend/onnx.rs) converts tensors as FP32 only; the wasmai host maps all
#: seven wasi-nn tensor types to ONNX Runtime element types.
HOST_TENSOR_TYPES: dict[str, tuple[str, ...]] = {
    "wasmtime-onnx": ("fp32",),
    "wasmai": tuple(DTYPES),
}


#: Default tolerances per quantization mode: (atol, rtol, min top-1 agreement for classifiers).
#: ``None`` = that check is not applied unless given on the command line. fp32 exports match
#: PyTorch to ~1e-5; fp16 carries ~3 significant digits through the network; int8 logits move by
#: whole units, so only the classification decision (top-1) is checked by default. 0.7 because
#: int8 flips classes the reference itself nearly ties on (measured on EfficientNet-Lite0 with 7
#: scikit-image photos: 5/7 agree, both flips had reference top-1/top-2 gaps under 0.02), while
#: a broken quantization agrees on almost nothing.
DEFAULT_TOLERANCES: dict[str, tuple[float | None, float | None, float | None]] = {
    "none": (1e-4, 1e-3, None),
    "fp16": (5e-2, 5e-2, None),
    "dynamic": (None, None, 0.7),
    "static": (None, None, 0.7),
}


#: Dynamic-quantization op types: ONNX Runtime's IntegerOpsRegistry minus ``Conv`` - the
#: ConvInteger it would produce has no CPU kernel for int8 weights, so the model would not load.
DYNAMIC_OP_TYPES = ["MatMul", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization"]


STEPS = ("load", "optimize", "quantize", "validate", "report", "write")


#: Number of random samples when a tensor task gets no calibration/validation data.
RANDOM_SAMPLES = 4


ProgressFn = Callable[[str, str, str], None]
"""``progress(step, event, detail)`` with event ``"start"``, ``"done"`` or ``"skip"``."""

Feed = dict[str, np.ndarray]
"""One sample: input name -> array (the model input's dtype and shape)."""

ReferenceFn = Callable[[list[Feed]], list[list[np.ndarray]]]
"""A reference model: samples -> per sample, the output arrays in output order."""


@dataclass
class InputSpec:
    """An example input for the PyTorch export: name, concrete shape, wasi-nn dtype."""

    name: str
    shape: list[int]
    dtype: str = "fp32"


def parse_input_spec(text: str) -> InputSpec:
    """Parse ``NAME=1x3x224x224[:dtype]`` (dtype a wasi-nn type: fp32 (default), fp16, fp64,
    i32, i64, u8). Raises :class:`WasmaiError` on malformed text."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise WasmaiError(f"--input {text!r}: expected NAME=DIMxDIMx...[:dtype], e.g. input=1x3x224x224")
    shape_text, _, dtype = rest.partition(":")
    dtype = dtype or "fp32"
    if dtype not in DTYPES or dtype == "bf16":
        raise WasmaiError(f"--input {text!r}: unknown dtype {dtype!r} (fp32 fp16 fp64 i32 i64 u8)")
    try:
        shape = [int(d) for d in shape_text.lower().split("x")]
    except ValueError:
        raise WasmaiError(f"--input {text!r}: shape must be positive integers joined by 'x'") from None
    if any(d <= 0 for d in shape):
        raise WasmaiError(f"--input {text!r}: shape must be positive integers joined by 'x'")
    return InputSpec(name, shape, dtype)


def parse_dynamic(texts: Sequence[str]) -> dict[str, list[int]]:
    """Parse ``NAME=0`` or ``NAME=0,1`` (dynamic axis indices) into ``{name: [axes]}``; repeated
    names accumulate. Raises :class:`WasmaiError` on malformed text or a negative axis."""
    out: dict[str, list[int]] = {}
    for text in texts:
        name, sep, axes = text.partition("=")
        try:
            parsed = [int(a) for a in axes.split(",")] if sep and name else None
        except ValueError:
            parsed = None
        if not parsed or any(a < 0 for a in parsed):
            raise WasmaiError(f"--dynamic {text!r}: expected NAME=AXIS[,AXIS...], e.g. input=0")
        out.setdefault(name, []).extend(parsed)
    return out


def parse_floats3(text: str, flag: str) -> list[float]:
    """Parse ``a,b,c`` (three numbers) for ``--mean``/``--std``; one number ``a`` means ``a,a,a``.
    Raises :class:`WasmaiError` unless the text holds one or three numbers."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise WasmaiError(f"{flag} {text!r}: expected one or three comma-separated numbers")
    return values


@dataclass
class ConvertOptions:
    """Everything ``wasmai convert`` needs. Exactly one of ``torch``, ``onnx``, ``hf`` is set.

    ``torch``: ``module:callable``, ``path/file.py:callable`` (the callable returns an
    ``nn.Module``) or a TorchScript file. ``weights``: a state dict applied to that module.
    ``inputs``: example input shapes for the export (required for ``torch``; optional for the
    others, where they fix dynamic axes of random validation inputs). ``dynamic``: axis indices
    per input that stay dynamic in the export. ``atol``/``rtol``/``min_top1_agreement`` left
    ``None`` take :data:`DEFAULT_TOLERANCES` for the quantization mode.
    """

    output: Path
    torch: str | None = None
    weights: Path | None = None
    onnx: Path | None = None
    hf: Path | None = None
    inputs: list[InputSpec] = field(default_factory=list)
    dynamic: dict[str, list[int]] = field(default_factory=dict)
    output_names: list[str] = field(default_factory=list)
    task: str = "tensor"
    labels: Path | None = None
    softmax: bool | None = None
    preprocess: Preprocess | None = None
    name: str | None = None
    version: str = "0.1.0"
    optimize: str = "basic"
    quantize: str = "none"
    calibration: Path | None = None
    calibration_method: str = "minmax"
    keep_io_types: bool = True
    validation: Path | None = None
    atol: float | None = None
    rtol: float | None = None
    min_top1_agreement: float | None = None
    fail_on_mismatch: bool = True
    opset: int = DEFAULT_OPSET
    exporter: str = "torchscript"
    latency_runs: int = 10


@dataclass
class StepReport:
    """One pipeline step: name, wall time in seconds, one-line detail (``skipped`` if not run)."""

    name: str
    seconds: float
    detail: str


@dataclass
class ConvertResult:
    """What ``convert`` did. ``validation``/``report``/``quantization`` are the tables also
    written to the manifest (``validation`` here additionally holds per-sample top-5 lists)."""

    onnx: Path
    manifest: Path
    name: str
    task: str
    source: dict[str, Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    steps: list[StepReport]
    quantization: dict[str, Any]
    validation: dict[str, Any]
    report: dict[str, Any]
    warnings: list[str]
    seconds: float


class _Steps:
    """Times steps and forwards start/done events to the progress callback."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress
        self.done: list[StepReport] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, str]]:
        """Time the ``with`` body as step ``name``; set ``["detail"]`` on the yielded dict."""
        if self.progress:
            self.progress(name, "start", "")
        t0 = time.perf_counter()
        holder = {"detail": ""}
        yield holder
        rep = StepReport(name, round(time.perf_counter() - t0, 3), holder["detail"])
        self.done.append(rep)
        if self.progress:
            self.progress(name, "done", rep.detail)

    def skip(self, name: str, why: str) -> None:
        self.done.append(StepReport(name, 0.0, f"skipped: {why}"))
        if self.progress:
            self.progress(name, "skip", why)


def _ort() -> ModuleType:
    """The ``onnxruntime`` module, its default logger set to errors only."""
    ort = importlib.import_module("onnxruntime")
    ort.set_default_logger_severity(3)
    return ort


def _session(path: Path, threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` (untyped: ``Any``) on the CPU provider for ``path``,
    ``threads`` intra-op threads (0 = ORT's default). Raises :class:`WasmaiError` if ORT refuses
    the model."""
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise WasmaiError(f"ONNX Runtime cannot load the model: {first_line(exc)}") from None


def _ort_type_to_tensor_type(ort_type: str) -> str:
    """ONNX Runtime's type string (``"tensor(float)"``) -> wasi-nn dtype (``"fp32"``), through its
    numpy name (``bfloat16`` is bf16: numpy has no such type). Raises WasmaiError for types
    wasi-nn cannot carry."""
    inner = ort_type[len("tensor("):-1] if ort_type.startswith("tensor(") else ort_type
    if inner == "bfloat16":
        return "bf16"
    np_name = {"float": "float32", "double": "float64"}.get(inner, inner)
    found = dtype_from_numpy(np_name)
    if found is None:
        raise WasmaiError(f"tensor type {ort_type} has no wasi-nn equivalent ({' '.join(DTYPES)})")
    return found.name


def _op_domains(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})


@functools.lru_cache(maxsize=1)
def ort_max_opset() -> int:
    """Highest default-domain opset the installed onnxruntime accepts, found by loading a
    one-node Identity model stamped with decreasing opsets (ORT refuses opsets it does not know)."""
    import onnx
    from onnx import TensorProto, helper

    ort = _ort()
    top = onnx.defs.onnx_opset_version() + 4
    for opset in range(top, 6, -1):
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = min(model.ir_version, 10)
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return opset
        except Exception:  # noqa: BLE001 - refusal is the signal
            continue
    return 7


def _example_array(spec: InputSpec, rng: np.random.Generator, vocab: int = 10) -> np.ndarray:
    dt = numpy_dtype(spec.dtype)
    if spec.name == "attention_mask":
        return np.ones(spec.shape, dtype=dt)
    if spec.name == "token_type_ids":
        return np.zeros(spec.shape, dtype=dt)
    if np.issubdtype(dt, np.floating):
        return rng.standard_normal(spec.shape).astype(dt)
    return rng.integers(0, max(1, vocab), size=spec.shape).astype(dt)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr chatter (torch's exporter, ORT) while keeping Python errors."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
