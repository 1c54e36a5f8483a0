"""The GitHub Action (action.yml, composite) and its steps (scripts/action.sh), run here as the
action runs them: the same WASMAI_* inputs, key signing (air-gapped mode; keyless needs a GitHub
OIDC token), outputs appended to $GITHUB_OUTPUT."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, _factory


def test_action_yml_is_composite_and_passes_every_input_to_the_script():
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    inputs = action["inputs"]
    assert inputs["model"]["required"] is True
    assert inputs["signing"]["default"] == "keyless"
    assert {"task", "quantize", "signing", "key"} <= set(inputs)
    assert {"component", "digest"} <= set(action["outputs"])
    steps = action["runs"]["steps"]
    (cache,) = [s for s in steps if s.get("uses", "").startswith("actions/cache@")]
    paths = cache["with"]["path"].split()
    assert "~/.cache/wasmai" in paths and "~/.cargo/registry" in paths
    (run,) = [s for s in steps if s.get("id") == "run"]
    assert "scripts/action.sh" in run["run"]
    # Every input reaches the script as WASMAI_<NAME>, and the script reads each of them.
    script = (REPO / "scripts" / "action.sh").read_text()
    for name in inputs:
        if name == "python-version":
            continue  # used by actions/setup-python
        var = "WASMAI_" + name.upper().replace("-", "_")
        assert run["env"][var] == "${{ inputs." + name + " }}", var
        assert var in script, var
    # Every output is a value the script writes.
    for name, out in action["outputs"].items():
        assert out["value"] == "${{ steps.run.outputs." + name + " }}"
        assert re.search(rf"^(outputs=\")?{name}=", script, re.M), name


def test_example_workflow_uses_the_action():
    flow = yaml.safe_load((REPO / "examples" / "github-actions" / "wasmai.yml").read_text())
    job = flow["jobs"]["component"]
    assert job["permissions"]["id-token"] == "write"  # keyless signing
    (step,) = [s for s in job["steps"] if s.get("uses") == "./"]
    assert step["with"]["signing"] == "keyless" and "model" in step["with"]


def _action(tmp_path: Path, **inputs: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    env = {**os.environ, "GITHUB_OUTPUT": str(outputs), "WASMAI_PACKAGE": "none",
           # `wasmai` of this checkout, as the console script of an install would be
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO),
           **{f"WASMAI_{k.upper()}": v for k, v in inputs.items()}}
    (tmp_path / "bin").mkdir(exist_ok=True)
    shim = tmp_path / "bin" / "wasmai"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m wasmai "$@"\n')
    shim.chmod(0o755)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "action.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    parsed = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return proc, parsed


@pytest.mark.slow
def test_action_script_builds_signs_and_verifies_in_key_mode(tmp_path):
    """scripts/action.sh with the inputs a workflow would pass: the tests' MLP, quantize dynamic,
    signing key. The outputs name a component whose digest is the file's and whose signature
    verifies with the public key; it runs and agrees with the quantized graph it embeds."""
    import onnx
    import onnxruntime as ort

    factory = _factory()
    factory.save(factory.mlp(), tmp_path / "models" / "mlp.onnx")
    keys = subprocess.run([sys.executable, "-m", "wasmai", "keygen", "-o", str(tmp_path / "keys")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert keys.returncode == 0, keys.stderr
    proc, out = _action(tmp_path, model="models/mlp.onnx", task="tensor", quantize="dynamic", signing="key",
                        key="keys/wasmai.key", output_dir="dist")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    component = tmp_path / out["component"]
    assert out["component"] == "dist/mlp.wasm" and component.is_file()
    assert out["digest"] == "sha256:" + hashlib.sha256(component.read_bytes()).hexdigest()
    assert out["bundle"] == "dist/mlp.wasm.sigstore.json" and (tmp_path / out["bundle"]).is_file()
    sign = json.loads((tmp_path / "dist" / "sign.json").read_text())
    assert out["digest"] == "sha256:" + sign["digest"]
    # The action converted with --quantize dynamic: the embedded graph is the quantized one.
    onnx_path = tmp_path / out["onnx"]
    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, ops
    x = np.random.default_rng(7).standard_normal((2, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([sys.executable, "-m", "wasmai", "run", str(component), "--key",
                          str(tmp_path / "keys" / "wasmai.pub"), "--input", f"x={tmp_path / 'x.npy'}", "--json"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    (y,) = json.loads(run.stdout)["outputs"]
    expected = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.asarray(y["values"], np.float32).reshape(y["shape"]), expected,
                               rtol=1e-5, atol=1e-5)


def test_action_script_refuses_bad_inputs_with_one_line(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    cases = (({"model": "missing.onnx"}, "error: model missing.onnx: no such file"),
             ({"model": "m.onnx", "signing": "gpg"}, "error: signing: gpg (expected keyless, key or none)"),
             ({"model": "m.onnx", "signing": "key"}, "error: signing: key needs the key input"))
    for inputs, message in cases:
        proc, out = _action(tmp_path, **inputs)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
        assert out == {}
