"""What ``wasmai bench`` reports (``--json`` prints :class:`BenchReport` field by field).

Times are in the unit their field names: ``_ms`` milliseconds, ``_us`` microseconds, ``_s``
seconds; sizes in bytes. See :mod:`wasmai.bench` for how each number is measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wasmai.bench.stats import Stats


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
    host's ONNX Runtime compute time per call (ms). ``guest_work_us``: the guest's decode +
    preprocess + postprocess per call (``classify`` only; microseconds). ``host_overhead_us``:
    per-call latency minus ``ort_run`` minus guest work (microseconds). ``stages_us``: guest-side
    ``last_timings`` per stage (image components, ``classify`` only; microseconds)."""

    latency_ms: Stats
    ort_run_ms: Stats | None = None
    host_overhead_us: Stats | None = None
    guest_work_us: Stats | None = None
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
    ONNX Runtime) after the component's cold start and warm-up, before the ONNX Runtime baseline's
    session is created, and at the end of the run; the instance's linear memory (bytes)."""

    peak_rss_bytes: int
    linear_memory_bytes: int | None
    peak_rss_bytes_end: int | None = None


@dataclass
class OrtBaseline:
    """The same model directly in ONNX Runtime: ``onnxruntime.InferenceSession`` (the report's
    ``ort_baseline``), or the host's own ``libonnxruntime`` through its C API
    (``library_baseline``); ``engine`` says which. ``available`` false means it was skipped, and
    ``skipped_reason`` says why. ``ratio_p50`` = component p50 / baseline p50."""

    available: bool
    skipped_reason: str | None = None
    model: str | None = None
    onnxruntime_version: str | None = None
    engine: str | None = None
    latency_ms: Stats | None = None
    stages_us: dict[str, Stats] | None = None
    ratio_p50: float | None = None
    samples_ms: list[float] = field(default_factory=list)


@dataclass
class BenchReport:
    """Everything ``wasmai bench`` reports. ``mode`` is ``"infer"`` or ``"classify"``."""

    component: str
    component_sha256: str
    model: dict[str, Any]
    mode: str
    config: dict[str, Any]
    cold_start: ColdStart
    steady: Steady
    memory: Memory
    ort_baseline: OrtBaseline
    library_baseline: OrtBaseline
    throughput: Throughput | None = None
    verification: dict[str, Any] | None = None
    execution_provider: str | None = None
    histogram_ms: dict[str, Any] | None = None
    plot: str | None = None
    notes: list[str] = field(default_factory=list)
