"""The KServe Open Inference Protocol v2 (REST) on the wire: inference requests in, responses out.

Sources of the constants and layouts used here:

* the protocol: https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
  (``$inference_request`` / ``$inference_response``, tensor data row-major and flattened,
  datatypes ``BOOL UINT8..UINT64 INT8..INT64 FP16 FP32 FP64 BYTES``, the ``{"error": ...}`` body);
* the binary tensor data extension:
  https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol/binary-tensor-data-extension
  and Triton's https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/protocol/extension_binary_data.html
  (the ``Inference-Header-Content-Length`` header giving the JSON's byte length, the tensors'
  bytes after it in input order; the ``binary_data_size`` parameter of an input or output,
  ``binary_data`` of a requested output, ``binary_data_output`` of the request; a BYTES element
  as a 4-byte little-endian length followed by its bytes);
* Triton's classification extension:
  https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/protocol/extension_classification.html
  (a requested output with ``"classification": K`` answers BYTES ``"score:index:label"``).

wasi-nn's seven tensor types map to OIP datatypes one to one (:data:`OIP_DATATYPES`), except
``bf16``: the OIP list has no bfloat16, so it is served as Triton's ``BF16`` datatype (binary: 2
bytes per element, the raw bits; JSON: numbers, rounded to the nearest bfloat16 on the way in).

Everything here is pure computation on bytes and numpy; a malformed request raises
:class:`ProtocolError` with the HTTP status to answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wasmai.errors import WasmaiError
from wasmai.tensors import Tensor
from wasmai.vocab import DTYPES

#: wasi-nn dtype -> OIP datatype. ``BF16`` is Triton's name; the OIP list has no bfloat16.
OIP_DATATYPES: dict[str, str] = {
    "fp16": "FP16", "fp32": "FP32", "fp64": "FP64", "bf16": "BF16",
    "u8": "UINT8", "i32": "INT32", "i64": "INT64",
}
#: OIP datatype -> wasi-nn dtype.
WASI_NN_DTYPES: dict[str, str] = {v: k for k, v in OIP_DATATYPES.items()}

#: The header of the binary tensor data extension: byte length of the JSON part of a body.
HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(WasmaiError):
    """A request the protocol cannot accept; ``status`` is the HTTP status to answer (400 by
    default, 413 for a tensor over the model's byte limit, 404 for an unknown output)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RequestedOutput:
    """One entry of the request's ``outputs``: its ``name``, whether it goes back as binary
    (None = the request's default) and the classification count K (0 = none)."""

    name: str
    binary: bool | None = None
    classification: int = 0


@dataclass
class InferRequest:
    """A decoded ``$inference_request``: ``inputs`` in the order given, ``outputs`` requested
    (empty = all of the model's), request ``parameters`` and ``binary_output`` (the request's
    ``binary_data_output`` parameter)."""

    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput]
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False


@dataclass
class InputTensor:
    """One request input: OIP ``datatype``, ``shape`` and either ``data`` (row-major little-endian
    element bytes, numeric datatypes) or ``elements`` (one bytes object per element, BYTES)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes = b""
    elements: list[bytes] | None = None

    def to_tensor(self) -> Tensor:
        """This input as a host :class:`~wasmai.tensors.Tensor` (numeric datatypes only)."""
        return Tensor(self.name, WASI_NN_DTYPES[self.datatype], self.shape, self.data)


@dataclass
class OutputTensor:
    """One response output: OIP ``datatype``, ``shape`` and ``data`` (element bytes) or
    ``elements`` (BYTES)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes = b""
    elements: list[bytes] | None = None

    @classmethod
    def from_tensor(cls, t: Tensor) -> OutputTensor:
        """A host output tensor as an OIP output."""
        return cls(t.name, OIP_DATATYPES[t.dtype], tuple(t.shape), t.data)


def _count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _itemsize(datatype: str) -> int:
    return DTYPES[WASI_NN_DTYPES[datatype]].itemsize


def _np_dtype(datatype: str) -> np.dtype[Any]:
    return np.dtype(DTYPES[WASI_NN_DTYPES[datatype]].numpy).newbyteorder("<")


def bf16_from_float(values: NDArray[Any]) -> NDArray[np.uint16]:
    """float values -> bfloat16 bits (uint16), rounded to nearest, ties to even; NaN stays NaN."""
    f = np.ascontiguousarray(values, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(f), np.uint16(0x7FC0), rounded).astype(np.uint16)


def float_from_bf16(bits: NDArray[Any]) -> NDArray[np.float32]:
    """bfloat16 bits (uint16) -> float32 values (exact)."""
    widened = np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32) << 16
    return widened.view(np.float32)


def _shape(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise ProtocolError(f"input {name!r}: shape must be a list of non-negative integers")
    return tuple(value)


def _flatten(data: Any) -> list[Any]:
    """The protocol allows the tensor data nested by shape or flat: flatten row-major."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    for x in data:
        out.extend(_flatten(x))
    return out


def _json_numbers(name: str, datatype: str, data: Any, count: int) -> bytes:
    """JSON numbers -> element bytes of ``datatype``. Integers must be integers within range;
    floats accept integers too; booleans and strings are refused."""
    flat = _flatten(data)
    if len(flat) != count:
        raise ProtocolError(f"input {name!r}: {len(flat)} values for a shape of {count} elements")
    integer = datatype in ("UINT8", "INT32", "INT64")
    for v in flat:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            kind = "integers" if integer else "numbers"
            raise ProtocolError(f"input {name!r}: {datatype} data must be {kind}, got {json.dumps(v)[:40]}")
    if datatype == "BF16":
        return bf16_from_float(np.asarray(flat, dtype=np.float64)).astype("<u2").tobytes()
    want = _np_dtype(datatype)
    if integer:
        info = np.iinfo(want)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise ProtocolError(f"input {name!r}: a value is outside the range of {datatype}")
        return np.asarray(flat, dtype=np.int64).astype(want).tobytes()
    with np.errstate(over="ignore"):
        return np.asarray(flat, dtype=np.float64).astype(want).tobytes()


def _json_bytes(name: str, data: Any, count: int, base64_text: bool) -> list[bytes]:
    """JSON BYTES elements (strings) -> bytes: UTF-8, or base64-decoded when ``base64_text``."""
    flat = _flatten(data)
    if len(flat) != count:
        raise ProtocolError(f"input {name!r}: {len(flat)} values for a shape of {count} elements")
    out = []
    for v in flat:
        if not isinstance(v, str):
            raise ProtocolError(f"input {name!r}: BYTES data must be strings")
        if base64_text:
            try:
                out.append(base64.b64decode(v, validate=True))
            except binascii.Error:
                raise ProtocolError(f"input {name!r}: a JSON BYTES element of this input must be base64 text "
                                    "(or send it binary: binary_data_size)") from None
        else:
            out.append(v.encode("utf-8"))
    return out


def split_bytes_elements(name: str, raw: bytes, count: int) -> list[bytes]:
    """A binary BYTES tensor (each element a 4-byte little-endian length + bytes) -> elements.
    Raises ProtocolError when the lengths do not add up or the count differs from the shape."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise ProtocolError(f"input {name!r}: a BYTES element runs past the tensor data")
        out.append(raw[pos:pos + n])
        pos += n
    if len(out) != count:
        raise ProtocolError(f"input {name!r}: {len(out)} BYTES elements for a shape of {count} elements")
    return out


def join_bytes_elements(elements: Sequence[bytes]) -> bytes:
    """BYTES elements -> the binary layout (4-byte little-endian length + bytes each)."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The ``Inference-Header-Content-Length`` header as an int in 0..body_length, or None when
    absent. Raises ProtocolError for anything else."""
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {value[:40]!r}") from None
    if not 0 <= n <= body_length:
        raise ProtocolError(f"{HEADER_LENGTH} {n} is outside the body of {body_length} bytes")
    return n


def _int_parameter(params: Mapping[str, Any], key: str, where: str) -> int | None:
    v = params.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ProtocolError(f"{where}: parameter {key} must be a non-negative integer")
    return v


def decode_request(body: bytes, header_length: int | None, *, max_tensor_bytes: int | None = None,
                   base64_bytes_inputs: Sequence[str] = ()) -> InferRequest:
    """Decode an ``$inference_request`` body: JSON, or JSON + binary tensors when ``header_length``
    (the ``Inference-Header-Content-Length``) is given. ``max_tensor_bytes`` bounds each input's
    data (ProtocolError 413 above it); JSON BYTES elements of the inputs named in
    ``base64_bytes_inputs`` are base64 text (others UTF-8).

    Raises ProtocolError (400) on malformed JSON, unknown datatypes, shapes that do not match the
    data, binary sizes that do not add up to the body."""
    head = body if header_length is None else body[:header_length]
    try:
        doc = json.loads(head)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"the request is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("the request must be a JSON object")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("parameters must be an object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("the request needs a non-empty list of inputs")
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs: list[InputTensor] = []
    seen: set[str] = set()
    for item in raw_inputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError("every input needs a name")
        name = item["name"]
        if name in seen:
            raise ProtocolError(f"input {name!r} is given twice")
        seen.add(name)
        datatype = item.get("datatype")
        if datatype != "BYTES" and datatype not in WASI_NN_DTYPES:
            raise ProtocolError(f"input {name!r}: datatype {str(datatype)[:20]!r} is not served (use one of "
                                f"{', '.join(WASI_NN_DTYPES)} or BYTES)")
        shape = _shape(name, item.get("shape"))
        count = _count(shape)
        iparams = item.get("parameters") or {}
        if not isinstance(iparams, dict):
            raise ProtocolError(f"input {name!r}: parameters must be an object")
        size = _int_parameter(iparams, "binary_data_size", f"input {name!r}")
        if size is not None:
            if header_length is None:
                raise ProtocolError(f"input {name!r} has binary_data_size but the request has no "
                                    f"{HEADER_LENGTH} header")
            if offset + size > len(binary):
                raise ProtocolError(f"input {name!r}: binary_data_size {size} runs past the end of the body")
            raw = bytes(binary[offset:offset + size])
            offset += size
        elif "data" not in item:
            raise ProtocolError(f"input {name!r} has neither data nor binary_data_size")
        if max_tensor_bytes is not None:
            approx = size if size is not None else (count * _itemsize(datatype) if datatype != "BYTES" else 0)
            if approx > max_tensor_bytes:
                raise ProtocolError(f"input {name!r}: {approx} bytes exceed this model's limit of "
                                    f"{max_tensor_bytes} bytes per tensor", 413)
        if datatype == "BYTES":
            elements = split_bytes_elements(name, raw, count) if size is not None else \
                _json_bytes(name, item["data"], count, name in base64_bytes_inputs)
            if max_tensor_bytes is not None and sum(len(e) for e in elements) > max_tensor_bytes:
                raise ProtocolError(f"input {name!r} exceeds this model's limit of {max_tensor_bytes} bytes "
                                    "per tensor", 413)
            inputs.append(InputTensor(name, datatype, shape, elements=elements))
            continue
        if size is not None:
            if size != count * _itemsize(datatype):
                raise ProtocolError(f"input {name!r}: binary_data_size {size} does not fit {datatype} "
                                    f"{list(shape)} ({count * _itemsize(datatype)} bytes)")
            data = raw
        else:
            data = _json_numbers(name, datatype, item["data"], count)
        inputs.append(InputTensor(name, datatype, shape, data))
    if header_length is not None and offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes after the tensors are not claimed by any "
                            "binary_data_size")
    outputs: list[RequestedOutput] = []
    raw_outputs = doc.get("outputs") or []
    if not isinstance(raw_outputs, list):
        raise ProtocolError("outputs must be a list")
    for item in raw_outputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError("every requested output needs a name")
        oparams = item.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise ProtocolError(f"output {item['name']!r}: parameters must be an object")
        binary_flag = oparams.get("binary_data")
        k = _int_parameter(oparams, "classification", f"output {item['name']!r}") or 0
        outputs.append(RequestedOutput(item["name"], None if binary_flag is None else bool(binary_flag), k))
    request_id = doc.get("id")
    return InferRequest(id=str(request_id) if request_id is not None else None, inputs=inputs,
                        outputs=outputs, parameters=params, binary_output=bool(params.get("binary_data_output")))


def _json_data(out: OutputTensor) -> list[Any]:
    if out.elements is not None:
        return [e.decode("utf-8", errors="replace") for e in out.elements]
    arr = np.frombuffer(out.data, dtype=_np_dtype(out.datatype))
    if out.datatype == "BF16":
        arr = float_from_bf16(arr)
    values: list[Any] = arr.tolist()
    return values


def encode_response(model_name: str, model_version: str, request_id: str | None,
                    outputs: Sequence[tuple[OutputTensor, bool]],
                    parameters: Mapping[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """An ``$inference_response`` body and its extra headers. ``outputs`` pairs each output with
    whether it goes as binary; with any binary output the body is the JSON followed by the
    outputs' bytes and the headers carry ``Inference-Header-Content-Length``."""
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = dict(parameters)
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out, as_binary in outputs:
        item: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if as_binary:
            blob = join_bytes_elements(out.elements) if out.elements is not None else out.data
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = _json_data(out)
        items.append(item)
    doc["outputs"] = items
    head = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if not blobs:
        return head, {}
    return head + b"".join(blobs), {HEADER_LENGTH: str(len(head))}


def classification_strings(labels: Sequence[str], indices: Sequence[int], scores: Sequence[float]) -> list[bytes]:
    """Triton's classification output elements: ``"score:index:label"`` (score as ``%f``)."""
    return [f"{s:f}:{i}:{label}".encode() for label, i, s in zip(labels, indices, scores, strict=True)]
