"""``wasmai serve`` contains a graph that crashes ONNX Runtime and a call blocked in the host
(hostile components, findings 5 and 2): with ``--isolation process`` (the default) each instance
runs in a worker process; a worker that dies answers 500 naming the signal and is restarted, a
call not back within timeout + 1 s gets 504 and its worker is killed and restarted; the server and
its other models go on. ``--isolation thread`` keeps the in-process pool (a smoke test here; the
quota tests of test_serve.py run in the default mode).

The real server (``python -m wasmai serve`` on 127.0.0.1) serves real components:

* ``div``  - an integer ``Div`` (a int32 [1], b int32 [1] -> q): INT32_MIN / -1 raises SIGFPE
  inside ONNX Runtime on x86-64 (test_crash.py);
* ``nap``  - the sandbox probe (tests/guests/sandbox): its ``infer`` sleeps ``nap-ms`` ms in
  ``wasi:io/poll``, where neither epochs nor ONNX Runtime's terminate flag reach; timeout 1 s;
* ``mlp``  - the tensor fixture, the bystander that must keep answering.
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # builds components with cargo-component

sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnx_factory as factory  # noqa: E402
import test_sandbox  # noqa: E402
from conftest import Server, http, post_json, wait_for  # noqa: E402
from test_crash import _int_div  # noqa: E402

probe = test_sandbox.probe

NAP_TIMEOUT_S = 1.0
#: Slack over timeout + 1 s for the answer to reach the client on a loaded 2-core machine.
SLACK_S = 1.0
INT32_MIN = int(np.iinfo(np.int32).min)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tensor_component, build_component, probe) -> Path:
    root = tmp_path_factory.mktemp("isolation")
    div_wasm = build_component(_int_div(root / "div.onnx"))
    configs = {
        "div": (div_wasm, "instances = 1\nqueue = 4\nqueue_timeout_s = 60\n"),
        "nap": (probe, f"instances = 1\nqueue = 4\ntimeout_s = {NAP_TIMEOUT_S}\nqueue_timeout_s = 60\n"),
        "mlp": (tensor_component[0], ""),
    }
    for name, (wasm, config) in configs.items():
        folder = root / "models" / name
        folder.mkdir(parents=True)
        shutil.copy(wasm, folder / "model.wasm")
        if config:
            (folder / "config.toml").write_text(config)
    return root / "models"


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    srv = Server([str(models), "--poll", "0"], tmp_path_factory.mktemp("log") / "serve.log")
    yield srv
    srv.stop()


def div_request(a: int, b: int) -> dict:
    return {"inputs": [{"name": "a", "datatype": "INT32", "shape": [1], "data": [a]},
                       {"name": "b", "datatype": "INT32", "shape": [1], "data": [b]}]}


def nap_request(ms: int) -> dict:
    return {"inputs": [{"name": "nap-ms", "datatype": "INT32", "shape": [1], "data": [ms]}]}


def mlp_answers(url: str) -> None:
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    status, _, body = post_json(f"{url}/v2/models/mlp/infer",
                                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16],
                                             "data": x.ravel().tolist()}]})
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(1, 4), factory.mlp_reference(x),
                               rtol=1e-5, atol=1e-5)


def workers(pid: int) -> set[int]:
    """Pids of the server's worker processes (spawned children; not multiprocessing's resource
    tracker)."""
    out = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                out.add(int(child))
    return out


def replacements(url: str, model: str, reason: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    body = http("GET", f"{url}/metrics")[2].decode()
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
               if s.name == "wasmai_instance_replacements_total" and s.labels["model"] == model
               and s.labels["reason"] == reason)


def test_each_instance_runs_in_its_own_worker_process(server):
    assert len(workers(server.proc.pid)) == 3  # div, nap, mlp: one instance each
    mlp_answers(server.url)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="INT_MIN / -1 traps (SIGFPE) on x86-64 only")
def test_a_graph_that_crashes_onnxruntime_costs_its_worker_not_the_server(server):
    url = f"{server.url}/v2/models/div/infer"
    status, _, body = post_json(url, div_request(7, 2))
    assert status == 200 and body["outputs"][0]["data"] == [3]
    before = workers(server.proc.pid)
    t0 = time.monotonic()
    status, _, body = post_json(url, div_request(INT32_MIN, -1))
    print(f"SIGFPE graph served: {status} after {time.monotonic() - t0:.3f} s: {body.get('error')}")
    assert status == 500, body
    assert "SIGFPE" in body["error"] and "\n" not in body["error"], body
    assert server.proc.poll() is None and http("GET", f"{server.url}/v2/health/live")[0] == 200
    mlp_answers(server.url)  # the other model never noticed
    # The model stays ready; its next request runs in a new worker.
    assert http("GET", f"{server.url}/v2/models/div/ready")[0] == 200
    status, _, body = post_json(url, div_request(-9, 2))
    assert status == 200 and body["outputs"][0]["data"] == [-4]
    after = workers(server.proc.pid)
    assert len(after) == len(before) and after != before
    assert replacements(server.url, "div", "crash") == 1
    assert any(e.get("event") == "instance-discarded" and e["model"] == "div" and e["reason"] == "crash"
               for e in server.events())


def test_a_call_blocked_in_the_host_is_504_in_time_and_its_worker_is_replaced(server):
    url = f"{server.url}/v2/models/nap/infer"
    status, _, body = post_json(url, nap_request(5))
    assert status == 200 and body["outputs"][0]["data"] == [5]
    before = workers(server.proc.pid)
    t0 = time.monotonic()
    status, _, body = post_json(url, nap_request(120_000))
    elapsed = time.monotonic() - t0
    print(f"sleep in wasi:io/poll served: {status} after {elapsed:.3f} s: {body.get('error')}")
    assert status == 504, body
    assert elapsed < NAP_TIMEOUT_S + 1.0 + SLACK_S, elapsed
    mlp_answers(server.url)
    # The blocked worker is killed at timeout + 1 s and a new one serves the next request.
    status, _, body = post_json(url, nap_request(20))
    assert status == 200 and body["outputs"][0]["data"] == [20]
    assert time.monotonic() - t0 < 60
    wait_for(lambda: len(workers(server.proc.pid)) == len(before))
    assert workers(server.proc.pid) != before
    assert replacements(server.url, "nap", "timeout") == 1


def test_thread_isolation_still_serves(models, tmp_path):
    srv = Server([str(models), "--poll", "0", "--isolation", "thread"], tmp_path / "serve.log")
    try:
        assert workers(srv.proc.pid) == set()  # everything in the server process
        mlp_answers(srv.url)
        status, _, body = post_json(f"{srv.url}/v2/models/div/infer", div_request(7, 2))
        assert status == 200 and body["outputs"][0]["data"] == [3]
    finally:
        assert srv.stop() == 0
