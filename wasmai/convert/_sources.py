"""Model sources for :mod:`wasmai.convert`: PyTorch callables/TorchScript, local Hugging Face folders, ONNX files."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from wasmai.convert._base import (
    Feed,
    InputSpec,
    ReferenceFn,
    _example_array,
    _quiet_stderr,
)
from wasmai.errors import WasmaiError, first_line


def _import_torch(extra: str = "torch") -> ModuleType:
    """The ``torch`` module. Raises :class:`WasmaiError` naming the extra to install when it is
    missing (``torch`` for --torch, ``hf`` for --hf)."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        source = "Hugging Face" if extra == "hf" else "PyTorch"
        raise WasmaiError(f"the {source} source needs torch: pip install 'wasmai[{extra}]'") from None


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
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            # no import machinery for this file (e.g. not a .py suffix)
            raise WasmaiError(f"--torch: cannot import {path}: not a Python source file (expected file.py:callable)")
        try:
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - user code
            sys.modules.pop(mod_name, None)
            raise WasmaiError(f"--torch: cannot import {path}: {type(exc).__name__}: {first_line(exc)}") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # noqa: BLE001 - user code
            raise WasmaiError(f"--torch: cannot import module {target!r}: "
                              f"{type(exc).__name__}: {first_line(exc)}") from None
    fn: object = getattr(module, attr, None)
    if fn is None or not callable(fn):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise WasmaiError(f"--torch: no callable {attr!r} in {target} "
                          f"(callables there: {', '.join(public[:12]) or 'none'})")
    return fn


def _torch_module(spec: str, weights: Path | None) -> Any:
    """Build the nn.Module (or ScriptModule) for ``--torch spec`` (+ the ``--weights`` state
    dict), in eval mode. Returns the torch module (``Any``: torch is untyped). Raises
    :class:`WasmaiError` for a missing file, a failing callable, a non-Module result or weights
    that do not fit."""
    torch = _import_torch()
    path = Path(spec)
    model: Any
    if ":" not in spec or (path.is_file() and path.suffix in (".pt", ".pth", ".ts", ".torchscript")):
        if not path.is_file():
            raise WasmaiError(f"--torch {spec!r}: not a file; "
                              "expected module:callable, file.py:callable or a TorchScript file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise WasmaiError(f"--torch: {path} is not a TorchScript file: {first_line(exc)}") from None
    else:
        fn = _load_callable(spec)
        try:
            model = fn()
        except Exception as exc:  # noqa: BLE001 - user code
            raise WasmaiError(f"--torch: {spec}() failed: {type(exc).__name__}: {first_line(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            raise WasmaiError(f"--torch: {spec}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise WasmaiError(f"--weights: file not found: {weights}") from None
        except Exception as exc:  # noqa: BLE001
            raise WasmaiError(f"--weights: cannot read {weights}: {first_line(exc)}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WasmaiError(f"--weights: {weights} does not hold a state dict")
        try:
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001
            raise WasmaiError(f"--weights: state dict does not fit the model: {first_line(exc)}") from None
    return model.eval()


def _hf_module(folder: Path) -> tuple[Any, list[str], list[str], int]:
    """A local Hugging Face folder (config.json + weights) -> (wrapper nn.Module, input names,
    output names, vocabulary size). The wrapper takes input_ids, attention_mask[,
    token_type_ids] (i64, (batch, sequence)) positionally and returns last_hidden_state (fp32,
    (batch, sequence, hidden)) and pooler_output when the model has a pooler. Raises
    :class:`WasmaiError` when transformers is missing or the folder does not load."""
    torch = _import_torch("hf")
    try:
        # imported as a plain module: its objects are Any at this boundary, with or without stubs
        transformers = importlib.import_module("transformers")
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
        raise WasmaiError(f"--hf {folder}: cannot load the model: {first_line(exc)}") from None
    model.eval()
    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in params else [])
    has_pooler = getattr(model, "pooler", None) is not None
    outputs = ["last_hidden_state"] + (["pooler_output"] if has_pooler else [])
    vocab = int(getattr(model.config, "vocab_size", 1000) or 1000)
    return _hf_wrapper(model, names, has_pooler).eval(), names, outputs, vocab


def _hf_wrapper(inner: Any, names: list[str], has_pooler: bool) -> Any:
    """A ``torch.nn.Module`` whose ``forward(*args)`` calls the Hugging Face model ``inner``
    with ``args`` as the keyword inputs ``names`` (one tensor per name, in that order) and
    returns ``last_hidden_state`` (plus ``pooler_output`` when ``has_pooler`` and the model
    returns one). ``Any``: torch is untyped."""
    torch = _import_torch()
    module_base: Any = torch.nn.Module

    # torch.onnx.export needs an nn.Module subclass; torch comes in as a plain module (Any to
    # mypy, whether or not torch is installed where mypy runs), so the base class is Any.
    class _Wrapper(module_base):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            # one positional tensor per input name, always (the export and the reference
            # build them from the same names)
            out = self.inner(**dict(zip(names, args, strict=True)), return_dict=True)
            if has_pooler and out.get("pooler_output") is not None:
                return out["last_hidden_state"], out["pooler_output"]
            return out["last_hidden_state"]

    return _Wrapper(inner)


def _flatten_outputs(out: object) -> list[Any]:
    """A model's result (tensor, or nested list/tuple/dict of them) -> flat list, in order."""
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten_outputs(o)]
    return [out]


def _export_torch(model: Any, specs: list[InputSpec], dynamic: dict[str, list[int]], output_names: list[str],
                  opset: int, exporter: str, dest: Path, rng: np.random.Generator, vocab: int = 10,
                  axis_names: dict[int, str] | None = None, single_name: str = "output",
                  output_axes: list[dict[int, str]] | None = None) -> tuple[ReferenceFn, list[str]]:
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
        raise WasmaiError(f"the model rejects example inputs {shapes}: "
                          f"{type(exc).__name__}: {first_line(exc)}") from None
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
        for name, o in zip(output_names, outs, strict=True):  # same length: checked above
            if o.dim() > 0:
                dyn_axes[name] = {0: axis_names.get(0, "batch")}
    # not strict: output_axes is empty when not given, and it has one entry per output the
    # Hugging Face model declares, one more than the model returns when its pooler yields None.
    for name, out_axes in zip(output_names, output_axes or [], strict=False):
        dyn_axes[name] = dict(out_axes)
    if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        raise WasmaiError("--exporter dynamo needs onnxscript (pip install onnxscript); "
                          "the default torchscript exporter does not")
    kwargs: dict[str, Any] = dict(input_names=[s.name for s in specs], output_names=output_names,
                                  opset_version=opset, do_constant_folding=True,
                                  dynamic_axes=dyn_axes or None, dynamo=(exporter == "dynamo"))
    try:
        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(examples), str(dest), **kwargs)
    except Exception as exc:  # noqa: BLE001 - torch.onnx raises many types
        dest.unlink(missing_ok=True)
        raise WasmaiError(f"torch.onnx export failed ({exporter} exporter, opset {opset}): {first_line(exc)}") from None

    def reference(feeds: list[Feed]) -> list[list[np.ndarray]]:
        results: list[list[np.ndarray]] = []
        with torch.no_grad():
            for feed in feeds:
                args = [torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in specs]
                try:
                    out = _flatten_outputs(model(*args))
                except Exception as exc:  # noqa: BLE001
                    raise WasmaiError(f"the PyTorch model rejects a validation sample: {first_line(exc)}") from None
                results.append([o.detach().float().numpy() if o.dtype == torch.bfloat16 else o.detach().numpy()
                                for o in out])
        return results

    return reference, output_names


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
        raise WasmaiError(f"invalid ONNX model {src}: {first_line(exc)}") from None
