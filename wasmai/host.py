"""The embedded wasmtime host with wasi-nn on ONNX Runtime: the only module that imports the
native extension ``wasmai._host`` (Rust, built by maturin from ``host/``).

One :class:`Host` is one wasmtime Engine: it compiles components with Cranelift (compiled code
cached on disk under ``$WASMAI_CACHE_DIR/wasmtime``, default ``~/.cache/wasmai/wasmtime``, keyed
by the sha256 of the component), implements the ``wasi:nn@0.2.0-rc-2024-10-28`` imports on ONNX
Runtime (the ``libonnxruntime.so`` inside the installed Python ``onnxruntime`` wheel, so Python
and the host share one ONNX Runtime build) and calls the component's ``wasmai:inference``
exports. Tensor bytes cross the component boundary with memcpy and every call releases the GIL,
so N instances can run on N threads.

Sandbox: each :class:`Instance` has its own Store with a WASI p2 context that denies by default
(no preopens, environment, arguments or network; stdout/stderr captured in memory), a
linear-memory limit and an optional timeout (epoch interruption for guest code; an ONNX Runtime
run is stopped at the same deadline by ``RunOptions::terminate``; a single long kernel, a graph
load and a guest blocked in ``wasi:io/poll`` are not: SECURITY.md). What a Host grants and
limits is checked by :mod:`wasmai.sandbox`.

Errors: :class:`ComponentError` (compile, link, instantiate, trap, timeout) and
:class:`InferenceError` (an ``error`` returned by the component, e.g. a wasi-nn
``invalid-argument`` from the host, with :attr:`InferenceError.code`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from wasmai.errors import WasmaiError, printable
from wasmai.sandbox import (
    DEFAULT_GRAPH_CACHE_MB,
    DEFAULT_MAX_GRAPHS,
    DEFAULT_MAX_TENSOR_BYTES,
    DEFAULT_MEMORY_LIMIT_MB,
    DEFAULT_ORT_MEMORY_LIMIT_MB,
    HostOptions,
    Preopen,
    SandboxOptions,
)
from wasmai.tensors import Tensor
from wasmai.toolchain import cache_dir as cache_root
from wasmai.worker import NO_DEADLINE, call_deadline


def default_cache_dir() -> Path:
    """Folder of the compiled-component cache: ``$WASMAI_CACHE_DIR/wasmtime``, or
    ``~/.cache/wasmai/wasmtime`` (:func:`wasmai.toolchain.cache_dir`), read when called."""
    return cache_root() / "wasmtime"


class ComponentError(WasmaiError):
    """A component could not be compiled, linked or instantiated, or it trapped or timed out.

    ``code`` is a short machine-readable reason: compile, link, instantiate, trap, timeout,
    memory-limit (a trap or failed instantiation after the host refused to grow linear memory),
    dead (used after a trap), busy (used from two threads), unsupported, argument (bad
    :meth:`Instance.call_export` arguments), config, onnxruntime, native, host-panic, crash
    (native code died in a :mod:`wasmai.worker` process).
    """

    def __init__(self, message: str, code: str = "component") -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type[ComponentError], tuple[str, str]]:
        # Pickled with its code (it crosses from a wasmai.worker process).
        return (type(self), (str(self), self.code))


class InferenceError(WasmaiError):
    """The component returned an error. ``code`` is the wasi-nn error-code name for host errors
    (``invalid-argument``, ``invalid-encoding``, ``not-found``, ``unsupported-operation``,
    ``runtime-error``, ``too-large``, ``security``, ...) or the component's own kind
    (``bad-image``, ``bad-input``, ``internal``); ``message`` is the host's or component's text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[InferenceError], tuple[str, str]]:
        return (type(self), (self.code, self.message))


@dataclass
class Prediction:
    """One classification result: class ``label``, its ``index`` in the model output and the
    ``score`` (softmax probability in 0..1 if the manifest asked for softmax, else the logit)."""

    label: str
    index: int
    score: float


def onnxruntime_library() -> Path:
    """Path of the ONNX Runtime shared library inside the installed ``onnxruntime`` wheel
    (``onnxruntime/capi/libonnxruntime.so.<version>``, ``.dylib`` or ``onnxruntime.dll``), or
    ``$WASMAI_ORT_LIBRARY`` if set.

    The package is located without importing it. Raises :class:`ComponentError` (code
    ``onnxruntime``) if not found."""
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


def native_module() -> Any:
    """The native extension ``wasmai._host`` (imported once). Raises :class:`ComponentError`
    (code ``native``) if it is not built."""
    global _HOST_MODULE
    if _HOST_MODULE is None:
        try:
            _host = importlib.import_module("wasmai._host")
        except ImportError as exc:
            raise ComponentError(
                f"the native host wasmai._host is not built ({exc}); run `pip install -e .` "
                "or `maturin develop --release` in the repository", "native") from None
        _HOST_MODULE = _host
    return _HOST_MODULE


#: Set in this process's environment (where unset) before a host creates ONNX Runtime's environment:
#: ONNX Runtime 1.32's Linux build starts Microsoft's 1DS telemetry there (it reads /etc/os-release,
#: DMI, cgroups and the PCI bus, keeps a device id and an event database under
#: ``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` and may upload it), which a sandbox host
#: has no business doing, and which costs ~10 ms of the environment's ~40 ms. The variable is the
#: opt-out that build reads (strace: no database, device id or os-release read with it).
ORT_ENV_VARS = {"ORT_DISABLE_TELEMETRY": "1"}


def _set_ort_environment() -> None:
    """Set :data:`ORT_ENV_VARS`'s variables that are not set (a user's own value holds)."""
    for name, value in ORT_ENV_VARS.items():
        os.environ.setdefault(name, value)


def prepare_host(intra_op_threads: int = 0) -> None:
    """For a process that makes one :class:`Host` for one call (``wasmai run``'s worker): start,
    on a native thread, what that Host would do first: load ONNX Runtime
    (:func:`onnxruntime_library`) and create its environment with the global intra-op pool of
    ``intra_op_threads`` threads (as :class:`Host`'s argument of that name; a Host asking for
    another size gets a pool of its own), whose threads do not spin-wait for work (ONNX Runtime's
    default spinning kept a core busy for ~40 ms after the pool started, which a single call does
    not gain from). The next Host waits for the thread and reports its failure, if any. The
    worker calls this before it imports numpy (issue 13, the CLI's cold start): the environment's
    ~25-40 ms of CPU overlap that import. Sets :attr:`Host.created` (native threads: no ``fork``
    from here on). Raises :class:`ComponentError` (``native``, ``onnxruntime``) when the native
    host or ONNX Runtime is missing."""
    library = str(onnxruntime_library())
    _set_ort_environment()
    Host.created = True
    with _mapped_errors():
        native_module().prepare(library, int(intra_op_threads))


def onnxruntime_log() -> list[str]:
    """The last messages ONNX Runtime logged in this process (warnings and errors, at most 64,
    oldest first, as ``"<Level> <category> <source location>: <message>"``). The native host
    keeps them instead of letting ONNX Runtime write to stderr, so a guest's graph cannot write
    to the host's terminal or logs. Empty before the first :class:`Host`."""
    return list(native_module().onnxruntime_log())


def _converted(exc: BaseException) -> WasmaiError:
    """The native ``HostError(kind, code, message)`` as InferenceError (kind ``inference``) or
    ComponentError (any other kind), the message made :func:`~wasmai.errors.printable`."""
    kind, code, message = (list(exc.args) + ["", "", ""])[:3]
    # The message may carry the component's own text (its stderr, names of its tensors).
    text = printable(str(message))
    if kind == "inference":
        return InferenceError(str(code), text)
    return ComponentError(text, str(code))


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Turn the native HostError into ComponentError / InferenceError (for non-hot paths)."""
    host = native_module()
    try:
        yield
    except host.HostError as exc:
        raise _converted(exc) from None


def _raw_tensors(inputs: Sequence[Tensor]) -> list[tuple[str, str, tuple[int, ...], bytes]]:
    """``inputs`` as the native host takes them: (name, dtype, shape, bytes) tuples, the bytes
    lent as they are when already a ``bytes`` object."""
    return [(t.name, t.dtype, t.shape, t.data if type(t.data) is bytes else bytes(t.data)) for t in inputs]


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

    def __init__(self, native: Any, timeout_s: float | None = None) -> None:
        self._native = native
        self._error = native_module().HostError
        #: The host's per-call timeout, for :func:`wasmai.worker.call_deadline`.
        self._timeout_s = timeout_s
        #: Milliseconds to instantiate (new Store, WASI context, instance, export lookup).
        self.instantiate_ms: float = native.instantiate_ms

    def info(self) -> dict[str, Any]:
        """``metadata.info()`` as a dict: WIT field names with '-' -> '_'; tensor specs are
        ``{"name", "dtype", "shape"}`` with ``dtype`` a lower-case wasi-nn type and ``shape`` ints
        (fixed) or strings (dynamic axes)."""
        with _mapped_errors(), call_deadline(self._timeout_s, "info"):
            return dict(self._native.info())

    def load(self) -> None:
        """``model.load()``: load the graph through wasi-nn (idempotent)."""
        with _mapped_errors(), call_deadline(self._timeout_s, "load"):
            self._native.load()

    def infer(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """The forward pass: inputs matched by name (position when names are empty); returns the
        outputs in model order with their real types. Through ``model-tensors.infer-tensors`` when
        the component exports it (the host makes wasi-nn tensors over the inputs' ``bytes`` and
        reads the outputs' itself: no tensor byte in the guest's memory), else ``model.infer``.
        Raises InferenceError (``bad-input``, ``too-large``, ...) / ComponentError."""
        raw = _raw_tensors(inputs)
        deadline = call_deadline(self._timeout_s, "infer")
        try:
            if deadline is NO_DEADLINE:  # no `with` on the hot path: ~1 us of a tiny model's call
                out = self._native.infer(raw)
            else:
                with deadline:
                    out = self._native.infer(raw)
        except self._error as exc:
            raise _converted(exc) from None
        return [Tensor(n, d, s, b) for n, d, s, b in out]

    def classify(self, image: bytes, top_k: int = 5) -> list[Prediction]:
        """``image-classification.classify``: PNG/JPEG bytes -> the ``top_k`` best predictions.
        Raises WasmaiError for ``top_k`` < 1, ComponentError ``unsupported`` for tensor-model
        components, InferenceError ``bad-image`` for undecodable bytes."""
        if top_k < 1:
            raise WasmaiError(f"top-k must be at least 1, not {top_k}")
        try:
            with call_deadline(self._timeout_s, "classify"):
                preds = self._native.classify(image if type(image) is bytes else bytes(image), int(top_k))
        except self._error as exc:
            raise _converted(exc) from None
        return [Prediction(label=label, index=i, score=s) for label, i, s in preds]

    def last_timings(self) -> dict[str, int]:
        """Guest-measured microseconds of the last classify: decode_us, preprocess_us,
        inference_us, postprocess_us."""
        with _mapped_errors(), call_deadline(self._timeout_s, "last-timings"):
            return dict(self._native.last_timings())

    def host_stats(self) -> dict[str, Any]:
        """``ort_run_ns`` (wall time of the last ONNX Runtime run inside the host, ns: the
        ``OrtApi::Run`` call alone, not the host's wrapping of its inputs and outputs),
        ``compute_calls``, ``execution_provider`` (of the last compute) and
        ``linear_memory_bytes`` (largest linear memory of the instance, bytes)."""
        try:
            return dict(self._native.host_stats())
        except self._error as exc:
            raise _converted(exc) from None

    def release(self) -> None:
        """``model.release()``: drop the guest's graph and execution context."""
        with _mapped_errors(), call_deadline(self._timeout_s, "release"):
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
        with _mapped_errors(), call_deadline(self._timeout_s, name):
            return self._native.call_export(name, *args)

    def output(self) -> tuple[bytes, bytes]:
        """The guest's captured ``(stdout, stderr)`` bytes so far (at most 64 KiB each; empty
        when the Host has ``inherit_stdio``)."""
        out, err = self._native.output()
        return bytes(out), bytes(err)


class LibraryBaseline:
    """A model in ONNX Runtime through the host's ``libonnxruntime``, without wasm or wasi-nn
    (from :meth:`Host.library_baseline`). The Python ``onnxruntime`` package runs a separate build
    of the same release, linked into its extension module; see benchmarks/README.md for how the
    two binaries differ in speed."""

    def __init__(self, native: Any) -> None:
        self._native = native

    def run(self, inputs: Sequence[Tensor]) -> int:
        """One run on ``inputs`` (matched to the graph's inputs by name; the outputs are
        discarded). Returns the wall time of ONNX Runtime's ``Run`` in nanoseconds. Raises
        ComponentError ``onnxruntime`` for a missing input, bytes that do not fit a shape or a
        failed run, ``argument`` for a malformed tensor."""
        raw = _raw_tensors(inputs)
        with _mapped_errors():
            return int(self._native.run(raw))

    def end_profiling(self) -> Path:
        """Stop ONNX Runtime's profiler and write its JSON file (chrome-trace events, one per node
        per run); its path. Raises ComponentError ``onnxruntime`` when the baseline was made
        without a ``profile_prefix``."""
        with _mapped_errors():
            return Path(self._native.end_profiling())


class Host:
    """One wasmtime Engine (compilation cache on disk) + ONNX Runtime + the graph registry for
    wasi-nn ``load-by-name``.

    Host settings (:class:`wasmai.sandbox.HostOptions`): ``graphs`` maps names to ONNX files
    (each loaded once, on first use, and shared by every instance); ``allow_target_fallback``
    lets a ``gpu``/``tpu`` execution target run on the CPU when ONNX Runtime has no such
    execution provider (otherwise ``unsupported-operation``); ``intra_op_threads`` sizes ONNX
    Runtime's one intra-op thread pool, shared by every graph in the process and created by the
    first Host (0 = ONNX Runtime's default); a later Host asking for another size gets a pool of
    that size per graph. ``cache_dir``: compiled components (default :func:`default_cache_dir`).
    ``graph_cache_mb``: graphs the instances load with ``graph.load`` are shared by content (the
    SHA-256 of their bytes and the execution target): one ONNX Runtime session per distinct
    graph, whose runs on the CPU overlap; they stay cached, least recently used evicted first,
    while their bytes fit this budget (MiB, default
    :data:`~wasmai.sandbox.DEFAULT_GRAPH_CACHE_MB`; 0 = no sharing). Each instance is still
    charged a graph's bytes as if it were its own (:meth:`graph_cache_stats`).
    ``instance_slots``: 0 (default) allocates each instance's memories when it is created; N > 0
    uses wasmtime's pooling allocator with room for N live instances (instantiation maps nothing
    new: about half the time; :meth:`instantiate` of instance N+1 while N live raises
    ComponentError ``instantiate``).

    Sandbox (:class:`wasmai.sandbox.SandboxOptions`), all grants off by default: ``dirs``
    preopens host directories in every instance (:class:`~wasmai.sandbox.Preopen` or
    ``"HOST::GUEST[:ro]"`` strings; read-only preopens refuse every write), ``env`` sets guest
    environment variables, ``inherit_stdio`` sends guest stdout/stderr to this process's
    (instead of the in-memory capture read by :meth:`Instance.output`). Limits:
    ``memory_limit_mb`` is each instance's memory budget (MiB), charged with all its linear
    memories and tables, the wasi-nn tensors the host holds for it and the bytes of the graphs it
    loads: a guest that grows past it gets -1 from ``memory.grow`` (a trap that follows is
    ComponentError ``memory-limit``), a tensor, output or graph past it wasi-nn ``too-large``
    naming the budget; ``ort_memory_limit_mb`` caps ONNX Runtime's CPU arena for the process
    (MiB, default :data:`~wasmai.sandbox.DEFAULT_ORT_MEMORY_LIMIT_MB`; the first Host's value
    holds): a graph whose run needs more gets wasi-nn ``too-large`` naming ``max-ort-memory``;
    ``timeout_s``
    bounds each guest call (seconds, 10 ms resolution); ``max_tensor_bytes`` refuses any wasi-nn
    tensor (input or output) larger than that many bytes with wasi-nn error ``too-large`` (the
    constructor cannot fail in this wasi-nn version, so the oversized tensor's bytes are dropped
    there and ``compute`` answers ``too-large``); ``max_graphs`` refuses ``graph.load`` /
    ``load-by-name`` with wasi-nn error ``security`` while an instance holds that many live
    graphs (a graph is live while its handle or an execution context of it exists). Both default
    to :data:`~wasmai.sandbox.DEFAULT_MAX_TENSOR_BYTES` and
    :data:`~wasmai.sandbox.DEFAULT_MAX_GRAPHS`; None = unbounded.

    Raises :class:`WasmaiError` for a missing graph file or directory, or bad settings;
    :class:`ComponentError` when the native host or ONNX Runtime is missing.
    """

    #: Set once a Host exists in this process, or :func:`prepare_host` ran (their native threads
    #: make ``fork`` unsafe: :mod:`wasmai.worker`).
    created: ClassVar[bool] = False

    def __init__(self, *, graphs: Mapping[str, str | os.PathLike[str]] | None = None,
                 allow_target_fallback: bool = False, intra_op_threads: int = 0,
                 cache_dir: str | os.PathLike[str] | None = None,
                 memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, timeout_s: float | None = None,
                 dirs: Sequence[Preopen | str] = (), env: Mapping[str, str] | None = None,
                 inherit_stdio: bool = False, max_tensor_bytes: int | None = DEFAULT_MAX_TENSOR_BYTES,
                 max_graphs: int | None = DEFAULT_MAX_GRAPHS,
                 ort_memory_limit_mb: int = DEFAULT_ORT_MEMORY_LIMIT_MB,
                 graph_cache_mb: int = DEFAULT_GRAPH_CACHE_MB, instance_slots: int = 0) -> None:
        self.options = HostOptions({str(name): Path(p) for name, p in (graphs or {}).items()},
                                   bool(allow_target_fallback), int(intra_op_threads), int(graph_cache_mb),
                                   int(instance_slots))
        self.sandbox = SandboxOptions(
            dirs=tuple(Preopen.parse(d) if isinstance(d, str) else d for d in dirs), env=dict(env or {}),
            inherit_stdio=bool(inherit_stdio), memory_limit_mb=int(memory_limit_mb), timeout_s=timeout_s,
            max_tensor_bytes=max_tensor_bytes, max_graphs=max_graphs, ort_memory_limit_mb=ort_memory_limit_mb)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        sb = self.sandbox
        _set_ort_environment()
        Host.created = True
        with _mapped_errors():
            self._native = native_module().NativeHost(
                str(onnxruntime_library()), str(self.cache_dir),
                [(name, str(path)) for name, path in self.options.graphs.items()],
                self.options.allow_target_fallback, self.options.intra_op_threads, sb.memory_limit_mb,
                sb.timeout_s, dirs=[(str(d.host.resolve()), d.guest, d.read_only) for d in sb.dirs],
                env=list(sb.env.items()), inherit_stdio=sb.inherit_stdio,
                max_tensor_bytes=sb.max_tensor_bytes, max_graphs=sb.max_graphs,
                ort_memory_limit_mb=sb.ort_memory_limit_mb, graph_cache_mb=self.options.graph_cache_mb,
                instance_slots=self.options.instance_slots)

    def load_component(self, path_or_bytes: str | os.PathLike[str] | bytes) -> Component:
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
        come from this Host's :meth:`load_component` (compiled code is tied to its Engine);
        raises ComponentError ``instantiate`` otherwise."""
        if component._host is not self:
            raise ComponentError("the component was loaded by another Host; load it with this one",
                                 "instantiate")
        with _mapped_errors(), call_deadline(self.sandbox.timeout_s, "instantiate"):
            return Instance(self._native.instantiate(component._native), self.sandbox.timeout_s)

    def graph_cache_stats(self) -> dict[str, int]:
        """The shared graphs' counters: ``graphs`` (ONNX Runtime sessions cached now), ``bytes``
        (the graph bytes they were loaded from), ``max_bytes`` (the budget), ``hits`` / ``misses``
        (``graph.load`` calls answered with a cached graph / that made a new one), ``by_digest``
        (of the hits, ``load-by-name("sha256:<hex>")`` calls of an instance whose component loaded
        those bytes before: the graph bytes are not read again) and ``evictions``. Registered
        (load-by-name) graphs are not counted: each is loaded once per Host anyway."""
        return dict(self._native.graph_cache_stats())

    def library_baseline(self, model: str | os.PathLike[str],
                         profile_prefix: str | os.PathLike[str] | None = None) -> LibraryBaseline:
        """The ONNX file ``model`` in ONNX Runtime through this host's own library
        (``libonnxruntime``), with none of the host around it: ``wasmai bench``'s same-library
        baseline. ONNX Runtime's default session options at its highest optimization level (as its
        Python API), its own arena and an intra-op pool of this host's ``intra_op_threads``; with
        ``profile_prefix``, ONNX Runtime's profiler on (:meth:`LibraryBaseline.end_profiling`).
        Raises WasmaiError for a missing file, ComponentError ``onnxruntime`` when ONNX Runtime
        refuses it."""
        path = Path(model)
        if not path.is_file():
            raise WasmaiError(f"model not found: {path}")
        prefix = None if profile_prefix is None else Path(profile_prefix)
        with _mapped_errors():
            return LibraryBaseline(native_module().NativeBaseline(path, self.options.intra_op_threads, prefix))

    def execution_providers(self) -> list[str]:
        """ONNX Runtime execution providers the host can use (CPU first)."""
        with _mapped_errors():
            return list(native_module().available_providers(str(onnxruntime_library())))
