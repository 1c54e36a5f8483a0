"""The timed loops of ``wasmai bench``: the component in the embedded host, the same model in ONNX
Runtime (the ``ort_baseline``) and the multi-instance throughput run.

Every duration is wall-clock time from :func:`time.perf_counter_ns`, kept in nanoseconds until
it is reported.
"""

from __future__ import annotations

import io
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wasmai.bench.report import OrtBaseline, Throughput
from wasmai.bench.stats import summarize
from wasmai.errors import WasmaiError
from wasmai.tensors import Tensor, softmax

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from wasmai.host import Component, Host, Instance
    from wasmai.manifest import Preprocess

#: Image pipeline stages, in order, as in the guest's ``last-timings`` record.
STAGES = ("decode", "preprocess", "inference", "postprocess")
#: The stages that are the guest's own work (the ``inference`` stage is the wasi-nn call).
GUEST_WORK_STAGES = ("decode", "preprocess", "postprocess")


def ms(ns: int) -> float:
    """Nanoseconds -> milliseconds."""
    return ns / 1e6


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (``getrusage(RUSAGE_SELF).ru_maxrss`` is
    KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def rounds(n: int, blocks: int) -> list[int]:
    """``n`` calls split into ``blocks`` blocks as equal as possible (no empty block)."""
    blocks = max(1, min(blocks, n))
    return [n // blocks + (1 if i < n % blocks else 0) for i in range(blocks)]


@dataclass
class Workload:
    """What one call does: ``classify(image, top_k)`` (mode ``"classify"``) or ``infer(tensors)``
    (mode ``"infer"``; ``arrays`` are the same tensors as numpy, by input name, for the
    ONNX Runtime baseline)."""

    mode: str
    tensors: list[Tensor] = field(default_factory=list)
    arrays: list[tuple[str, NDArray[Any]]] = field(default_factory=list)
    image: bytes = b""
    top_k: int = 5

    def call(self, inst: Instance) -> None:
        """One call on ``inst`` (results discarded)."""
        if self.mode == "classify":
            inst.classify(self.image, self.top_k)
        else:
            inst.infer(self.tensors)


class ComponentRunner:
    """Timed calls on one instance; per call: ``wall`` ns, the host's ``ort_run_ns`` and
    (classify) the guest's per-stage microseconds."""

    def __init__(self, inst: Instance, work: Workload) -> None:
        self.inst, self.work = inst, work
        self.wall: list[int] = []
        self.ort: list[int] = []
        self.stages: dict[str, list[int]] = {s: [] for s in STAGES}

    def warmup(self, k: int) -> None:
        """``k`` untimed calls."""
        for _ in range(k):
            self.work.call(self.inst)

    def block(self, k: int) -> None:
        """``k`` timed calls."""
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


class BaselineRunner:
    """Timed calls of ``call``, one way of running the component's model without the host:
    ``wall`` ns per call, and (classify) per-stage microseconds in ``stages``, which ``call``
    appends to. ``engine`` names what runs it, for the report."""

    def __init__(self, model: Path, version: str, engine: str, call: Callable[[], None],
                 stages: dict[str, list[int]] | None = None) -> None:
        self.model, self.version, self.engine = model, version, engine
        self._call, self.stages = call, stages
        self.wall: list[int] = []

    def warmup(self, k: int) -> None:
        """``k`` untimed calls (stage timings of the warm-up are dropped)."""
        for _ in range(k):
            self._call()
        if self.stages is not None:
            for v in self.stages.values():
                v.clear()

    def block(self, k: int) -> None:
        """``k`` timed calls."""
        call, clock = self._call, time.perf_counter_ns
        for _ in range(k):
            t0 = clock()
            call()
            self.wall.append(clock() - t0)

    def report(self, component_p50_ms: float) -> OrtBaseline:
        """The timed calls so far as an :class:`OrtBaseline`, with ``ratio_p50`` =
        ``component_p50_ms`` / the baseline's p50."""
        samples = [ms(x) for x in self.wall]
        latency = summarize(samples)
        return OrtBaseline(available=True, model=str(self.model), onnxruntime_version=self.version,
                           engine=self.engine, latency_ms=latency,
                           stages_us={s: summarize(v) for s, v in self.stages.items()} if self.stages else None,
                           ratio_p50=component_p50_ms / latency.p50, samples_ms=samples)


class OrtBaselineRunner(BaselineRunner):
    """The same model in ``onnxruntime.InferenceSession`` (CPU EP, ``threads`` intra-op threads,
    0 = ONNX Runtime's default). Infer mode: ``session.run`` on the same arrays. Classify mode:
    Pillow decode, :func:`wasmai.preprocess.preprocess_image` with ``preprocess``,
    ``session.run``, :func:`wasmai.tensors.softmax` (when ``apply_softmax``) + top-k in numpy,
    each stage timed (microseconds) like the guest's ``last_timings``. Raises WasmaiError for
    classify mode without ``preprocess``."""

    def __init__(self, model: Path, work: Workload, threads: int, preprocess: Preprocess | None = None,
                 apply_softmax: bool = True) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        clock = time.perf_counter_ns
        stages: dict[str, list[int]] | None = None
        call: Callable[[], None]
        if work.mode == "classify":
            from PIL import Image

            from wasmai.preprocess import preprocess_image

            if preprocess is None:
                raise WasmaiError("the ONNX Runtime baseline of an image component needs its preprocessing")
            pre = preprocess
            in_name = sess.get_inputs()[0].name
            timed = stages = {s: [] for s in STAGES}

            def call() -> None:
                t0 = clock()
                with Image.open(io.BytesIO(work.image)) as img:
                    rgb = img.convert("RGB")
                t1 = clock()
                x = preprocess_image(rgb, pre)
                t2 = clock()
                logits = sess.run(None, {in_name: x})[0].reshape(-1).astype(np.float32)
                t3 = clock()
                scores = softmax(logits) if apply_softmax else logits
                top = np.argsort(-scores, kind="stable")[: work.top_k]
                _ = [(int(i), float(scores[i])) for i in top]
                t4 = clock()
                for s, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    timed[s].append(dt // 1000)
        else:
            feed = dict(work.arrays)

            def call() -> None:
                sess.run(None, feed)

        super().__init__(model, ort.__version__, f"onnxruntime {ort.__version__} (Python)", call, stages)


class LibraryBaselineRunner(BaselineRunner):
    """The same model in the host's own ONNX Runtime library through its C API
    (:meth:`wasmai.host.Host.library_baseline`: no wasm, no wasi-nn), on the same tensors as the
    component; infer mode only. Each call's wall time includes making the input values and
    releasing the outputs, as ``session.run`` does in the Python baseline."""

    def __init__(self, host: Host, model: Path, work: Workload) -> None:
        import onnxruntime as ort

        from wasmai.host import onnxruntime_library

        baseline, tensors = host.library_baseline(model), work.tensors

        def call() -> None:
            baseline.run(tensors)

        super().__init__(model, ort.__version__, f"onnxruntime {ort.__version__} (C API, {onnxruntime_library().name})",
                         call)


def throughput(host: Host, component: Component, work: Workload, concurrency: int, warmup: int,
               n: int) -> Throughput:
    """``concurrency`` fresh instances of ``component``, each driven by its own thread doing
    ``warmup`` untimed then ``n`` timed calls. QPS = all timed calls / wall time from the common
    start (a barrier after the warm-ups) to the last call's end. Re-raises the first error of any
    thread."""
    instances: Sequence[Instance] = [host.instantiate(component) for _ in range(concurrency)]
    for inst in instances:
        inst.load()
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
    samples = [ms(x) for r in results for x in r]
    return Throughput(concurrency=concurrency, calls=len(samples), wall_s=wall_ns / 1e9,
                      qps=len(samples) / (wall_ns / 1e9), latency_ms=summarize(samples))
