"""``wasmai serve``: the real server (``python -m wasmai serve`` in a subprocess on 127.0.0.1),
real components built from the repo templates and signed with a real key, driven by the official
Triton client (``tritonclient.http``: Open Inference Protocol v2, JSON and binary) and by raw
HTTP for the error statuses, the metrics, hot reload and shutdown.

The repository the server watches:

* ``mlp``    - the tensor fixture (x [batch, 16] fp32 -> y [batch, 4]), 2 instances, 64 KiB bodies;
* ``cnn``    - the image-classifier fixture (labels class0..class9);
* ``types``  - seven Identity nodes, one per wasi-nn type (FP16 FP32 FP64 BF16 UINT8 INT32 INT64);
* ``slow``   - an ONNX ``Loop`` adding 1 to ``x`` ``n`` times (``n`` is an input), so a request
  chooses how long the guest's ONNX Runtime call takes: 1 instance, a queue of 1, 1 s timeout;
* ``unsigned`` - the MLP without a bundle: refused by the server's ``--key`` policy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the fixtures build components with cargo-component

tritonclient_http = pytest.importorskip("tritonclient.http")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnx_factory as factory  # noqa: E402
from conftest import (  # noqa: E402
    Server,
    free_port,
    http,
    post_json,
    slow_model,
    slow_request,
    wait_for,
)

SLOW_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tensor_component, classifier_component, build_component) -> dict:
    """The model repository (module docstring), the key pair and the components."""
    from wasmai.sign import keygen, sign_component

    root = tmp_path_factory.mktemp("serve")
    models = root / "models"
    keys = keygen(root / "keys")
    onnx_dir = root / "onnx"
    types_wasm = build_component(factory.save(factory.identity_all_types(), onnx_dir / "all_types.onnx"))
    slow_wasm = build_component(factory.save(slow_model(), onnx_dir / "slow.onnx"))
    configs = {
        "mlp": (tensor_component[0], 'version = "1"\ninstances = 2\nqueue = 4\nmax_body_bytes = 65536\n'),
        "cnn": (classifier_component[0], "top_k = 3\n"),
        "types": (types_wasm, ""),
        "slow": (slow_wasm, f"instances = 1\nqueue = 1\ntimeout_s = {SLOW_TIMEOUT_S}\nqueue_timeout_s = 20\n"),
    }
    for name, (wasm, config) in configs.items():
        folder = models / name
        folder.mkdir(parents=True)
        shutil.copy(wasm, folder / "model.wasm")
        sign_component(folder / "model.wasm", key=keys.private_key)
        if config:
            (folder / "config.toml").write_text(config)
    (models / "unsigned").mkdir()
    shutil.copy(tensor_component[0], models / "unsigned" / "model.wasm")
    return {"models": models, "keys": keys, "root": root, "mlp": tensor_component[0],
            "classifier": classifier_component, "slow": slow_wasm}


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    srv = Server([str(repo["models"]), "--key", str(repo["keys"].public_key), "--poll", "0.3",
                  "--shutdown-timeout", "20"], tmp_path_factory.mktemp("log") / "serve.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    c = tritonclient_http.InferenceServerClient(url=f"127.0.0.1:{server.port}", concurrency=4)
    yield c
    c.close()


def cat_png(tmp_path: Path) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(7)
    path = tmp_path / "image.png"
    Image.fromarray((rng.random((48, 40, 3)) * 255).astype(np.uint8)).save(path)
    return path.read_bytes()


# --- protocol: health, metadata, inference with the Triton client ------------------------------


def test_health_and_metadata_through_tritonclient(client, server):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "wasmai" and "binary_tensor_data" in meta["extensions"]
    mlp = client.get_model_metadata("mlp")
    assert mlp["versions"] == ["1"] and mlp["platform"] == "wasmai"
    assert mlp["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]
    assert mlp["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    assert mlp["parameters"]["signed"] is True
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    types = {i["name"]: i["datatype"] for i in client.get_model_metadata("types")["inputs"]}
    assert types == {f"x_{d}": t for d, t in zip(factory.DTYPES, ["FP16", "FP32", "FP64", "BF16", "UINT8", "INT32",
                                                                    "INT64"], strict=True)}
    cnn = client.get_model_metadata("cnn")
    assert cnn["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in cnn["outputs"]] == ["label", "index", "score"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_mlp_inference_matches_the_reference(client, binary):
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    inp = tritonclient_http.InferInput("x", [3, 16], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = tritonclient_http.InferRequestedOutput("y", binary_data=binary)
    result = client.infer("mlp", [inp], outputs=[out], request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("y"), factory.mlp_reference(x), rtol=1e-5, atol=1e-5)
    assert result.get_response()["id"] == "r-1"
    # No outputs named: tritonclient asks for all of them as binary (binary_data_output).
    assert result.get_response()["model_version"] == "1"
    assert client.infer("mlp", [inp]).as_numpy("y").shape == (3, 4)


def test_all_seven_wasi_nn_types_round_trip_binary_and_json(client, server):
    import ml_dtypes

    inputs, expected = [], {}
    for dtype, oip in zip(factory.DTYPES, ["FP16", "FP32", "FP64", "BF16", "UINT8", "INT32", "INT64"], strict=True):
        if oip == "BF16":
            arr = np.array([[1.5, -2.0, 3.25], [0.0, 100.0, -0.5]], dtype=ml_dtypes.bfloat16)
        else:
            arr = factory.random_input(dtype, (2, 3), seed=3)
        inp = tritonclient_http.InferInput(f"x_{dtype}", [2, 3], oip)
        inp.set_data_from_numpy(arr, binary_data=True)
        inputs.append(inp)
        expected[f"y_{dtype}"] = arr
    result = client.infer("types", inputs)
    for name, arr in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == arr.dtype and got.tobytes() == arr.tobytes(), name
    # JSON: numbers in, numbers out (BF16 as numbers rounded to bfloat16; FP16 as numbers).
    doc = {"inputs": [{"name": f"x_{d}", "datatype": t, "shape": [2, 3],
                       "data": [1, 2, 3, 4, 5, 250] if t in ("UINT8", "INT32", "INT64") else
                       [0.5, -1.25, 2.0, 3.0, 1e3, -7.75]}
                      for d, t in zip(factory.DTYPES, ["FP16", "FP32", "FP64", "BF16", "UINT8", "INT32", "INT64"],
                                      strict=True)]}
    status, _, body = post_json(f"{server.url}/v2/models/types/infer", doc)
    assert status == 200, body
    for out in body["outputs"]:
        want = [1, 2, 3, 4, 5, 250] if out["datatype"] in ("UINT8", "INT32", "INT64") else \
            [0.5, -1.25, 2.0, 3.0, 1e3, -7.75]
        assert out["data"] == want and out["shape"] == [2, 3], out


def test_image_classifier_with_tritonclient_and_the_raw_route(client, server, repo, tmp_path):
    from wasmai.host import Host

    image = cat_png(tmp_path)
    host = Host(cache_dir=tmp_path / "cache")
    want = host.instantiate(host.load_component(repo["classifier"][0])).classify(image, 3)
    inp = tritonclient_http.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([image], dtype=np.object_), binary_data=True)
    result = client.infer("cnn", [inp])  # the model's top_k = 3
    assert [s.decode() for s in result.as_numpy("label")[0]] == [p.label for p in want]
    assert result.as_numpy("index")[0].tolist() == [p.index for p in want]
    np.testing.assert_allclose(result.as_numpy("score")[0], [p.score for p in want], rtol=1e-6)
    # Triton's classification extension: "score:index:label", K from the requested output.
    cls = client.infer("cnn", [inp], outputs=[tritonclient_http.InferRequestedOutput("score", class_count=2)])
    top = [s.decode().split(":") for s in cls.as_numpy("score")[0]]
    assert [(int(i), label) for _, i, label in top] == [(p.index, p.label) for p in want[:2]]
    # The convenience route: the raw PNG as the body.
    status, _, body = http("POST", f"{server.url}/v2/models/cnn/classify?top_k=2", image,
                           {"Content-Type": "image/png"})
    preds = json.loads(body)["predictions"]
    assert status == 200 and [(p["label"], p["index"]) for p in preds] == [(p.label, p.index) for p in want[:2]]
    # An image in JSON is base64 text.
    import base64

    status, _, doc = post_json(f"{server.url}/v2/models/cnn/infer", {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}],
        "parameters": {"top_k": 1}})
    assert status == 200 and doc["outputs"][0]["data"] == [want[0].label]
    status, _, doc = http("POST", f"{server.url}/v2/models/cnn/classify", b"not an image")
    assert status == 400 and "error" in json.loads(doc)


# --- errors ------------------------------------------------------------------------------------


def test_error_statuses(server):
    url = server.url
    status, _, doc = post_json(f"{url}/v2/models/nope/infer", {"inputs": []})
    assert status == 404 and "nope" in doc["error"]
    assert http("GET", f"{url}/v2/models/mlp/versions/9")[0] == 404
    assert http("GET", f"{url}/v2/nowhere")[0] == 404
    bad = [
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 16], "data": [0.0] * 16}]},   # datatype
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.0] * 8}]},     # shape
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 15}]},   # count
        {"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}]},   # name
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": ["a"] * 16}]},   # values
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}],
         "outputs": [{"name": "nope"}]},                                                          # output
    ]
    for doc in bad:
        status, _, body = post_json(f"{url}/v2/models/mlp/infer", doc)
        assert status == 400 and body["error"], (doc, body)
    status, _, body = http("POST", f"{url}/v2/models/mlp/infer", b"{not json")
    assert status == 400 and "JSON" in json.loads(body)["error"]
    # Binary sizes that do not add up to the body.
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16],
                                   "parameters": {"binary_data_size": 64}}]}).encode()
    status, _, body = http("POST", f"{url}/v2/models/mlp/infer", head + b"\0" * 60,
                           {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400 and "binary_data_size" in json.loads(body)["error"]
    # The mlp's max_body_bytes is 64 KiB: 413 before the body is read.
    big = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2000, 16], "data": [0.5] * 32000}]}
    status, _, body = post_json(f"{url}/v2/models/mlp/infer", big)
    assert status == 413 and "65536" in body["error"]
    assert http("GET", f"{url}/v2/models/mlp/infer")[0] == 405
    # A refused model: 503 with Retry-After on infer, not ready, its reason in the metadata.
    status, headers, body = post_json(f"{url}/v2/models/unsigned/infer", {"inputs": []})
    assert status == 503 and headers.get("retry-after") == "1"


def test_unsigned_model_is_refused_and_the_refusal_is_visible(server, client):
    assert not client.is_model_ready("unsigned")
    meta = client.get_model_metadata("unsigned")
    assert meta["parameters"]["state"] == "UNAVAILABLE" and meta["inputs"] == []
    assert "sigstore.json" in meta["parameters"]["reason"] or "bundle" in meta["parameters"]["reason"]
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["unsigned"]["state"] == "UNAVAILABLE" and index["mlp"]["state"] == "READY"
    refused = [e for e in server.events() if e.get("event") == "model-refused"]
    assert [e["model"] for e in refused] == ["unsigned"]
    table = server.log.read_text()
    assert "wasmai serve: models" in table and "UNAVAILABLE" in table


def test_queue_full_is_429_with_retry_after(server, loop_iterations):
    """slow: 1 instance, queue 1. One request runs (~0.6 s), one waits, the third is refused."""
    url = f"{server.url}/v2/models/slow/infer"
    n = loop_iterations(0.6)
    results: list[int] = []

    def call() -> None:
        results.append(post_json(url, slow_request(n))[0])

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.15)
    status, headers, body = post_json(url, slow_request(1))
    for t in threads:
        t.join()
    assert status == 429 and headers.get("retry-after") == "1" and "queued" in body["error"]
    assert results == [200, 200]


def test_timeout_is_504_the_instance_is_replaced_and_serving_goes_on(server, client, loop_iterations):
    url = f"{server.url}/v2/models/slow/infer"
    n = loop_iterations(2.5 * SLOW_TIMEOUT_S)
    t0 = time.monotonic()
    status, _, body = post_json(url, slow_request(n))
    elapsed = time.monotonic() - t0
    assert status == 504 and "replaced" in body["error"]
    assert elapsed < SLOW_TIMEOUT_S + 1.0  # answered at the deadline, not when ONNX Runtime returns
    # Other models answer while the abandoned call still runs, and so does the slow one's new instance.
    x = np.ones((1, 16), np.float32)
    inp = tritonclient_http.InferInput("x", [1, 16], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(client.infer("mlp", [inp]).as_numpy("y"), factory.mlp_reference(x), rtol=1e-5,
                               atol=1e-5)
    status, _, body = post_json(url, slow_request(5))
    assert status == 200 and body["outputs"][0]["data"] == [5.0]
    assert any(e.get("event") == "instance-discarded" and e["reason"] == "timeout" for e in server.events())


def test_metrics_parse_and_count(server):
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = http("GET", f"{server.url}/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    requests = {(s.labels["model"], s.labels["status"]): s.value for s in families["wasmai_requests"].samples
                if s.name == "wasmai_requests_total"}
    assert requests[("mlp", "200")] >= 4 and requests[("mlp", "400")] >= 6 and requests[("mlp", "413")] >= 1
    assert requests[("slow", "504")] >= 1 and requests[("slow", "429")] >= 1 and requests[("nope", "404")] >= 1
    for hist in ("wasmai_request_queue_seconds", "wasmai_request_inference_seconds", "wasmai_request_seconds"):
        counts = [s for s in families[hist].samples if s.name == hist + "_count" and s.labels["model"] == "mlp"]
        assert counts and counts[0].value >= 4, hist
    gauges = {(s.name, s.labels.get("model")): s.value for f in families.values() for s in f.samples}
    assert gauges[("wasmai_instances", "mlp")] == 2 and gauges[("wasmai_model_ready", "mlp")] == 1
    assert gauges[("wasmai_linear_memory_peak_bytes", "mlp")] > 0
    assert gauges[("wasmai_model_load_seconds", "mlp")] > 0
    assert gauges[("wasmai_model_load_failures_total", "unsigned")] >= 1
    assert gauges[("wasmai_instance_replacements_total", "slow")] >= 1
    assert ("wasmai_requests_in_flight", "mlp") in gauges
    access = [e for e in server.events() if e.get("event") == "access" and e["path"] == "/v2/models/mlp/infer"]
    assert access and {"status", "duration_ms", "model", "version"} <= set(access[-1])


# --- hot reload --------------------------------------------------------------------------------


def test_hot_reload_swaps_versions_without_failed_requests(server, repo):
    """A load loop runs while mlp gets version 2 (a new config and the same, re-signed component),
    then a refused reload (an unsigned component) and a new model; every request succeeds."""
    from wasmai.sign import sign_component

    url = f"{server.url}/v2/models/mlp/infer"
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.25] * 16}]}
    stop = threading.Event()
    statuses: list[int] = []
    versions: set[str] = set()

    def load() -> None:
        while not stop.is_set():
            status, _, body = post_json(url, doc)
            statuses.append(status)
            versions.add(body.get("model_version", "?"))

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        folder = repo["models"] / "mlp"
        staging = repo["root"] / "mlp-v2"
        staging.mkdir()
        shutil.copy(repo["mlp"], staging / "model.wasm")
        sign_component(staging / "model.wasm", key=repo["keys"].private_key)
        (staging / "config.toml").write_text('version = "2"\ninstances = 2\nqueue = 4\nmax_body_bytes = 65536\n')
        for f in ("model.wasm", "model.wasm.sigstore.json", "config.toml"):
            os.replace(staging / f, folder / f)
        wait_for(lambda: json.loads(http("GET", f"{server.url}/v2/models/mlp")[2])["versions"] == ["2"])
        time.sleep(0.5)
        # A component that fails the policy: refused, version 2 keeps serving, the refusal is visible.
        (folder / "model.wasm.sigstore.json").unlink()
        wait_for(lambda: "reload_refused" in json.loads(http("GET", f"{server.url}/v2/models/mlp")[2])["parameters"])
        time.sleep(0.5)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert {"1", "2"} <= versions
    assert any(e.get("event") == "reload-refused" and e["model"] == "mlp" for e in server.events())
    # A new model folder appears, a removed one goes (404).
    shutil.copytree(repo["models"] / "types", repo["models"] / "types2")
    wait_for(lambda: http("GET", f"{server.url}/v2/models/types2/ready")[0] == 200)
    shutil.rmtree(repo["models"] / "types2")
    wait_for(lambda: http("GET", f"{server.url}/v2/models/types2/ready")[0] == 404)


# --- lifecycle ---------------------------------------------------------------------------------


def test_sigterm_finishes_in_flight_requests_then_exits(server, loop_iterations):
    """Last in this module: it stops the shared server."""
    n = loop_iterations(0.4)
    result: list[tuple[int, dict]] = []
    worker = threading.Thread(target=lambda: result.append(post_json(f"{server.url}/v2/models/slow/infer",
                                                                     slow_request(n))[::2]))
    worker.start()
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    worker.join(30)
    assert result and result[0][0] == 200 and result[0][1]["outputs"][0]["data"] == [float(n)]
    assert server.proc.wait(30) == 0
    with pytest.raises(OSError):
        http("GET", f"{server.url}/v2/health/live", timeout=2)


def test_cli_refuses_a_missing_path_with_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wasmai", "serve", str(tmp_path / "nothing"), "--port",
                           str(free_port())], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "nothing" in proc.stderr and proc.stderr.count("\n") == 1
