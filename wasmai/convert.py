"""``wasmai convert``: a model (PyTorch, local Hugging Face folder or ONNX) -> ONNX + TOML manifest.

Pipeline, each step timed and reported to an optional progress callback and in the result:

1. **load** - export with ``torch.onnx`` or load the ONNX file; ``onnx.checker`` full check and
   ONNX shape inference either way.
2. **optimize** - optional ONNX Runtime offline graph optimization (``basic`` by default).
3. **quantize** - optional: ``dynamic`` (int8 weights, ``quantize_dynamic``), ``static`` (QDQ,
   per-channel int8, ``quantize_static`` calibrated on real preprocessed images or NPZ tensors),
   ``fp16`` (``onnxconverter_common.float16``, fp32 inputs/outputs kept by default).
4. **validate** - the result against the reference (the PyTorch model itself, or the unoptimized,
   unquantized ONNX model) on the validation samples: max abs/rel difference per output and,
   for classifiers, top-1 agreement. Beyond tolerance -> :class:`ValidationError`, nothing written.
5. **report** - size and ONNX Runtime latency before/after, wasi-nn compatibility.
6. **write** - ``OUT.onnx`` and ``OUT.toml`` atomically (:mod:`wasmai._atomic`).

Heavy dependencies (torch, transformers, onnxruntime.quantization) are imported lazily, only by
the code path that needs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import importlib
import importlib.util
import inspect
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from wasmai.errors import ValidationError, WasmaiError
from wasmai.manifest import (
    ONNX_TO_TENSOR_TYPE,
    TASKS,
    TENSOR_TYPES,
    Manifest,
    Preprocess,
    TensorSpec,
    manifest_for,
    sha256_file,
)

#: Largest model (bytes of the .onnx file) that ``wasmai build`` embeds in the component's data
#: section; larger models must be loaded by the host from a file at run time. 256 MiB.
EMBED_LIMIT_BYTES = 256 * 1024 * 1024

#: ONNX opset used by the PyTorch export. 17 is the first opset with LayerNormalization as a
#: standard op (transformer exports stay compact), it is implemented by every ONNX Runtime
#: release since 1.13 (late 2022) - so also by the ORT builds behind wasmtime's wasi-nn ONNX
#: backend - and it is well inside the range the TorchScript-based exporter supports.
DEFAULT_OPSET = 17

QUANTIZE_MODES = ("none", "dynamic", "static", "fp16")
OPTIMIZE_LEVELS = ("none", "basic", "extended", "all")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
EXPORTERS = ("torchscript", "dynamo")

#: wasi-nn hosts and the tensor types they accept. wasmtime's own ONNX backend
#: (crates/wasi-nn/src/backend/onnx.rs) converts tensors as FP32 only; the wasmai host maps all
#: seven wasi-nn tensor types to ONNX Runtime element types.
HOST_TENSOR_TYPES: dict[str, tuple[str, ...]] = {
    "wasmtime-onnx": ("fp32",),
    "wasmai": tuple(TENSOR_TYPES),
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

_NUMPY_TO_TENSOR_TYPE = {v[0]: k for k, v in TENSOR_TYPES.items() if k != "bf16"}

ProgressFn = Callable[[str, str, str], None]
"""``progress(step, event, detail)`` with event ``"start"``, ``"done"`` or ``"skip"``."""


# --------------------------------------------------------------------------- options / results


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
    if dtype not in TENSOR_TYPES or dtype == "bf16":
        raise WasmaiError(f"--input {text!r}: unknown dtype {dtype!r} (fp32 fp16 fp64 i32 i64 u8)")
    try:
        shape = [int(d) for d in shape_text.lower().split("x")]
    except ValueError:
        raise WasmaiError(f"--input {text!r}: shape must be positive integers joined by 'x'") from None
    if any(d <= 0 for d in shape):
        raise WasmaiError(f"--input {text!r}: shape must be positive integers joined by 'x'")
    return InputSpec(name, shape, dtype)


def parse_dynamic(texts: Sequence[str]) -> dict[str, list[int]]:
    """Parse ``NAME=0`` or ``NAME=0,1`` (dynamic axis indices) into ``{name: [axes]}``."""
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
    """Parse ``a,b,c`` (three numbers) for ``--mean``/``--std``."""
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


# --------------------------------------------------------------------------- helpers


class _Steps:
    """Times steps and forwards start/done events to the progress callback."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress
        self.done: list[StepReport] = []

    @contextlib.contextmanager
    def step(self, name: str):
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    return ort


def _session(path: Path, threads: int = 0):
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise WasmaiError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from None


def _ort_type_to_tensor_type(ort_type: str) -> str:
    # "tensor(float)" -> numpy name -> wasi-nn type
    inner = ort_type[len("tensor("):-1] if ort_type.startswith("tensor(") else ort_type
    np_name = {"float": "float32", "double": "float64", "float16": "float16", "int32": "int32",
               "int64": "int64", "uint8": "uint8", "bfloat16": "uint16"}.get(inner)
    if np_name is None:
        raise WasmaiError(f"tensor type {ort_type} has no wasi-nn equivalent (fp16 fp32 fp64 bf16 u8 i32 i64)")
    return "bf16" if inner == "bfloat16" else _NUMPY_TO_TENSOR_TYPE[np_name]


def graph_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec], int | None]:
    """Graph inputs (initializers excluded) and outputs of an ONNX file as :class:`TensorSpec`
    (dims with ``dim_value`` -> int, ``dim_param`` -> its name, unknown -> ``"dim<i>"``), and the
    default-domain opset. Raises :class:`WasmaiError` for element types wasi-nn cannot carry."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(vi) -> TensorSpec:
        tt = vi.type.tensor_type
        dtype = ONNX_TO_TENSOR_TYPE.get(tt.elem_type)
        if dtype is None:
            raise WasmaiError(f"tensor {vi.name!r} has ONNX element type "
                              f"{onnx.TensorProto.DataType.Name(tt.elem_type)}, which wasi-nn cannot carry")
        shape: list[int | str] = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            else:
                shape.append(d.dim_param or f"dim{i}")
        return TensorSpec(vi.name, dtype, shape)

    ins = [spec(v) for v in model.graph.input if v.name not in inits]
    outs = [spec(v) for v in model.graph.output]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return ins, outs, opset


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


# --------------------------------------------------------------------------- sources


def _import_torch():
    try:
        import torch
    except ImportError:
        raise WasmaiError("the PyTorch source needs torch: pip install 'wasmai[torch]'") from None
    return torch


def _load_callable(spec: str) -> Callable[[], Any]:
    """``module.path:callable`` or ``path/to/file.py:callable`` -> the callable."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise WasmaiError(f"--torch {spec!r}: expected module:callable, file.py:callable or a TorchScript file")
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise WasmaiError(f"--torch: file not found: {path}")
        mod_name = f"_wasmai_user_{path.stem}_{abs(hash(str(path.resolve()))) & 0xFFFF:x}"
        try:
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - user code
            sys.modules.pop(mod_name, None)
            raise WasmaiError(f"--torch: cannot import {path}: {type(exc).__name__}: {_first_line(exc)}") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # noqa: BLE001 - user code
            raise WasmaiError(f"--torch: cannot import module {target!r}: {type(exc).__name__}: {_first_line(exc)}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise WasmaiError(f"--torch: no callable {attr!r} in {target} (callables there: {', '.join(public[:12]) or 'none'})")
    return fn


def _torch_module(opts: ConvertOptions):
    """Build the nn.Module (or ScriptModule) for ``opts.torch`` (+ ``opts.weights``), in eval mode."""
    torch = _import_torch()
    spec = opts.torch
    path = Path(spec)
    if ":" not in spec or (path.is_file() and path.suffix in (".pt", ".pth", ".ts", ".torchscript")):
        if not path.is_file():
            raise WasmaiError(f"--torch {spec!r}: not a file; expected module:callable, file.py:callable or a TorchScript file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise WasmaiError(f"--torch: {path} is not a TorchScript file: {_first_line(exc)}") from None
    else:
        fn = _load_callable(spec)
        try:
            model = fn()
        except Exception as exc:  # noqa: BLE001 - user code
            raise WasmaiError(f"--torch: {spec}() failed: {type(exc).__name__}: {_first_line(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            raise WasmaiError(f"--torch: {spec}() returned {type(model).__name__}, not a torch.nn.Module")
    if opts.weights is not None:
        try:
            state = torch.load(str(opts.weights), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise WasmaiError(f"--weights: file not found: {opts.weights}") from None
        except Exception as exc:  # noqa: BLE001
            raise WasmaiError(f"--weights: cannot read {opts.weights}: {_first_line(exc)}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WasmaiError(f"--weights: {opts.weights} does not hold a state dict")
        try:
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001
            raise WasmaiError(f"--weights: state dict does not fit the model: {_first_line(exc)}") from None
    return model.eval()


def _hf_module(folder: Path):
    """A local Hugging Face folder (config.json + weights) -> (wrapper nn.Module, input names,
    output names). The wrapper takes input_ids, attention_mask[, token_type_ids] positionally
    and returns last_hidden_state (and pooler_output when the model has a pooler)."""
    torch = _import_torch()
    try:
        import transformers
    except ImportError:
        raise WasmaiError("the Hugging Face source needs transformers: pip install 'wasmai[hf]'") from None
    if not (folder / "config.json").is_file():
        raise WasmaiError(f"--hf {folder}: no config.json (expected a local Hugging Face model folder)")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    major_minor = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    dtype_kw = "dtype" if major_minor >= (4, 56) else "torch_dtype"  # renamed in transformers 4.56
    try:
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True,
                                                       attn_implementation="eager", **{dtype_kw: torch.float32})
    except Exception as exc:  # noqa: BLE001
        raise WasmaiError(f"--hf {folder}: cannot load the model: {_first_line(exc)}") from None
    model.eval()
    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in params else [])
    has_pooler = getattr(model, "pooler", None) is not None

    class _Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(**dict(zip(names, args)), return_dict=True)
            if has_pooler and out.get("pooler_output") is not None:
                return out["last_hidden_state"], out["pooler_output"]
            return out["last_hidden_state"]

    outputs = ["last_hidden_state"] + (["pooler_output"] if has_pooler else [])
    vocab = int(getattr(model.config, "vocab_size", 1000) or 1000)
    return _Wrapper(model).eval(), names, outputs, vocab


def _flatten_outputs(out) -> list:
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten_outputs(o)]
    return [out]


def _np_dtype(tensor_type: str) -> np.dtype:
    return np.dtype(TENSOR_TYPES[tensor_type][0])


def _example_array(spec: InputSpec, rng: np.random.Generator, vocab: int = 10) -> np.ndarray:
    dt = _np_dtype(spec.dtype)
    if spec.name == "attention_mask":
        return np.ones(spec.shape, dtype=dt)
    if spec.name == "token_type_ids":
        return np.zeros(spec.shape, dtype=dt)
    if np.issubdtype(dt, np.floating):
        return rng.standard_normal(spec.shape).astype(dt)
    return rng.integers(0, max(1, vocab), size=spec.shape).astype(dt)


def _export_torch(model, specs: list[InputSpec], dynamic: dict[str, list[int]], output_names: list[str],
                  opset: int, exporter: str, dest: Path, rng: np.random.Generator, vocab: int = 10,
                  axis_names: dict[int, str] | None = None, single_name: str = "output",
                  output_axes: list[dict[int, str]] | None = None):
    """Run ``model`` on example inputs, then export it with ``torch.onnx.export``.

    Exporter: the TorchScript-based exporter (``dynamo=False``) by default. It needs nothing
    beyond torch (the dynamo exporter needs the separate ``onnxscript`` package, which is not a
    torch dependency and is absent from offline installs), honours ``opset_version`` and
    ``dynamic_axes`` exactly, and is still shipped (deprecated) in torch 2.13. ``exporter="dynamo"``
    uses ``torch.export``-based export when onnxscript is installed.

    Returns (reference callable: list of feed dicts -> list of output lists, output names).
    Raises :class:`WasmaiError` if the model rejects the example shapes or an op cannot be exported.
    """
    torch = _import_torch()
    examples = [torch.from_numpy(_example_array(s, rng, vocab)) for s in specs]
    shapes = ", ".join(f"{s.name}={'x'.join(map(str, s.shape))}:{s.dtype}" for s in specs)
    try:
        with torch.no_grad():
            outs = _flatten_outputs(model(*examples))
    except Exception as exc:  # noqa: BLE001 - the model's own shape checks
        raise WasmaiError(f"the model rejects example inputs {shapes}: {type(exc).__name__}: {_first_line(exc)}") from None
    if not all(isinstance(o, torch.Tensor) for o in outs):
        raise WasmaiError("the model must return a tensor or a tuple/list/dict of tensors")
    n_out = len(outs)
    if output_names and len(output_names) != n_out:
        raise WasmaiError(f"--output-name gives {len(output_names)} names but the model has {n_out} outputs")
    if not output_names:
        output_names = [single_name] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    unknown = set(dynamic) - {s.name for s in specs}
    if unknown:
        raise WasmaiError(f"--dynamic names unknown inputs: {', '.join(sorted(unknown))}")
    axis_names = axis_names or {0: "batch"}
    dyn_axes: dict[str, dict[int, str]] = {}
    for s in specs:
        axes = dynamic.get(s.name, [])
        bad = [a for a in axes if a >= len(s.shape)]
        if bad:
            raise WasmaiError(f"--dynamic {s.name}={bad[0]}: input has only {len(s.shape)} axes")
        if axes:
            dyn_axes[s.name] = {a: axis_names.get(a, f"{s.name}_dim{a}") for a in axes}
    batch_dynamic = any(0 in ax for ax in dyn_axes.values())
    if batch_dynamic:
        for name, o in zip(output_names, outs):
            if o.dim() > 0:
                dyn_axes[name] = {0: axis_names.get(0, "batch")}
    for name, axes in zip(output_names, output_axes or []):
        dyn_axes[name] = dict(axes)
    if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        raise WasmaiError("--exporter dynamo needs onnxscript (pip install onnxscript); the default torchscript exporter does not")
    kwargs: dict[str, Any] = dict(input_names=[s.name for s in specs], output_names=output_names,
                                  opset_version=opset, do_constant_folding=True,
                                  dynamic_axes=dyn_axes or None, dynamo=(exporter == "dynamo"))
    try:
        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(examples), str(dest), **kwargs)
    except Exception as exc:  # noqa: BLE001 - torch.onnx raises many types
        dest.unlink(missing_ok=True)
        raise WasmaiError(f"torch.onnx export failed ({exporter} exporter, opset {opset}): {_first_line(exc)}") from None

    def reference(feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        results = []
        with torch.no_grad():
            for feed in feeds:
                args = [torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in specs]
                try:
                    out = _flatten_outputs(model(*args))
                except Exception as exc:  # noqa: BLE001
                    raise WasmaiError(f"the PyTorch model rejects a validation sample: {_first_line(exc)}") from None
                results.append([o.detach().float().numpy() if o.dtype == torch.bfloat16 else o.detach().numpy()
                                for o in out])
        return results

    return reference, output_names


@contextlib.contextmanager
def _quiet_stderr():
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


def check_onnx(src: Path, dest: Path) -> None:
    """``onnx.checker.check_model(full_check=True)`` on ``src`` and strict-typed ONNX shape
    inference written to ``dest``. Raises :class:`WasmaiError` for a missing, corrupted or
    invalid file."""
    import onnx

    if not src.is_file():
        raise WasmaiError(f"ONNX file not found: {src}")
    try:
        onnx.checker.check_model(str(src), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(src), str(dest), check_type=True)
    except Exception as exc:  # noqa: BLE001 - protobuf/checker/inference errors
        raise WasmaiError(f"invalid ONNX model {src}: {_first_line(exc)}") from None


# --------------------------------------------------------------------------- samples


def _read_labels(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WasmaiError(f"--labels: cannot read {path}: {exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    labels = [line.strip() for line in lines]
    if not labels:
        raise WasmaiError(f"--labels: {path} is empty")
    return labels


def _load_npz(path: Path, inputs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """NPZ with one array per input name. An array of the input's rank is split along axis 0
    into batch-1 samples; one of rank+1 holds one full input per entry of axis 0."""
    input_names = [i.name for i in inputs]
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise WasmaiError(f"NPZ file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - zip/npy format errors
        raise WasmaiError(f"cannot read NPZ {path}: {_first_line(exc)}") from None
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise WasmaiError(f"NPZ {path} lacks arrays for inputs {', '.join(missing)} (has {', '.join(arrays) or 'none'})")
    per_input = {}
    for spec in inputs:
        arr = arrays[spec.name]
        if arr.ndim == len(spec.shape) + 1:
            per_input[spec.name] = [arr[i] for i in range(arr.shape[0])]
        elif arr.ndim == len(spec.shape):
            per_input[spec.name] = [arr[i:i + 1] for i in range(arr.shape[0])]
        else:
            raise WasmaiError(f"NPZ {path}: array {spec.name!r} has rank {arr.ndim}, the input has rank "
                              f"{len(spec.shape)} (give rank {len(spec.shape)} or {len(spec.shape) + 1})")
    counts = {n: len(v) for n, v in per_input.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise WasmaiError(f"NPZ {path}: inputs need the same non-zero number of samples along axis 0 ({counts})")
    return [{n: per_input[n][i] for n in input_names} for i in range(next(iter(counts.values())))]


def _image_samples(folder: Path, pre: Preprocess, input_name: str) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    from wasmai.preprocess import list_images, preprocess_image

    files = list_images(folder)
    return [{input_name: preprocess_image(f, pre)} for f in files], [f.name for f in files]


def _samples_from(path: Path, task: str, pre: Preprocess | None, inputs: list[TensorSpec],
                  what: str) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    """Samples from a folder of images (image tasks) or an NPZ file."""
    if path.is_dir():
        if task != "image-classification" or pre is None:
            raise WasmaiError(f"--{what} {path}: a folder of images needs --task image-classification (use an NPZ for tensors)")
        if len(inputs) != 1:
            raise WasmaiError(f"--{what}: image folders need a model with one input, this one has {len(inputs)}")
        return _image_samples(path, pre, inputs[0].name)
    if path.is_file():
        feeds = _load_npz(path, inputs)
        return feeds, [f"{path.name}[{i}]" for i in range(len(feeds))]
    raise WasmaiError(f"--{what}: not found: {path}")


def _random_samples(inputs: list[TensorSpec], given: dict[str, InputSpec], rng: np.random.Generator,
                    vocab: int, n: int = RANDOM_SAMPLES) -> list[dict[str, np.ndarray]]:
    feeds = []
    for _ in range(n):
        feed = {}
        for spec in inputs:
            if spec.name in given:
                shape = given[spec.name].shape
            else:
                shape = [d if isinstance(d, int) else (8 if i == 1 and spec.dtype == "i64" else 1)
                         for i, d in enumerate(spec.shape)]
            feed[spec.name] = _example_array(InputSpec(spec.name, shape, spec.dtype), rng, vocab)
        feeds.append(feed)
    return feeds


def _check_feeds(feeds: list[dict[str, np.ndarray]], inputs: list[TensorSpec], what: str) -> list[dict[str, np.ndarray]]:
    """Cast each sample to the model's input dtypes and check ranks and fixed dims."""
    out = []
    for k, feed in enumerate(feeds):
        fixed = {}
        for spec in inputs:
            arr = feed[spec.name]
            want = spec.shape
            if arr.ndim != len(want) or any(isinstance(d, int) and d != a for d, a in zip(want, arr.shape)):
                raise WasmaiError(f"{what} sample {k}: input {spec.name!r} has shape {list(arr.shape)}, "
                                  f"the model needs {want}")
            fixed[spec.name] = np.ascontiguousarray(arr.astype(_np_dtype(spec.dtype), copy=False))
        out.append(fixed)
    return out


# --------------------------------------------------------------------------- steps 2-4


def _optimize(src: Path, dest: Path, level: str) -> None:
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.optimized_model_filepath = str(dest)
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise WasmaiError(f"ONNX Runtime cannot load the model for optimization: {_first_line(exc)}") from None


def _count_ops(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _quantize(src: Path, dest: Path, opts: ConvertOptions, calib: list[dict[str, np.ndarray]],
              work: Path, warn: list[str]) -> dict[str, Any]:
    """Run the requested quantization; returns the manifest's [quantization] table.

    int8 modes use ``reduce_range=True`` (7-bit weights): ONNX Runtime's x86 int8 kernels on CPUs
    without VNNI multiply u8 x s8 pairs into int16 with saturation (ORT quantization docs,
    "reduce_range"); the component may run on any such host. Measured on this machine (AMD EPYC,
    no VNNI): EfficientNet-Lite0 static int8 max logit error 3.1 -> 1.6, a 3-layer MLP dynamic
    int8 relative error 0.16 -> 0.017.
    onnxruntime's calibrators print progress to stdout; it is captured so ``--json`` stays clean."""
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return _quantize_inner(src, dest, opts, calib, work, warn)


def _quantize_inner(src: Path, dest: Path, opts: ConvertOptions, calib: list[dict[str, np.ndarray]],
                    work: Path, warn: list[str]) -> dict[str, Any]:
    mode = opts.quantize
    if mode == "fp16":
        import onnx
        from onnxconverter_common.float16 import convert_float_to_float16

        model = onnx.load(str(src))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            half = convert_float_to_float16(model, keep_io_types=opts.keep_io_types)
        onnx.save(half, str(dest))
        return {"mode": "fp16", "tool": "onnxconverter_common.float16.convert_float_to_float16",
                "keep_io_types": opts.keep_io_types}
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    if mode == "dynamic":
        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8, op_types_to_quantize=DYNAMIC_OP_TYPES,
                             per_channel=True, reduce_range=True)
        ops = _count_ops(dest)
        n = ops.get("MatMulInteger", 0) + ops.get("DynamicQuantizeLinear", 0) + ops.get("DequantizeLinear", 0)
        if n == 0:
            warn.append("dynamic quantization found nothing to quantize (it handles MatMul/Gather/Attention/LSTM, "
                        "not Conv or Gemm); use --quantize static")
        return {"mode": "dynamic", "tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8",
                "per_channel": True, "reduce_range": True,
                "op_types": DYNAMIC_OP_TYPES, "quantized_ops": {k: v for k, v in ops.items()
                                                               if k in ("MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear")}}
    # static, QDQ
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "quant_pre.onnx"
    try:
        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(pre))
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference is best effort
        warn.append(f"quantization pre-processing skipped: {_first_line(exc)}")
        shutil.copyfile(src, pre)

    class _Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[opts.calibration_method]
    try:
        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")
            quantize_static(str(pre), str(dest), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, reduce_range=True)
    except WasmaiError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise WasmaiError(f"static quantization failed: {type(exc).__name__}: {_first_line(exc)}") from None
    return {"mode": "static", "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "per_channel": True, "reduce_range": True, "activation_type": "int8", "weight_type": "int8",
            "calibration_method": opts.calibration_method, "calibration_samples": len(calib)}


def _run(path: Path, feeds: list[dict[str, np.ndarray]], threads: int = 1) -> list[list[np.ndarray]]:
    sess = _session(path, threads)
    metas = sess.get_inputs()
    results = []
    for feed in feeds:
        run_feed = {}
        for m in metas:
            want = _np_dtype(_ort_type_to_tensor_type(m.type))
            run_feed[m.name] = feed[m.name].astype(want, copy=False)
        try:
            results.append(sess.run(None, run_feed))
        except Exception as exc:  # noqa: BLE001
            raise WasmaiError(f"ONNX Runtime failed on a sample: {_first_line(exc)}") from None
    return results


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _topk(scores: np.ndarray, labels: list[str], k: int = 5) -> list[dict[str, Any]]:
    idx = np.argsort(-scores)[:k]
    return [{"index": int(i), "label": labels[i] if i < len(labels) else str(int(i)), "score": round(float(scores[i]), 6)}
            for i in idx]


def _validate(ref: list[list[np.ndarray]], cand: list[list[np.ndarray]], out_names: list[str],
              atol: float | None, rtol: float | None, min_top1: float | None, classifier: bool,
              softmax: bool, labels: list[str], sample_names: list[str], source: str) -> dict[str, Any]:
    """Compare candidate outputs with reference outputs.

    Per output (all samples together): ``max_abs_diff = max |c - r|``; ``max_rel_diff =
    max |c - r| / max |r|`` (difference relative to the output's magnitude, stable where r ~ 0);
    ``mismatch_fraction``: share of elements with ``|c - r| > atol + rtol * |r|`` (numpy
    ``allclose`` rule). Classifiers: top-1 agreement over samples on the first output's last axis.
    """
    per_output = []
    failures = []
    for j, name in enumerate(out_names):
        r = np.concatenate([np.asarray(s[j], dtype=np.float64).ravel() for s in ref])
        c = np.concatenate([np.asarray(s[j], dtype=np.float64).ravel() for s in cand])
        if r.shape != c.shape:
            raise ValidationError(f"output {name!r}: result has {c.size} values, reference {r.size}")
        diff = np.abs(c - r)
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        entry = {"name": name, "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                 "max_rel_diff": float(diff.max() / scale) if scale > 0 and diff.size else 0.0,
                 "ref_max_abs": scale, "finite": bool(np.all(np.isfinite(c)))}
        if not entry["finite"]:
            failures.append(f"output {name!r} has non-finite values")
        if atol is not None or rtol is not None:
            bound = (atol or 0.0) + (rtol or 0.0) * np.abs(r)
            bad = diff > bound
            entry["mismatch_fraction"] = float(bad.mean()) if bad.size else 0.0
            if bad.any():
                failures.append(f"output {name!r}: max abs diff {entry['max_abs_diff']:.3g} "
                                f"({entry['mismatch_fraction']:.1%} of values beyond atol={atol or 0:g} rtol={rtol or 0:g})")
        per_output.append(entry)
    result: dict[str, Any] = {"source": source, "samples_count": len(ref), "atol": atol, "rtol": rtol,
                              "min_top1_agreement": min_top1, "outputs": per_output}
    if classifier:
        agree = 0
        samples = []
        for k, (rs, cs) in enumerate(zip(ref, cand)):
            r_scores = np.asarray(rs[0], dtype=np.float64).reshape(-1, np.asarray(rs[0]).shape[-1])
            c_scores = np.asarray(cs[0], dtype=np.float64).reshape(-1, np.asarray(cs[0]).shape[-1])
            for b in range(r_scores.shape[0]):
                rp = _softmax(r_scores[b]) if softmax else r_scores[b]
                cp = _softmax(c_scores[b]) if softmax else c_scores[b]
                same = int(np.argmax(rp)) == int(np.argmax(cp))
                agree += same
                two = np.sort(rp)[-2:] if rp.size > 1 else np.array([0.0, float(rp.max())])
                samples.append({"sample": sample_names[k] if k < len(sample_names) else str(k),
                                "top1_agrees": same, "reference_margin": round(float(two[1] - two[0]), 6), "reference_top5": _topk(rp, labels), "result_top5": _topk(cp, labels)})
        total = max(1, len(samples))
        result["top1_agreement"] = agree / total
        result["samples"] = samples
        if min_top1 is not None and agree / total < min_top1:
            failures.append(f"top-1 agreement {agree}/{total} = {agree / total:.2f} < {min_top1:g}")
    result["passed"] = not failures
    result["failures"] = failures
    return result


def _latency_ms(path: Path, feed: dict[str, np.ndarray], runs: int) -> float:
    """Median wall time (ms) of ``runs`` single-threaded ORT runs after 2 warm-up runs."""
    sess = _session(path, threads=1)
    metas = sess.get_inputs()
    run_feed = {m.name: feed[m.name].astype(_np_dtype(_ort_type_to_tensor_type(m.type)), copy=False) for m in metas}
    for _ in range(2):
        sess.run(None, run_feed)
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        sess.run(None, run_feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(times), 3)


def wasi_nn_compat(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], opset: int | None) -> dict[str, Any]:
    """The "wasi-nn compatibility" report for a final model: tensor types and which hosts accept
    them (:data:`HOST_TENSOR_TYPES`), dynamic axes, whether the file fits
    :data:`EMBED_LIMIT_BYTES`, non-standard op domains, and the opset against the installed
    onnxruntime (probed by :func:`ort_max_opset`)."""
    import onnx

    ort = _ort()
    size = path.stat().st_size
    types = sorted({s.dtype for s in [*inputs, *outputs]})
    hosts = {}
    for host, accepted in HOST_TENSOR_TYPES.items():
        rejected = [t for t in types if t not in accepted]
        hosts[host] = {"accepts": not rejected, "tensor_types": list(accepted),
                       **({"rejects": rejected} if rejected else {})}
    max_opset = ort_max_opset()
    domains = _op_domains(path)
    return {
        "inputs": [{"name": s.name, "dtype": s.dtype, "shape": s.shape} for s in inputs],
        "outputs": [{"name": s.name, "dtype": s.dtype, "shape": s.shape} for s in outputs],
        "hosts": hosts,
        "dynamic_axes": {s.name: s.dynamic_axes for s in [*inputs, *outputs] if s.dynamic_axes},
        "embed": {"size_bytes": size, "limit_bytes": EMBED_LIMIT_BYTES, "fits": size <= EMBED_LIMIT_BYTES},
        "custom_op_domains": domains,
        "opset": {"model": opset, "onnxruntime_version": ort.__version__, "onnxruntime_max_opset": max_opset,
                  "onnx_version": onnx.__version__, "supported": opset is not None and opset <= max_opset},
    }


# --------------------------------------------------------------------------- main entry


def _check_options(opts: ConvertOptions) -> None:
    sources = [s for s in (opts.torch, opts.onnx, opts.hf) if s]
    if len(sources) != 1:
        raise WasmaiError("give exactly one source: --torch, --onnx or --hf")
    if opts.output.suffix != ".onnx":
        raise WasmaiError(f"-o {opts.output}: the output must end in .onnx")
    if opts.task not in TASKS:
        raise WasmaiError(f"--task {opts.task!r}: expected one of {', '.join(TASKS)}")
    if opts.quantize not in QUANTIZE_MODES:
        raise WasmaiError(f"--quantize {opts.quantize!r}: expected one of {', '.join(QUANTIZE_MODES)}")
    if opts.optimize not in OPTIMIZE_LEVELS:
        raise WasmaiError(f"--optimize {opts.optimize!r}: expected one of {', '.join(OPTIMIZE_LEVELS)}")
    if opts.calibration_method not in CALIBRATION_METHODS:
        raise WasmaiError(f"--calibration-method {opts.calibration_method!r}: expected one of {', '.join(CALIBRATION_METHODS)}")
    if opts.exporter not in EXPORTERS:
        raise WasmaiError(f"--exporter {opts.exporter!r}: expected one of {', '.join(EXPORTERS)}")
    if opts.quantize != "none" and opts.optimize in ("extended", "all"):
        raise WasmaiError(f"--optimize {opts.optimize} writes ONNX Runtime-specific fused ops that cannot be "
                          "quantized; use --optimize basic or none with --quantize")
    if opts.quantize == "static" and opts.calibration is None:
        raise WasmaiError("--quantize static needs --calibration DIR|NPZ")
    if opts.calibration is not None and opts.quantize != "static":
        raise WasmaiError("--calibration is only used with --quantize static")
    if opts.weights is not None and not opts.torch:
        raise WasmaiError("--weights goes with --torch")
    if opts.torch and not opts.inputs:
        raise WasmaiError("--torch needs example input shapes: --input NAME=1x3x224x224[:dtype]")
    if opts.opset < 7:
        raise WasmaiError("--opset must be at least 7")
    for tol in (opts.atol, opts.rtol):
        if tol is not None and tol < 0:
            raise WasmaiError("--atol/--rtol must be non-negative")
    if opts.min_top1_agreement is not None and not 0 <= opts.min_top1_agreement <= 1:
        raise WasmaiError("--min-top1-agreement must be between 0 and 1")
    for path, flag in ((opts.calibration, "--calibration"), (opts.validation, "--validation"),
                       (opts.labels, "--labels"), (opts.weights, "--weights"), (opts.hf, "--hf")):
        if path is not None and not Path(path).exists():
            raise WasmaiError(f"{flag}: not found: {path}")


def _default_preprocess(opts: ConvertOptions, inputs: list[TensorSpec]) -> Preprocess:
    if opts.preprocess is not None:
        return opts.preprocess
    shape = inputs[0].shape if inputs else []
    if len(shape) == 4:
        hw = shape[2:4] if shape[1] == 3 else shape[1:3]
        if all(isinstance(d, int) for d in hw):
            layout = "NCHW" if shape[1] == 3 else "NHWC"
            return Preprocess(crop=(hw[0], hw[1]), layout=layout)
    raise WasmaiError("--task image-classification needs --crop (the model input has no fixed HxW)")


def convert(opts: ConvertOptions, progress: ProgressFn | None = None) -> ConvertResult:
    """Convert a model to ONNX + manifest; see the module docstring for the steps.

    Writes ``opts.output`` (.onnx) and ``manifest_for(opts.output)`` (.toml) only when every
    step, validation included, succeeded (or validation failed with ``fail_on_mismatch=False``).
    Raises :class:`WasmaiError` for bad input (unknown callable, wrong shapes, export failure,
    corrupted ONNX, empty calibration folder, unreadable image, ...) and
    :class:`ValidationError` when the result disagrees with the reference beyond tolerance.
    """
    t_start = time.perf_counter()
    _check_options(opts)
    torch = _import_torch() if (opts.torch or opts.hf) else None
    threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        # PyTorch reference and export run single-threaded: on a loaded machine OpenMP's
        # spin-waiting threads made EfficientNet-Lite0 ~30x slower (3.4 s vs 0.11 s per image).
        torch.set_num_threads(1)
    try:
        # Library and user code (model builders, exporters, calibrators) print to stdout; the
        # CLI's stdout carries only the result (--json), so their chatter goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            return _convert(opts, progress, t_start)
    finally:
        if torch is not None and threads is not None:
            torch.set_num_threads(threads)


def _convert(opts: ConvertOptions, progress: ProgressFn | None, t_start: float) -> ConvertResult:
    """The body of :func:`convert` (options already checked)."""
    labels = _read_labels(opts.labels) if opts.labels else []
    for folder in (opts.calibration, opts.validation):
        if folder is not None and folder.is_dir() and opts.task == "image-classification":
            from wasmai.preprocess import list_images, load_image

            for image in list_images(folder):  # fail before the export on an empty folder or a bad image
                load_image(image)
    steps = _Steps(progress)
    warn: list[str] = []
    rng = np.random.default_rng(0)
    given = {s.name: s for s in opts.inputs}

    with tempfile.TemporaryDirectory(prefix="wasmai-convert-") as tmp:
        work = Path(tmp)
        base = work / "model.onnx"
        reference = None
        vocab = 10
        source: dict[str, Any]
        # 1. load / export
        with steps.step("load") as st:
            if opts.onnx:
                source = {"kind": "onnx", "path": str(opts.onnx), "sha256": sha256_file(opts.onnx) if opts.onnx.is_file() else None}
                check_onnx(Path(opts.onnx), base)
                st["detail"] = f"checked {opts.onnx.name}"
            else:
                raw = work / "export.onnx"
                if opts.torch:
                    torch = _import_torch()
                    model = _torch_module(opts)
                    specs = opts.inputs
                    axis_names = {0: "batch"}
                    hf_axes = None

                    source = {"kind": "torch", "spec": opts.torch, "torch_version": torch.__version__}
                    if opts.weights:
                        source["weights"] = str(opts.weights)
                        source["weights_sha256"] = sha256_file(opts.weights)
                else:
                    torch = _import_torch()
                    model, names, hf_outs, vocab = _hf_module(Path(opts.hf))
                    specs = [given.get(n, InputSpec(n, [1, 8], "i64")) for n in names]
                    for s in specs:
                        if s.dtype != "i64":
                            raise WasmaiError(f"--input {s.name}: Hugging Face inputs are i64")
                    hf_axes = None
                    if not opts.dynamic:
                        # batch and sequence stay dynamic in and out (last_hidden_state: (batch, sequence, hidden))
                        opts = dataclasses.replace(opts, dynamic={n: [0, 1] for n in names})
                        hf_axes = [{0: "batch", 1: "sequence"}] + [{0: "batch"}] * (len(hf_outs) - 1)
                    if not opts.output_names:
                        opts = dataclasses.replace(opts, output_names=hf_outs)
                    axis_names = {0: "batch", 1: "sequence"}
                    source = {"kind": "huggingface", "path": str(opts.hf), "torch_version": torch.__version__}
                reference, out_names = _export_torch(model, specs, opts.dynamic, list(opts.output_names), opts.opset,
                                                     opts.exporter, raw, rng, vocab, axis_names,
                                                     "logits" if opts.task == "image-classification" else "output",
                                                     hf_axes)
                source.update(exporter=opts.exporter, opset=opts.opset)
                check_onnx(raw, base)
                st["detail"] = f"exported with torch.onnx ({opts.exporter}, opset {opts.opset})"
        inputs, outputs, opset = graph_io(base)
        if not inputs:
            raise WasmaiError("the model has no inputs")
        if reference is not None:
            dropped = [s.name for s in specs if s.name not in {i.name for i in inputs}]
            if dropped:
                raise WasmaiError(f"the model does not use input(s) {', '.join(dropped)}, so the exporter dropped "
                                  "them; leave them out of --input")

        pre = _default_preprocess(opts, inputs) if opts.task == "image-classification" else None
        softmax = opts.softmax if opts.softmax is not None else opts.task == "image-classification"
        if opts.task == "image-classification":
            last = outputs[0].shape[-1] if outputs[0].shape else None
            if labels and isinstance(last, int) and last != len(labels):
                raise WasmaiError(f"--labels has {len(labels)} lines but output {outputs[0].name!r} has {last} classes")
            if len(inputs) != 1:
                raise WasmaiError(f"--task image-classification needs a model with one input, this one has {len(inputs)}")
            if pre is not None:
                shape = inputs[0].shape
                hw = shape[2:4] if pre.layout == "NCHW" else shape[1:3]
                if len(shape) != 4 or any(isinstance(d, int) and d != c for d, c in zip(hw, pre.crop)):
                    raise WasmaiError(f"--crop {pre.crop[0]}x{pre.crop[1]} ({pre.layout}) does not fit input "
                                      f"{inputs[0].name!r} of shape {shape}")

        # samples: calibration, validation
        calib: list[dict[str, np.ndarray]] = []
        calib_names: list[str] = []
        if opts.calibration is not None:
            calib, calib_names = _samples_from(opts.calibration, opts.task, pre, inputs, "calibration")
            calib = _check_feeds(calib, inputs, "calibration")
        if opts.validation is not None:
            val, val_names = _samples_from(opts.validation, opts.task, pre, inputs, "validation")
            val = _check_feeds(val, inputs, "validation")
            val_source = str(opts.validation)
        elif calib:
            val, val_names, val_source = calib, calib_names, f"calibration samples ({opts.calibration})"
        else:
            val = _check_feeds(_random_samples(inputs, given, rng, vocab), inputs, "random")
            val_names = [f"random[{i}]" for i in range(len(val))]
            val_source = f"{len(val)} random inputs (seed 0)"

        # 2. optimize
        current = base
        if opts.optimize == "none":
            steps.skip("optimize", "--optimize none")
        else:
            with steps.step("optimize") as st:
                opt = work / "optimized.onnx"
                _optimize(current, opt, opts.optimize)
                current = opt
                st["detail"] = f"onnxruntime {opts.optimize}"
                if opts.optimize in ("extended", "all"):
                    warn.append(f"--optimize {opts.optimize} may insert ONNX Runtime contrib ops and hardware-specific "
                                "layouts; the model then runs only on ONNX Runtime hosts on similar CPUs")

        # 3. quantize
        quant: dict[str, Any] = {"mode": "none"}
        if opts.quantize == "none":
            steps.skip("quantize", "--quantize none")
        else:
            with steps.step("quantize") as st:
                qpath = work / "quantized.onnx"
                quant = _quantize(current, qpath, opts, calib, work, warn)
                if opts.calibration is not None:
                    quant["calibration_source"] = str(opts.calibration)
                current = qpath
                st["detail"] = ", ".join(f"{k}={v}" for k, v in quant.items() if k in ("mode", "format", "calibration_method", "calibration_samples"))
            try:
                import onnx

                onnx.checker.check_model(str(current), full_check=True)
            except Exception as exc:  # noqa: BLE001
                raise WasmaiError(f"the quantized model fails the ONNX checker: {_first_line(exc)}") from None

        final_inputs, final_outputs, final_opset = graph_io(current)

        # 4. validate
        atol_d, rtol_d, top1_d = DEFAULT_TOLERANCES[opts.quantize]
        explicit_tol = opts.atol is not None or opts.rtol is not None
        atol = opts.atol if explicit_tol else atol_d
        rtol = opts.rtol if explicit_tol else rtol_d
        classifier = opts.task == "image-classification"
        min_top1 = opts.min_top1_agreement if opts.min_top1_agreement is not None else (top1_d if classifier else None)
        with steps.step("validate") as st:
            if reference is not None:
                ref_out = reference(val)
                ref_kind = f"PyTorch model ({source['kind']})"
            else:
                ref_out = _run(base, val)
                ref_kind = "unoptimized, unquantized ONNX model (onnxruntime)"
            cand_out = _run(current, val)
            out_names = [o.name for o in final_outputs]
            if any(len(r) != len(out_names) for r in ref_out):
                raise WasmaiError("the reference and the ONNX model have different numbers of outputs")
            validation = _validate(ref_out, cand_out, out_names, atol, rtol, min_top1, classifier, softmax,
                                   labels, val_names, val_source)
            validation["reference"] = ref_kind
            summary = [f"{o['name']}: max abs {o['max_abs_diff']:.3g}" for o in validation["outputs"]]
            if "top1_agreement" in validation:
                summary.append(f"top-1 agreement {validation['top1_agreement']:.2f}")
            st["detail"] = ("ok " if validation["passed"] else "FAILED ") + "; ".join(summary)
        if not validation["passed"]:
            msg = "validation failed: " + "; ".join(validation["failures"])
            if opts.fail_on_mismatch:
                raise ValidationError(msg + " - nothing written (--no-fail-on-mismatch writes anyway)")
            warn.append(msg)

        # 5. report
        with steps.step("report") as st:
            size_before, size_after = base.stat().st_size, current.stat().st_size
            lat_before = _latency_ms(base, val[0], opts.latency_runs)
            lat_after = _latency_ms(current, val[0], opts.latency_runs) if current != base else lat_before
            report = {
                "size": {"before_bytes": size_before, "after_bytes": size_after,
                         "ratio": round(size_after / size_before, 4) if size_before else None},
                "latency": {"before_ms": lat_before, "after_ms": lat_after,
                            "speedup": round(lat_before / lat_after, 3) if lat_after else None,
                            "statistic": "median", "runs": opts.latency_runs, "threads": 1,
                            "engine": "onnxruntime CPUExecutionProvider",
                            "note": "before = model as exported/loaded, after = written model; this machine"},
                "wasi_nn": wasi_nn_compat(current, final_inputs, final_outputs, final_opset),
            }
            for host, info in report["wasi_nn"]["hosts"].items():
                if not info["accepts"]:
                    warn.append(f"host {host} rejects tensor types {', '.join(info['rejects'])}")
            if not report["wasi_nn"]["embed"]["fits"]:
                warn.append(f"model is {size_after} bytes, over the {EMBED_LIMIT_BYTES} byte embed limit: "
                            "load it from a file at run time")
            st["detail"] = (f"{size_before / 1e6:.2f} MB -> {size_after / 1e6:.2f} MB, "
                            f"{lat_before:.2f} ms -> {lat_after:.2f} ms")

        # 6. write
        out = Path(opts.output)
        man_path = manifest_for(out)
        name = opts.name or out.stem
        validation_table = {k: v for k, v in validation.items() if k != "samples"}
        if "samples" in validation:
            validation_table["top1"] = [{"sample": s["sample"], "reference": s["reference_top5"][0]["label"],
                                         "result": s["result_top5"][0]["label"]} for s in validation["samples"]]
        from wasmai import __version__

        provenance = {**{k: v for k, v in source.items() if v is not None},
                      "wasmai_version": __version__, "onnxruntime_version": _ort().__version__,
                      "optimize": opts.optimize,
                      "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        with steps.step("write") as st:
            from wasmai._atomic import atomic_path

            with atomic_path(out) as tmp_onnx, atomic_path(man_path) as tmp_toml:
                shutil.copyfile(current, tmp_onnx)
                manifest = Manifest(
                    name=name, version=opts.version, task=opts.task, onnx=out.name, sha256=sha256_file(tmp_onnx),
                    inputs=final_inputs, outputs=final_outputs, opset=final_opset, preprocess=pre,
                    softmax=softmax, labels=labels, provenance=provenance, quantization=quant,
                    validation=validation_table, report=report)
                tmp_toml.write_text(manifest.dumps(), encoding="utf-8")
            st["detail"] = f"{out} + {man_path.name}"

    return ConvertResult(onnx=out, manifest=man_path, name=name, task=opts.task, source=source,
                         inputs=final_inputs, outputs=final_outputs, steps=steps.done, quantization=quant,
                         validation=validation, report=report, warnings=warn,
                         seconds=round(time.perf_counter() - t_start, 3))
