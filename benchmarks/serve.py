"""``wasmai serve`` under a real HTTP load generator, next to the in-process ``wasmai bench``.

    sudo apt-get install -y wrk            # Debian/Ubuntu: wrk 4.x (or: cargo install oha)
    python benchmarks/serve.py [--duration 5] [--concurrency 1,4,16] [--instances 2]
                               [--isolation process,thread] [--profile]

Loopback only and bounded: the server binds 127.0.0.1, each point runs ``--duration`` seconds
(plus a 1 s warm-up) with ``wrk --latency`` (``oha -z`` when wrk is missing), at concurrency 1, 4
and 16 (wrk: min(c, 2) threads, c connections, keep-alive), for

* the tiny MLP (``tests/onnx_factory.py`` ``mlp``: x [1, 16] -> y [1, 4]), JSON ``POST .../infer``
  from a small Lua script;
* EfficientNet-Lite0 (fp32 image-classification component) when a build of it is cached (the
  example's ``examples/image-classification/out/effnet-fp32.wasm`` or benchmarks/run.py's
  ``benchmarks/.work/efficientnet-lite0-fp32.image-classification.wasm``), else the tests' tiny
  image classifier (``onnx_factory.cnn_classifier``), raw PNG ``POST .../classify?top_k=5``.

Every point is measured with the server in each ``--isolation`` mode (default both): ``process``
(the default of ``wasmai serve``: each instance in a worker process, request tensors and results
pickled over a pipe) and ``thread`` (instances on the server's threads).

The same components are measured in process by ``wasmai.bench`` (one instance, steady-state
p50/p90/p99, and QPS with 2 instances on 2 threads) in the same run. After each point the
server's own histograms (``wasmai_request_queue_seconds``, ``_inference_seconds``,
``wasmai_request_seconds``) give the mean time per request in the queue, in the guest call and in
the whole handler. ``--profile`` also runs one extra MLP point with the server under cProfile and
prints where its event-loop thread spends its time.

Prints a markdown table and writes ``benchmarks/results/serve-<date>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "serve"
RESULTS = HERE / "results"
sys.path.insert(0, str(REPO / "tests"))

# Targets from issue 14.
TARGET_MLP_QPS = 5000
TARGET_MLP_P99_MS = 10.0
TARGET_IMAGE_EXTRA_MS = 1.0


def log(msg: str) -> None:
    print(f"[serve-bench] {msg}", file=sys.stderr, flush=True)


# --- components ----------------------------------------------------------------------------------


def mlp_component() -> Path:
    import onnx_factory as factory

    from wasmai.build import build

    out = WORK / "mlp.wasm"
    if not out.is_file():
        onnx = factory.save(factory.mlp(), WORK / "mlp.onnx")
        log("build mlp.wasm")
        build(onnx, output=out)
    return out


def image_component() -> tuple[str, Path]:
    """(name, component): EfficientNet-Lite0 if a build is cached, else the tests' tiny classifier."""
    for cached in (REPO / "examples" / "image-classification" / "out" / "effnet-fp32.wasm",
                   HERE / ".work" / "efficientnet-lite0-fp32.image-classification.wasm"):
        if cached.is_file():
            return "efficientnet-lite0", cached
    import onnx_factory as factory

    from wasmai.build import build
    from wasmai.manifest import Manifest, Preprocess, TensorSpec, sha256_file

    out = WORK / "cnn.wasm"
    if not out.is_file():
        onnx = factory.save(factory.cnn_classifier(), WORK / "cnn.onnx")
        Manifest(name="tiny-cnn", task="image-classification", onnx="cnn.onnx", sha256=sha256_file(onnx),
                 inputs=[TensorSpec("input", "fp32", [1, 3, 32, 32])], outputs=[TensorSpec("logits", "fp32", [1, 10])],
                 preprocess=Preprocess(crop=(32, 32), resize_shorter=36, color="RGB", layout="NCHW",
                                       mean=[127.5] * 3, std=[127.5] * 3),
                 softmax=True, labels=[f"class{i}" for i in range(10)], base_dir=WORK).save(WORK / "cnn.toml")
        log("build cnn.wasm (no EfficientNet-Lite0 build cached)")
        build(onnx, output=out)
    return "tiny-cnn (test classifier)", out


def test_image(size: int) -> Path:
    from PIL import Image

    path = WORK / f"image-{size}.png"
    if not path.is_file():
        rng = np.random.default_rng(7)
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


# --- in-process figures ---------------------------------------------------------------------------


def in_process(component: Path, image: Path | None, n: int) -> dict:
    from wasmai.bench import BenchOptions, bench

    opts = BenchOptions(component, image=image, random=image is None, n=n, warmup=max(10, n // 20),
                        concurrency=2, ort_baseline=False)
    report = bench(opts)
    lat = report.steady.latency_ms
    tp = report.throughput
    return {"p50_ms": lat.p50, "p90_ms": lat.p90, "p99_ms": lat.p99,
            "qps_2_instances": tp.qps if tp is not None else None}


# --- the server and the load generator ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, repo: Path, log_path: Path, isolation: str, profile: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*prefix, "-m", "wasmai", "serve", str(repo), "--port", str(self.port),
                                      "--poll", "0", "--isolation", isolation], stdout=subprocess.DEVNULL,
                                     stderr=self._log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited {self.proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit("server did not become ready")

    def metrics(self) -> dict[tuple[str, str], float]:
        """{(sample name, model): value} of the latency histograms' _sum and _count."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.endswith(("_sum", "_count")) and "model" in s.labels:
                    key = (s.name, s.labels["model"])
                    out[key] = out.get(key, 0.0) + s.value
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def lua_post(path: Path, body_file: Path, content_type: str) -> Path:
    """A wrk script POSTing ``body_file``'s bytes."""
    path.write_text(f'''local f = assert(io.open("{body_file}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "{content_type}"
''')
    return path


def seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def run_wrk(url: str, script: Path, concurrency: int, duration: float) -> dict:
    threads = min(concurrency, 2)
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{duration:g}s", "--timeout", "10s",
           "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    total = int(re.search(r"^\s+(\d+) requests in", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"tool": "wrk", "requests": total, "qps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": seconds(lat["50"]) * 1e3, "p90_ms": seconds(lat["90"]) * 1e3, "p99_ms": seconds(lat["99"]) * 1e3,
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def run_oha(url: str, body_file: Path, content_type: str, concurrency: int, duration: float) -> dict:
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{duration:g}s", "-c", str(concurrency),
           "-m", "POST", "-D", str(body_file), "-T", content_type, url]
    doc = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout)
    pct = doc["latencyPercentiles"]
    codes = doc.get("statusCodeDistribution", {})
    return {"tool": "oha", "requests": sum(codes.values()), "qps": doc["summary"]["requestsPerSec"],
            "p50_ms": pct["p50"] * 1e3, "p90_ms": pct["p90"] * 1e3, "p99_ms": pct["p99"] * 1e3,
            "non_2xx": sum(v for k, v in codes.items() if not k.startswith("2")),
            "socket_errors": sum(doc.get("errorDistribution", {}).values())}


def load(tool: str, url: str, body: Path, content_type: str, script: Path, c: int, duration: float) -> dict:
    if tool == "wrk":
        return run_wrk(url, script, c, duration)
    return run_oha(url, body, content_type, c, duration)


def server_side(before: dict, after: dict, model: str) -> dict:
    """Mean ms per request in the queue, the guest call and the whole handler, between two scrapes."""
    out = {}
    for key, name in (("queue_ms", "wasmai_request_queue_seconds"),
                      ("inference_ms", "wasmai_request_inference_seconds"),
                      ("handler_ms", "wasmai_request_seconds")):
        n = after.get((name + "_count", model), 0) - before.get((name + "_count", model), 0)
        s = after.get((name + "_sum", model), 0) - before.get((name + "_sum", model), 0)
        out[key] = s / n * 1e3 if n else None
    return out


# --- report ------------------------------------------------------------------------------------------


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(doc: dict) -> str:
    lines = [f"### wasmai serve, {doc['date']} ({doc['machine']})", "",
             f"Load generator: {doc['tool']}, {doc['duration_s']:g} s per point, loopback, keep-alive; "
             f"server: {doc['instances']} instances per model, JSON for the MLP, raw PNG (`/classify`) for "
             "the image model. Server-side columns are means from the server's own histograms.", "",
             "| model | isolation | c | QPS | p50 ms | p90 ms | p99 ms | non-2xx | server handler ms | queue ms "
             "| guest call ms | in-process p50 ms | in-process p99 ms | in-process QPS (2 inst.) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in doc["rows"]:
        ip = doc["in_process"][row["model"]]
        lines.append(f"| {row['model']} | {row['isolation']} | {row['c']} | {row['qps']:.0f} | {row['p50_ms']:.2f} "
                     f"| {row['p90_ms']:.2f} "
                     f"| {row['p99_ms']:.2f} | {row['non_2xx'] + row['socket_errors']} | {fmt(row['handler_ms'])} "
                     f"| {fmt(row['queue_ms'])} | {fmt(row['inference_ms'])} | {ip['p50_ms']:.3f} | {ip['p99_ms']:.3f} "
                     f"| {fmt(ip['qps_2_instances'], '.0f')} |")
    lines += ["", "Targets (issue 14):", ""]
    lines += [f"- {t['target']}: {t['measured']} - **{'met' if t['ok'] else 'not met'}**" for t in doc["targets"]]
    if doc.get("profile"):
        lines += ["", "cProfile of the server's main (event-loop) thread under the MLP load at c=4 "
                  f"({doc['profile']['seconds']:.0f} s, {doc['profile']['requests']} requests), top by own time:", "",
                  "```", *doc["profile"]["top"], "```"]
    return "\n".join(lines) + "\n"


def targets(doc: dict, image_name: str, isolation: str) -> list[dict]:
    out = []
    mlp = [r for r in doc["rows"] if r["model"] == "mlp" and r["isolation"] == isolation]
    best = max(mlp, key=lambda r: r["qps"])
    out.append({"target": f"{isolation} isolation: tiny MLP >= {TARGET_MLP_QPS} requests/s with p99 <= "
                f"{TARGET_MLP_P99_MS:g} ms",
                "measured": f"best {best['qps']:.0f} requests/s at c={best['c']} (p99 {best['p99_ms']:.2f} ms)",
                "ok": any(r["qps"] >= TARGET_MLP_QPS and r["p99_ms"] <= TARGET_MLP_P99_MS for r in mlp)})
    one = next(r for r in doc["rows"] if r["model"] == image_name and r["c"] == 1 and r["isolation"] == isolation)
    ip = doc["in_process"][image_name]["p50_ms"]
    out.append({"target": f"{isolation} isolation: {image_name} at c=1: served p50 <= in-process p50 + "
                f"{TARGET_IMAGE_EXTRA_MS:g} ms",
                "measured": f"served {one['p50_ms']:.2f} ms vs in-process {ip:.2f} ms (+{one['p50_ms'] - ip:.2f} ms)",
                "ok": one["p50_ms"] <= ip + TARGET_IMAGE_EXTRA_MS})
    return out


def profile_summary(path: Path, n: int = 18) -> list[str]:
    import pstats

    stats = pstats.Stats(str(path))
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]  # tottime
    total = sum(v[2] for v in stats.stats.values())
    out = [f"{'own s':>7} {'share':>6} {'calls':>9}  function"]
    for (file, line, func), (_cc, nc, tt, _ct, _callers) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        out.append(f"{tt:7.2f} {tt / total:6.1%} {nc:9d}  {func} ({where})")
    return out


# --- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per point (default 5)")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--instances", type=int, default=2, help="instances per served model (default 2)")
    ap.add_argument("--n", type=int, default=500, help="in-process timed calls (default 500)")
    ap.add_argument("--isolation", default="process,thread",
                    help="wasmai serve --isolation modes to measure, in turn (default process,thread)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile the server under the MLP load (c=4, the first --isolation mode)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = args.isolation.split(",")
    tool = "wrk" if shutil.which("wrk") else "oha" if shutil.which("oha") else None
    if tool is None:
        raise SystemExit("no load generator: sudo apt-get install -y wrk (or: cargo install oha)")
    WORK.mkdir(parents=True, exist_ok=True)

    mlp = mlp_component()
    image_name, image_wasm = image_component()
    image = test_image(256 if image_name == "efficientnet-lite0" else 48)
    tmp = Path(tempfile.mkdtemp(prefix="wasmai-serve-bench-"))
    repo = tmp / "models"
    for name, wasm in (("mlp", mlp), ("image", image_wasm)):
        (repo / name).mkdir(parents=True)
        shutil.copy(wasm, repo / name / "model.wasm")
        (repo / name / "config.toml").write_text(f"instances = {args.instances}\nqueue = 64\n")
    body = tmp / "mlp.json"
    body.write_text(json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16],
                                            "data": [round(float(v), 4) for v in np.linspace(-1, 1, 16)]}]}))
    scripts = {"mlp": lua_post(tmp / "mlp.lua", body, "application/json"),
               image_name: lua_post(tmp / "image.lua", image, "image/png")}
    targets_of = {"mlp": ("/v2/models/mlp/infer", body, "application/json"),
                  image_name: ("/v2/models/image/classify?top_k=5", image, "image/png")}

    log("in-process wasmai bench")
    in_proc = {"mlp": in_process(mlp, None, args.n), image_name: in_process(image_wasm, image, max(50, args.n // 5))}

    doc: dict = {"date": dt.date.today().isoformat(),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                 "tool": subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
                 if tool == "oha" else "wrk " + (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
                                                 .split()[1:2] or ["?"])[0],
                 "duration_s": args.duration, "instances": args.instances, "in_process": in_proc, "rows": []}
    for mode in modes:
        server = Server(repo, tmp / f"serve-{mode}.log", mode)
        try:
            for model, (path, body_file, ctype) in targets_of.items():
                metric_model = "mlp" if model == "mlp" else "image"
                for c in levels:
                    url = server.url + path
                    load(tool, url, body_file, ctype, scripts[model], c, 1.0)  # warm-up
                    before = server.metrics()
                    res = load(tool, url, body_file, ctype, scripts[model], c, args.duration)
                    res.update(server_side(before, server.metrics(), metric_model))
                    res.update({"model": model, "isolation": mode, "c": c})
                    log(f"{model} {mode} c={c}: {res['qps']:.0f}/s p50 {res['p50_ms']:.2f} ms "
                        f"p99 {res['p99_ms']:.2f} ms")
                    doc["rows"].append(res)
        finally:
            server.stop()
    doc["targets"] = [t for mode in modes for t in targets(doc, image_name, mode)]

    if args.profile:
        prof = tmp / "serve.prof"
        server = Server(repo, tmp / "serve-profiled.log", modes[0], profile=prof)
        try:
            res = load(tool, server.url + targets_of["mlp"][0], body, "application/json", scripts["mlp"], 4,
                       args.duration)
        finally:
            server.stop()
        doc["profile"] = {"seconds": args.duration, "requests": res["requests"], "qps": res["qps"],
                          "top": profile_summary(prof)}

    table = markdown(doc)
    print(table)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / f"serve-{doc['date']}"
        stem.with_suffix(".md").write_text(table)
        stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {stem}.md and .json")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
