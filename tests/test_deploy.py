"""The deploy story: the ``Containerfile`` and the KServe manifests in ``deploy/kserve/``.

No container engine runs on this machine, so the image is not built here. What is tested is what
the image and the manifests would run: the Containerfile's ENTRYPOINT + CMD (exec form) and the
ServingRuntime's container args are parsed, then started as they are (the console script
``wasmai``, the same argv) with only the machine-specific parts mapped: ``/models`` (and the
manifests' mount paths) to temporary folders, the port to a free one, ``0.0.0.0`` to
``127.0.0.1``. Every route the manifests name (readiness and liveness probes, the Prometheus path,
the InferenceService's infer path) must answer as KServe expects.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnx_factory as factory  # noqa: E402
from conftest import REPO, Server, http, post_json  # noqa: E402

CONTAINERFILE = REPO / "Containerfile"
KSERVE = REPO / "deploy" / "kserve"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def exec_form(steps: list[tuple[str, str]], word: str) -> list[str]:
    """The last ``word`` instruction of a stage, which must be in exec (JSON) form: a shell form
    would run under /bin/sh, which does not pass SIGTERM on to the server."""
    values = [rest for w, rest in steps if w == word]
    assert values, f"no {word} in the final stage"
    argv = json.loads(values[-1])
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), values[-1]
    return argv


def container_command() -> list[str]:
    steps = final_stage(CONTAINERFILE)
    return exec_form(steps, "ENTRYPOINT") + exec_form(steps, "CMD")


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(KSERVE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


def console_script() -> str:
    """The ``wasmai`` console script of the Python running the tests (as the image's PATH has it)."""
    found = shutil.which("wasmai", path=str(Path(sys.executable).parent)) or shutil.which("wasmai")
    assert found, "the wasmai console script is not installed (pip install -e .)"
    return found


def local_argv(argv: list[str], paths: dict[str, Path]) -> list[str]:
    """``argv`` for this machine: ``wasmai`` -> the console script, a path under a key of ``paths``
    -> the same path under its value, ``--host X`` -> 127.0.0.1, ``--port N`` -> ``{port}``."""
    out = [console_script() if argv[0] == "wasmai" else argv[0]]
    for i, arg in enumerate(argv[1:], 1):
        prev = argv[i - 1]
        if prev == "--host":
            arg = "127.0.0.1"
        elif prev == "--port":
            arg = "{port}"
        else:
            for container_path in sorted(paths, key=len, reverse=True):  # the deepest mount first
                if arg == container_path or arg.startswith(container_path.rstrip("/") + "/"):
                    arg = str(paths[container_path]) + arg[len(container_path.rstrip("/")):]
                    break
        out.append(arg)
    return out


@pytest.fixture(scope="module")
def model_repository(tmp_path_factory, tensor_component) -> dict:
    """A model repository with the InferenceService's model (the tensor fixture, signed) and an
    unsigned copy of it, and the key pair."""
    from wasmai.sign import keygen, sign_component

    root = tmp_path_factory.mktemp("deploy")
    keys = keygen(root / "keys")
    name = manifests()["InferenceService"]["metadata"]["name"]
    repo = root / "models"
    (repo / name).mkdir(parents=True)
    shutil.copy(tensor_component[0], repo / name / "model.wasm")
    sign_component(repo / name / "model.wasm", key=keys.private_key)
    (repo / f"{name}-unsigned").mkdir()
    shutil.copy(tensor_component[0], repo / f"{name}-unsigned" / "model.wasm")
    return {"root": root, "models": repo, "keys": keys, "name": name}


def check_routes(server: Server, name: str, probes: list[str], metrics_path: str) -> None:
    """Every route the manifests name answers as KServe expects."""
    for path in probes:
        status, _, body = http("GET", server.url + path)
        assert status == 200, (path, status, body)
    status, headers, body = http("GET", server.url + metrics_path)
    assert status == 200 and headers["content-type"].startswith("text/plain") and b"wasmai_requests" in body
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    status, _, doc = post_json(f"{server.url}/v2/models/{name}/infer", {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16], "data": x.ravel().tolist()}]})
    assert status == 200, doc
    assert doc["model_name"] == name and doc["outputs"][0]["shape"] == [2, 4]
    np.testing.assert_allclose(np.asarray(doc["outputs"][0]["data"], np.float32).reshape(2, 4),
                               factory.mlp_reference(x), rtol=1e-5, atol=1e-5)
    assert http("GET", f"{server.url}/v2/models/{name}/ready")[0] == 200


# --- the Containerfile -------------------------------------------------------------------------


def test_containerfile_is_multi_stage_and_runs_wasmai_serve_on_models():
    steps = instructions(CONTAINERFILE)
    stages = [rest for word, rest in steps if word == "FROM"]
    assert len(stages) == 2 and re.search(r"\bAS builder$", stages[0]) and "python:3.11-slim" in stages[1]
    final = final_stage(CONTAINERFILE)
    assert any(w == "COPY" and rest.startswith("--from=builder ") for w, rest in final)
    assert any(w == "RUN" and "maturin build" in rest for w, rest in steps[:len(steps) - len(final)])
    assert any(w == "RUN" and "pip install" in rest and ".whl" in rest for w, rest in final)
    assert container_command() == ["wasmai", "serve", "/models", "--host", "0.0.0.0", "--port", "8080"]
    assert ("EXPOSE", "8080") in final and any(w == "USER" and rest != "root" for w, rest in final)


@pytest.mark.slow  # the tensor fixture is built with cargo-component
def test_the_entrypoint_serves_a_repository(model_repository, tmp_path):
    """``wasmai serve /models --host 0.0.0.0 --port 8080`` as the image runs it (no signature policy:
    the image's default serves what /models holds; the ServingRuntime adds --key)."""
    argv = local_argv(container_command(), {"/models": model_repository["models"]})
    assert argv[1:] == ["serve", str(model_repository["models"]), "--host", "127.0.0.1", "--port", "{port}"]
    docs = manifests()
    container = docs["ServingRuntime"]["spec"]["containers"][0]
    probes = [container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]]
    server = Server([], tmp_path / "serve.log", command=argv)
    try:
        check_routes(server, model_repository["name"], probes,
                     docs["ServingRuntime"]["spec"]["annotations"]["prometheus.kserve.io/path"])
        # Without a policy the unsigned copy is served too.
        assert http("GET", f"{server.url}/v2/models/{model_repository['name']}-unsigned/ready")[0] == 200
    finally:
        assert server.stop() == 0


# --- the KServe manifests ----------------------------------------------------------------------


def test_manifests_fit_together():
    docs = manifests()
    assert set(docs) == {"ServingRuntime", "InferenceService"}
    runtime, isvc = docs["ServingRuntime"], docs["InferenceService"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    spec = runtime["spec"]
    assert [f["name"] for f in spec["supportedModelFormats"]] == ["wasmai"] and spec["protocolVersions"] == ["v2"]
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["modelFormat"]["name"] == "wasmai"
    assert model["protocolVersion"] in spec["protocolVersions"] and model["storageUri"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe injects the storage mount into
    args = container["args"]
    port = int(args[args.index("--port") + 1])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(port)
    # KServe's storage initializer puts the storageUri at /mnt/models: the runtime serves that.
    assert args[0] == "/mnt/models" and args[args.index("--host") + 1] == "0.0.0.0"
    # The image's ENTRYPOINT is kept (no `command`), the args replace its CMD.
    assert "command" not in container
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes
    key = args[args.index("--key") + 1]
    assert any(key.startswith(m["mountPath"] + "/") and "secret" in volumes[m["name"]]
               for m in container["volumeMounts"]), "the --key file comes from a Secret"


@pytest.mark.slow
def test_the_serving_runtime_container_serves_the_inference_service(model_repository, tmp_path):
    """The ServingRuntime's container as KServe starts it (the image's ENTRYPOINT + its args and
    env), its mounts mapped to temporary folders: the signed model answers on the
    InferenceService's path, the unsigned copy is refused by the --key policy."""
    docs = manifests()
    spec = docs["ServingRuntime"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    paths: dict[str, Path] = {"/mnt/models": model_repository["models"]}
    for mount in container["volumeMounts"]:
        local = tmp_path / mount["name"]
        if "secret" in volumes[mount["name"]]:  # the Secret holds the public key (wasmai.pub)
            local.mkdir()
            shutil.copy(model_repository["keys"].public_key, local / "wasmai.pub")
        else:
            local.mkdir(mode=0o777)  # an emptyDir
        paths[mount["mountPath"]] = local
    entrypoint = exec_form(final_stage(CONTAINERFILE), "ENTRYPOINT")
    argv = local_argv(entrypoint + container["args"], paths)
    env = {e["name"]: local_argv(["-", e["value"]], paths)[1] for e in container.get("env", [])}
    assert "--key" in argv and Path(argv[argv.index("--key") + 1]).is_file()
    probes = [container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]]
    server = Server([], tmp_path / "serve.log", command=argv, env=env)
    try:
        name = docs["InferenceService"]["metadata"]["name"]
        check_routes(server, name, probes, spec["annotations"]["prometheus.kserve.io/path"])
        assert json.loads(http("GET", f"{server.url}/v2/models/{name}")[2])["parameters"]["signed"] is True
        status, _, body = http("GET", f"{server.url}/v2/models/{name}-unsigned/ready")
        assert status == 503 and json.loads(body)["ready"] is False
        # The compiled-code cache went to the mounted folder (WASMAI_CACHE_DIR), created 0700.
        cache = Path(env["WASMAI_CACHE_DIR"]) / "wasmtime"
        assert cache.is_dir() and cache.stat().st_mode & 0o777 == 0o700
    finally:
        assert server.stop() == 0
