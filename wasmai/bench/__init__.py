"""``wasmai bench``: latency, cold start, throughput and memory of a component, next to the same
model run directly in ONNX Runtime in the same process.

What is measured (all wall-clock times from :func:`time.perf_counter_ns`):

* **cold start**: ``Host.load_component`` (a Cranelift compile, or a load from wasmtime's on-disk
  compilation cache; ``cache_hit`` says which), ``Host.instantiate``, the wasi-nn graph load
  (``Instance.load``) and the first call (``infer`` or ``classify``).
* **steady state**: ``n`` calls after ``warmup`` calls, one instance, one thread. Reported as
  min, p50, p90, p99, max, mean and sample standard deviation in milliseconds (see
  :func:`summarize`). For each call the host's own ONNX Runtime compute time
  (``host_stats()["ort_run_ns"]``) is read back. For ``classify`` the guest's own work
  (**guest work** = its decode + preprocess + postprocess stages from ``last_timings``) is
  separated, and **host overhead** = call time minus ``ort_run_ns`` minus guest work: what the
  component boundary, the wasi-nn calls and their copies cost on top of the model.
* **throughput** (``concurrency`` > 1): ``concurrency`` instances of the same compiled component,
  each driven by its own thread (calls release the GIL), each doing ``n`` calls after its warm-up;
  QPS = total calls / wall time from the common start (a barrier) to the last call's end.
* **memory**: the process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on
  Linux) read after the component's cold start and warm-up, before the ONNX Runtime baseline's
  session exists (``peak_rss_bytes``), and again at the end (``peak_rss_bytes_end``); the
  instance's linear memory (``host_stats()["linear_memory_bytes"]``).
* **ort_baseline**: the same ONNX file in ``onnxruntime.InferenceSession`` (CPU execution
  provider, the same intra-op thread count) on the same inputs, in the same process (the CLI's
  ``--native``). Both sides are warmed up, then the ``n`` timed calls of each run in
  :data:`BASELINE_ROUNDS` alternating blocks (component block, baseline block, ...; never
  overlapping), so that a change of load on the machine affects both alike. ``ratio_p50`` =
  component p50 / baseline p50. For image components the baseline is :mod:`wasmai.preprocess`
  (Pillow + numpy) + ONNX Runtime + softmax/top-k in numpy, timed per stage like the guest's
  ``last_timings``.
* **library_baseline** (infer mode, with the ort_baseline): the same ONNX file in the host's own
  ``libonnxruntime`` through its C API (:meth:`wasmai.host.Host.library_baseline`), a third
  runner in the same alternating blocks. The ``onnxruntime`` Python package links a separate
  build of the same release into its extension module, and the two binaries run some kernels at
  different speeds (benchmarks/README.md), so ``library_baseline.ratio_p50`` is what the host
  itself costs, and ``ort_baseline.ratio_p50`` what a user of the Python package sees.

Percentiles: :mod:`wasmai.bench.stats` (Hyndman & Fan definition 7). The package:
:mod:`~wasmai.bench.stats` (statistics), :mod:`~wasmai.bench.runners` (timed loops),
:mod:`~wasmai.bench.report` (the report dataclasses), :mod:`~wasmai.bench.plot` (``--plot``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmai.bench.plot import write_plot
from wasmai.bench.report import BenchReport, ColdStart, Memory, OrtBaseline, Steady, Throughput
from wasmai.bench.runners import (
    GUEST_WORK_STAGES,
    STAGES,
    ComponentRunner,
    LibraryBaselineRunner,
    OrtBaselineRunner,
    Workload,
    ms,
    peak_rss_bytes,
    rounds,
    throughput,
)
from wasmai.bench.stats import PERCENTILE_METHOD, PERCENTILE_SOURCE, Stats, histogram, summarize
from wasmai.errors import WasmaiError
from wasmai.manifest import Manifest, Preprocess, sha256_file
from wasmai.sandbox import SandboxOptions
from wasmai.vocab import Task

__all__ = [
    "BASELINE_ROUNDS", "PERCENTILE_METHOD", "STAGES", "BenchOptions", "BenchReport", "ColdStart", "Memory",
    "OrtBaseline", "Stats", "Steady", "Throughput", "bench", "find_ort_model", "histogram", "summarize",
    "write_plot",
]

#: The steady-state calls are split into this many blocks, alternating component and ONNX Runtime
#: baseline (component block, baseline block, ...), so that a change of load on the machine during
#: the run affects both sides alike.
BASELINE_ROUNDS = 5


@dataclass
class BenchOptions:
    """Everything ``wasmai bench`` needs. Exactly one input source: ``image`` (PNG/JPEG for an
    image-classification component), ``inputs`` (numpy arrays by input name or position, matched
    by :func:`wasmai.inputs.match_inputs`) or ``random`` (seeded tensors; ``dims`` sizes dynamic
    axes by name, default 1).

    ``n`` timed calls (per instance) after ``warmup`` calls; ``concurrency`` > 1 adds the
    throughput run. ``threads``: ONNX Runtime intra-op threads for both the host and the baseline
    (0 = ONNX Runtime's default). ``ort_baseline``: None = on when the ONNX model can be found
    (else skipped, with the reason in the report), True = required (error if not found), False =
    off; ``model`` is that ONNX file (default: found beside the component by sha256).
    ``policy`` (a :class:`wasmai.sign.VerificationPolicy`, or None to skip) is checked before
    anything is compiled; ``bundle`` is its signature bundle (default beside the component);
    ``verified``, a verification already made of exactly this file (what
    :func:`wasmai.oci.resolve_component` returns), is used instead of repeating it.
    ``sandbox`` grants directories/env/stdio and sets the limits of the host; ``graphs`` serve
    wasi-nn load-by-name; ``cache_dir`` holds compiled components. ``plot``: a PNG to write.
    """

    component: Path
    image: Path | None = None
    inputs: Mapping[str, Any] | None = None
    random: bool = False
    dims: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    n: int = 100
    warmup: int = 10
    concurrency: int = 1
    threads: int = 0
    ort_baseline: bool | None = None
    model: Path | None = None
    top_k: int = 5
    graphs: dict[str, Path] = field(default_factory=dict)
    allow_target_fallback: bool = False
    cache_dir: Path | None = None
    sandbox: SandboxOptions = field(default_factory=SandboxOptions)
    policy: Any = None
    bundle: Path | None = None
    verified: Any = None
    plot: Path | None = None


def _check_options(opts: BenchOptions) -> None:
    """Raise :class:`WasmaiError` for a missing component, bad counts or not exactly one input source."""
    if not Path(opts.component).is_file():
        raise WasmaiError(f"component not found: {opts.component}")
    if opts.n < 1 or opts.warmup < 0 or opts.concurrency < 1 or opts.threads < 0 or opts.top_k < 1:
        raise WasmaiError("-n, --concurrency and --top-k must be >= 1; --warmup and --threads >= 0")
    given = [x for x in (opts.image is not None, opts.inputs is not None, opts.random) if x]
    if len(given) != 1:
        raise WasmaiError("give exactly one input source: --image, --input/--inputs, or --random")
    if opts.dims and not opts.random:
        raise WasmaiError("--dim only applies with --random")


def bench(opts: BenchOptions, progress: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark ``opts.component``; see the module docstring for what is measured and how.

    ``progress`` receives one short line per phase. Returns a :class:`BenchReport` (ms, us, s and
    bytes as its field names say). Raises :class:`WasmaiError` on bad options or inputs,
    VerificationError when the signature check fails, ComponentError / InferenceError from the
    component.
    """
    from wasmai.host import Host
    from wasmai.inputs import input_specs, match_inputs, random_inputs, read_image
    from wasmai.jsonable import to_jsonable
    from wasmai.runtime import load_verified, verify_before_run
    from wasmai.tensors import Tensor

    say = progress or (lambda _msg: None)
    _check_options(opts)
    path = Path(opts.component)
    image_bytes = read_image(opts.image) if opts.image is not None else None

    verification = verified_digest = None
    result = opts.verified
    if result is None and opts.policy is not None:
        say("verifying signature")
        result = verify_before_run(path, opts.policy, opts.bundle)
    if result is not None:
        verification, verified_digest = to_jsonable(result), result.digest

    host = Host(graphs=opts.graphs, allow_target_fallback=opts.allow_target_fallback,
                intra_op_threads=opts.threads, cache_dir=opts.cache_dir, **opts.sandbox.host_kwargs())
    say("compiling component")
    clock = time.perf_counter_ns
    t0 = clock()
    comp = load_verified(host, path, verified_digest)  # a cached load neither reads nor hashes the file
    compile_ms = comp.compile_ms or ms(clock() - t0)
    t0 = clock()
    inst = host.instantiate(comp)
    instantiate_ms = inst.instantiate_ms or ms(clock() - t0)
    info = inst.info()
    task = info.get("task", Task.TENSOR)

    if image_bytes is not None:
        if task != Task.IMAGE_CLASSIFICATION:
            raise WasmaiError(f"--image needs an image-classification component; this one is {task!r} "
                              "(use --input, --inputs or --random)")
        work = Workload(mode="classify", image=image_bytes, top_k=opts.top_k)
    else:
        specs = input_specs(info)
        arrays = opts.inputs if opts.inputs is not None else random_inputs(specs, opts.dims, opts.seed)
        matched = match_inputs(arrays, specs)
        work = Workload(mode="infer", tensors=[Tensor.from_numpy(s.name, a, s.dtype) for s, a in matched],
                        arrays=[(s.name, a) for s, a in matched])

    t0 = clock()
    inst.load()
    load_ms = ms(clock() - t0)
    say("first call")
    t0 = clock()
    work.call(inst)
    first_ms = ms(clock() - t0)
    cold = ColdStart(compile_ms=compile_ms, cache_hit=comp.cache_hit, instantiate_ms=instantiate_ms,
                     load_ms=load_ms, first_call_ms=first_ms,
                     total_ms=compile_ms + instantiate_ms + load_ms + first_ms)

    notes: list[str] = []
    comp_runner = ComponentRunner(inst, work)
    say(f"steady state: {opts.warmup} warm-up + {opts.n} calls")
    comp_runner.warmup(opts.warmup)
    memory = Memory(peak_rss_bytes=peak_rss_bytes(), linear_memory_bytes=None)

    baseline_runner = library_runner = None
    baseline = OrtBaseline(available=False, skipped_reason="--no-native")
    if opts.ort_baseline is not False:
        found, reason = find_ort_model(path, str(info.get("model_sha256", "")), opts.model)
        if found is None:
            if opts.ort_baseline:
                raise WasmaiError(f"--native: {reason}")
            baseline = OrtBaseline(available=False, skipped_reason=reason)
        else:
            pre, apply_softmax = (_preprocess_from_info(info, found, path) if work.mode == "classify"
                                  else (None, True))
            baseline_runner = OrtBaselineRunner(found, work, opts.threads, preprocess=pre,
                                                apply_softmax=apply_softmax)
            baseline_runner.warmup(opts.warmup)
            if work.mode == "infer":
                library_runner = LibraryBaselineRunner(host, found, work)
                library_runner.warmup(opts.warmup)
    library = OrtBaseline(available=False, skipped_reason=(
        "infer mode only" if baseline_runner is not None and work.mode == "classify" else baseline.skipped_reason))

    runners = [r for r in (comp_runner, baseline_runner, library_runner) if r is not None]
    blocks = rounds(opts.n, BASELINE_ROUNDS if len(runners) > 1 else 1)
    if len(runners) > 1:
        say(f"component and native onnxruntime in {len(blocks)} alternating blocks")
    for size in blocks:
        for runner in runners:
            runner.block(size)

    wall, ort_ns = comp_runner.wall, comp_runner.ort
    samples = [ms(x) for x in wall]
    steady = Steady(latency_ms=summarize(samples), samples_ms=samples)
    # Per call, in microseconds: guest work = the guest's own decode + preprocess + postprocess
    # (classify; 0 for infer), host overhead = what remains beyond it and ONNX Runtime's run.
    guest_us = [0.0] * len(wall)
    if work.mode == "classify":
        steady.stages_us = {s: summarize(v) for s, v in comp_runner.stages.items()}
        guest_us = [float(sum(t)) for t in zip(*(comp_runner.stages[s] for s in GUEST_WORK_STAGES), strict=True)]
        steady.guest_work_us = summarize(guest_us)
    if len(ort_ns) == len(wall) and ort_ns:
        steady.ort_run_ms = summarize([ms(x) for x in ort_ns])
        overhead = [(w - o) / 1e3 - g for w, o, g in zip(wall, ort_ns, guest_us, strict=True)]
        steady.host_overhead_us = summarize(overhead)
    else:
        notes.append("the host did not report ort_run_ns; host overhead not computed")
    if baseline_runner is not None:
        baseline = baseline_runner.report(steady.latency_ms.p50)
    if library_runner is not None:
        library = library_runner.report(steady.latency_ms.p50)
    hstats = inst.host_stats()
    execution_provider = hstats.get("execution_provider")
    linear = hstats.get("linear_memory_bytes")
    memory.linear_memory_bytes = int(linear) if linear is not None else None
    inst.release()

    tp = None
    if opts.concurrency > 1:
        say(f"throughput: {opts.concurrency} instances on {opts.concurrency} threads")
        tp = throughput(host, comp, work, opts.concurrency, opts.warmup, opts.n)
        if opts.threads != 1:
            notes.append(f"throughput: the {opts.concurrency} instances share ONNX Runtime's one intra-op pool "
                         f"({opts.threads or 'default'} threads); --threads 1 gives one core per call")
    memory.peak_rss_bytes_end = peak_rss_bytes()

    report = BenchReport(
        component=str(path), component_sha256=comp.sha256,
        model={k: info.get(k) for k in ("name", "version", "task", "placement", "model_sha256")},
        mode=work.mode,
        config={"n": opts.n, "warmup": opts.warmup, "concurrency": opts.concurrency, "threads": opts.threads,
                "top_k": opts.top_k if work.mode == "classify" else None,
                "image": str(opts.image) if opts.image is not None else None,
                "inputs": [{"name": k, "dtype": str(v.dtype), "shape": list(v.shape)} for k, v in work.arrays],
                "random": opts.random, "seed": opts.seed if opts.random else None,
                "percentile_method": PERCENTILE_SOURCE},
        cold_start=cold, steady=steady, memory=memory, ort_baseline=baseline,
        library_baseline=library, throughput=tp,
        verification=verification, execution_provider=execution_provider,
        histogram_ms=histogram(samples), notes=notes,
    )
    if opts.policy is None:
        report.notes.append("signature not verified (no policy option given)")
    if opts.plot is not None:
        report.plot = str(write_plot(report, opts.plot))
    return report


def find_ort_model(component: Path, model_sha256: str, model: str | os.PathLike[str] | None = None
                   ) -> tuple[Path | None, str | None]:
    """The ONNX file the component was built from, as ``(path, None)``, or ``(None, reason)``.

    ``model`` (``--model``) is used if given; it must have the component's sha256 (raises
    :class:`WasmaiError` if it is missing or differs). Otherwise the manifests (``*.toml``) and
    ``*.onnx`` files beside the component are searched for a model with that sha256 (the
    component's own stem first).
    """
    if model is not None:
        path = Path(model)
        if not path.is_file():
            raise WasmaiError(f"--model not found: {path}")
        if model_sha256 and sha256_file(path) != model_sha256:
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
        if sha256_file(onnx_file) == model_sha256:
            return onnx_file, None
    return None, (f"no ONNX model with sha256 {model_sha256[:16]}... beside {component.name} "
                  "(no matching manifest or .onnx); pass --model FILE.onnx")


def _preprocess_from_info(info: Mapping[str, Any], model: Path, component: Path) -> tuple[Preprocess, bool]:
    """The component's preprocessing (from ``info()["preprocess"]``) as a
    :class:`wasmai.manifest.Preprocess`, and whether it applies softmax (from a manifest beside
    the model or component that has this model's sha256; default true). Raises WasmaiError when
    the component reports no preprocessing."""
    p = info.get("preprocess")
    if not p:
        raise WasmaiError("the image component reports no preprocessing; cannot run the native side")
    pre = Preprocess(crop=(int(p["crop_height"]), int(p["crop_width"])),
                     resize_shorter=p.get("resize_shorter"), color=p.get("color", "RGB"),
                     layout=p.get("layout", "NCHW"), mean=[float(x) for x in p["mean"]],
                     std=[float(x) for x in p["std"]])
    for folder in {model.resolve().parent, component.resolve().parent}:
        for toml in folder.glob("*.toml"):
            try:
                man = Manifest.load(toml)
            except WasmaiError:
                continue
            if man.sha256 == info.get("model_sha256"):
                return pre, man.softmax
    return pre, True
