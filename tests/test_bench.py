"""``wasmai bench``: report schema and options on real components (tensor and image templates).

Only the shape and internal consistency of the reports are checked; no test asserts a speed (the
speed targets are checked by benchmarks/run.py against native ONNX Runtime in the same run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wasmai.bench.stats import Stats, histogram, summarize
from wasmai.cli import app
from wasmai.errors import WasmaiError
from wasmai.inputs import parse_assignments, random_inputs
from wasmai.manifest import TensorSpec

runner = CliRunner()

STAT_KEYS = {"n", "min", "p50", "p90", "p99", "max", "mean", "stdev"}
TOP_KEYS = {"component", "component_sha256", "model", "mode", "config", "cold_start", "steady", "memory",
            "ort_baseline", "library_baseline", "throughput", "verification", "execution_provider", "histogram_ms",
            "plot", "notes"}


def _bench(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, ["bench", *args])
    doc = None
    if "--json" in args and result.stdout.strip():
        doc = json.loads(result.stdout)
    return result.exit_code, doc, result.output


def _check_stats(s: dict, n: int) -> None:
    assert set(s) == STAT_KEYS
    assert s["n"] == n
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["min"] <= s["mean"] <= s["max"]
    assert s["stdev"] >= 0


@pytest.fixture(scope="module")
def sample_image(tmp_path_factory) -> Path:
    """A real photo (scikit-image's chelsea.png) when scikit-image is installed, else a generated PNG."""
    try:
        from skimage import data

        src = Path(data.__file__).parent / "chelsea.png"
        if src.is_file():
            return src
    except ImportError:
        pass
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "gradient.png"
    x = np.linspace(0, 255, 300 * 400 * 3).reshape(300, 400, 3).astype(np.uint8)
    Image.fromarray(x).save(path)
    return path


@pytest.fixture(scope="module")
def tcomp(tensor_component) -> Path:
    """The tensor-template component (onnx_factory.mlp: x [batch, 16] fp32 -> y [batch, 4]),
    with its model and manifest beside it."""
    return tensor_component[0]


@pytest.fixture(scope="module")
def icomp(classifier_component) -> Path:
    """The image-classification component (tiny CNN, 32x32 crop), model and manifest beside it."""
    return classifier_component[0]


def _unsigned() -> list[str]:
    """No signature policy option: bench runs unverified (and says so)."""
    return []


# ---------------------------------------------------------------------------------- pure functions


def test_summarize_uses_linear_interpolation_percentiles():
    s = summarize(list(range(1, 101)))  # 1..100
    assert (s.n, s.min, s.max) == (100, 1.0, 100.0)
    # Hyndman & Fan type 7: h = (n - 1) p + 1 -> p50 at rank 50.5, p90 at 90.1, p99 at 99.01.
    assert s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1)
    assert s.p99 == pytest.approx(99.01)
    assert s.mean == pytest.approx(50.5)
    assert s.stdev == pytest.approx(math.sqrt(sum((x - 50.5) ** 2 for x in range(1, 101)) / 99))
    assert summarize([3.0]).stdev == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_histogram_counts_every_sample_and_keeps_outliers_apart():
    samples = [0.1 * i for i in range(37)]
    h = histogram(samples, bins=5)
    assert len(h["edges"]) == 6 and sum(h["counts"]) + h["above"] == 37
    assert h["edges"][0] == pytest.approx(0.0)
    assert h["edges"][-1] == pytest.approx(summarize(samples).p99)
    spiky = [1.0] * 99 + [500.0]
    h = histogram(spiky, bins=4)
    assert h["above"] == 1 and sum(h["counts"]) == 99 and h["edges"][-1] < 500


def test_random_inputs_follow_specs_and_dims():
    specs = [TensorSpec("x", "fp32", ["batch", 3, 8]), TensorSpec("ids", "i64", ["batch", "seq"]),
             TensorSpec("px", "u8", [2, 2])]
    arrays = random_inputs(specs, {"batch": 4, "seq": 7}, seed=1)
    assert arrays["x"].shape == (4, 3, 8) and arrays["x"].dtype == np.float32
    assert arrays["ids"].shape == (4, 7) and arrays["ids"].dtype == np.int64
    assert arrays["px"].dtype == np.uint8
    assert random_inputs(specs, {}, seed=1)["x"].shape == (1, 3, 8)  # dynamic axes default to 1
    np.testing.assert_array_equal(random_inputs(specs, {"batch": 4, "seq": 7}, seed=1)["x"], arrays["x"])
    with pytest.raises(WasmaiError, match="no dynamic axis"):
        random_inputs(specs, {"height": 3})


def test_rounds_split_calls_into_alternating_blocks():
    from wasmai.bench.runners import rounds

    assert rounds(7, 5) == [2, 2, 1, 1, 1]
    assert rounds(2, 5) == [1, 1]
    assert rounds(10, 1) == [10]


def test_parse_assignments_rejects_items_without_equals():
    assert parse_assignments(["a=1", "b=x=y"], "--dim") == {"a": "1", "b": "x=y"}
    with pytest.raises(WasmaiError, match="NAME=VALUE"):
        parse_assignments(["oops"], "--dim")


# ---------------------------------------------------------------------------------- tensor component


def test_bench_tensor_component_json_schema(tcomp):
    code, doc, out = _bench(str(tcomp), "--random", "-n", "7", "--warmup", "2", "--json",
                            *_unsigned())
    assert code == 0, out
    assert set(doc) == TOP_KEYS
    assert doc["mode"] == "infer"
    assert doc["model"]["task"] == "tensor"
    assert doc["config"]["n"] == 7 and doc["config"]["random"] is True
    cold = doc["cold_start"]
    for key in ("compile_ms", "instantiate_ms", "load_ms", "first_call_ms"):
        assert cold[key] >= 0
    assert cold["total_ms"] == pytest.approx(cold["compile_ms"] + cold["instantiate_ms"] + cold["load_ms"]
                                             + cold["first_call_ms"])
    assert isinstance(cold["cache_hit"], bool)
    steady = doc["steady"]
    _check_stats(steady["latency_ms"], 7)
    _check_stats(steady["ort_run_ms"], 7)
    _check_stats(steady["host_overhead_us"], 7)
    assert len(steady["samples_ms"]) == 7
    assert steady["stages_us"] is None
    # Host overhead is the call time minus ONNX Runtime's compute: never more than the call itself.
    assert steady["host_overhead_us"]["max"] <= steady["latency_ms"]["max"] * 1000
    assert doc["throughput"] is None
    assert doc["memory"]["peak_rss_bytes"] > 0
    assert doc["memory"]["linear_memory_bytes"] > 0
    assert sum(doc["histogram_ms"]["counts"]) + doc["histogram_ms"]["above"] == 7
    nat = doc["ort_baseline"]
    assert nat["available"] is True, nat["skipped_reason"]
    _check_stats(nat["latency_ms"], 7)
    assert nat["ratio_p50"] == pytest.approx(steady["latency_ms"]["p50"] / nat["latency_ms"]["p50"])
    assert nat["engine"] == f"onnxruntime {nat['onnxruntime_version']} (Python)"
    # The same model in the host's own libonnxruntime, without wasm, in the same blocks.
    lib = doc["library_baseline"]
    assert lib["available"] is True, lib["skipped_reason"]
    assert lib["engine"].startswith(f"onnxruntime {nat['onnxruntime_version']} (C API, libonnxruntime")
    _check_stats(lib["latency_ms"], 7)
    assert lib["ratio_p50"] == pytest.approx(steady["latency_ms"]["p50"] / lib["latency_ms"]["p50"])
    # Its run is the component's graph's: at most the component's whole call in the middle.
    assert lib["latency_ms"]["min"] <= steady["latency_ms"]["max"]


def test_bench_concurrency_two_reports_throughput(tcomp):
    code, doc, out = _bench(str(tcomp), "--random", "-n", "5", "--warmup", "1", "--concurrency", "2",
                            "--threads", "1", "--no-native", "--json", *_unsigned())
    assert code == 0, out
    tp = doc["throughput"]
    assert tp["concurrency"] == 2 and tp["calls"] == 10
    _check_stats(tp["latency_ms"], 10)
    assert tp["qps"] == pytest.approx(tp["calls"] / tp["wall_s"])
    assert doc["config"]["threads"] == 1
    assert doc["ort_baseline"] == {**doc["ort_baseline"], "available": False, "skipped_reason": "--no-native"}
    assert doc["library_baseline"] == {**doc["library_baseline"], "available": False, "skipped_reason": "--no-native"}


def test_bench_input_files_and_rich_table(tcomp, tmp_path):
    # Take the component's own input spec from a --random run, then feed the same tensors from files.
    code, doc, out = _bench(str(tcomp), "--random", "-n", "2", "--warmup", "0", "--no-native",
                            "--json", *_unsigned())
    assert code == 0, out
    rng = np.random.default_rng(3)
    arrays = {}
    for spec in doc["config"]["inputs"]:
        arrays[spec["name"]] = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
    npz = tmp_path / "in.npz"
    np.savez(npz, **arrays)
    code, doc2, out = _bench(str(tcomp), "--inputs", str(npz), "-n", "3", "--warmup", "1", "--json",
                             *_unsigned())
    assert code == 0, out
    assert doc2["config"]["inputs"] == doc["config"]["inputs"] and doc2["config"]["random"] is False
    args = []
    for name, arr in arrays.items():
        np.save(tmp_path / f"{name}.npy", arr)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    code, _, out = _bench(str(tcomp), *args, "-n", "4", "--warmup", "1", *_unsigned())
    assert code == 0, out
    assert "cold start" in out and "steady state" in out and "p99" in out and "host overhead" in out
    assert "component / native p50" in out and "same library, C API" in out
    assert "latency histogram" in out


def test_bench_dim_sets_dynamic_axes_with_random(tcomp):
    code, doc, out = _bench(str(tcomp), "--random", "-n", "1", "--warmup", "0", "--no-native", "--json",
                            *_unsigned())
    assert code == 0, out
    assert doc["config"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 16]}]  # batch -> 1
    code, doc, out = _bench(str(tcomp), "--random", "--dim", "batch=3", "-n", "2", "--warmup", "0", "--json",
                            *_unsigned())
    assert code == 0, out
    assert doc["config"]["inputs"][0]["shape"] == [3, 16]
    assert doc["ort_baseline"]["available"] is True
    code, _, out = _bench(str(tcomp), "--random", "--dim", "nosuchaxis=2", "-n", "1", *_unsigned())
    assert code == 1 and "no dynamic axis" in out


@pytest.mark.parametrize("args, message", [
    ([], "exactly one input source"),
    (["--random", "--image", "x.png"], "exactly one input source"),
    (["--random", "-n", "0"], ">= 1"),
    (["--random", "--dim", "batch"], "NAME=VALUE"),
    (["--random", "--dim", "batch=two"], "integer"),
    (["--inputs", "/nonexistent/in.npz"], "cannot read --inputs"),
    (["--input", "nosuchinput=/nonexistent/x.npy"], "cannot read --input"),
])
def test_bench_bad_input_exits_1_with_one_error_line(tcomp, args, message):
    result = runner.invoke(app, ["bench", str(tcomp), *args, *_unsigned()])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1


def test_bench_wrong_input_name_and_missing_component(tcomp, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1), np.float32))
    code, _, out = _bench(str(tcomp), "--input", f"nosuchinput={tmp_path / 'x.npy'}", "-n", "1",
                          *_unsigned())
    assert code == 1 and "unknown input" in out
    code, _, out = _bench(str(tmp_path / "missing.wasm"), "--random", *_unsigned())
    assert code == 1 and "component not found" in out
    code, doc, out = _bench(str(tcomp), "--image", str(tmp_path / "x.npy"), "--json", *_unsigned())
    assert code == 1 and doc["exit_code"] == 1


def test_bench_native_model_must_match(tcomp, tmp_path):
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the model")
    code, _, out = _bench(str(tcomp), "--random", "-n", "1", "--model", str(other), *_unsigned())
    assert code == 1 and "not the model this component was built from" in out


def test_bench_native_skipped_is_said_when_model_absent(tcomp, tmp_path):
    alone = tmp_path / "alone.wasm"
    alone.write_bytes(Path(tcomp).read_bytes())
    code, doc, out = _bench(str(alone), "--random", "-n", "2", "--warmup", "0", "--json", *_unsigned())
    assert code == 0, out
    assert doc["ort_baseline"]["available"] is False and "pass --model" in doc["ort_baseline"]["skipped_reason"]
    code, _, out = _bench(str(alone), "--random", "-n", "2", "--warmup", "0", *_unsigned())
    assert code == 0 and "native onnxruntime skipped" in out
    code, _, out = _bench(str(alone), "--random", "-n", "2", "--native", *_unsigned())
    assert code == 1 and "--native" in out


def test_bench_plot(tcomp, tmp_path):
    png = tmp_path / "lat.png"
    code, doc, out = _bench(str(tcomp), "--random", "-n", "5", "--warmup", "0", "--plot", str(png),
                            "--json", *_unsigned())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert code == 1 and "matplotlib" in out and not png.exists()
        return
    assert code == 0, out
    assert doc["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- image component


def test_bench_image_component_classify_stages(icomp, sample_image):
    code, doc, out = _bench(str(icomp), "--image", str(sample_image), "-n", "3", "--warmup", "1",
                            "--top-k", "3", "--json", *_unsigned())
    assert code == 0, out
    assert doc["mode"] == "classify" and doc["model"]["task"] == "image-classification"
    assert doc["config"]["top_k"] == 3
    stages = doc["steady"]["stages_us"]
    assert set(stages) == {"decode", "preprocess", "inference", "postprocess"}
    for s in stages.values():
        _check_stats(s, 3)
    # The guest's stages happen inside the call: together they cannot exceed its wall time.
    assert sum(s["min"] for s in stages.values()) <= doc["steady"]["latency_ms"]["max"] * 1000
    nat = doc["ort_baseline"]
    assert nat["available"] is True, nat["skipped_reason"]
    assert set(nat["stages_us"]) == set(stages)
    _check_stats(nat["latency_ms"], 3)
    assert doc["library_baseline"]["available"] is False
    assert doc["library_baseline"]["skipped_reason"] == "infer mode only"
    # The table says so too, without calling the Python-package baseline skipped.
    code, _, out = _bench(str(icomp), "--image", str(sample_image), "-n", "2", "--warmup", "0", *_unsigned())
    assert code == 0, out
    assert "component / native p50" in out and "skipped" not in out and "same library" not in out


def test_bench_image_component_random_tensors_and_table(icomp, sample_image):
    code, doc, out = _bench(str(icomp), "--random", "-n", "2", "--warmup", "0", "--json",
                            *_unsigned())
    assert code == 0, out
    assert doc["mode"] == "infer" and doc["steady"]["stages_us"] is None
    code, _, out = _bench(str(icomp), "--image", str(sample_image), "-n", "2", "--warmup", "0",
                          *_unsigned())
    assert code == 0, out
    assert "guest preprocess" in out and "native preprocess" in out


def test_summary_stats_dataclass_fields_match_json_keys():
    assert {f for f in Stats.__dataclass_fields__} == STAT_KEYS


# ---------------------------------------------------------------------------------- signature policy


def test_bench_verifies_the_signature_before_instantiating(tcomp, tmp_path):
    from wasmai.sign import keygen, sign_component

    signed = tmp_path / "signed.wasm"
    signed.write_bytes(Path(tcomp).read_bytes())
    pair = keygen(tmp_path / "keys", "bench")
    sign_component(signed, key=pair.private_key)
    code, doc, out = _bench(str(signed), "--random", "-n", "2", "--warmup", "0", "--no-native",
                            "--key", str(pair.public_key), "--json")
    assert code == 0, out
    assert doc["verification"]["verified"] is True and doc["verification"]["kind"] == "key"
    assert doc["verification"]["key_fingerprint"] == pair.fingerprint
    code, _, out = _bench(str(signed), "--random", "-n", "2", "--warmup", "0", "--no-native",
                          "--key", str(pair.public_key))
    assert code == 0 and "verified" in out
    # Tampered bytes that would not even compile: the signature check must fail first.
    signed.write_bytes(signed.read_bytes() + b"\x00tampered")
    code, _, out = _bench(str(signed), "--random", "-n", "2", "--key", str(pair.public_key))
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "digest mismatch" in errors[0] and "compiling" not in out, out


def test_library_baseline_errors(tcomp, tmp_path):
    """The same-library baseline refuses what ONNX Runtime refuses, with one error, not a crash."""
    from wasmai.host import ComponentError, Host
    from wasmai.tensors import Tensor

    host = Host(intra_op_threads=1)
    with pytest.raises(WasmaiError, match="model not found"):
        host.library_baseline(tmp_path / "missing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ComponentError, match="cannot load") as refused:
        host.library_baseline(tmp_path / "garbage.onnx")
    assert refused.value.code == "onnxruntime"
    base = host.library_baseline(tcomp.with_suffix(".onnx"))
    x = np.ones((2, 16), np.float32)
    assert base.run([Tensor.from_numpy("x", x, "fp32")]) > 0
    with pytest.raises(ComponentError, match="no tensor for the graph input 'x'"):
        base.run([Tensor.from_numpy("y", x, "fp32")])
    with pytest.raises(ComponentError, match="do not fit its shape"):
        base.run([Tensor("x", "fp32", (2, 16), b"\0" * 12)])
    with pytest.raises(ComponentError) as not_profiled:
        base.end_profiling()
    assert not_profiled.value.code == "onnxruntime"
    # With a prefix, ONNX Runtime's profiler records each node of each run (benchmarks/ort_builds.py).
    profiled = host.library_baseline(tcomp.with_suffix(".onnx"), profile_prefix=tmp_path / "prof")
    for _ in range(3):
        profiled.run([Tensor.from_numpy("x", x, "fp32")])
    events = json.loads(profiled.end_profiling().read_text())
    assert sum(e.get("name") == "model_run" for e in events) == 3
    assert any(e.get("cat") == "Node" and e["name"].endswith("_kernel_time") for e in events)
