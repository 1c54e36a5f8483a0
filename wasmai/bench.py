"""``wasmai bench``: latency, cold start, throughput and memory of a component, next to the same
model run directly in ONNX Runtime in the same process.

What is measured (all wall-clock times from :func:`time.perf_counter_ns`):

* **cold start**: ``Host.load_component`` (a Cranelift compile, or a load from wasmtime's on-disk
  compilation cache; ``cache_hit`` says which), ``Host.instantiate``, the wasi-nn graph load
  (``Instance.load``) and the first call (``infer`` or ``classify``).
* **steady state**: ``n`` calls after ``warmup`` calls, one instance, one thread. Reported as
  min, p50, p90, p99, max, mean and sample standard deviation in milliseconds (see
  :func:`summarize`). For each call the host's own ONNX Runtime compute time
  (``host_stats()["ort_run_ns"]``) is read back, and **host overhead** = call time minus
  ``ort_run_ns``: what the component boundary, the guest code and wasi-nn cost on top of the model.
* **throughput** (``concurrency`` > 1): ``concurrency`` instances of the same compiled component,
  each driven by its own thread (calls release the GIL), each doing ``n`` calls after its warm-up;
  QPS = total calls / wall time from the common start (a barrier) to the last call's end.
* **memory**: the process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on
  Linux) read after the component's cold start and warm-up, before the native session exists
  (``peak_rss_bytes``), and again at the end (``peak_rss_bytes_end``); the instance's linear
  memory (``host_stats()["linear_memory_bytes"]``).
* **native**: the same ONNX file in ``onnxruntime.InferenceSession`` (CPU execution provider, the
  same intra-op thread count) on the same inputs, in the same process. Both sides are warmed up,
  then the ``n`` timed calls of each run in :data:`NATIVE_ROUNDS` alternating blocks (component
  block, native block, ...; never overlapping), so that a change of load on the machine affects
  both alike. ``ratio_p50`` = component p50 / native p50. For image components the native side is
  :mod:`wasmai.preprocess` (Pillow + numpy) + ONNX Runtime + softmax/top-k in numpy, timed per
  stage like the guest's ``last_timings``.

Percentiles use numpy's default method, ``numpy.percentile(..., method="linear")``: linear
interpolation between closest ranks, definition 7 of Hyndman & Fan (1996), "Sample Quantiles in
Statistical Packages", The American Statistician 50(4). With few samples p99 is close to the max.
"""

from __future__ import annotations

import io
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wasmai.errors import WasmaiError
from wasmai.manifest import TENSOR_TYPES, Manifest

#: numpy.percentile method used for every percentile in the report (Hyndman & Fan definition 7).
PERCENTILE_METHOD = "linear"
#: The steady-state calls are split into this many blocks, alternating component and native
#: (component block, native block, ...), so that a change of load on the machine during the
#: run affects both sides alike.
NATIVE_ROUNDS = 5
#: Image pipeline stages, in order, as in the guest's ``last-timings`` record.
STAGES = ("decode", "preprocess", "inference", "postprocess")


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@dataclass
class Stats:
    """Summary of a sample of durations, all in the unit named by the field holding it.

    ``stdev`` is the sample standard deviation (``ddof=1``; 0 for a single sample); percentiles
    are ``numpy.percentile(method="linear")`` (Hyndman & Fan definition 7).
    """

    n: int
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    stdev: float


def summarize(samples: list[float] | np.ndarray) -> Stats:
    """:class:`Stats` of ``samples`` (any unit; the result is in the same unit).

    Raises :class:`ValueError` on an empty sample.
    """
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p90, p99 = np.percentile(a, [50, 90, 99], method=PERCENTILE_METHOD)
    return Stats(n=int(a.size), min=float(a.min()), p50=float(p50), p90=float(p90), p99=float(p99),
                 max=float(a.max()), mean=float(a.mean()),
                 stdev=float(a.std(ddof=1)) if a.size > 1 else 0.0)


def histogram(samples: list[float], bins: int = 12) -> dict[str, Any]:
    """Histogram of ``samples`` with ``bins`` equal-width bins from the minimum to the p99
    (``numpy.histogram``); the few samples above the p99 are counted in ``above`` rather than
    stretching every bin. Returns ``{"edges": [bins + 1], "counts": [bins], "above": int}`` in
    the samples' unit."""
    a = np.asarray(samples, dtype=np.float64)
    lo = float(a.min())
    hi = float(np.percentile(a, 99, method=PERCENTILE_METHOD))
    if hi <= lo:
        hi = float(a.max()) if a.max() > lo else lo + 1e-9
    counts, edges = np.histogram(a[a <= hi], bins=bins, range=(lo, hi))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts],
            "above": int((a > hi).sum())}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class ColdStart:
    """Time to the first result, in milliseconds. ``compile_ms`` is a Cranelift compile when
    ``cache_hit`` is false, else a load of the cached native code from disk."""

    compile_ms: float
    cache_hit: bool
    instantiate_ms: float
    load_ms: float
    first_call_ms: float
    total_ms: float


@dataclass
class Steady:
    """Single-instance steady state. ``latency_ms``: wall time per call (ms). ``ort_run_ms``: the
    host's ONNX Runtime compute time per call (ms). ``host_overhead_us``: per-call latency minus
    ``ort_run`` (microseconds). ``stages_us``: guest-side ``last_timings`` per stage (image
    components, ``classify`` only; microseconds)."""

    latency_ms: Stats
    ort_run_ms: Stats | None = None
    host_overhead_us: Stats | None = None
    stages_us: dict[str, Stats] | None = None
    samples_ms: list[float] = field(default_factory=list)


@dataclass
class Throughput:
    """``concurrency`` instances on as many threads. ``qps``: calls per second over ``wall_s``;
    ``latency_ms``: per-call latency under that load."""

    concurrency: int
    calls: int
    wall_s: float
    qps: float
    latency_ms: Stats


@dataclass
class Memory:
    """Peak resident set size of this process (bytes; includes the Python interpreter, wasmtime and
    ONNX Runtime) after the component's cold start and warm-up, before the native session is
    created, and at the end of the run; the instance's linear memory (bytes)."""

    peak_rss_bytes: int
    linear_memory_bytes: int | None
    peak_rss_bytes_end: int | None = None


@dataclass
class Native:
    """The same model directly in ONNX Runtime. ``available`` false means it was skipped, and
    ``skipped_reason`` says why. ``ratio_p50`` = component p50 / native p50."""

    available: bool
    skipped_reason: str | None = None
    model: str | None = None
    onnxruntime_version: str | None = None
    latency_ms: Stats | None = None
    stages_us: dict[str, Stats] | None = None
    ratio_p50: float | None = None
    samples_ms: list[float] = field(default_factory=list)


@dataclass
class BenchReport:
    """Everything ``wasmai bench`` reports (``--json`` prints this)."""

    component: str
    component_sha256: str
    model: dict[str, Any]
    mode: str  # "infer" or "classify"
    config: dict[str, Any]
    cold_start: ColdStart
    steady: Steady
    memory: Memory
    native: Native
    throughput: Throughput | None = None
    verification: dict[str, Any] | None = None
    execution_provider: str | None = None
    histogram_ms: dict[str, Any] | None = None
    plot: str | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass
class InputSpec:
    """A graph input as the component declares it: dims are ints (fixed) or names (dynamic)."""

    name: str
    dtype: str
    dims: list[int | str]


def _dim(d: Any) -> int | str:
    if isinstance(d, dict):  # {"fixed": n} / {"dynamic": "batch"}
        if "fixed" in d:
            return int(d["fixed"])
        return str(d.get("dynamic", "?"))
    if isinstance(d, (tuple, list)) and len(d) == 2:  # ("fixed", n) / ("dynamic", name)
        return int(d[1]) if d[0] == "fixed" else str(d[1])
    return d if isinstance(d, str) else int(d)


def input_specs(info: dict[str, Any]) -> list[InputSpec]:
    """The ``inputs`` of a component's ``info()`` as :class:`InputSpec` (dtype in wasi-nn spelling)."""
    specs = []
    for s in info.get("inputs", []):
        dtype = str(s.get("dtype", s.get("ty", s.get("type", "")))).lower()
        dims = s.get("dims", s.get("shape", []))
        specs.append(InputSpec(name=s["name"], dtype=dtype, dims=[_dim(d) for d in dims]))
    return specs


def parse_assignments(items: list[str] | None, what: str) -> dict[str, str]:
    """``["NAME=VALUE", ...]`` -> dict. Raises :class:`WasmaiError` on an item without ``=``."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise WasmaiError(f"{what} must look like NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def random_inputs(specs: list[InputSpec], dims: dict[str, int] | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors matching ``specs``. Dynamic axes take ``dims[name]`` or 1.

    Floats: standard normal; u8: uniform 0..255; i32/i64: uniform 0..9 (valid as indices for
    embedding-style inputs); bf16: the upper 16 bits of standard-normal float32 values.
    """
    dims = dims or {}
    rng = np.random.default_rng(seed)
    unknown = set(dims) - {d for s in specs for d in s.dims if isinstance(d, str)}
    if unknown:
        raise WasmaiError(f"--dim names no dynamic axis of this component: {', '.join(sorted(unknown))}")
    out: dict[str, np.ndarray] = {}
    for s in specs:
        shape = tuple(int(dims.get(d, 1)) if isinstance(d, str) else d for d in s.dims)
        if s.dtype not in TENSOR_TYPES:
            raise WasmaiError(f"input {s.name!r} has a type bench cannot generate: {s.dtype}")
        np_dtype = TENSOR_TYPES[s.dtype][0]
        if s.dtype in ("fp16", "fp32", "fp64"):
            arr = rng.standard_normal(shape).astype(np_dtype)
        elif s.dtype == "u8":
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif s.dtype == "bf16":
            arr = (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        else:
            arr = rng.integers(0, 10, size=shape).astype(np_dtype)
        out[s.name] = np.ascontiguousarray(arr)
    return out


def load_input_files(inputs: dict[str, str] | None = None, npz: str | os.PathLike[str] | None = None
                     ) -> dict[str, np.ndarray]:
    """Tensors from ``NAME -> FILE.npy`` and/or one ``.npz`` (its keys are input names).
    Raises :class:`WasmaiError` naming the file that cannot be read."""
    out: dict[str, np.ndarray] = {}
    if npz is not None:
        try:
            with np.load(npz, allow_pickle=False) as z:
                out.update({k: np.asarray(z[k]) for k in z.files})
        except (OSError, ValueError) as exc:
            raise WasmaiError(f"cannot read --inputs {npz}: {exc}") from None
    for name, path in (inputs or {}).items():
        try:
            out[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise WasmaiError(f"cannot read --input {name}={path}: {exc}") from None
    return out


def check_inputs(arrays: dict[str, np.ndarray], specs: list[InputSpec]) -> list[tuple[str, np.ndarray]]:
    """Match ``arrays`` to the component's inputs, in its order. Raises :class:`WasmaiError` on a
    missing or unknown name, a wrong element type or a wrong fixed axis."""
    names = [s.name for s in specs]
    unknown = set(arrays) - set(names)
    if unknown:
        raise WasmaiError(f"unknown input(s) {', '.join(sorted(unknown))}; the component takes "
                          f"{', '.join(names)}")
    out = []
    for s in specs:
        if s.name not in arrays:
            raise WasmaiError(f"missing input {s.name!r} (the component takes {', '.join(names)})")
        arr = arrays[s.name]
        want = TENSOR_TYPES.get(s.dtype, (None,))[0]
        if want is not None and arr.dtype != np.dtype(want):
            raise WasmaiError(f"input {s.name!r} is {arr.dtype}, the component wants {s.dtype} ({want})")
        if arr.ndim != len(s.dims) or any(isinstance(d, int) and d != n for d, n in zip(s.dims, arr.shape)):
            raise WasmaiError(f"input {s.name!r} has shape {list(arr.shape)}, the component wants "
                              f"{s.dims}")
        out.append((s.name, np.ascontiguousarray(arr)))
    return out


# --------------------------------------------------------------------------------------------
# Finding the ONNX model for the native run
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    from wasmai.manifest import sha256_file

    return sha256_file(path)


def find_native_model(component: Path, model_sha256: str, model: str | os.PathLike[str] | None = None
                      ) -> tuple[Path | None, str | None]:
    """The ONNX file the component was built from, or ``(None, reason)``.

    ``model`` (``--model``) is used if given; it must have the component's sha256. Otherwise the
    manifests (``*.toml``) and ``*.onnx`` files beside the component are searched for a model with
    that sha256 (the component's own stem first).
    """
    if model is not None:
        path = Path(model)
        if not path.is_file():
            raise WasmaiError(f"--model not found: {path}")
        if model_sha256 and _sha256(path) != model_sha256:
            raise WasmaiError(f"--model {path} is not the model this component was built from "
                              f"(sha256 differs from the component's {model_sha256[:16]}...)")
        return path, None
    if not model_sha256:
        return None, "the component does not record its model's sha256; pass --model FILE.onnx"
    folder = component.resolve().parent
    tomls = sorted(folder.glob("*.toml"), key=lambda p: (p.stem != component.stem, p.name))
    for toml in tomls:
        try:
            man = Manifest.load(toml)
        except WasmaiError:
            continue
        if man.sha256 == model_sha256 and man.onnx_path.is_file():
            return man.onnx_path, None
    for onnx_file in sorted(folder.glob("*.onnx"), key=lambda p: (p.stem != component.stem, p.name)):
        if _sha256(onnx_file) == model_sha256:
            return onnx_file, None
    return None, (f"no ONNX model with sha256 {model_sha256[:16]}... beside {component.name} "
                  "(no matching manifest or .onnx); pass --model FILE.onnx")


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _ms(ns: int) -> float:
    return ns / 1e6


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


@dataclass
class _Workload:
    """What one call does on an instance and on the native side."""

    mode: str  # "infer" or "classify"
    tensors: list[Any]  # wasmai.runtime.Tensor list (infer)
    arrays: list[tuple[str, np.ndarray]]  # the same tensors as numpy (native)
    image: bytes | None = None
    top_k: int = 5

    def call(self, inst) -> None:
        if self.mode == "classify":
            inst.classify(self.image, self.top_k)
        else:
            inst.infer(self.tensors)


class _ComponentRunner:
    """Timed calls on one instance; per call: wall ns, the host's ``ort_run_ns`` and (classify)
    the guest's per-stage microseconds."""

    def __init__(self, inst, work: _Workload) -> None:
        self.inst, self.work = inst, work
        self.wall: list[int] = []
        self.ort: list[int] = []
        self.stages: dict[str, list[int]] = {s: [] for s in STAGES}

    def warmup(self, k: int) -> None:
        for _ in range(k):
            self.work.call(self.inst)

    def block(self, k: int) -> None:
        inst, work, clock = self.inst, self.work, time.perf_counter_ns
        for _ in range(k):
            t0 = clock()
            work.call(inst)
            self.wall.append(clock() - t0)
            stats = inst.host_stats()
            if stats.get("ort_run_ns") is not None:
                self.ort.append(int(stats["ort_run_ns"]))
            if work.mode == "classify":
                timings = inst.last_timings()
                for s in STAGES:
                    self.stages[s].append(int(timings.get(f"{s}_us", 0)))


def _throughput(host, component, work: _Workload, concurrency: int, warmup: int, n: int) -> Throughput:
    instances = []
    for _ in range(concurrency):
        inst = host.instantiate(component)
        inst.load()
        instances.append(inst)
    barrier = threading.Barrier(concurrency + 1)
    results: list[list[int]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    ends = [0] * concurrency

    def worker(i: int) -> None:
        try:
            for _ in range(warmup):
                work.call(instances[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
        barrier.wait()
        if errors:
            return
        clock = time.perf_counter_ns
        try:
            for _ in range(n):
                t0 = clock()
                work.call(instances[i])
                results[i].append(clock() - t0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        ends[i] = clock()

    threads = [threading.Thread(target=worker, args=(i,), name=f"wasmai-bench-{i}") for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter_ns()
    for t in threads:
        t.join()
    for inst in instances:
        inst.release()
    if errors:
        raise errors[0]
    wall_ns = max(ends) - start
    samples = [_ms(x) for r in results for x in r]
    return Throughput(concurrency=concurrency, calls=len(samples), wall_s=wall_ns / 1e9,
                      qps=len(samples) / (wall_ns / 1e9), latency_ms=summarize(samples))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


class _NativeRunner:
    """The same model in ``onnxruntime.InferenceSession`` (CPU EP, ``threads`` intra-op threads).
    Tensor mode: ``session.run`` on the same arrays. Classify mode: Pillow decode,
    :func:`wasmai.preprocess.preprocess_image`, ``session.run``, softmax + top-k in numpy, each
    stage timed (microseconds) like the guest's ``last_timings``."""

    def __init__(self, model: Path, work: _Workload, threads: int, preprocess=None, softmax: bool = True) -> None:
        import onnxruntime as ort

        self.model = model
        self.version = ort.__version__
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        clock = time.perf_counter_ns
        self.wall: list[int] = []
        self.stages: dict[str, list[int]] | None = None
        if work.mode == "classify":
            from PIL import Image

            from wasmai.preprocess import preprocess_image

            in_name = sess.get_inputs()[0].name
            stages = self.stages = {s: [] for s in STAGES}

            def call() -> None:
                t0 = clock()
                with Image.open(io.BytesIO(work.image)) as img:
                    rgb = img.convert("RGB")
                t1 = clock()
                x = preprocess_image(rgb, preprocess)
                t2 = clock()
                logits = sess.run(None, {in_name: x})[0].reshape(-1).astype(np.float32)
                t3 = clock()
                scores = _softmax(logits) if softmax else logits
                top = np.argsort(-scores, kind="stable")[: work.top_k]
                _ = [(int(i), float(scores[i])) for i in top]
                t4 = clock()
                for s, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    stages[s].append(dt // 1000)
        else:
            feed = dict(work.arrays)

            def call() -> None:
                sess.run(None, feed)

        self._call = call

    def warmup(self, k: int) -> None:
        for _ in range(k):
            self._call()
        if self.stages is not None:
            for v in self.stages.values():
                v.clear()

    def block(self, k: int) -> None:
        call, clock = self._call, time.perf_counter_ns
        for _ in range(k):
            t0 = clock()
            call()
            self.wall.append(clock() - t0)

    def report(self) -> Native:
        samples = [_ms(x) for x in self.wall]
        return Native(available=True, model=str(self.model), onnxruntime_version=self.version,
                      latency_ms=summarize(samples),
                      stages_us={s: summarize(v) for s, v in self.stages.items()} if self.stages else None,
                      samples_ms=samples)


def _rounds(n: int, rounds: int) -> list[int]:
    """``n`` calls split into ``rounds`` blocks as equal as possible (no empty block)."""
    rounds = max(1, min(rounds, n))
    return [n // rounds + (1 if i < n % rounds else 0) for i in range(rounds)]


def bench(component: str | os.PathLike[str], *, image: str | os.PathLike[str] | None = None,
          inputs: dict[str, str] | None = None, inputs_npz: str | os.PathLike[str] | None = None,
          random: bool = False, dims: dict[str, int] | None = None, seed: int = 0,
          n: int = 100, warmup: int = 10, concurrency: int = 1, threads: int = 0,
          native: bool | None = None, model: str | os.PathLike[str] | None = None, top_k: int = 5,
          graphs: dict[str, str] | None = None, allow_target_fallback: bool = False,
          cache_dir: str | os.PathLike[str] | None = None, policy=None, bundle=None,
          plot: str | os.PathLike[str] | None = None, timeout_s: float | None = None,
          sandbox=None, progress: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark ``component``. See the module docstring for what is measured.

    ``native``: None = on when the ONNX model can be found (else skipped, with the reason in the
    report), True = required (error if not found), False = off. ``threads``: ONNX Runtime intra-op
    threads for both the host and the native session (0 = ONNX Runtime's default). ``policy`` (a
    :class:`wasmai.sign.VerificationPolicy`, or None to skip) is checked before instantiating.
    ``sandbox`` (a :class:`wasmai.runtime.SandboxOptions`, default: deny everything) grants
    directories/env/stdio and sets the memory, tensor and graph limits of the host.
    Raises :class:`WasmaiError` on bad input.
    """
    say = progress or (lambda _msg: None)
    path = Path(component)
    if not path.is_file():
        raise WasmaiError(f"component not found: {path}")
    if n < 1 or warmup < 0 or concurrency < 1 or threads < 0 or top_k < 1:
        raise WasmaiError("-n, --concurrency and --top-k must be >= 1; --warmup and --threads >= 0")
    given = [x for x in (image is not None, bool(inputs) or inputs_npz is not None, random) if x]
    if len(given) != 1:
        raise WasmaiError("give exactly one input source: --image, --input/--inputs, or --random")
    if dims and not random:
        raise WasmaiError("--dim only applies with --random")
    image_bytes = None
    if image is not None:
        try:
            image_bytes = Path(image).read_bytes()
        except OSError as exc:
            raise WasmaiError(f"cannot read --image {image}: {exc.strerror or exc}") from None
    arrays = load_input_files(inputs, inputs_npz) if (inputs or inputs_npz is not None) else None
    if not path.is_file():
        raise WasmaiError(f"component not found: {path}")

    verification = verified_digest = None
    if policy is not None:
        from wasmai.sign import verify_component

        say("verifying signature")
        result = verify_component(path, policy, bundle=bundle)
        verification, verified_digest = _jsonable(result), result.digest

    from wasmai.runtime import Host, SandboxOptions, Tensor, load_verified

    host = Host(graphs=graphs, allow_target_fallback=allow_target_fallback, intra_op_threads=threads,
                cache_dir=cache_dir, timeout_s=timeout_s, **(sandbox or SandboxOptions()).host_kwargs())
    say("compiling component")
    clock = time.perf_counter_ns
    t0 = clock()
    comp = load_verified(host, path, verified_digest)  # a cached load neither reads nor hashes the file
    compile_wall_ms = _ms(clock() - t0)
    component_sha = comp.sha256
    compile_ms = float(getattr(comp, "compile_ms", None) or compile_wall_ms)
    t0 = clock()
    inst = host.instantiate(comp)
    instantiate_wall_ms = _ms(clock() - t0)
    instantiate_ms = float(getattr(inst, "instantiate_ms", None) or instantiate_wall_ms)
    info = inst.info()
    task = info.get("task", "tensor")
    specs = input_specs(info)

    if image_bytes is not None:
        if task != "image-classification":
            raise WasmaiError(f"--image needs an image-classification component; this one is {task!r} "
                              "(use --input, --inputs or --random)")
        work = _Workload(mode="classify", tensors=[], arrays=[], image=image_bytes, top_k=top_k)
    else:
        if arrays is None:
            arrays = random_inputs(specs, dims, seed)
        matched = check_inputs(arrays, specs)
        work = _Workload(mode="infer", tensors=[Tensor.from_numpy(k, v) for k, v in matched],
                         arrays=matched)

    t0 = clock()
    inst.load()
    load_ms = _ms(clock() - t0)
    say("first call")
    t0 = clock()
    work.call(inst)
    first_ms = _ms(clock() - t0)
    cold = ColdStart(compile_ms=compile_ms, cache_hit=bool(getattr(comp, "cache_hit", False)),
                     instantiate_ms=instantiate_ms, load_ms=load_ms, first_call_ms=first_ms,
                     total_ms=compile_ms + instantiate_ms + load_ms + first_ms)

    notes: list[str] = []
    comp_runner = _ComponentRunner(inst, work)
    say(f"steady state: {warmup} warm-up + {n} calls")
    comp_runner.warmup(warmup)
    memory = Memory(peak_rss_bytes=peak_rss_bytes(), linear_memory_bytes=None)

    native_runner = None
    native_report = Native(available=False, skipped_reason="--no-native")
    if native is not False:
        found, reason = find_native_model(path, str(info.get("model_sha256", "")), model)
        if found is None:
            if native:
                raise WasmaiError(f"--native: {reason}")
            native_report = Native(available=False, skipped_reason=reason)
        else:
            pre, softmax = (None, True)
            if work.mode == "classify":
                pre, softmax = _preprocess_from_info(info, found, path)
            native_runner = _NativeRunner(found, work, threads, preprocess=pre, softmax=softmax)
            native_runner.warmup(warmup)

    blocks = _rounds(n, NATIVE_ROUNDS if native_runner is not None else 1)
    if native_runner is not None:
        say(f"component and native onnxruntime in {len(blocks)} alternating blocks")
    for size in blocks:
        comp_runner.block(size)
        if native_runner is not None:
            native_runner.block(size)

    wall, ort_ns = comp_runner.wall, comp_runner.ort
    samples = [_ms(x) for x in wall]
    steady = Steady(latency_ms=summarize(samples), samples_ms=samples)
    if len(ort_ns) == len(wall) and ort_ns:
        steady.ort_run_ms = summarize([_ms(x) for x in ort_ns])
        steady.host_overhead_us = summarize([(w - o) / 1e3 for w, o in zip(wall, ort_ns)])
    else:
        notes.append("the host did not report ort_run_ns; host overhead not computed")
    if work.mode == "classify":
        steady.stages_us = {s: summarize(v) for s, v in comp_runner.stages.items()}
    if native_runner is not None:
        native_report = native_runner.report()
        native_report.ratio_p50 = steady.latency_ms.p50 / native_report.latency_ms.p50
    hstats = inst.host_stats()
    execution_provider = hstats.get("execution_provider")
    linear = hstats.get("linear_memory_bytes")
    memory.linear_memory_bytes = int(linear) if linear is not None else None
    inst.release()

    tp = None
    if concurrency > 1:
        say(f"throughput: {concurrency} instances on {concurrency} threads")
        tp = _throughput(host, comp, work, concurrency, warmup, n)
        if threads != 1:
            notes.append(f"throughput: each of the {concurrency} instances uses ONNX Runtime's intra-op "
                         f"pool ({threads or 'default'} threads); --threads 1 gives one core per instance")
    memory.peak_rss_bytes_end = peak_rss_bytes()

    report = BenchReport(
        component=str(path), component_sha256=component_sha,
        model={k: info.get(k) for k in ("name", "version", "task", "placement", "model_sha256")},
        mode=work.mode,
        config={"n": n, "warmup": warmup, "concurrency": concurrency, "threads": threads,
                "top_k": top_k if work.mode == "classify" else None,
                "image": str(image) if image is not None else None,
                "inputs": [{"name": k, "dtype": str(v.dtype), "shape": list(v.shape)} for k, v in work.arrays],
                "random": random, "seed": seed if random else None,
                "percentile_method": f"numpy.percentile method={PERCENTILE_METHOD!r} (Hyndman & Fan type 7)"},
        cold_start=cold, steady=steady, memory=memory, native=native_report, throughput=tp,
        verification=verification, execution_provider=execution_provider,
        histogram_ms=histogram(samples), notes=notes,
    )
    if policy is None:
        report.notes.append("signature not verified (no policy option given)")
    if plot is not None:
        report.plot = str(write_plot(report, plot))
    return report


def _preprocess_from_info(info: dict[str, Any], model: Path, component: Path):
    """The component's preprocessing (from ``info()["preprocess"]``) as a
    :class:`wasmai.manifest.Preprocess`, and whether it applies softmax (from a manifest beside
    the model or component that has this model's sha256; default true)."""
    from wasmai.manifest import Preprocess

    p = info.get("preprocess")
    if not p:
        raise WasmaiError("the image component reports no preprocessing; cannot run the native side")
    pre = Preprocess(crop=(int(p["crop_height"]), int(p["crop_width"])),
                     resize_shorter=p.get("resize_shorter"), color=p.get("color", "RGB"),
                     layout=p.get("layout", "NCHW"), mean=[float(x) for x in p["mean"]],
                     std=[float(x) for x in p["std"]])
    softmax = True
    for folder in {model.resolve().parent, component.resolve().parent}:
        for toml in folder.glob("*.toml"):
            try:
                man = Manifest.load(toml)
            except WasmaiError:
                continue
            if man.sha256 == info.get("model_sha256"):
                return pre, man.softmax
    return pre, softmax


def _jsonable(value: Any) -> Any:
    from wasmai.cli._common import to_jsonable

    return to_jsonable(value)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def write_plot(report: BenchReport, dest: str | os.PathLike[str]) -> Path:
    """Histogram of the steady-state latencies (component, and native when measured) as a PNG.

    Needs matplotlib (``pip install 'wasmai[plot]'``); raises :class:`WasmaiError` if missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise WasmaiError("--plot needs matplotlib: pip install 'wasmai[plot]' (or pip install matplotlib)") from None
    from wasmai._atomic import atomic_path

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    series = [("component", report.steady.samples_ms)]
    if report.native.available:
        series.append(("native onnxruntime", report.native.samples_ms))
    lo = min(min(s) for _, s in series)
    hi = max(max(s) for _, s in series)
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 40)
    for label, s in series:
        ax.hist(s, bins=bins, alpha=0.6, label=f"{label} (p50 {np.median(s):.3f} ms)")
    ax.set_xlabel(f"latency per {report.mode} call (ms)")
    ax.set_ylabel("calls")
    ax.set_title(f"{report.model.get('name')}: {report.steady.latency_ms.n} calls, "
                 f"{report.config['threads'] or 'default'} intra-op threads")
    ax.legend()
    fig.tight_layout()
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return dest
