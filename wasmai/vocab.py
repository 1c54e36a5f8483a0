"""The field's vocabulary, defined once: tensor dtypes and the choices every stage shares.

Nothing here imports numpy, onnx or a native module, so the CLI can use these enums for its
choices without slowing ``wasmai --help``.

* :data:`DTYPES` - the seven wasi-nn tensor types (``wasi:nn/tensor.tensor-type`` in
  ``wit/deps/wasi-nn/wasi-nn.wit``, lower case) with their numpy dtype, item size and ONNX
  element type (``TensorProto.DataType`` in onnx/onnx.proto3). One spelling everywhere:
  ``dtype`` for the type, ``shape`` for the dimensions.
* :class:`Task`, :class:`Layout`, :class:`Color`, :class:`Quantize`, :class:`Optimize`,
  :class:`CalibrationMethod`, :class:`Exporter`, :class:`ExecutionTarget`, :class:`Isolation` -
  ``str`` enums, so a member compares equal to its value and serializes as it (TOML, JSON);
  :func:`choice` turns a user's string into a member with one error line.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from wasmai.errors import WasmaiError


@dataclass(frozen=True)
class DType:
    """One wasi-nn tensor type.

    ``name`` is the lower-case wasi-nn case (``fp32``); ``numpy`` the numpy dtype name that holds
    its elements little-endian (bf16 has none: its raw bits travel as ``uint16``); ``itemsize``
    bytes per element; ``onnx`` the ONNX ``TensorProto.DataType`` number.
    """

    name: str
    numpy: str
    itemsize: int
    onnx: int


#: wasi-nn tensor types in wasi-nn's case order (fp16 fp32 fp64 bf16 u8 i32 i64).
DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("fp16", "float16", 2, 10),
        DType("fp32", "float32", 4, 1),
        DType("fp64", "float64", 8, 11),
        DType("bf16", "uint16", 2, 16),
        DType("u8", "uint8", 1, 2),
        DType("i32", "int32", 4, 6),
        DType("i64", "int64", 8, 7),
    )
}

_BY_ONNX = {d.onnx: d for d in DTYPES.values()}
#: numpy dtype name -> wasi-nn dtype; uint16 is not bf16 (only an explicit ``bf16`` means that).
_BY_NUMPY = {d.numpy: d for d in DTYPES.values() if d.name != "bf16"}


def dtype(name: str) -> DType:
    """The :class:`DType` called ``name`` (case-insensitive).

    Raises :class:`WasmaiError` naming the known types for anything else."""
    found = DTYPES.get(str(name).lower())
    if found is None:
        raise WasmaiError(f"unknown tensor dtype {name!r} (wasi-nn types: {', '.join(DTYPES)})")
    return found


def dtype_from_onnx(elem_type: int) -> DType | None:
    """The wasi-nn dtype of an ONNX element type number, or None when wasi-nn cannot carry it
    (bool, int8, int16, uint16+, string, complex, float8 ...)."""
    return _BY_ONNX.get(elem_type)


def dtype_from_numpy(numpy_name: str) -> DType | None:
    """The wasi-nn dtype whose elements a numpy dtype named ``numpy_name`` holds, or None
    (``uint16`` gives None: bf16 must be asked for by name)."""
    return _BY_NUMPY.get(numpy_name)


E = TypeVar("E", bound=StrEnum)


def choice(kind: type[E], value: str | E, flag: str) -> E:
    """The member of ``kind`` whose value is ``value``. Raises :class:`WasmaiError`
    ``"<flag> 'x': expected one of a, b, c"`` for anything else."""
    try:
        return kind(value)
    except ValueError:
        raise WasmaiError(f"{flag} {value!r}: expected one of {', '.join(kind)}") from None


class Task(StrEnum):
    """What a component does beyond running tensors; one template folder per task."""

    TENSOR = "tensor"
    IMAGE_CLASSIFICATION = "image-classification"
    FACE_DETECTION = "face-detection"
    VOICE_ACTIVITY = "voice-activity"
    TEXT_EMBEDDING = "text-embedding"


class Layout(StrEnum):
    """Axis order of an image tensor: batch, channels, height, width or batch, height, width, channels."""

    NCHW = "NCHW"
    NHWC = "NHWC"


class Color(StrEnum):
    """Channel order of an image tensor."""

    RGB = "RGB"
    BGR = "BGR"


class Quantize(StrEnum):
    """How ``convert`` lowers precision: none, int8 weights (``quantize_dynamic``), int8 QDQ with
    calibration (``quantize_static``), or fp16 (onnxconverter-common)."""

    NONE = "none"
    DYNAMIC = "dynamic"
    STATIC = "static"
    FP16 = "fp16"


class Optimize(StrEnum):
    """ONNX Runtime offline graph optimization level (``GraphOptimizationLevel``): ``extended`` and
    ``all`` write ONNX Runtime-specific fused operators."""

    NONE = "none"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class CalibrationMethod(StrEnum):
    """``onnxruntime.quantization.CalibrationMethod`` for static quantization."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class Exporter(StrEnum):
    """``torch.onnx`` exporter: the TorchScript-based one or ``dynamo=True``."""

    TORCHSCRIPT = "torchscript"
    DYNAMO = "dynamo"


class ExecutionTarget(StrEnum):
    """wasi-nn ``execution-target``: where the host runs a graph (``wasi:nn/graph``)."""

    CPU = "cpu"
    GPU = "gpu"
    TPU = "tpu"


class Isolation(StrEnum):
    """Where ``wasmai serve`` runs a model's instances: ``process`` - each instance in its own
    supervised worker process (a crash in native code or a call blocked in the host costs that
    worker, which is restarted); ``thread`` - on threads of the server process (faster; a crash in
    ONNX Runtime ends the server: for trusted graphs only)."""

    PROCESS = "process"
    THREAD = "thread"
