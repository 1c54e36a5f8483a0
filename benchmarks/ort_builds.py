"""Two builds of one ONNX Runtime, node by node.

The ``onnxruntime`` Python package ships ONNX Runtime twice: linked into its extension module
(``onnxruntime_pybind11_state*.so``, what ``onnxruntime.InferenceSession`` runs) and as
``libonnxruntime.so`` (the C API library wasmai's host loads). This script runs one model in both,
in one process, at the same thread count, with ONNX Runtime's profiler on, their calls in
alternating blocks, and prints the per-call time of each kind of node in each build (median over
the calls of each node's kernel time, summed over the nodes of that kind). Convolutions are split
by kind from the optimized graph (``group`` > 1: depthwise; 1x1 kernels: pointwise).

    python benchmarks/run.py ...        # once, to convert the models into benchmarks/.work
    python benchmarks/ort_builds.py [--model benchmarks/.work/efficientnet-lite0-fp32.onnx]
                                    [--threads 1] [-n 60] [--blocks 6]

The host is not involved: both sides are plain ONNX Runtime sessions on the same input bytes.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

#: ONNX Runtime's input type names -> numpy dtypes (the types wasi-nn carries but bf16).
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(uint8)": np.uint8, "tensor(int32)": np.int32, "tensor(int64)": np.int64}

#: Calls of each side dropped before the medians (the profiler records the warm-up runs too).
WARMUP = 5


def node_kinds(optimized: Path) -> dict[str, str]:
    """Node name -> kind (``conv depthwise``, ``conv pointwise``, ``conv other`` or the op type)
    in the optimized graph ONNX Runtime wrote (its node names are the profile's)."""
    import onnx

    kinds = {}
    for node in onnx.load(str(optimized), load_external_data=False).graph.node:
        kind = node.op_type
        if node.op_type in ("Conv", "FusedConv"):
            attrs = {a.name: a for a in node.attribute}
            group = attrs["group"].i if "group" in attrs else 1
            kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
            kind = "conv depthwise" if group > 1 else ("conv pointwise" if kernel == [1, 1] else "conv other")
        kinds[node.name] = kind
    return kinds


def profile_ms(path: Path, kinds: dict[str, str]) -> tuple[float, dict[str, tuple[int, float]]]:
    """From a profile: the median ``model_run`` (ms) and, per kind, (nodes, sum over them of each
    node's median kernel time in ms)."""
    per_node: dict[str, list[int]] = collections.defaultdict(list)
    runs = []
    for event in json.loads(path.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[event["name"].removesuffix("_kernel_time")].append(event["dur"])
        elif event.get("cat") == "Session" and event["name"] == "model_run":
            runs.append(event["dur"])
    sums: dict[str, tuple[int, float]] = {}
    for name, durs in per_node.items():
        kind = kinds.get(name, "other")
        count, total = sums.get(kind, (0, 0.0))
        sums[kind] = (count + 1, total + statistics.median(durs[WARMUP:]) / 1000)
    return statistics.median(runs[WARMUP:]) / 1000, sums


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / ".work" / "efficientnet-lite0-fp32.onnx")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads on both sides (0: default)")
    ap.add_argument("-n", type=int, default=60, help="timed calls per side")
    ap.add_argument("--blocks", type=int, default=6, help="alternating blocks")
    args = ap.parse_args(argv)
    if not args.model.is_file():
        sys.exit(f"error: {args.model} not found (python benchmarks/run.py converts the models)")

    import onnxruntime as ort

    from wasmai.host import Host, onnxruntime_library
    from wasmai.tensors import Tensor

    out = Path(tempfile.mkdtemp(prefix="wasmai-ort-builds-"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.enable_profiling, opts.profile_file_prefix = True, str(out / "python")
    opts.optimized_model_filepath = str(out / "optimized.onnx")
    opts.log_severity_level = 3  # its warning that an NCHWc-optimized graph is machine-specific: known
    python = ort.InferenceSession(str(args.model), sess_options=opts, providers=["CPUExecutionProvider"])
    library = Host(intra_op_threads=args.threads).library_baseline(args.model, profile_prefix=out / "library")
    feeds = {}
    for spec in python.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]  # a dynamic axis: 1
        dtype = ORT_TYPES[spec.type]
        feeds[spec.name] = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    tensors = [Tensor.from_numpy(name, x) for name, x in feeds.items()]
    wall: dict[str, list[float]] = {"python": [], "library": []}
    calls = {"python": lambda: python.run(None, feeds), "library": lambda: library.run(tensors)}
    for side in calls:
        for _ in range(WARMUP):
            calls[side]()
    block = max(1, args.n // args.blocks)
    for _ in range(args.blocks):
        for side, call in calls.items():
            for _ in range(block):
                t0 = time.perf_counter()
                call()
                wall[side].append((time.perf_counter() - t0) * 1000)
    files = {"python": Path(python.end_profiling()), "library": library.end_profiling()}
    kinds = node_kinds(out / "optimized.onnx")
    (py_run, py_kinds), (lib_run, lib_kinds) = (profile_ms(files[s], kinds) for s in ("python", "library"))

    print(f"{args.model.name}, {args.threads or 'default'} intra-op threads, {args.blocks} x {block} calls per side; "
          f"onnxruntime {ort.__version__}: the Python package's build vs {onnxruntime_library().name}")
    print(f"{'':24s} {'nodes':>5s} {'python ms':>10s} {'library ms':>11s} {'library/python':>15s}")
    for kind in sorted(set(py_kinds) | set(lib_kinds), key=lambda k: -py_kinds.get(k, (0, 0.0))[1]):
        count, p = py_kinds.get(kind, (0, 0.0))
        lib = lib_kinds.get(kind, (0, 0.0))[1]
        print(f"{kind:24s} {count:5d} {p:10.3f} {lib:11.3f} {lib / p if p else float('nan'):15.3f}")
    print(f"{'model_run (profiler)':24s} {'':5s} {py_run:10.3f} {lib_run:11.3f} {lib_run / py_run:15.3f}")
    py_wall, lib_wall = statistics.median(wall["python"]), statistics.median(wall["library"])
    print(f"{'call p50 (wall)':24s} {'':5s} {py_wall:10.3f} {lib_wall:11.3f} {lib_wall / py_wall:15.3f}")
    print(f"profiles: {files['python']}, {files['library']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
