"""The wheel works alone (issue #18): ``maturin build --release`` makes one abi3 wheel with the
native host, the templates and the WIT inside; installed into a fresh virtual environment (its
dependencies from the package index, through pip's cache), from a folder outside the checkout, it
runs doctor -> build (a real cargo-component build from the wheel's templates) -> keygen -> sign
-> verify -> run, and pulls no torch.

The wheel is built once per source state and kept in ``~/.cache/wasmai/wheels/<hash>/`` (the hash
covers every file maturin packs: pyproject.toml, README.md, host/ sources, wasmai/), so a rerun on
unchanged sources reuses it. Measured sizes and times are printed (``pytest -s``) and kept in
``~/.cache/wasmai/wheels/<hash>/measured.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

#: Where a wheel user's base install must not reach (issue #18: converting from PyTorch or
#: Hugging Face is an extra).
HEAVY = ("torch", "transformers", "safetensors")


def _ignored(rel: Path) -> bool:
    return any(p in ("__pycache__", "target", ".mypy_cache") or p.startswith(".") for p in rel.parts) or \
        rel.suffix in (".pyc", ".so")


def _packed_sources() -> list[Path]:
    """Every source file maturin packs into the wheel (relative to the checkout), sorted."""
    files = [Path("pyproject.toml"), Path("README.md")]
    for top in ("host", "wasmai"):
        files += [p.relative_to(REPO) for p in (REPO / top).rglob("*")
                  if p.is_file() and not _ignored(p.relative_to(REPO))]
    return sorted(files)


def _sources_hash() -> str:
    h = hashlib.sha256()
    for rel in _packed_sources():
        h.update(rel.as_posix().encode() + b"\0" + (REPO / rel).read_bytes() + b"\0")
    return h.hexdigest()[:20]


def _cache_root() -> Path:
    return Path(os.environ.get("WASMAI_CACHE_DIR") or Path.home() / ".cache" / "wasmai")


def _venv_env(venv: Path) -> dict[str, str]:
    """The environment of a shell that activated ``venv``: its bin/ first on PATH, no PYTHONPATH
    (nothing from the checkout is importable)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="session")
def wheel() -> tuple[Path, dict]:
    """``(wheel path, measured)``: the wheel of the current sources, built by maturin (release,
    abi3) into the cache unless one of the same sources is there already."""
    folder = _cache_root() / "wheels" / _sources_hash()
    found = sorted(folder.glob("wasmai-*.whl"))
    measured: dict = {"wheel_reused": bool(found)}
    if not found:
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        env = {**os.environ, "CARGO_TARGET_DIR": os.environ.get("WASMAI_HOST_TARGET_DIR")
               or str(_cache_root() / "host-target")}
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "maturin", "build", "--release", "--out", str(tmp)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        measured["wheel_build_s"] = round(time.monotonic() - started, 1)
        if folder.exists():  # built by a concurrent run meanwhile: same sources, same wheel
            shutil.rmtree(tmp)
        else:
            tmp.rename(folder)
        # Keep the cache bounded (~7 MB a wheel): the three newest source states.
        older = sorted((d for d in folder.parent.iterdir() if d.is_dir() and ".tmp" not in d.name),
                       key=lambda d: d.stat().st_mtime, reverse=True)[3:]
        for stale in older:
            shutil.rmtree(stale, ignore_errors=True)
        found = sorted(folder.glob("wasmai-*.whl"))
    assert len(found) == 1, found
    measured["wheel"] = str(found[0])
    measured["wheel_bytes"] = found[0].stat().st_size
    return found[0], measured


def test_wheel_is_abi3_and_carries_templates_wit_and_host_only(wheel):
    path, _ = wheel
    # PEP 427 file name: name-version-python-abi-platform.whl
    _, _, python_tag, abi_tag, platform_tag = path.stem.split("-")
    assert (python_tag, abi_tag) == ("cp311", "abi3"), path.name
    assert platform_tag.startswith("manylinux_"), path.name
    names = set(zipfile.ZipFile(path).namelist())
    assert "wasmai/_host.abi3.so" in names
    # Every template (whatever templates exist now) and the WIT with its wasi-nn dependency,
    # including Cargo.lock and the *.rs.in files the renderer fills in.
    data = [rel.as_posix() for rel in _packed_sources()
            if rel.parts[:2] in (("wasmai", "templates"), ("wasmai", "wit"))]
    assert any(n.endswith("Cargo.lock") for n in data) and any(n.endswith(".rs.in") for n in data)
    assert "wasmai/wit/deps/wasi-nn/wasi-nn.wit" in data
    missing = [n for n in data if n not in names]
    assert not missing, missing
    stray = [n for n in names if "/target/" in n or "__pycache__" in n or n.endswith(".pyc")
             or not n.startswith(("wasmai/", "wasmai-"))]
    assert not stray, stray


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory) -> tuple[Path, dict]:
    """A fresh virtual environment with the wheel installed (``pip install wasmai-*.whl``, no
    extras); ``measured`` gains the install time and the size of its site-packages."""
    path, measured = wheel
    root = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    py = root / "bin" / "python"
    started = time.monotonic()
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(path)], capture_output=True, text=True,
                          env=_venv_env(root), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    measured["pip_install_s"] = round(time.monotonic() - started, 1)
    site = next((root / "lib").glob("python3*/site-packages"))
    measured["site_packages_bytes"] = _du(site)
    return root, measured


def _in_venv(venv: Path, cwd: Path, *args: object, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "wasmai"), *map(str, args)], cwd=cwd, env=_venv_env(venv),
                          capture_output=True, text=True, timeout=timeout)


def test_base_install_pulls_no_torch_and_names_the_extra(venv, tmp_path):
    root, _ = venv
    py = str(root / "bin" / "python")
    listed = subprocess.run([py, "-m", "pip", "list", "--format", "json"], check=True, capture_output=True,
                            text=True, env=_venv_env(root)).stdout
    installed = {d["name"].lower() for d in json.loads(listed)}
    assert "wasmai" in installed and "onnxruntime" in installed
    assert not installed & set(HEAVY), installed & set(HEAVY)
    # Converting from PyTorch / Hugging Face without the extra: one line naming the extra.
    (tmp_path / "m.py").write_text("def f():\n    raise AssertionError('not reached')\n")
    (tmp_path / "hf").mkdir()
    for source, extra in ((["--torch", "m.py:f", "--input", "x=1x16"], "torch"), (["--hf", "hf"], "hf")):
        proc = _in_venv(root, tmp_path, "convert", *source, "-o", "out.onnx")
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: the {'PyTorch' if extra == 'torch' else 'Hugging Face'} source needs torch: "
            f"pip install 'wasmai[{extra}]'"], proc.stderr
        assert not (tmp_path / "out.onnx").exists()


def test_wheel_alone_builds_signs_verifies_and_runs(venv, tmp_path):
    """From a folder outside the checkout, with only the venv: the whole pipeline on the tests'
    MLP (x [batch, 16] fp32 -> y [batch, 4]); the output equals ONNX Runtime's on the same graph."""
    import onnxruntime as ort
    from conftest import _factory

    root, measured = venv
    work = tmp_path / "work"
    work.mkdir()
    factory = _factory()
    onnx_path = factory.save(factory.mlp(), work / "mlp.onnx")
    x = np.random.default_rng(18).standard_normal((3, 16)).astype(np.float32)
    np.save(work / "x.npy", x)

    where = subprocess.run([str(root / "bin" / "python"), "-c",
                            "import wasmai, wasmai._host; from wasmai.build.templates import templates_dir, "
                            "wit_dir; print(wasmai.__file__); print(templates_dir()); print(wit_dir())"],
                           cwd=work, env=_venv_env(root), capture_output=True, text=True, check=True).stdout
    for line in where.splitlines():
        assert Path(line).is_relative_to(root), where  # the wheel's package, not the checkout's

    doctor = _in_venv(root, work, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout[-3000:]
    assert json.loads(doctor.stdout)["ok"] is True
    plan = _in_venv(root, work, "toolchain", "install", "--dry-run")
    assert plan.returncode == 0 and "nothing to install" in plan.stdout, plan.stdout + plan.stderr

    started = time.monotonic()
    first = _in_venv(root, work, "build", "mlp.onnx", "-o", "mlp.wasm", "--rebuild", "--json")
    measured["first_build_s"] = round(time.monotonic() - started, 1)
    assert first.returncode == 0, first.stderr[-3000:]
    built = json.loads(first.stdout)
    assert built["cached"] is False and built["template"] == "tensor"
    started = time.monotonic()
    again = _in_venv(root, work, "build", "mlp.onnx", "-o", "again.wasm", "--json")
    measured["cached_build_s"] = round(time.monotonic() - started, 1)
    assert again.returncode == 0 and json.loads(again.stdout)["cached"] is True, again.stderr[-3000:]
    assert (work / "again.wasm").read_bytes() == (work / "mlp.wasm").read_bytes()
    measured["component_bytes"] = (work / "mlp.wasm").stat().st_size

    for args in (("keygen", "-o", "keys"), ("sign", "mlp.wasm", "--key", "keys/wasmai.key"),
                 ("verify", "mlp.wasm", "--key", "keys/wasmai.pub")):
        proc = _in_venv(root, work, *args)
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    started = time.monotonic()
    run = _in_venv(root, work, "run", "mlp.wasm", "--key", "keys/wasmai.pub", "--input", "x=x.npy", "--json")
    measured["run_s"] = round(time.monotonic() - started, 2)
    assert run.returncode == 0, run.stderr[-3000:]
    (out,) = json.loads(run.stdout)["outputs"]
    assert (out["name"], out["dtype"], out["shape"]) == ("y", "fp32", [3, 4])
    y = np.asarray(out["values"], dtype=np.float32).reshape(out["shape"])
    expected = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)

    # A component changed after signing is refused by the same installed CLI.
    data = bytearray((work / "mlp.wasm").read_bytes())
    data[-1] ^= 1
    (work / "mlp.wasm").write_bytes(bytes(data))
    refused = _in_venv(root, work, "verify", "mlp.wasm", "--key", "keys/wasmai.pub")
    assert refused.returncode == 1 and refused.stderr.startswith("error:"), refused.stderr

    print("\nwheel measured: " + json.dumps(measured))
    (Path(measured["wheel"]).parent / "measured.json").write_text(json.dumps(measured, indent=2))
