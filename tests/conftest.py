"""Shared pytest fixtures. Stage-specific fixtures live in the stage's test file; fixtures used by
several stages are appended below with a comment naming who uses them."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
