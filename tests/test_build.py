"""``wasmai build``: real components built by the real toolchain (cargo-component, wasm-tools).

The session fixtures ``tensor_component`` and ``classifier_component`` (tests/conftest.py) build
the two templates once; the tests here check their WIT, rebuild them from other working
directories and cache folders (bit-identical), and drive the CLI's failure paths.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx_factory
import pytest

from wasmai import WASI_NN_VERSION
from wasmai import build as wb
from wasmai.manifest import Manifest

CLI = [sys.executable, "-c", "from wasmai.cli import main; main()"]
NN_IMPORTS = [f"wasi:nn/{i}@{WASI_NN_VERSION}" for i in ("graph", "inference", "tensor", "errors")]


def wasmai(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (real exit code, stdout and stderr)."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
                               **(env or {})})


def component_wit(path: Path) -> str:
    proc = subprocess.run(["wasm-tools", "component", "wit", str(path)], capture_output=True, text=True, check=True)
    return proc.stdout


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``error: ...`` line of a failed command (no traceback)."""
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------- fast checks


def test_templates_are_discovered_from_folders():
    templates = wb.list_templates()
    assert {"tensor", "image-classification"} <= set(templates)
    ic = templates["image-classification"]
    assert ic.world == "image-classifier" and ic.base == "tensor" and "preprocess" in ic.requires
    assert "wasmai:inference/image-classification@0.2.0" in ic.check_exports
    files = wb.templates._template_files(ic)
    # base files come through, the folder's own lib.rs overrides the base one
    assert files["src/nn.rs"].parent.parent.name == "tensor"
    assert files["src/lib.rs"].parent.parent.name == "image-classification"
    assert (templates["tensor"].path / "Cargo.lock").is_file() and (ic.path / "Cargo.lock").is_file()


def test_render_rejects_unknown_placeholders_and_escapes_strings():
    assert wb.render_text("a {{ x }} b", {"x": "1"}, "t") == "a 1 b"
    with pytest.raises(wb.WasmaiError, match="unknown placeholder"):
        wb.render_text("{{ nope }}", {"x": "1"}, "t")
    assert wb.render._rust_str('a"b\\c\nd\x01é') == '"a\\"b\\\\c\\nd\\u{1}é"'


def test_derive_manifest_reads_the_graph(tmp_path):
    path = onnx_factory.save(onnx_factory.mlp(), tmp_path / "net.onnx")
    man = wb.derive_manifest(path)
    assert man.task == "tensor" and man.name == "net"
    assert [(s.name, s.dtype, s.shape) for s in man.inputs] == [("x", "fp32", ["batch", 16])]
    assert [(s.name, s.dtype, s.shape) for s in man.outputs] == [("y", "fp32", ["batch", 4])]
    assert len(man.sha256) == 64


def test_missing_model_is_one_error_line(tmp_path):
    line = one_error_line(wasmai("build", str(tmp_path / "nope.onnx")))
    assert "model not found" in line
    assert not list(tmp_path.iterdir())


def test_bad_manifest_is_one_error_line(tmp_path):
    model = onnx_factory.save(onnx_factory.mlp(), tmp_path / "m.onnx")
    (tmp_path / "m.toml").write_text("[model\nname = ")
    assert "cannot read manifest" in one_error_line(wasmai("build", str(model)))
    (tmp_path / "m.toml").write_text('[model]\nname = "m"\ntask = "tensor"\nonnx = "m.onnx"\n'
                                     '[[inputs]]\nname = "x"\ndtype = "float99"\nshape = [1]\n')
    assert "unknown dtype" in one_error_line(wasmai("build", str(model)))
    other = tmp_path / "other.toml"
    assert "manifest not found" in one_error_line(wasmai("build", str(model), "--manifest", str(other)))
    assert not (tmp_path / "m.wasm").exists()


def test_manifest_must_match_the_model(tmp_path):
    model = onnx_factory.save(onnx_factory.mlp(), tmp_path / "m.onnx")
    man = wb.derive_manifest(model)
    man.sha256 = "0" * 64
    man.save(tmp_path / "m.toml")
    assert "does not match its manifest" in one_error_line(wasmai("build", str(model)))
    man = wb.derive_manifest(model)
    man.inputs[0].name = "not_x"
    man.save(tmp_path / "m.toml")
    assert "do not match the ONNX graph" in one_error_line(wasmai("build", str(model)))


def test_image_task_needs_preprocess(tmp_path):
    model = onnx_factory.save(onnx_factory.cnn_classifier(), tmp_path / "c.onnx")
    line = one_error_line(wasmai("build", str(model), "--task", "image-classification"))
    assert "needs a [preprocess] table" in line
    assert "no template for task 'speech'" in one_error_line(wasmai("build", str(model), "--task", "speech"))


def test_too_large_to_embed_points_to_by_name(tmp_path):
    big = tmp_path / "big.onnx"
    with open(big, "wb") as fh:  # sparse: no disk space used
        fh.truncate(wb.EMBED_LIMIT_BYTES + 1)
    line = one_error_line(wasmai("build", str(big)))
    assert "256 MiB" in line and "--by-name" in line
    assert not (tmp_path / "big.wasm").exists()


def test_unsupported_target_says_why(tmp_path):
    model = onnx_factory.save(onnx_factory.mlp(), tmp_path / "m.onnx")
    line = one_error_line(wasmai("build", str(model), "--target", "wasm32-unknown-unknown"))
    assert "not supported" in line and "Instant::now panics" in line
    assert "unknown target" in one_error_line(wasmai("build", str(model), "--target", "x86_64"))


# ------------------------------------------------------------------------ built components


def test_tensor_component_imports_wasi_nn_and_exports_the_model(tensor_component):
    component, onnx_path, manifest = tensor_component
    subprocess.run(["wasm-tools", "validate", str(component)], check=True)
    wit = component_wit(component)
    for name in NN_IMPORTS:
        assert f"import {name};" in wit
    assert "export wasmai:inference/metadata@0.2.0;" in wit
    assert "export wasmai:inference/model@0.2.0;" in wit
    assert "image-classification" not in wit
    # embedded: the ONNX bytes are inside the component
    assert onnx_path.read_bytes() in component.read_bytes()
    assert manifest.task == "tensor"


def test_classifier_component_exports_image_classification(classifier_component):
    component, onnx_path, manifest = classifier_component
    subprocess.run(["wasm-tools", "validate", str(component)], check=True)
    wit = component_wit(component)
    for name in NN_IMPORTS:
        assert f"import {name};" in wit
    for name in ("metadata", "model", "image-classification"):
        assert f"export wasmai:inference/{name}@0.2.0;" in wit
    # the guest times its stages with std::time::Instant -> WASI monotonic clock
    assert "import wasi:clocks/monotonic-clock@" in wit
    assert manifest.preprocess is not None and manifest.labels


def test_cached_build_is_reused(tensor_component, tmp_path):
    _, onnx_path, _ = tensor_component
    result = wb.build(onnx_path, output=tmp_path / "again.wasm")
    assert result.cached and result.build_seconds < 20
    assert (tmp_path / "again.wasm").read_bytes() == tensor_component[0].read_bytes()
    assert result.sha256 == hashlib.sha256(tensor_component[0].read_bytes()).hexdigest()


@pytest.mark.slow
def test_cold_builds_in_two_cwds_and_caches_are_bit_identical(tmp_path, tensor_component):
    """Two builds from scratch (separate cache roots, so separate target dirs and crate paths)
    started from two working directories give the same bytes, and the same as the fixture."""
    _, onnx_path, _ = tensor_component
    outputs = []
    for name in ("a", "b"):
        cwd = tmp_path / f"cwd-{name}"
        cwd.mkdir()
        proc = wasmai("build", str(onnx_path), "-o", "out.wasm", "--json", cwd=cwd,
                      env={"WASMAI_CACHE_DIR": str(tmp_path / f"cache-{name}")})
        assert proc.returncode == 0, proc.stderr
        assert '"cached": false' in proc.stdout
        outputs.append((cwd / "out.wasm").read_bytes())
    assert outputs[0] == outputs[1] == tensor_component[0].read_bytes()


@pytest.mark.slow
def test_classifier_rebuild_from_another_cwd_is_bit_identical(classifier_component, tmp_path):
    component, onnx_path, _ = classifier_component
    proc = wasmai("build", str(onnx_path), "--rebuild", "-o", "re.wasm", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"cached": false' in proc.stdout
    assert (tmp_path / "re.wasm").read_bytes() == component.read_bytes()


@pytest.mark.slow
def test_by_name_does_not_embed_the_model(tensor_component, tmp_path):
    _, onnx_path, _ = tensor_component
    result = wb.build(onnx_path, by_name="mlp-v1", output=tmp_path / "named.wasm")
    data = result.output.read_bytes()
    assert result.placement == "by-name:mlp-v1"
    assert onnx_path.read_bytes() not in data and b"mlp-v1" in data
    assert set(NN_IMPORTS) <= set(result.imports)


@pytest.mark.slow
def test_wasip1_target_is_the_core_module(tensor_component, tmp_path):
    _, onnx_path, _ = tensor_component
    result = wb.build(onnx_path, target="wasm32-wasip1", output=tmp_path / "core.wasm")
    data = result.output.read_bytes()
    assert data[:8] == b"\0asm\x01\0\0\0"  # core module, version 1
    subprocess.run(["wasm-tools", "validate", str(result.output)], check=True)
    assert set(NN_IMPORTS) <= set(result.imports)
    assert "wasi_snapshot_preview1" in result.imports  # not adapted
    assert "wasmai:inference/model@0.2.0" in result.exports


@pytest.mark.slow
def test_emitted_crate_compiles(tensor_component, tmp_path):
    _, onnx_path, _ = tensor_component
    crate = tmp_path / "crate"
    proc = wasmai("build", str(onnx_path), "--emit-crate", str(crate), "--json")
    assert proc.returncode == 0, proc.stderr
    assert (crate / "Cargo.lock").is_file() and (crate / "model.onnx").is_file()
    model_rs = (crate / "src" / "model.rs").read_text()
    assert "{{" not in model_rs and 'pub const NAME: &str = "mlp";' in model_rs
    from wasmai import toolchain

    tc = toolchain.detect()
    env = wb.cargo_environment(tc)
    with wb.target_lock():
        build = subprocess.run([tc.cargo or "cargo", "component", "build", "--release", "--locked"], cwd=crate,
                               env=env, capture_output=True, text=True, timeout=1800)
        assert build.returncode == 0, build.stderr
        artifact = toolchain.guest_target_dir() / "wasm32-wasip1" / "release" / "wasmai_tensor_model.wasm"
        shutil.copyfile(artifact, tmp_path / "emitted.wasm")
    wit = component_wit(tmp_path / "emitted.wasm")
    assert "export wasmai:inference/model@0.2.0;" in wit
    # a second emit into the same folder is allowed, an unrelated non-empty folder is not
    assert wasmai("build", str(onnx_path), "--emit-crate", str(crate)).returncode == 0
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    assert "not empty" in one_error_line(wasmai("build", str(onnx_path), "--emit-crate", str(tmp_path / "junk")))


@pytest.mark.slow
def test_cargo_errors_are_shown_not_a_traceback(classifier_component, tmp_path):
    """A manifest whose crop disagrees with the model input fails the template's compile-time
    check: the compiler's error block is shown, then one ``error:`` line, exit 1, no output."""
    _, onnx_path, manifest = classifier_component
    bad = Manifest.load(manifest.base_dir / f"{onnx_path.stem}.toml")
    bad.preprocess.crop = (30, 30)
    bad.onnx = str(onnx_path)
    bad.save(tmp_path / "bad.toml")
    proc = wasmai("build", str(onnx_path), "--manifest", str(tmp_path / "bad.toml"), "-o", str(tmp_path / "x.wasm"))
    assert proc.returncode == 1
    assert "error[E0080]" in proc.stderr and "src/vision.rs" in proc.stderr
    assert "image-classification template needs one fp32/fp16 input" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cargo component build failed")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.wasm").exists()


@pytest.mark.slow
def test_build_std_fallback_builds_a_component(tensor_component, tmp_path, monkeypatch):
    """The Debian build-std toolchain (std compiled from source; cargo-component's sysroot
    check answered by wasmai's rustc shim) builds a valid component too. Slow the first time
    (std is compiled), cached afterwards."""
    import dataclasses

    from wasmai import toolchain

    real = toolchain.detect()
    if not all(c.ok for c in toolchain._build_std_checks()):
        pytest.skip("Debian rustc-web / rust-web-src / lld-19 / wasi-libc not installed")
    forced = dataclasses.replace(real, mode="build-std", rustc=str(toolchain.DEBIAN_RUSTC))
    monkeypatch.setattr(toolchain, "detect", lambda: forced)
    _, onnx_path, _ = tensor_component
    result = wb.build(onnx_path, output=tmp_path / "bs.wasm")
    assert result.toolchain["toolchain-mode"] == "build-std"
    assert result.toolchain["rustc"] == toolchain._run([str(toolchain.DEBIAN_RUSTC), "--version"])
    subprocess.run(["wasm-tools", "validate", str(result.output)], check=True)
    assert set(NN_IMPORTS) <= set(result.imports)
    assert "wasmai:inference/model@0.2.0" in result.exports


def _gradient_png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A smooth RGB test picture with mild noise (resampling differences stay small)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255.0 / max(width - 1, 1), y * 255.0 / max(height - 1, 1),
                    127.5 + 100 * np.sin((x + y) / 7.0)], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(path)
    return path


@pytest.mark.slow
def test_guest_preprocessing_matches_python_reference(classifier_component, tmp_path):
    """Run the image-classification template's own Rust unit tests natively (cargo test on the
    emitted crate), and compare its preprocessing of real PNGs with wasmai.preprocess."""
    import numpy as np

    from wasmai import toolchain
    from wasmai.preprocess import preprocess_image

    _, onnx_path, manifest = classifier_component
    crate = tmp_path / "crate"
    proc = wasmai("build", str(onnx_path), "--emit-crate", str(crate))
    assert proc.returncode == 0, proc.stderr
    tc = toolchain.detect()
    with wb.target_lock():  # generates src/bindings.rs (and builds the component)
        gen = subprocess.run([tc.cargo or "cargo", "component", "build", "--release", "--locked"], cwd=crate,
                             env=wb.cargo_environment(tc), capture_output=True, text=True, timeout=1800)
    assert gen.returncode == 0, gen.stderr
    native_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUSTFLAGS", "CARGO_", "RUSTC"))}
    native_env["CARGO_TARGET_DIR"] = str(toolchain.guest_target_dir() / "native-tests")
    # portrait and landscape, larger than the crop, and one smaller than it (enlarged to cover)
    for i, (w, h) in enumerate([(50, 40), (37, 64), (20, 24), (300, 200)]):
        png = _gradient_png(tmp_path / f"img{i}.png", w, h, seed=i)
        out = tmp_path / f"img{i}.bin"
        run = subprocess.run(["cargo", "test", "--locked", "--lib", "--", "--test-threads=1"], cwd=crate,
                             env={**native_env, "WASMAI_VISION_IMAGE": str(png), "WASMAI_VISION_OUT": str(out)},
                             capture_output=True, text=True, timeout=1800)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "test result: ok." in run.stdout and " 0 failed" in run.stdout
        guest = np.frombuffer(out.read_bytes(), dtype="<f4").reshape(1, 3, 32, 32)
        reference = preprocess_image(png, manifest.preprocess)
        assert reference.shape == guest.shape
        # in 8-bit levels (1/std): the two resamplers round differently by at most one level
        # (measured: max 1.0, mean 0.08-0.21); a channel swap or a shifted crop is ~100+
        levels = np.abs(guest - reference) * 127.5
        assert levels.max() <= 1.5, (w, h, levels.max())
        assert levels.mean() <= 0.35, (w, h, levels.mean())


def test_built_components_run_on_the_wasmai_host(tensor_component, classifier_component, tmp_path):
    """The components do what the WIT says on wasmai's own wasi-nn host: the MLP matches its
    numpy reference, bad input and bad images come back as typed errors, the classifier's top-3
    matches ONNX Runtime on the Python reference preprocessing, and a --by-name build loads the
    graph the host registered under that name."""
    import io

    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from wasmai.preprocess import preprocess_image
    from wasmai.runtime import Host, InferenceError, Tensor

    component, onnx_path, _ = tensor_component
    host = Host(graphs={"mlp-by-name": onnx_path})
    mlp = host.instantiate(host.load_component(component))
    info = mlp.info()
    assert info["task"] == "tensor" and info["placement"] == "embedded"
    assert info["model_sha256"] == wb.sha256_file(onnx_path)
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    (y,) = mlp.infer([Tensor.from_numpy("x", x)])
    assert y.name == "y" and np.allclose(y.numpy(), onnx_factory.mlp_reference(x), atol=1e-5)
    with pytest.raises(InferenceError) as bad:
        mlp.infer([Tensor.from_numpy("x", x[:, :5])])
    assert bad.value.code == "bad-input"

    named = wb.build(onnx_path, by_name="mlp-by-name", output=tmp_path / "named.wasm")
    inst = host.instantiate(host.load_component(named.output))
    assert inst.info()["placement"] == "by-name:mlp-by-name"
    (y2,) = inst.infer([Tensor.from_numpy("x", x)])
    assert np.array_equal(y2.numpy(), y.numpy())

    component, onnx_path, manifest = classifier_component
    clf = host.instantiate(host.load_component(component))
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    predictions = clf.classify(png.getvalue(), top_k=3)
    logits = ort.InferenceSession(str(onnx_path)).run(None, {"input": preprocess_image(Image.fromarray(rgb),
                                                                                        manifest.preprocess)})[0][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    assert [p.index for p in predictions] == list(np.argsort(-probs)[:3])
    assert [p.label for p in predictions] == [f"class{i}" for i in np.argsort(-probs)[:3]]
    assert np.allclose([p.score for p in predictions], np.sort(probs)[::-1][:3], atol=2e-3)
    timings = clf.last_timings()
    assert timings["inference_us"] > 0 and timings["decode_us"] > 0
    with pytest.raises(InferenceError) as junk:
        clf.classify(b"junk", 3)
    assert junk.value.code == "bad-image"


@pytest.mark.slow
def test_fp16_classifier_takes_and_returns_fp16(classifier_component, tmp_path):
    """An fp16 model (fp16 input and logits): the guest writes the input tensor as fp16 and
    reads fp16 scores; the top-3 match ONNX Runtime on the fp16 reference input."""
    import io

    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxconverter_common import float16
    from PIL import Image

    from wasmai.manifest import TensorSpec, sha256_file
    from wasmai.preprocess import preprocess_image
    from wasmai.runtime import Host

    _, _, base = classifier_component
    path = tmp_path / "cnn16.onnx"
    onnx.save(float16.convert_float_to_float16(onnx_factory.cnn_classifier(), keep_io_types=False), str(path))
    man = Manifest(name="cnn16", task="image-classification", onnx=path.name, sha256=sha256_file(path),
                   inputs=[TensorSpec("input", "fp16", [1, 3, 32, 32])],
                   outputs=[TensorSpec("logits", "fp16", [1, 10])],
                   preprocess=base.preprocess, softmax=True, labels=base.labels)
    man.save(tmp_path / "cnn16.toml")
    result = wb.build(path)
    host = Host()
    clf = host.instantiate(host.load_component(result.output))
    rgb = (np.random.default_rng(3).random((45, 60, 3)) * 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    predictions = clf.classify(png.getvalue(), top_k=3)
    x = preprocess_image(Image.fromarray(rgb), man.preprocess).astype(np.float16)
    logits = ort.InferenceSession(str(path)).run(None, {"input": x})[0][0].astype(np.float32)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    assert [p.index for p in predictions] == list(np.argsort(-probs)[:3])
    assert np.allclose([p.score for p in predictions], np.sort(probs)[::-1][:3], atol=5e-3)
