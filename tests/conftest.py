"""Shared pytest fixtures. Stage-specific fixtures live in the stage's test file; fixtures used by
several stages are appended below with a comment naming who uses them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: object, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m wasmai ARGS`` in a fresh process with this checkout first on the path: the real
    exit code, stdout and stderr (and a parent without this test process's host threads, which
    ``wasmai run``'s forked worker needs)."""
    return subprocess.run([sys.executable, "-m", "wasmai", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return REPO


# --- used by test_runtime (and any stage that needs a real component of a test model) ----------

@pytest.fixture(scope="session")
def build_component(tmp_path_factory):
    """``build_component(onnx_path, **build_kwargs) -> Path``: a component built from the repo
    templates by :func:`wasmai.build.build` (real cargo-component build; identical inputs are
    reused from wasmai.build's own cache). Keyword arguments go to ``wasmai.build.build``."""
    from wasmai.build import build

    out_dir = tmp_path_factory.mktemp("components")
    built: dict[tuple, Path] = {}

    def _build(onnx_path, **kwargs) -> Path:
        key = (str(onnx_path), tuple(sorted(kwargs.items())))
        if key not in built:
            name = Path(onnx_path).stem + "".join(f"-{k}-{v}" for k, v in sorted(kwargs.items()))
            built[key] = build(onnx_path, output=out_dir / f"{name}.wasm", **kwargs).output
        return built[key]

    return _build


# --- wasmai build (tests/test_build.py); also for runtime/bench/sign tests that need components ---

def _factory():
    import sys

    tests_dir = str(Path(__file__).resolve().parent)
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    import onnx_factory

    return onnx_factory


@pytest.fixture(scope="session")
def tensor_component(tmp_path_factory):
    """``(component_path, onnx_path, manifest)``: onnx_factory.mlp() (x [batch, 16] fp32 ->
    y [batch, 4]) built with the tensor template (wasm32-wasip2, embedded, release). The
    manifest (``mlp.toml`` beside the model) is the one derived from the graph."""
    from wasmai.build import build, derive_manifest

    factory = _factory()
    folder = tmp_path_factory.mktemp("tensor-component")
    onnx_path = factory.save(factory.mlp(), folder / "mlp.onnx")
    manifest = derive_manifest(onnx_path)
    manifest.save(folder / "mlp.toml")
    result = build(onnx_path, output=folder / "mlp.wasm")
    return result.output, onnx_path, manifest


@pytest.fixture(scope="session")
def classifier_component(tmp_path_factory):
    """``(component_path, onnx_path, manifest)``: onnx_factory.cnn_classifier() (input
    [1, 3, 32, 32] fp32 -> logits [1, 10]) built with the image-classification template.
    Manifest ``cnn.toml``: resize_shorter 36, crop 32x32, RGB, NCHW, mean 127.5, std 127.5,
    softmax, labels ``class0``..``class9``."""
    from wasmai.build import build
    from wasmai.manifest import Manifest, Preprocess, TensorSpec, sha256_file

    factory = _factory()
    folder = tmp_path_factory.mktemp("classifier-component")
    onnx_path = factory.save(factory.cnn_classifier(), folder / "cnn.onnx")
    manifest = Manifest(
        name="tiny-cnn", task="image-classification", onnx="cnn.onnx", sha256=sha256_file(onnx_path),
        inputs=[TensorSpec("input", "fp32", [1, 3, 32, 32])], outputs=[TensorSpec("logits", "fp32", [1, 10])],
        preprocess=Preprocess(crop=(32, 32), resize_shorter=36, color="RGB", layout="NCHW",
                              mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
        softmax=True, labels=[f"class{i}" for i in range(10)], base_dir=folder)
    manifest.save(folder / "cnn.toml")
    result = build(onnx_path, output=folder / "cnn.wasm")
    return result.output, onnx_path, manifest


# --- wasmai serve (tests/test_serve.py, test_serve_soak.py, test_deploy.py) ---------------------
# A real server subprocess on 127.0.0.1 and plain-HTTP helpers; test files import them
# (``from conftest import Server, http, ...``).


def slow_model():
    """x fp32 [1], n i64 [1] -> y = x + n, computed by an ONNX Loop of n iterations (~2 us each)."""
    from onnx import TensorProto, helper

    scalar = helper.make_tensor("scalar_shape", TensorProto.INT64, [0], [])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])], initializer=[one])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["n", "scalar_shape"], ["m"]), helper.make_node("Loop", ["m", "", "x"], ["y"],
                                                                                     body=body)],
        "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                 helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializer=[scalar])
    return _factory()._model(graph, "slow loop")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``python -m wasmai serve`` subprocess; ``log`` is its stderr (JSON lines + the table)."""

    def __init__(self, args: list[str], log: Path, *, command: Sequence[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        """``python -m wasmai serve *args --port PORT`` on a free port; or ``command``, a whole argv
        in which ``{port}`` is replaced by the free port. ``env``: variables added to ours."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._err = open(log, "wb")  # noqa: SIM115 - closed in stop()
        argv = ([a.replace("{port}", str(self.port)) for a in command] if command is not None else
                [sys.executable, "-m", "wasmai", "serve", *args, "--port", str(self.port)])
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._err,
                                     env={**os.environ, **env} if env else None)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if http("GET", self.url + "/v2/health/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("server did not become ready: " + log.read_text()[-3000:])

    def events(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()
        return int(self.proc.returncode)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, body) of one request; error statuses are returned."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def post_json(url: str, doc: object, timeout: float = 30) -> tuple[int, dict, dict]:
    status, headers, body = http("POST", url, json.dumps(doc).encode(), {"Content-Type": "application/json"},
                                 timeout)
    return status, headers, json.loads(body)


def slow_request(n: int) -> dict:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]},
                       {"name": "n", "datatype": "INT64", "shape": [1], "data": [n]}]}


@pytest.fixture(scope="module")
def loop_iterations(tmp_path_factory) -> callable:
    """``loop_iterations(seconds) -> n``: Loop iterations ONNX Runtime needs for at least that
    long here. The fastest of three timed runs sets the rate, so a run slowed by a busy machine
    makes ``n`` larger (a longer request), never shorter than asked."""
    import onnxruntime as ort

    path = _factory().save(slow_model(), tmp_path_factory.mktemp("calibrate") / "slow.onnx")
    session = ort.InferenceSession(str(path))
    feed = {"x": np.zeros(1, np.float32), "n": np.array([100_000], np.int64)}
    session.run(None, feed)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        session.run(None, feed)
        runs.append(time.perf_counter() - t0)
    per_iteration = min(runs) / 100_000
    return lambda seconds: int(seconds / per_iteration)


def in_threads(work: Callable[[int], None], n: int) -> list[BaseException]:
    """``work(0)`` ... ``work(n - 1)`` on ``n`` threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def wait_for(predicate, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")
