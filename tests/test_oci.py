"""wasmai push / pull and oci:// references, against a real OCI registry.

The registry is Debian's ``docker-registry`` (the CNCF distribution registry), started here on
127.0.0.1 with a temporary storage folder and a free port; the auth tests start a second one with
htpasswd basic auth. The components are real (built from the tensor template), the signatures
real (ECDSA keys from ``wasmai keygen``), and the interop client is the ``oras`` CLI (Go), which
nobody here wrote. ``scripts/setup.sh`` installs both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import wasmai.sign as ws
from wasmai import oci
from wasmai.errors import VerificationError, WasmaiError

pytestmark = pytest.mark.slow

ORAS = shutil.which("oras") or str(Path.home() / "go" / "bin" / "oras")
USER, PASSWORD = "ci-user", "s3cret-pass"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """A docker-registry process on 127.0.0.1 with its storage in ``root``."""

    def __init__(self, root: Path, htpasswd: Path | None = None) -> None:
        exe = shutil.which("docker-registry")
        if exe is None:
            pytest.fail("docker-registry is not installed (scripts/setup.sh: apt-get install docker-registry)")
        self.root = root
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        auth = (f"auth:\n  htpasswd:\n    realm: wasmai-test\n    path: {htpasswd}\n" if htpasswd else "")
        config = root / "config.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
                          f"http:\n  addr: {self.host}\n{auth}")
        self.log = open(root / "registry.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([exe, "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401: up, and wants credentials
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}")
                time.sleep(0.1)

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        hexd = digest.split(":", 1)[1]
        return self.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        pytest.fail("htpasswd is not installed (scripts/setup.sh: apt-get install apache2-utils)")
    line = subprocess.run([htpasswd, "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True).stdout
    (root / "htpasswd").write_text(line.strip() + "\n")
    reg = Registry(root, htpasswd=root / "htpasswd")
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # A fresh blob cache for each test (the wasmtime cache under it is rebuilt: small components).
    monkeypatch.setenv("WASMAI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return ws.keygen(tmp_path_factory.mktemp("keys"))


@pytest.fixture()
def signed(tensor_component, keys, tmp_path):
    """A copy of the tensor component with its key-based bundle beside it."""
    comp = tmp_path / "mlp.wasm"
    shutil.copyfile(tensor_component[0], comp)
    ws.sign_component(comp, key=keys.private_key)
    return comp


def _other_bytes(component: Path, dest: Path, payload: bytes = b"other bytes") -> Path:
    """The same component plus a custom section: valid, runs the same, another sha256."""
    name = b"wasmai-test"
    body = bytes([len(name)]) + name + payload
    dest.write_bytes(component.read_bytes() + b"\x00" + bytes([len(body)]) + body)
    return dest


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli(*args: object, stdin: str | None = None) -> Ran:
    """``wasmai ARGS`` in a fresh process (``run`` forks a worker, which needs a parent without the
    wasmtime/ONNX Runtime threads this test process has)."""
    proc = subprocess.run([sys.executable, "-m", "wasmai", *map(str, args)], input=stdin or "",
                          capture_output=True, text=True, timeout=300)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def _oras(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if not Path(ORAS).is_file():
        pytest.fail("the oras CLI is not installed (scripts/setup.sh: go install oras.land/oras/cmd/oras)")
    proc = subprocess.run([ORAS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def _x(tmp_path: Path) -> Path:
    x = tmp_path / "x.npy"
    np.save(x, np.arange(32, dtype=np.float32).reshape(2, 16) / 32)
    return x


# --- the round trip ------------------------------------------------------------------------------

def test_push_pull_verify_run_round_trip(registry, signed, keys, tmp_path):
    ref = f"{registry.host}/wasmai/mlp:1.0"
    t0 = time.perf_counter()
    res = cli("push", signed, ref, "--insecure", "--source", "https://example.com/models", "--license",
              "Apache-2.0", "--json")
    push_s = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    pushed = json.loads(res.stdout)
    digest, pinned = pushed["digest"], pushed["pinned"]
    assert pinned == f"{registry.host}/wasmai/mlp@{digest}"
    assert pushed["component_digest"] == "sha256:" + hashlib.sha256(signed.read_bytes()).hexdigest()
    assert pushed["signature"]["indexed_by"] == "referrers-tag"  # distribution 2.8 has no referrers API

    # The layout, as another client sees it.
    manifest = json.loads(_oras("manifest", "fetch", "--plain-http", ref).stdout)
    assert hashlib.sha256(_oras("manifest", "fetch", "--plain-http", ref).stdout.encode()).hexdigest() \
        == digest.split(":")[1]
    assert manifest["mediaType"] == oci.MANIFEST_MEDIA_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/wasm"]
    notes = manifest["annotations"]
    assert notes["org.opencontainers.image.title"] == "mlp.wasm"
    assert notes["org.opencontainers.image.source"] == "https://example.com/models"
    assert notes["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert notes["dev.wasmai.model.name"] == "mlp" and notes["dev.wasmai.model.task"] == "tensor"
    assert notes["dev.wasmai.wasi-nn.version"] == "0.2.0-rc-2024-10-28"
    assert json.loads(notes["dev.wasmai.model.inputs"])[0]["name"] == "x"
    config = json.loads(_oras("manifest", "fetch-config", "--plain-http", ref).stdout)
    assert config["architecture"] == "wasm" and config["os"] == "wasip2"
    assert config["layerDigests"] == [manifest["layers"][0]["digest"]]
    assert "wasi:nn/graph@0.2.0-rc-2024-10-28" in config["component"]["imports"]
    assert config["component"]["exports"] == ["wasmai:inference/metadata@0.2.0", "wasmai:inference/model@0.2.0",
                                             "wasmai:inference/model-tensors@0.2.0"]
    assert config["component"]["target"] == "wasmai:inference/tensor-model@0.2.0"
    # oras finds the signature through the referrers tag schema, as cosign would.
    discovered = json.loads(_oras("discover", "--plain-http", "--format", "json", pinned).stdout)
    assert [m["artifactType"] for m in discovered["referrers"]] == [oci.SIGSTORE_BUNDLE_MEDIA_TYPE]

    # pull by tag and by digest: the same bytes, the bundle beside them, then a local verify.
    t0 = time.perf_counter()
    res = cli("pull", ref, "-o", f"{tmp_path}/pulled/", "--insecure", "--json")
    pull_s = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    pulled = json.loads(res.stdout)
    out = Path(pulled["output"])
    assert out == tmp_path / "pulled" / "mlp.wasm" and out.read_bytes() == signed.read_bytes()
    assert pulled["digest"] == digest and pulled["signatures"] == 1 and not pulled["cache_hit"]
    assert cli("verify", out, "--key", keys.public_key).exit_code == 0
    again = oci.pull(pinned, tmp_path / "again.wasm", insecure=True)
    assert again.cache_hit and again.digest == digest
    print(f"\npush {push_s:.2f} s, pull {pull_s:.2f} s, component {pushed['size_bytes']} bytes")

    # verify and run by tag and by digest, the signature fetched from the referrers.
    res = cli("verify", f"oci://{ref}", "--key", keys.public_key, "--insecure", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["pinned"] == pinned
    res = cli("run", f"oci://{pinned}", "--key", keys.public_key, "--insecure", "--input", f"x={_x(tmp_path)}",
              "--json")
    assert res.exit_code == 0, res.output
    ran = json.loads(res.stdout)
    assert ran["signature"]["verified"] and ran["sha256"] == pushed["component_digest"].split(":")[1]
    assert ran["outputs"][0]["shape"] == [2, 4]

    # bench by digest (a few calls; the ONNX baseline is not beside a cached blob: reported, not run).
    res = cli("bench", f"oci://{pinned}", "--key", keys.public_key, "--insecure", "--random", "-n", "5",
              "--warmup", "1", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["component_sha256"] == ran["sha256"]


def test_a_corrupted_cache_entry_is_fetched_again(registry, signed):
    pushed = oci.push(signed, f"{registry.host}/wasmai/cache:1", insecure=True)
    first = oci.resolve_component(f"oci://{pushed.pinned}", insecure=True)
    first.component.write_bytes(b"not the component")
    second = oci.resolve_component(f"oci://{pushed.pinned}", insecure=True)
    assert not second.cache_hit and second.component.read_bytes() == signed.read_bytes()


# --- refusals ------------------------------------------------------------------------------------

def test_a_tag_moved_to_other_bytes_after_signing_is_refused(registry, signed, keys, tmp_path):
    ref = f"{registry.host}/wasmai/moved:stable"
    original = oci.push(signed, ref, insecure=True)
    assert original.signature is not None
    assert cli("verify", f"oci://{ref}", "--key", keys.public_key, "--insecure").exit_code == 0

    # Someone moves the tag to other bytes (no signature of ours).
    swapped = _other_bytes(signed, tmp_path / "swapped.wasm")
    moved = oci.push(swapped, ref, insecure=True)
    assert moved.digest != original.digest and moved.signature is None
    res = cli("run", f"oci://{ref}", "--key", keys.public_key, "--insecure", "--input", f"x={_x(tmp_path)}")
    assert res.exit_code == 1
    assert res.stderr.startswith(f"error: no signature attached to {moved.pinned}")
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.output

    # ... and attaches the old bundle to the new manifest with another client: the bundle signs
    # other bytes, so it is refused.
    bundle = ws.default_bundle_path(signed)
    _oras("attach", "--plain-http", "--artifact-type", oci.SIGSTORE_BUNDLE_MEDIA_TYPE, moved.pinned,
          f"{bundle.name}:{oci.SIGSTORE_BUNDLE_MEDIA_TYPE}", cwd=bundle.parent)
    with pytest.raises(VerificationError, match="digest mismatch"):
        oci.resolve_component(ref, policy=ws.VerificationPolicy(key=keys.public_key), insecure=True)
    # The original digest still verifies and runs.
    ok = oci.resolve_component(original.pinned, policy=ws.VerificationPolicy(key=keys.public_key), insecure=True)
    assert ok.verified is not None and ok.component_digest == original.component_digest


def test_a_bundle_for_another_digest_is_refused(registry, signed, keys, tmp_path):
    other = _other_bytes(signed, tmp_path / "other.wasm")
    # push itself refuses to attach a bundle that signs other bytes ...
    res = cli("push", other, f"{registry.host}/wasmai/other:1", "--bundle", ws.default_bundle_path(signed),
              "--insecure")
    assert res.exit_code == 1 and "does not sign" in res.stderr
    # ... a bundle attached by someone else for another digest fails verification ...
    pushed = oci.push(other, f"{registry.host}/wasmai/other:1", insecure=True)
    bundle = ws.default_bundle_path(signed)
    _oras("attach", "--plain-http", "--artifact-type", oci.SIGSTORE_BUNDLE_MEDIA_TYPE, pushed.pinned,
          f"{bundle.name}:{oci.SIGSTORE_BUNDLE_MEDIA_TYPE}", cwd=bundle.parent)
    res = cli("verify", f"oci://{pushed.pinned}", "--key", keys.public_key, "--insecure")
    assert res.exit_code == 1 and res.stderr.startswith(f"error: {pushed.pinned}: digest mismatch")
    # ... and so does a valid bundle of the right bytes signed by another key.
    stranger = ws.keygen(tmp_path / "stranger")
    ws.sign_component(other, key=stranger.private_key)
    assert oci.push(other, f"{registry.host}/wasmai/other:2", insecure=True).signature is not None
    with pytest.raises(VerificationError, match="wrong key"):
        oci.resolve_component(f"{registry.host}/wasmai/other:2", policy=ws.VerificationPolicy(key=keys.public_key),
                              insecure=True)


def test_a_blob_that_does_not_match_its_digest_is_refused(registry, signed, tmp_path):
    # Bytes of its own: the registry stores a blob once for all repositories.
    pushed = oci.push(_other_bytes(signed, tmp_path / "tampered.wasm", b"tampered"),
                      f"{registry.host}/wasmai/tampered:1", insecure=True)
    blob = registry.blob_file(pushed.component_digest)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    res = cli("pull", pushed.pinned, "-o", tmp_path / "out.wasm", "--insecure")
    assert res.exit_code == 1 and "does not match its descriptor" in res.stderr
    assert not (tmp_path / "out.wasm").exists()
    assert not any(p.is_file() for p in (Path(os.environ["WASMAI_CACHE_DIR"]) / "oci").rglob("*")
                   if p.name == pushed.component_digest.split(":")[1])


def test_insecure_is_only_for_this_machine(signed):
    res = cli("push", signed, "registry.example.com/wasmai/mlp:1", "--insecure")
    assert res.exit_code == 1
    assert res.stderr == ("error: --insecure (plain HTTP) is only accepted for a registry on this machine "
                          "(localhost, 127.0.0.1, [::1]), not registry.example.com\n")
    with pytest.raises(WasmaiError, match="not a registry reference"):
        oci.parse_reference("mlp:1")
    with pytest.raises(WasmaiError, match="sha256"):
        oci.parse_reference("localhost:5000/mlp@sha512:" + "0" * 128)


# --- authentication ------------------------------------------------------------------------------

def test_unauthenticated_push_is_refused_with_one_line(auth_registry, signed):
    res = cli("push", signed, f"{auth_registry.host}/wasmai/mlp:1", "--insecure")
    assert res.exit_code == 1
    assert res.stderr == (f"error: {auth_registry.host} requires authentication: log in (docker login, "
                          "REGISTRY_AUTH_FILE) or pass --username and --password-stdin\n")
    res = cli("push", signed, f"{auth_registry.host}/wasmai/mlp:1", "--insecure", "--username", USER,
              "--password-stdin", stdin="wrong\n")
    assert res.exit_code == 1
    assert res.stderr == (f"error: {auth_registry.host} refused the credentials (HTTP 401): "
                          "check the user name and password\n")


def test_authenticated_push_and_pull(auth_registry, signed, keys, tmp_path, monkeypatch):
    ref = f"{auth_registry.host}/wasmai/mlp:1"
    res = cli("push", signed, ref, "--insecure", "--username", USER, "--password-stdin", "--json",
              stdin=PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    # Credentials from REGISTRY_AUTH_FILE (containers-auth.json), as podman/skopeo write it.
    auth_file = tmp_path / "auth.json"
    token = __import__("base64").b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth_file.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    res = cli("verify", f"oci://{ref}", "--key", keys.public_key, "--insecure")
    assert res.exit_code == 0, res.output
    # ... and from $DOCKER_CONFIG/config.json (docker login's file).
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    (Path(os.environ["DOCKER_CONFIG"]) / "config.json").write_text(auth_file.read_text())
    assert oci.pull(ref, tmp_path / "p.wasm", insecure=True).output == str(tmp_path / "p.wasm")


# --- interop with the oras CLI -------------------------------------------------------------------

def test_oras_pulls_what_wasmai_pushed(registry, signed, tmp_path):
    pushed = oci.push(signed, f"{registry.host}/wasmai/interop:1", insecure=True)
    _oras("pull", "--plain-http", pushed.pinned, "-o", tmp_path / "oras-out")
    assert (tmp_path / "oras-out" / "mlp.wasm").read_bytes() == signed.read_bytes()


def test_wasmai_pulls_and_runs_what_oras_pushed(registry, signed, keys, tmp_path):
    # oras writes the Wasm OCI layout from files and attaches the bundle itself.
    work = tmp_path / "oras-push"
    work.mkdir()
    shutil.copyfile(signed, work / "model.wasm")
    shutil.copyfile(ws.default_bundle_path(signed), work / "model.sigstore.json")
    digest = "sha256:" + hashlib.sha256(signed.read_bytes()).hexdigest()
    (work / "config.json").write_text(json.dumps({"architecture": "wasm", "os": "wasip2", "layerDigests": [digest]}))
    ref = f"{registry.host}/oras/model:v1"
    _oras("push", "--plain-http", "--config", "config.json:application/vnd.wasm.config.v0+json", ref,
          "model.wasm:application/wasm", cwd=work)
    _oras("attach", "--plain-http", "--artifact-type", oci.SIGSTORE_BUNDLE_MEDIA_TYPE, ref,
          f"model.sigstore.json:{oci.SIGSTORE_BUNDLE_MEDIA_TYPE}", cwd=work)

    pulled = oci.pull(ref, f"{tmp_path}/out/", insecure=True)
    assert Path(pulled.output).name == "model.wasm" and Path(pulled.output).read_bytes() == signed.read_bytes()
    assert pulled.signatures == 1 and pulled.bundle is not None
    res = cli("run", f"oci://{ref}", "--key", keys.public_key, "--insecure", "--input", f"x={_x(tmp_path)}",
              "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["signature"]["verified"]


# --- a by-name component and its model artifact --------------------------------------------------

def test_by_name_component_with_its_model_artifact(registry, build_component, tensor_component, keys, tmp_path):
    onnx_path = tensor_component[1]
    comp = tmp_path / "by-name.wasm"
    shutil.copyfile(build_component(onnx_path, by_name="mlp"), comp)
    ws.sign_component(comp, key=keys.private_key)
    ref = f"{registry.host}/wasmai/by-name:1"
    res = cli("push", comp, ref, "--insecure")
    assert res.exit_code == 1 and "--model FILE.onnx" in res.stderr
    pushed = oci.push(comp, ref, model=onnx_path, insecure=True)
    assert pushed.annotations["dev.wasmai.model.artifact"] == pushed.model_artifact
    # run by digest: the model comes from the registry for load-by-name, no --graph needed.
    res = cli("run", f"oci://{pushed.pinned}", "--key", keys.public_key, "--insecure", "--input",
              f"x={_x(tmp_path)}", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["outputs"][0]["shape"] == [2, 4]
    pulled = oci.pull(pushed.pinned, f"{tmp_path}/pulled/", insecure=True)
    assert Path(pulled.graphs["mlp"]).read_bytes() == Path(onnx_path).read_bytes()


def test_serve_runs_a_pushed_component_pinned_and_verified(registry, signed, keys, tmp_path):
    """`wasmai serve oci://REF`: the tag is resolved once, the attached signature verified, and the
    model (named after the repository) answers inference; a policy it fails refuses to start."""
    import onnx_factory as factory
    from conftest import Server, http, post_json

    ref = f"{registry.host}/wasmai/served:1.0"
    assert cli("push", signed, ref, "--insecure").exit_code == 0
    server = Server([f"oci://{ref}", "--insecure", "--key", str(keys.public_key), "--poll", "0"],
                    tmp_path / "serve.log")
    try:
        x = np.random.default_rng(7).standard_normal((1, 16)).astype(np.float32)
        status, _, doc = post_json(f"{server.url}/v2/models/served/infer",
                                   {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16],
                                                "data": x.ravel().tolist()}]})
        assert status == 200, doc
        np.testing.assert_allclose(np.array(doc["outputs"][0]["data"], np.float32).reshape(1, 4),
                                   factory.mlp_reference(x), rtol=1e-5, atol=1e-5)
        assert http("GET", f"{server.url}/v2/models/served/ready")[0] == 200
    finally:
        assert server.stop() == 0

    other = ws.keygen(tmp_path / "other")
    refused = subprocess.run([sys.executable, "-m", "wasmai", "serve", f"oci://{ref}", "--insecure", "--key",
                              str(other.public_key), "--port", "0"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: "), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
