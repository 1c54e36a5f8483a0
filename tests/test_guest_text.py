"""Text a component chooses never reaches the terminal raw (issue: hostile components, finding 7).

A real image-classifier component is built whose labels and model name carry rich markup (a fake
"signature verified" line), terminal escape sequences and a bidi override; `wasmai run` and
`wasmai inspect` must print them as visible text: no ESC byte, no markup rendered.
"""

from __future__ import annotations

import numpy as np
import onnx_factory as factory
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow  # builds a component with cargo-component

FAKE_VERIFIED = "[green]signature verified[/green]"
ESCAPES = "\x1b[2J\x1b[31mred\x1b[0m"
BIDI = "abc\u202edef"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, build_component):
    from PIL import Image

    from wasmai.manifest import Manifest, Preprocess, TensorSpec, sha256_file

    d = tmp_path_factory.mktemp("hostile-text")
    onnx_path = factory.save(factory.cnn_classifier(), d / "cnn.onnx")
    labels = [FAKE_VERIFIED, ESCAPES, BIDI] + [f"class-{i}" for i in range(3, 10)]
    Manifest(name=f"evil{ESCAPES}[bold]x[/bold]", task="image-classification", onnx="cnn.onnx",
             sha256=sha256_file(onnx_path), inputs=[TensorSpec("input", "fp32", [1, 3, 32, 32])],
             outputs=[TensorSpec("logits", "fp32", [1, 10])], preprocess=Preprocess(crop=(32, 32)),
             softmax=True, labels=labels).save(d / "cnn.toml")
    pixels = (np.random.default_rng(5).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(d / "image.png")
    return build_component(onnx_path), d / "image.png"


def test_run_prints_guest_labels_and_names_as_text(hostile):
    component, image = hostile
    proc = run_cli("run", str(component), "--image", str(image), "--top-k", "10")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\x1b" not in out and "\u202e" not in out
    # The markup is shown as written (rendered, it would lose its brackets).
    assert FAKE_VERIFIED in out
    assert "\\x1b[2J\\x1b[31mred" in out and "abc\\u202edef" in out
    assert "evil\\x1b[2J" in out and "[bold]x[/bold]" in out


def test_inspect_prints_guest_metadata_as_text(hostile):
    component, _ = hostile
    proc = run_cli("inspect", str(component))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\u202e" not in proc.stdout
    assert "[bold]x[/bold]" in proc.stdout and FAKE_VERIFIED in proc.stdout
