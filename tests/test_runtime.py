"""The native wasi-nn host (wasmai._host) and `wasmai run` / `wasmai inspect`, on real components
built from the repo templates by wasmai.build and real ONNX models from tests/onnx_factory.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx_factory as factory
import pytest
from conftest import in_threads, run_cli

from wasmai.errors import WasmaiError
from wasmai.host import ComponentError, Host, InferenceError
from wasmai.tensors import Tensor

pytestmark = pytest.mark.slow  # the fixtures build components with cargo-component


def _lying_identity():
    """Identity on fp32 ``[n]`` whose output is declared ``[262144]`` (1 MiB): a graph that
    computes another shape than it declares for any other n."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "lying",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [262144])])
    return factory._model(graph, "lying identity")


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """ONNX files: every dtype, an MLP (16 -> 4, dynamic batch), a narrower MLP (8 -> 4) and junk."""
    d = tmp_path_factory.mktemp("models")
    junk = d / "junk.onnx"
    junk.write_bytes(b"GGUF this is not an ONNX protobuf" * 4)
    return {
        "all_types": factory.save(factory.identity_all_types(), d / "all_types.onnx"),
        "mlp": factory.save(factory.mlp(), d / "mlp.onnx"),
        "mlp8": factory.save(factory.mlp(n_in=8), d / "mlp8.onnx"),
        # Outputs of 0.5-4 MiB per dtype: ONNX Runtime writes the >= 1 MiB ones into the host's buffer.
        "big_types": factory.save(factory.identity_all_types((512, 1024)), d / "big_types.onnx"),
        "lying": factory.save(_lying_identity(), d / "lying.onnx"),
        "junk": junk,
    }


@pytest.fixture(scope="session")
def components(models, build_component) -> dict[str, Path]:
    """Components built by wasmai.build from templates/tensor."""
    return {
        "all_types": build_component(models["all_types"]),
        "mlp_by_name": build_component(models["mlp"], by_name="mlp"),
        "mlp_gpu": build_component(models["mlp"], execution_target="gpu"),
        "big_types": build_component(models["big_types"]),
        "lying": build_component(models["lying"]),
    }


@pytest.fixture(scope="session")
def host(tmp_path_factory, models) -> Host:
    return Host(graphs={"mlp": models["mlp"]}, cache_dir=tmp_path_factory.mktemp("wasmtime-cache"))


#: The by-value forward pass (`Instance.infer` uses `wasmai:inference/model-tensors` when exported).
MODEL_INFER = "wasmai:inference/model@0.2.0#infer"


def _instance(host: Host, path: Path):
    return host.instantiate(host.load_component(path))


def test_all_seven_dtypes_round_trip_through_the_component(host, components):
    inst = _instance(host, components["all_types"])
    inputs = [Tensor.from_numpy(f"x_{d}", factory.random_input(d, (2, 3), seed=i), d)
              for i, d in enumerate(factory.DTYPES)]
    outputs = inst.infer(inputs)
    assert [t.name for t in outputs] == [f"y_{d}" for d in factory.DTYPES]  # model order
    for src, out in zip(inputs, outputs, strict=True):
        assert out.dtype == src.dtype and out.shape == (2, 3)
        assert out.data == src.data, src.dtype
    assert outputs[3].numpy().dtype == np.uint16  # bf16 as raw bits
    stats = inst.host_stats()
    assert stats["compute_calls"] == 1 and stats["ort_run_ns"] > 0
    assert stats["execution_provider"] == "CPUExecutionProvider"
    assert stats["linear_memory_bytes"] > 0


def test_inputs_by_position_and_in_any_order(host, components):
    inst = _instance(host, components["all_types"])
    arrays = [factory.random_input(d, (2, 3), seed=10 + i) for i, d in enumerate(factory.DTYPES)]
    by_position = inst.infer([Tensor.from_numpy("", a, d) for a, d in zip(arrays, factory.DTYPES, strict=True)])
    reversed_named = inst.infer([Tensor.from_numpy(f"x_{d}", a, d)
                                 for a, d in reversed(list(zip(arrays, factory.DTYPES, strict=True)))])
    assert [t.data for t in by_position] == [t.data for t in reversed_named] == [a.tobytes() for a in arrays]


def test_info_reports_the_manifest(host, components, models):
    from wasmai.manifest import sha256_file

    info = _instance(host, components["mlp_by_name"]).info()
    assert info["task"] == "tensor" and info["placement"] == "by-name:mlp"
    assert info["inputs"] == [{"name": "x", "dtype": "fp32", "shape": ["batch", 16]}]
    assert info["outputs"][0]["name"] == "y" and info["outputs"][0]["shape"][1] == 4
    assert info["model_sha256"] == sha256_file(models["mlp"])


def test_wrong_dims_and_byte_length_name_the_tensor(host, components):
    inst = _instance(host, components["all_types"])
    good = [Tensor.from_numpy(f"x_{d}", factory.random_input(d, (2, 3)), d) for d in factory.DTYPES]
    bad_dims = list(good)
    bad_dims[1] = Tensor.from_numpy("x_fp32", np.zeros((3, 2), np.float32))
    with pytest.raises(InferenceError) as err:
        inst.infer(bad_dims)
    assert err.value.code in ("bad-input", "invalid-argument") and "x_fp32" in err.value.message
    assert "[3, 2]" in err.value.message
    short = list(good)
    short[2] = Tensor("x_fp64", "fp64", (2, 3), b"\0" * 47)
    with pytest.raises(InferenceError) as err:
        inst.infer(short)
    assert "x_fp64" in err.value.message and "47" in err.value.message
    assert len(inst.infer(good)) == 7  # the instance is still usable


def test_load_by_name_found_runs_the_registered_graph(host, components):
    inst = _instance(host, components["mlp_by_name"])
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    (y,) = inst.infer([Tensor.from_numpy("x", x)])
    assert y.name == "y" and y.shape == (3, 4)
    np.testing.assert_allclose(y.numpy(), factory.mlp_reference(x), rtol=1e-5, atol=1e-5)


def test_load_by_name_not_found(tmp_path, components):
    inst = _instance(Host(cache_dir=tmp_path), components["mlp_by_name"])
    with pytest.raises(InferenceError) as err:
        inst.load()
    assert err.value.code == "not-found" and "'mlp'" in err.value.message


def test_host_rejects_tensors_that_do_not_fit_the_graph(tmp_path, components, models):
    """The guest checks against its manifest (16 features); the registered graph takes 8, so
    the host's own check must answer invalid-argument naming the tensor, expected and actual."""
    inst = _instance(Host(graphs={"mlp": models["mlp8"]}, cache_dir=tmp_path), components["mlp_by_name"])
    with pytest.raises(InferenceError) as err:
        inst.infer([Tensor.from_numpy("x", np.zeros((1, 16), np.float32))])
    assert err.value.code == "invalid-argument"
    assert "'x'" in err.value.message and "[?, 8]" in err.value.message and "[1, 16]" in err.value.message


def test_non_onnx_bytes_are_invalid_encoding(tmp_path, components, models):
    inst = _instance(Host(graphs={"mlp": models["junk"]}, cache_dir=tmp_path), components["mlp_by_name"])
    with pytest.raises(InferenceError) as err:
        inst.load()
    assert err.value.code == "invalid-encoding"


def test_gpu_target_without_gpu_provider(tmp_path, components):
    strict = Host(cache_dir=tmp_path)
    if any(p != "CPUExecutionProvider" for p in strict.execution_providers()):
        pytest.skip("this ONNX Runtime has a GPU execution provider")
    with pytest.raises(InferenceError) as err:
        _instance(strict, components["mlp_gpu"]).load()
    assert err.value.code == "unsupported-operation" and "gpu" in err.value.message

    inst = _instance(Host(cache_dir=tmp_path, allow_target_fallback=True), components["mlp_gpu"])
    x = np.ones((1, 16), np.float32)
    (y,) = inst.infer([Tensor.from_numpy("x", x)])
    np.testing.assert_allclose(y.numpy(), factory.mlp_reference(x), rtol=1e-5, atol=1e-5)
    assert "fallback" in inst.host_stats()["execution_provider"]


def test_a_guest_trap_does_not_kill_python(tmp_path, components, models):
    """A 64 MiB input under a 16 MiB memory limit. Through `model.infer` (tensor bytes by value
    into the guest's memory) the guest's allocation fails and it traps; the host and Python carry
    on. (`Instance.infer` goes through `model-tensors`, where the host refuses such a tensor before
    the guest sees it: test_infer_tensors_refuses_before_the_guest.)"""
    host = Host(graphs={"mlp": models["mlp"]}, cache_dir=tmp_path, memory_limit_mb=16)
    comp = host.load_component(components["mlp_by_name"])
    inst = host.instantiate(comp)
    big = {"name": "x", "dtype": "FP32", "shape": [1 << 20, 16], "data": bytes(64 << 20)}
    with pytest.raises(ComponentError) as err:
        inst.call_export(MODEL_INFER, [big])
    # A trap after the limiter refused to grow memory is reported as the memory limit.
    assert err.value.code == "memory-limit" and "max-memory 16 MiB" in str(err.value)
    with pytest.raises(ComponentError) as err:
        inst.infer([Tensor.from_numpy("x", np.zeros((1, 16), np.float32))])
    assert err.value.code == "dead"
    fresh = host.instantiate(comp)  # the host and Python carry on
    (y,) = fresh.infer([Tensor.from_numpy("x", np.zeros((1, 16), np.float32))])
    assert y.shape == (1, 4)


def test_infer_tensors_refuses_before_the_guest(tmp_path, components, models):
    """`Instance.infer` through `model-tensors`: the host makes the input tensors, so an input
    over the instance's budget or with a byte length that does not match its dimensions is
    refused before the guest runs, and the instance stays usable."""
    host = Host(graphs={"mlp": models["mlp"]}, cache_dir=tmp_path, memory_limit_mb=16)
    inst = host.instantiate(host.load_component(components["mlp_by_name"]))
    assert inst._native.model_tensors
    with pytest.raises(InferenceError) as err:
        inst.infer([Tensor.from_numpy("x", np.zeros((1 << 20, 16), np.float32))])
    assert err.value.code == "too-large" and "'x'" in err.value.message and "max-memory 16 MiB" in err.value.message
    with pytest.raises(InferenceError) as err:
        inst.infer([Tensor("x", "fp32", (1, 16), b"\0" * 63)])
    assert err.value.code == "bad-input" and '"x"' in err.value.message and "63" in err.value.message
    (y,) = inst.infer([Tensor.from_numpy("x", np.ones((1, 16), np.float32))])
    assert y.shape == (1, 4) and inst.host_stats()["memory_budget_used_bytes"] < 16 << 20


def test_infer_tensors_and_model_infer_agree(host, components):
    """The two ways into the graph give the same outputs for every dtype: `model-tensors`
    (`Instance.infer`: wasi-nn tensors the host makes, no tensor byte in the guest's memory) and
    `model.infer` (records by value, as components built before `model-tensors` have it)."""
    inst = _instance(host, components["all_types"])
    assert inst._native.model_tensors
    inputs = [Tensor.from_numpy(f"x_{d}", factory.random_input(d, (2, 3)), d) for d in factory.DTYPES]
    ours = inst.infer(inputs)
    tag, by_value = inst.call_export(MODEL_INFER, [
        {"name": t.name, "dtype": t.dtype.upper(), "shape": list(t.shape), "data": t.data} for t in inputs])
    assert tag == "ok" and len(by_value) == len(ours) == len(factory.DTYPES)
    for t, v in zip(ours, by_value, strict=True):
        assert (t.name, t.dtype.upper(), list(t.shape), t.data) == (v["name"], v["dtype"], v["shape"], bytes(v["data"]))
    for t, x in zip(ours, inputs, strict=True):
        assert t.data == x.data  # an Identity graph per dtype


def test_compilation_cache_cold_then_hit(tmp_path, components):
    first = Host(cache_dir=tmp_path).load_component(components["all_types"])
    second = Host(cache_dir=tmp_path).load_component(components["all_types"])
    assert not first.cache_hit and second.cache_hit
    assert first.sha256 == second.sha256
    assert list(tmp_path.glob("*.cwasm"))


def test_file_cache_follows_the_file_not_its_path(tmp_path, components):
    """A cached load skips reading the file, so it must notice when the file at a path changes:
    overwriting it with another component gives that component's digest and behaviour."""
    import hashlib

    cache = tmp_path / "cache"
    path = tmp_path / "model.wasm"
    path.write_bytes(components["all_types"].read_bytes())
    first = Host(cache_dir=cache).load_component(path)
    again = Host(cache_dir=cache).load_component(path)
    assert again.cache_hit and again.sha256 == first.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(components["mlp_by_name"].read_bytes())
    host = Host(cache_dir=cache)
    replaced = host.load_component(path)
    assert replaced.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != first.sha256
    info = host.instantiate(replaced).info()
    assert info["placement"] == "by-name:mlp"


def test_load_verified_refuses_a_component_that_is_not_the_verified_one(tmp_path, components):
    import hashlib

    from wasmai.errors import VerificationError
    from wasmai.runtime import load_verified

    path = components["all_types"]
    host = Host(cache_dir=tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_verified(host, path, digest).sha256 == digest
    other = hashlib.sha256(components["mlp_by_name"].read_bytes()).hexdigest()
    with pytest.raises(VerificationError, match="changed after its signature was verified"):
        load_verified(host, path, other)


def test_not_a_component_is_a_component_error(host, tmp_path):
    with pytest.raises(ComponentError) as err:
        host.load_component(b"\0asm\x01\0\0\0")  # a core module, not a component
    assert err.value.code == "compile"
    with pytest.raises(WasmaiError):
        host.load_component(tmp_path / "missing.wasm")


def test_instances_run_in_parallel_threads(host, components):
    comp = host.load_component(components["mlp_by_name"])
    instances = [host.instantiate(comp) for _ in range(4)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        x = np.full((2, 16), float(i), np.float32)
        for _ in range(20):
            (y,) = instances[i].infer([Tensor.from_numpy("x", x)])
        results[i] = y.numpy()

    assert not in_threads(work, 4)
    for i in range(4):
        np.testing.assert_allclose(results[i], factory.mlp_reference(np.full((2, 16), float(i), np.float32)),
                                   rtol=1e-5, atol=1e-5)


def test_pooling_allocator_holds_instance_slots_instances(tmp_path, components):
    """instance_slots=2: wasmtime's pooling allocator; a third live instance is refused, a slot
    freed by a released instance is reused, and instances in reused slots compute correctly."""
    import gc

    host = Host(cache_dir=tmp_path, instance_slots=2)
    comp = host.load_component(components["all_types"])
    first, _second = host.instantiate(comp), host.instantiate(comp)
    with pytest.raises(ComponentError) as exc:
        host.instantiate(comp)
    assert exc.value.code == "instantiate"
    del first
    gc.collect()
    for i in range(3):
        inst = host.instantiate(comp)
        inputs = [Tensor.from_numpy(f"x_{d}", factory.random_input(d, (2, 3), seed=i), d) for d in factory.DTYPES]
        outputs = inst.infer(inputs)
        assert [o.data for o in outputs] == [t.data for t in inputs]
        del inst
        gc.collect()


# --- CLI --------------------------------------------------------------------------------------

def test_cli_run_tensor_json(tmp_path, components, models):
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = run_cli("run", str(components["mlp_by_name"]), "--input", f"x={tmp_path / 'x.npy'}",
                   "--graph", f"mlp={models['mlp']}", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (out,) = doc["outputs"]
    assert out["name"] == "y" and out["shape"] == [2, 4] and out["dtype"] == "fp32"
    np.testing.assert_allclose(np.array(out["values"]).reshape(2, 4), factory.mlp_reference(x),
                               rtol=1e-5, atol=1e-5)
    assert doc["execution_provider"] == "CPUExecutionProvider" and doc["ort_run_ms"] > 0

    np.savez(tmp_path / "inputs.npz", x=x)
    via_npz = run_cli("run", str(components["mlp_by_name"]), "--inputs", str(tmp_path / "inputs.npz"),
                      "--graph", f"mlp={models['mlp']}", "--json")
    assert via_npz.returncode == 0, via_npz.stderr
    assert json.loads(via_npz.stdout)["outputs"][0]["values"] == out["values"]

    table = run_cli("run", str(components["mlp_by_name"]), "--input", str(tmp_path / "x.npy"),
                    "--graph", f"mlp={models['mlp']}", "--verbose")
    assert table.returncode == 0, table.stderr
    assert "outputs" in table.stdout and "CPUExecutionProvider" in table.stdout and "cold compile" not in table.stdout


#: What `wasmai run` of a tensor component must not import without a signature policy (issue 13,
#: CLI cold start), in the command's process or its worker: the host needs the path of
#: libonnxruntime.so, not the onnxruntime package; a local component needs no registry client and,
#: without a policy, no signing code; a tensor run no task module.
NOT_ON_THE_RUN_PATH = ("onnx", "onnxruntime", "torch", "sigstore", "model_signing", "cryptography", "oras",
                       "requests", "PIL", "skimage", "uvicorn", "starlette", "fastapi", "wasmtime", "wasmai.oci",
                       "wasmai.sign", "wasmai.tasks", "wasmai.bench", "wasmai.build", "wasmai.convert")
#: What only the worker needs: the command's own process reads no tensor (the worker reads the .npy
#: files) and loads no native code; with --json it renders no table.
WORKER_ONLY = ("numpy", "wasmai._host", "rich")
#: The command modules of the other commands (`wasmai run` registers only itself).
OTHER_COMMANDS = ("wasmai.cli.bench", "wasmai.cli.build", "wasmai.cli.convert", "wasmai.cli.serve",
                  "wasmai.cli.sign", "wasmai.cli.doctor", "wasmai.cli.inspect", "wasmai.cli.toolchain")


def test_cli_run_imports_only_what_its_path_needs(tmp_path, components, models, repo_root):
    """The real CLI in a fresh process: the modules loaded in its worker when it replies and in the
    command's process when it exits, next to its output."""
    x = np.random.default_rng(3).standard_normal((1, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import atexit, sys\n"
            "import wasmai.worker\n"
            "reply = wasmai.worker._reply\n"
            "def modules(who): sys.stderr.write(who + ' ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
            "def traced(conn, answer): modules('WORKER'); sys.stderr.flush(); reply(conn, answer)\n"
            "wasmai.worker._reply = traced\n"
            "atexit.register(lambda: modules('MODULES'))\n"
            "from wasmai.cli import main\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code, "run", str(components["mlp_by_name"]), "--input",
                           f"x={tmp_path / 'x.npy'}", "--graph", f"mlp={models['mlp']}", "--json"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo_root)}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (out,) = json.loads(proc.stdout)["outputs"]
    np.testing.assert_allclose(np.array(out["values"]).reshape(1, 4), factory.mlp_reference(x), rtol=1e-5, atol=1e-5)
    (worker,) = [set(line.split()[1:]) for line in proc.stderr.splitlines() if line.startswith("WORKER ")]
    (command,) = [set(line.split()[1:]) for line in proc.stderr.splitlines() if line.startswith("MODULES ")]

    def top(modules: set[str], names: tuple[str, ...]) -> list[str]:
        return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))

    assert {"numpy", "wasmai._host", "wasmai.runtime"} <= worker  # the run path was taken, in the worker
    assert {"wasmai.cli.run", "wasmai.runtime", "wasmai.worker"} <= command
    assert top(worker, NOT_ON_THE_RUN_PATH) == [] and top(command, NOT_ON_THE_RUN_PATH) == []
    assert top(command, WORKER_ONLY) == []
    assert sorted((worker | command) & set(OTHER_COMMANDS)) == []


ORT_CI_MARKERS = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL",
                  "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER")


def test_cli_run_keeps_onnxruntime_telemetry_off(tmp_path, components, models, repo_root):
    """The onnxruntime 1.32 Linux build starts Microsoft's telemetry when its environment is
    created: a device id and an event database under ~/.cache/Microsoft. The host sets
    ORT_DISABLE_TELEMETRY=1 first (:data:`wasmai.host.ORT_ENV_VARS`), in the worker that ``wasmai
    run`` prepares the host in too; a value the user set holds (0: the files appear).

    ONNX Runtime turns its telemetry off by itself when one of the CI markers below is set (the
    names are the strings next to its telemetry code in libonnxruntime.so.1.32.0), so the
    subprocesses run without them: otherwise the "0" control shows nothing on a CI machine and
    the "unset" case passes whatever the host does."""
    from wasmai.toolchain import cache_dir

    np.save(tmp_path / "x.npy", np.zeros((1, 16), np.float32))
    argv = [sys.executable, "-m", "wasmai", "run", str(components["mlp_by_name"]), "--input",
            f"x={tmp_path / 'x.npy'}", "--graph", f"mlp={models['mlp']}", "--json"]
    for home, value in ((tmp_path / "off", None), (tmp_path / "on", "0")):
        home.mkdir()
        env = {k: v for k, v in os.environ.items()
               if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", *ORT_CI_MARKERS)}
        env.update(PYTHONPATH=str(repo_root), HOME=str(home), WASMAI_CACHE_DIR=str(cache_dir()))
        if value is not None:
            env["ORT_DISABLE_TELEMETRY"] = value
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["outputs"][0]["shape"] == [1, 4]
    assert not (tmp_path / "off" / ".cache" / "Microsoft").exists()
    assert (tmp_path / "on" / ".cache" / "Microsoft" / "DeveloperTools" / ".onnxruntime" / "deviceid").is_file()


def test_cli_run_errors_are_one_line_with_exit_codes(tmp_path, components):
    np.save(tmp_path / "x.npy", np.zeros((1, 16), np.float32))
    missing = run_cli("run", str(tmp_path / "nope.wasm"), "--input", f"x={tmp_path / 'x.npy'}", "--json")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: component not found") and "Traceback" not in missing.stderr
    assert json.loads(missing.stdout)["exit_code"] == 1

    not_found = run_cli("run", str(components["mlp_by_name"]), "--input", f"x={tmp_path / 'x.npy'}")
    assert not_found.returncode == 1
    assert not_found.stderr.count("\n") == 1 and "not-found" in not_found.stderr

    image_on_tensor = run_cli("run", str(components["all_types"]), "--image", str(tmp_path / "x.npy"))
    assert image_on_tensor.returncode == 1 and "tensor" in image_on_tensor.stderr

    no_graph_file = run_cli("run", str(components["mlp_by_name"]), "--input", f"x={tmp_path / 'x.npy'}",
                            "--graph", f"mlp={tmp_path / 'missing.onnx'}")
    assert no_graph_file.returncode == 1 and "file not found" in no_graph_file.stderr

    usage = run_cli("run", str(components["all_types"]))
    assert usage.returncode == 2


def test_cli_inspect_json(components, models):
    proc = run_cli("inspect", str(components["mlp_by_name"]), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert any(i.startswith("wasi:nn/graph@0.2.0-rc-2024-10-28") for i in doc["imports"])
    assert any(e.startswith("wasmai:inference/model@0.2.0") for e in doc["exports"])
    assert doc["info"]["placement"] == "by-name:mlp" and len(doc["sha256"]) == 64
    assert doc["signature"] is None  # no bundle beside it
    sizes = doc["size_breakdown"]
    assert sum(sizes.values()) == doc["size_bytes"] and sizes["code"] > 0

    # An embedded model is counted in the data sections.
    embedded = json.loads(run_cli("inspect", str(components["all_types"]), "--json").stdout)
    assert embedded["size_breakdown"]["data"] >= models["all_types"].stat().st_size > 0

    bad = run_cli("inspect", str(Path(__file__)), "--json")
    assert bad.returncode == 1 and "not a WebAssembly component" in bad.stderr


# --- image classifier (templates/image-classification) ------------------------------------------

@pytest.fixture(scope="session")
def classifier(tmp_path_factory, build_component) -> dict:
    """A tiny CNN (10 classes, 1x3x32x32) built as an image-classifier component, plus a 32x32 PNG
    (no resize, so the guest's preprocessing must match wasmai.preprocess exactly)."""
    from PIL import Image

    from wasmai.manifest import Manifest, Preprocess, TensorSpec, sha256_file

    d = tmp_path_factory.mktemp("classifier")
    onnx_path = factory.save(factory.cnn_classifier(), d / "cnn.onnx")
    pre = Preprocess(crop=(32, 32), mean=[120.0, 110.0, 100.0], std=[60.0, 61.0, 62.0])
    Manifest(name="tiny-cnn", task="image-classification", onnx="cnn.onnx", sha256=sha256_file(onnx_path),
             inputs=[TensorSpec("input", "fp32", [1, 3, 32, 32])],
             outputs=[TensorSpec("logits", "fp32", [1, 10])], preprocess=pre, softmax=True,
             labels=[f"class-{i}" for i in range(10)]).save(d / "cnn.toml")
    pixels = (np.random.default_rng(3).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(d / "image.png")
    return {"component": build_component(onnx_path), "onnx": onnx_path, "pre": pre, "image": d / "image.png"}


def test_classify_matches_onnxruntime_on_reference_preprocessing(host, classifier):
    import onnxruntime as ort

    from wasmai.preprocess import preprocess_image

    inst = _instance(host, classifier["component"])
    preds = inst.classify(classifier["image"].read_bytes(), top_k=3)
    x = preprocess_image(classifier["image"], classifier["pre"])
    session = ort.InferenceSession(str(classifier["onnx"]), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x})[0][0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probs)[:3]
    assert [p.index for p in preds] == order.tolist()
    assert [p.label for p in preds] == [f"class-{i}" for i in order]
    np.testing.assert_allclose([p.score for p in preds], probs[order], rtol=1e-4, atol=1e-5)
    timings = inst.last_timings()
    assert set(timings) == {"decode_us", "preprocess_us", "inference_us", "postprocess_us"}
    assert timings["inference_us"] > 0
    with pytest.raises(InferenceError) as err:
        inst.classify(b"definitely not a PNG", top_k=1)
    assert err.value.code == "bad-image"


def test_classify_on_a_tensor_model_is_refused(host, components):
    with pytest.raises(ComponentError) as err:
        _instance(host, components["all_types"]).classify(b"\x89PNG", 1)
    assert err.value.code == "unsupported"


def test_cli_run_image_json(classifier):
    proc = run_cli("run", str(classifier["component"]), "--image", str(classifier["image"]), "--top-k", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["predictions"]) == 2 and doc["task"] == "image-classification"
    assert doc["predictions"][0]["score"] >= doc["predictions"][1]["score"]
    assert set(doc["guest_timings_us"]) == {"decode_us", "preprocess_us", "inference_us", "postprocess_us"}


# --- signature policy: verify before running -----------------------------------------------------

def test_cli_run_verifies_the_signature_before_running(tmp_path, components, models):
    from wasmai.sign import keygen, sign_component

    keys = keygen(tmp_path / "keys")
    comp = tmp_path / "signed.wasm"
    comp.write_bytes(components["mlp_by_name"].read_bytes())
    signed = sign_component(comp, key=keys.private_key)
    np.save(tmp_path / "x.npy", np.ones((1, 16), np.float32))
    args = ["--input", f"x={tmp_path / 'x.npy'}", "--graph", f"mlp={models['mlp']}", "--key", str(keys.public_key)]
    ok = run_cli("run", str(comp), *args, "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["signature"] and doc["outputs"][0]["shape"] == [1, 4]

    # Same bundle, other (valid, runnable) component bytes: refused by verification, never run.
    comp.write_bytes(components["mlp_gpu"].read_bytes())
    tampered = run_cli("run", str(comp), *args, "--bundle", str(signed.bundle), "--json")
    assert tampered.returncode == 1
    assert tampered.stderr.startswith("error: ") and tampered.stderr.count("\n") == 1
    assert "outputs" not in json.loads(tampered.stdout)


def test_timeout_interrupts_a_long_guest_call(tmp_path, classifier):
    """Decoding and resizing a 3000x3000 PNG inside the guest takes far longer than 10 ms."""
    from PIL import Image

    big = tmp_path / "big.png"
    Image.fromarray((np.random.default_rng(4).random((3000, 3000, 3)) * 255).astype(np.uint8)).save(big)
    host = Host(cache_dir=tmp_path, timeout_s=0.01)
    comp = host.load_component(classifier["component"])
    with pytest.raises(ComponentError) as err:
        host.instantiate(comp).classify(big.read_bytes(), 1)
    assert err.value.code == "timeout" and "timed out" in str(err.value)
    # A call that fits in the budget still works on a fresh instance of the same host.
    patient = Host(cache_dir=tmp_path, timeout_s=30)
    ok = patient.instantiate(patient.load_component(classifier["component"]))
    assert len(ok.classify(classifier["image"].read_bytes(), 1)) == 1
    with pytest.raises(ComponentError, match="another Host"):
        patient.instantiate(comp)


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="mallopt tuning is glibc's")
def test_keep_large_buffers_stops_page_faults_on_large_buffers():
    """wasmai._malloc: after keep_large_buffers(), 64 MiB buffers come from the heap and are reused
    (no minor faults once the heap has grown), where glibc's defaults map fresh pages every time
    (16384 faults per 64 MiB written). Measured in a new process, as its setting is process-wide."""
    code = """
import resource
from wasmai._malloc import keep_large_buffers

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        block = b"x" * (64 << 20)  # malloc + write: every page touched
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
applied = keep_large_buffers()
faults()  # the heap grows once
print(applied, default, faults())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    applied, default, tuned = out[0], int(out[1]), int(out[2])
    assert applied == "True"
    assert default > 4 * 16384 * 0.9, default
    assert tuned < 16384 // 4, tuned


def test_large_outputs_are_written_in_place(host, components):
    """Outputs of a fixed shape from 1 MiB up are written by ONNX Runtime straight into the host's
    tensor (no copy out of its arena): every dtype's bytes come back unchanged, and each output
    is charged to the budget only while held (after the call the budget holds the linear
    memories and the graph)."""
    inst = _instance(host, components["big_types"])
    inputs = [Tensor.from_numpy(f"x_{d}", factory.random_input(d, (512, 1024)), d) for d in factory.DTYPES]
    for _ in range(2):
        outputs = inst.infer(inputs)
        assert [(t.name, t.shape) for t in outputs] == [(f"y_{d}", (512, 1024)) for d in factory.DTYPES]
        assert all(t.data == x.data for t, x in zip(outputs, inputs, strict=True))
    stats = inst.host_stats()
    assert stats["memory_budget_used_bytes"] - stats["linear_memory_bytes"] < 1 << 20  # the graph's bytes only
    assert stats["memory_budget_peak_bytes"] >= sum(len(x.data) for x in inputs) * 2


def test_an_output_shape_other_than_declared_still_runs(host, components):
    """A graph that declares a fixed 1 MiB output but computes another size: ONNX Runtime refuses
    the host's buffer of the declared shape and the host runs it again with ONNX Runtime's own."""
    inst = _instance(host, components["lying"])
    for n in (262144, 524288, 1000, 262144):
        x = np.arange(n, dtype=np.float32)
        (y,) = inst.infer([Tensor.from_numpy("x", x)])
        assert y.shape == (n,) and np.array_equal(y.numpy(), x)
