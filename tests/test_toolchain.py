"""Foundation: toolchain detection, the guest toolchain really building a component, the CLI skeleton."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from conftest import run_cli
from typer.testing import CliRunner

from wasmai import __version__
from wasmai.cli import COMMANDS, app
from wasmai.toolchain import detect, guest_target_dir

runner = CliRunner()


def test_detect_finds_a_complete_guest_toolchain():
    tc = detect()
    assert tc.mode in ("rustup", "build-std"), [c for c in tc.checks if not c.ok]
    tc.require()
    versions = tc.versions()
    assert versions["rustc"].startswith("rustc ")
    assert versions["cargo-component"].startswith("cargo-component")


@pytest.mark.slow
def test_minimal_guest_component_builds_validates_and_exports_add(repo_root, tmp_path):
    """Build tests/guests/adder with the real `cargo component build` and check the component."""
    from wasmai.build import cargo_environment

    tc = detect()
    crate = tmp_path / "adder"
    shutil.copytree(repo_root / "tests" / "guests" / "adder", crate)
    env = cargo_environment(tc)  # the very environment `wasmai build` uses
    proc = subprocess.run([tc.cargo or "cargo", "component", "build", "--release"], cwd=crate, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wasm = guest_target_dir() / "wasm32-wasip1" / "release" / "wasmai_test_adder.wasm"
    assert wasm.stat().st_mtime > time.time() - 1800
    subprocess.run(["wasm-tools", "validate", "--features", "component-model", str(wasm)], check=True)
    wit = subprocess.run(["wasm-tools", "component", "wit", str(wasm)], capture_output=True, text=True,
                         check=True).stdout
    assert "export add: func(a: u32, b: u32) -> u32;" in wit
    # A core module is not a component: the magic/version header differs (layer 1 = component).
    assert wasm.read_bytes()[4:8] == b"\x0d\x00\x01\x00"


def test_help_lists_every_command_and_is_fast():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name, _ in COMMANDS:
        assert name in result.output


def test_cli_import_stays_lazy():
    """`wasmai --help` must not pay for the heavy stage dependencies."""
    code = ("import sys, wasmai.cli; heavy = [m for m in ('numpy', 'onnx', 'onnxruntime', 'torch', 'sigstore',"
            " 'wasmai._host', 'rich.table') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == ""


def test_console_script_builds_only_the_command_it_runs():
    """``wasmai COMMAND`` (:func:`wasmai.cli.main`, a fresh process) builds an app holding only
    COMMAND, with its whole --help; a mistyped command still gets every command's suggestion."""
    run_help = run_cli("run", "--help")
    assert run_help.returncode == 0, run_help.stderr
    assert "Usage: python -m wasmai run [OPTIONS]" in run_help.stdout  # a group, not `run` as the root
    for text in ("--input", "--image", "--key", "--cert-identity", "--max-memory", "--graph", "--json",
                 "Signature policy", "Sandbox"):
        assert text in run_help.stdout, text
    typo = run_cli("rnu", "x.wasm")
    assert typo.returncode == 2 and "No such command 'rnu'" in typo.stderr and "'run'" in typo.stderr
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"wasmai {__version__}"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"wasmai {__version__}"


def test_unknown_option_is_a_usage_error():
    result = runner.invoke(app, ["doctor", "--no-such-flag"])
    assert result.exit_code == 2


def test_doctor_json_reports_every_check():
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.stdout)
    names = [c["name"] for c in report["checks"]]
    assert any(n.startswith("cargo-component") for n in names)
    assert any("onnxruntime" in n for n in names)
    assert any("native host" in n for n in names)
    assert result.exit_code == (0 if report["ok"] else 1)
