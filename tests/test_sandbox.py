"""The host's sandbox: deny by default, and each grant or limit of ``Host(...)`` / ``wasmai run``
(--dir, --env, --inherit-stdio, --max-memory, --max-tensor-bytes, --max-graphs, --timeout).

The probe guest is a real component built from tests/guests/sandbox (a ``tensor-model`` with
no graph plus exports such as ``read-file``, ``get-env``, ``spin``, ``hog``, ``say`` and
``load-graphs``), called through :meth:`wasmai.host.Instance.call_export`. Tensor limits are
checked on a real tensor component of an ONNX Identity model (tests/onnx_factory.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx_factory as factory
import pytest
from conftest import run_cli

from wasmai.errors import WasmaiError
from wasmai.host import ComponentError, Host, InferenceError
from wasmai.sandbox import Preopen, SandboxOptions
from wasmai.tensors import Tensor

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20


# --- option parsing (no build) ------------------------------------------------------------------

def test_dir_option_syntax(tmp_path):
    assert Preopen.parse(f"{tmp_path}::/data") == Preopen(tmp_path, "/data", False)
    assert Preopen.parse(f"{tmp_path}::/data:ro") == Preopen(tmp_path, "/data", True)
    assert Preopen.parse(f"{tmp_path}::.:rw") == Preopen(tmp_path, ".", False)
    for bad in (str(tmp_path), f"{tmp_path}::", "::/data", f"{tmp_path}::/data:"):
        with pytest.raises(WasmaiError):
            Preopen.parse(bad)
    with pytest.raises(WasmaiError, match="host directory not found"):
        Preopen.parse(f"{tmp_path / 'missing'}::/data")


def test_env_and_limit_options():
    opts = SandboxOptions.from_options(env=["A=1", "B=x=y", "EMPTY="], max_memory_mb=64, max_tensor_bytes=10,
                                       max_graphs=2, inherit_stdio=True)
    assert opts.env == {"A": "1", "B": "x=y", "EMPTY": ""}
    kw = opts.host_kwargs()
    assert kw["memory_limit_mb"] == 64 and kw["max_tensor_bytes"] == 10 and kw["max_graphs"] == 2
    assert kw["inherit_stdio"] is True and kw["dirs"] == []
    assert SandboxOptions().host_kwargs()["memory_limit_mb"] == 4096
    for bad in ("A", "=1"):
        with pytest.raises(WasmaiError, match="--env"):
            SandboxOptions.from_options(env=[bad])


def test_cli_missing_dir_is_one_line_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(1, np.float32))
    (tmp_path / "c.wasm").write_bytes(b"\0asm")
    proc = run_cli("run", str(tmp_path / "c.wasm"), "--input", f"x={tmp_path / 'x.npy'}",
                   "--dir", f"{tmp_path / 'nope'}::/data")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: --dir: host directory not found: {tmp_path / 'nope'}"]


# --- the probe guest ----------------------------------------------------------------------------

def _build_probe(tmp_path_factory, name: str, **env: str) -> Path:
    """tests/guests/sandbox built with the real ``cargo component build`` (the repository's
    wit/ copied into the build copy's wit/deps; ``env`` added to cargo's environment, read by the
    guest's ``option_env!``). Returns the component file."""
    from wasmai.build import cargo_environment, target_lock
    from wasmai.toolchain import detect, guest_target_dir

    tc = detect()
    work = tmp_path_factory.mktemp("sandbox-guest")
    crate = work / "sandbox"
    shutil.copytree(REPO / "tests" / "guests" / "sandbox", crate)
    deps = crate / "wit" / "deps"
    (deps / "wasmai-inference").mkdir(parents=True)
    shutil.copy(REPO / "wasmai" / "wit" / "inference.wit", deps / "wasmai-inference" / "inference.wit")
    shutil.copytree(REPO / "wasmai" / "wit" / "deps" / "wasi-nn", deps / "wasi-nn")
    artifact = guest_target_dir() / "wasm32-wasip1" / "release" / "wasmai_test_sandbox.wasm"
    with target_lock():  # the guest target dir is shared with wasmai build
        proc = subprocess.run([tc.cargo or "cargo", "component", "build", "--release"], cwd=crate,
                              env={**cargo_environment(tc), **env}, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = work / f"{name}.wasm"
        shutil.copy(artifact, out)
    return out


@pytest.fixture(scope="session")
def probe(tmp_path_factory) -> Path:
    """The sandbox probe component."""
    return _build_probe(tmp_path_factory, "sandbox-probe")


@pytest.fixture(scope="session")
def sleepy_probe(tmp_path_factory) -> Path:
    """The sandbox probe whose ``metadata.info`` first sleeps 10 minutes in wasi:io/poll."""
    return _build_probe(tmp_path_factory, "sleepy-probe", WASMAI_PROBE_INFO_NAP_MS="600000")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wasmtime-cache")


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "hello.txt").write_text("hello from the host\n")
    return d


def _probe(probe: Path, cache_dir: Path, **host_kwargs):
    host = Host(cache_dir=cache_dir, **host_kwargs)
    return host, host.instantiate(host.load_component(probe))


@pytest.mark.slow
def test_probe_is_a_normal_component(probe, cache_dir):
    _, inst = _probe(probe, cache_dir)
    assert inst.info()["name"] == "sandbox-probe"
    with pytest.raises(ComponentError) as err:
        inst.call_export("no-such-function")
    assert err.value.code == "unsupported"
    with pytest.raises(ComponentError) as err:
        inst.call_export("hog", "many")
    assert err.value.code == "argument" and "u32" in str(err.value)


@pytest.mark.slow
def test_file_read_denied_without_dir(probe, cache_dir, data_dir):
    _, inst = _probe(probe, cache_dir)
    for path in (str(data_dir / "hello.txt"), "/data/hello.txt", "hello.txt", "/etc/passwd"):
        tag, message = inst.call_export("read-file", path)
        assert tag == "err", path
    tag, _ = inst.call_export("write-file", str(data_dir / "new.txt"), "x")
    assert tag == "err" and not (data_dir / "new.txt").exists()


@pytest.mark.slow
def test_file_read_and_write_allowed_with_dir(probe, cache_dir, data_dir):
    _, inst = _probe(probe, cache_dir, dirs=[f"{data_dir}::/data"])
    assert inst.call_export("read-file", "/data/hello.txt") == ("ok", "hello from the host\n")
    assert inst.call_export("write-file", "/data/new.txt", "from the guest") == ("ok", None)
    assert (data_dir / "new.txt").read_text() == "from the guest"
    # Only the preopened folder: the rest of the host stays invisible.
    assert inst.call_export("read-file", "/etc/passwd")[0] == "err"
    assert inst.call_export("read-file", "/data/../../etc/passwd")[0] == "err"


@pytest.mark.slow
def test_write_denied_with_read_only_dir(probe, cache_dir, data_dir):
    _, inst = _probe(probe, cache_dir, dirs=[Preopen(data_dir, "/data", read_only=True)])
    assert inst.call_export("read-file", "/data/hello.txt") == ("ok", "hello from the host\n")
    for path in ("/data/new.txt", "/data/hello.txt"):
        tag, message = inst.call_export("write-file", path, "overwritten")
        assert tag == "err" and message, path
    assert not (data_dir / "new.txt").exists()
    assert (data_dir / "hello.txt").read_text() == "hello from the host\n"


@pytest.mark.slow
def test_env_absent_by_default_present_with_env(probe, cache_dir):
    os.environ.setdefault("WASMAI_SANDBOX_TEST_SECRET", "host-only")
    _, inst = _probe(probe, cache_dir)
    for key in ("WASMAI_SANDBOX_TEST_SECRET", "PATH", "HOME", "GREETING"):
        assert inst.call_export("get-env", key) is None
    _, inst = _probe(probe, cache_dir, env={"GREETING": "hello=world"})
    assert inst.call_export("get-env", "GREETING") == "hello=world"
    assert inst.call_export("get-env", "WASMAI_SANDBOX_TEST_SECRET") is None


@pytest.mark.slow
def test_spin_times_out_and_the_host_stays_healthy(probe, cache_dir):
    host, inst = _probe(probe, cache_dir, timeout_s=0.3)
    t0 = time.perf_counter()
    with pytest.raises(ComponentError) as err:
        inst.call_export("spin")
    elapsed = time.perf_counter() - t0
    assert err.value.code == "timeout" and "timed out after 0.300 s" in str(err.value)
    assert 0.25 < elapsed < 5
    with pytest.raises(ComponentError) as err:
        inst.call_export("get-env", "X")
    assert err.value.code == "dead"
    fresh = host.instantiate(host.load_component(probe))
    assert fresh.call_export("hog", 4) == 4 and fresh.info()["name"] == "sandbox-probe"


@pytest.mark.slow
def test_hog_beyond_max_memory_fails_and_the_next_instance_works(probe, cache_dir):
    host, inst = _probe(probe, cache_dir, memory_limit_mb=48)
    assert inst.call_export("hog", 16) == 16
    with pytest.raises(ComponentError) as err:
        inst.call_export("hog", 64)
    assert err.value.code == "memory-limit"
    assert "max-memory 48 MiB" in str(err.value) and "memory allocation" in str(err.value)
    assert host.instantiate(host.load_component(probe)).call_export("hog", 16) == 16


@pytest.mark.slow
def test_stdout_captured_by_default(probe, cache_dir, capfd):
    _, inst = _probe(probe, cache_dir)
    assert inst.call_export("say", "quiet please") is None
    assert inst.output() == (b"quiet please\n", b"")
    assert "quiet please" not in capfd.readouterr().out


@pytest.mark.slow
def test_inherit_stdio_prints_to_the_process_stdout(probe, cache_dir, capfd):
    _, inst = _probe(probe, cache_dir, inherit_stdio=True)
    inst.call_export("say", "loud and clear")
    assert "loud and clear\n" in capfd.readouterr().out
    assert inst.output() == (b"", b"")


@pytest.mark.slow
def test_max_graphs_counts_live_graphs(probe, cache_dir, tmp_path):
    model = factory.save(factory.identity("fp32"), tmp_path / "id.onnx")
    _, inst = _probe(probe, cache_dir, graphs={"id": model})
    assert inst.call_export("load-graphs", "id", 5) == ("ok", 5)
    _, inst = _probe(probe, cache_dir, graphs={"id": model}, max_graphs=2)
    assert inst.call_export("load-graphs", "id", 2) == ("ok", 2)
    tag, message = inst.call_export("load-graphs", "id", 3)
    assert tag == "err" and message.startswith("security: ") and "max-graphs 2" in message
    # The earlier handles were dropped when the call returned: the quota is of live graphs.
    assert inst.call_export("load-graphs", "id", 2) == ("ok", 2)
    _, inst = _probe(probe, cache_dir, graphs={"id": model}, max_graphs=0)
    assert inst.call_export("load-graphs", "id", 1)[1].startswith("security: ")


# --- wasi-nn tensor size limit on a real tensor component ----------------------------------------

@pytest.fixture(scope="session")
def identity_u8(tmp_path_factory, build_component) -> Path:
    """A tensor component of ``y = Identity(x)``, x u8 [n] (embedded model)."""
    d = tmp_path_factory.mktemp("identity-u8")
    return build_component(factory.save(factory.identity("u8", ("n",)), d / "identity_u8.onnx"))


@pytest.mark.slow
def test_64_mib_tensor_crosses_with_a_big_enough_limit(identity_u8, cache_dir):
    host = Host(cache_dir=cache_dir, max_tensor_bytes=64 * MIB)
    inst = host.instantiate(host.load_component(identity_u8))
    x = np.random.default_rng(0).integers(0, 256, 64 * MIB, dtype=np.uint8)
    t0 = time.perf_counter()
    (y,) = inst.infer([Tensor.from_numpy("x", x)])
    print(f"64 MiB identity round trip: {(time.perf_counter() - t0) * 1e3:.0f} ms")
    assert y.shape == (64 * MIB,) and y.data == x.tobytes()


@pytest.mark.slow
def test_tensor_over_max_tensor_bytes_is_too_large(identity_u8, cache_dir):
    host = Host(cache_dir=cache_dir, max_tensor_bytes=64 * MIB - 1)
    inst = host.instantiate(host.load_component(identity_u8))
    with pytest.raises(InferenceError) as err:
        inst.infer([Tensor.from_numpy("x", np.zeros(64 * MIB, np.uint8))])
    assert err.value.code == "too-large"
    assert f"{64 * MIB} bytes" in err.value.message and f"limit of {64 * MIB - 1} bytes" in err.value.message
    # An error, not a trap: the same instance still runs tensors under the limit.
    (y,) = inst.infer([Tensor.from_numpy("x", np.arange(10, dtype=np.uint8))])
    assert y.data == bytes(range(10))


@pytest.mark.slow
def test_cli_max_tensor_bytes_exits_1_with_too_large(identity_u8, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(2 * MIB, np.uint8))
    proc = run_cli("run", str(identity_u8), "--input", f"x={tmp_path / 'x.npy'}", "--max-tensor-bytes", str(MIB))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: too-large: ") and "1048576 bytes" in lines[0]
    ok = run_cli("run", str(identity_u8), "--input", f"x={tmp_path / 'x.npy'}", "--max-tensor-bytes", str(2 * MIB),
                 "--max-memory", "256", "--max-graphs", "1", "--json")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.slow
def test_cli_bench_takes_the_sandbox_flags(identity_u8, tmp_path):
    common = ["bench", str(identity_u8), "--random", "--dim", "n=4096", "-n", "2", "--warmup", "0", "--no-native",
              "--json"]
    refused = run_cli(*common, "--max-tensor-bytes", "1000")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("error: too-large: ")
    ok = run_cli(*common, "--max-tensor-bytes", "4096", "--max-memory", "128", "--max-graphs", "1",
                 "--dir", f"{tmp_path}::/data:ro", "--env", "A=1")
    assert ok.returncode == 0, ok.stderr
    bad_dir = run_cli(*common, "--dir", f"{tmp_path / 'missing'}::/data")
    assert bad_dir.returncode == 1 and "host directory not found" in bad_dir.stderr


@pytest.mark.slow
def test_inspect_of_a_component_that_sleeps_in_info_ends_at_its_timeout(sleepy_probe):
    """``metadata.info`` blocked in a wasi:io/poll sleep is not stopped by the epoch; inspect
    calls it in a worker process, which answers ``timeout`` at the timeout + 1 s. The WIT part of
    the report is still there."""
    from wasmai.runtime import inspect_component

    t0 = time.perf_counter()
    result = inspect_component(sleepy_probe, timeout_s=0.5)
    took = time.perf_counter() - t0
    assert result.info is None and "info did not return within 1.500 s" in (result.info_error or "")
    assert 1.5 <= took < 10, took
    assert any("metadata" in item for item in result.exports)
