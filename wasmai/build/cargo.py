"""Running ``cargo component build`` on a rendered crate: the environment and shared target folder,
the lock that serializes builds into it, cargo's output streamed and its error blocks picked out,
and the check of the result with ``wasm-tools``."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from wasmai.build.templates import Template
from wasmai.errors import ToolchainError
from wasmai.toolchain import GUEST_TARGET

if TYPE_CHECKING:
    from wasmai.toolchain import Toolchain

#: The cargo target cargo-component compiles for; wasm32-wasip2 components are this core
#: module adapted with the ``wasi_snapshot_preview1`` reactor adapter.
CARGO_TARGET = GUEST_TARGET


#: Receives each line cargo prints; its return value is ignored.
ProgressFn = Callable[[str], object]


class CargoBuildError(ToolchainError):
    """``cargo component build`` failed; ``diagnostics`` holds the compiler's error blocks."""

    def __init__(self, message: str, diagnostics: str, log_path: Path | None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics
        self.log_path = log_path


def crates_dir() -> Path:
    """Root of the rendered crates: ``<wasmai cache>/crates`` (``~/.cache/wasmai/crates``)."""
    from wasmai.toolchain import cache_dir

    return cache_dir() / "crates"


def _remap_flags() -> list[str]:
    """``--remap-path-prefix`` flags hiding the cargo registry and the crate cache root. Both
    paths are the same for every build on a machine, so RUSTFLAGS (and cargo's caches) stay put."""
    cargo_home = Path(os.environ.get("CARGO_HOME") or Path.home() / ".cargo")
    flags = []
    for src, dst in ((cargo_home / "registry" / "src", "/cargo/registry/src"),
                     (crates_dir(), "/wasmai/crates")):
        if not any(c.isspace() for c in str(src)):
            flags.append(f"--remap-path-prefix={src}={dst}")
    return flags


#: Code generation flags of every guest: wasm SIMD128 (fixed-width SIMD, a standard part of
#: WebAssembly 2.0; wasmtime, WasmEdge, wasmer and browsers run it), used by the image guests'
#: resizer (fast_image_resize's wasm32 kernels) and by LLVM's auto-vectorizer.
GUEST_RUSTFLAGS = ("-C", "target-feature=+simd128")


def cargo_environment(tc: Toolchain) -> dict[str, str]:
    """The full environment for ``cargo component build``: ``os.environ`` without any
    RUSTFLAGS overrides, plus ``tc.cargo_env()``, :data:`GUEST_RUSTFLAGS`, the path remapping,
    the shared ``CARGO_TARGET_DIR`` and plain (non-interactive) cargo output."""
    from wasmai import toolchain as tc_mod

    env = {k: v for k, v in os.environ.items()
           if k not in ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_BUILD_TARGET",
                        "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR")}
    env.update(tc.cargo_env())
    flags_var = f"CARGO_TARGET_{CARGO_TARGET.upper().replace('-', '_')}_RUSTFLAGS"
    env[flags_var] = " ".join([*env.get(flags_var, "").split(), *GUEST_RUSTFLAGS, *_remap_flags()])
    env["CARGO_TARGET_DIR"] = str(tc_mod.guest_target_dir())
    env["CARGO_TERM_COLOR"] = "never"
    env["CARGO_TERM_PROGRESS_WHEN"] = "never"
    return env


@contextlib.contextmanager
def target_lock(say: ProgressFn | None = None) -> Iterator[None]:
    """Hold the exclusive lock on the shared guest target dir (``.wasmai-build.lock`` in it).

    Every guest crate writes its artifact to the same ``CARGO_TARGET_DIR``; holding this lock
    from ``cargo component build`` until the artifact is copied out keeps another build from
    replacing it in between. Anything else that runs cargo in that target dir takes it too.
    """
    from wasmai import toolchain as tc_mod

    target_dir = tc_mod.guest_target_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    with open(target_dir / ".wasmai-build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say is not None:
                say("waiting for another wasmai build to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _compile(crate_dir: Path, tmpl: Template, target: str, profile: str, env: dict[str, str], tc: Toolchain,
             say: ProgressFn) -> tuple[bytes, list[str], list[str]]:
    """Run cargo component build under the target-dir lock; return the output bytes and its
    checked imports/exports."""
    from wasmai import toolchain as tc_mod

    target_dir = tc_mod.guest_target_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    cmd = [tc.cargo or "cargo", "component", "build", "--locked", "--manifest-path",
           str(crate_dir / "Cargo.toml")]
    if profile == "release":
        cmd.append("--release")
    log_path = crate_dir / "build.log"
    with target_lock(say):
        # Every crate dir builds a package of the same name into the same target dir, so the
        # artifact file is shared: a crate cargo considers fresh may find another crate's build
        # there. Touching lib.rs makes cargo recompile this crate (dependencies stay cached).
        os.utime(crate_dir / "src" / "lib.rs")
        lines = _run_streaming(cmd, env, crate_dir, say, log_path)
        artifact_dir = target_dir / CARGO_TARGET / profile
        stem = tmpl.crate.replace("-", "_")
        artifact = artifact_dir / (f"deps/{stem}.wasm" if target == CARGO_TARGET else f"{stem}.wasm")
        if lines is not None:
            raise _cargo_failure(lines, log_path)
        if not artifact.is_file():
            raise ToolchainError(f"cargo component build succeeded but {artifact} is missing")
        data = artifact.read_bytes()
    kind = data[4:8]
    if target == CARGO_TARGET and kind != b"\x01\x00\x00\x00":
        raise ToolchainError(f"{artifact} is not a core wasm module")
    if target == "wasm32-wasip2" and kind == b"\x01\x00\x00\x00":
        raise ToolchainError(f"{artifact} is a core module, not a component (did cargo-component run?)")
    check_path = crate_dir / "out" / f".check-{target}-{profile}.wasm"
    check_path.parent.mkdir(parents=True, exist_ok=True)
    check_path.write_bytes(data)
    try:
        imports, exports = _check_output(check_path, tmpl, target, tc.wasm_tools or "wasm-tools")
    finally:
        check_path.unlink(missing_ok=True)
    return data, imports, exports


def _run_streaming(cmd: list[str], env: dict[str, str], cwd: Path, say: ProgressFn,
                   log_path: Path) -> list[str] | None:
    """Run ``cmd``, passing each stderr line to ``say`` and to ``log_path``. Returns None on
    success, else every stderr line."""
    lines: list[str] = []
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1)
    except OSError as exc:
        raise ToolchainError(f"cannot run {cmd[0]}: {exc}") from None
    with open(log_path, "w", encoding="utf-8") as log:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                line = line.rstrip("\n")
                lines.append(line)
                log.write(line + "\n")
                say(line)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    return None if proc.wait() == 0 else lines


class ErrorBlocks:
    """Picks the error blocks out of cargo/rustc output, line by line: each ``error...`` line and
    the lines after it up to the next blank line. Calling it with a line returns whether the line
    belongs to an error block; ``emit`` (if given) receives those lines, and ``""`` after each block.
    """

    def __init__(self, emit: Callable[[str], object] | None = None) -> None:
        self.emit = emit
        self.inside = False

    def __call__(self, line: str) -> bool:
        if line.startswith("error"):
            self.inside = True
        elif not line.strip():
            if self.inside and self.emit is not None:
                self.emit("")
            self.inside = False
        if self.inside and self.emit is not None:
            self.emit(line)
        return self.inside


def diagnostics(lines: list[str]) -> list[str]:
    """The error blocks of cargo/rustc output (see :class:`ErrorBlocks`), blocks separated by ``""``."""
    out: list[str] = []
    blocks = ErrorBlocks(out.append)
    for line in lines:
        blocks(line)
    return out


def _cargo_failure(lines: list[str], log_path: Path) -> CargoBuildError:
    blocks = diagnostics(lines)
    first = next((b for b in blocks if b.startswith("error") and "could not compile" not in b), None)
    first = first or next((b for b in blocks if b.startswith("error")), None)
    first = first or (lines[-1] if lines else "no output")
    where = next((b.strip() for b in blocks if b.strip().startswith("-->")), "")
    detail = first.removeprefix("error: ").strip() + (f" ({where.removeprefix('--> ')})" if where else "")
    return CargoBuildError(f"cargo component build failed: {detail} (full log: {log_path})",
                           "\n".join(blocks), log_path)


_WIT_ITEM = re.compile(r"^\s*(import|export)\s+([^;{]+?)\s*;", re.M)


_CORE_IMPORT = re.compile(r'\(import "([^"]+)" "')


_CORE_EXPORT = re.compile(r'\(export "([^"#]+)#')


def _check_output(path: Path, tmpl: Template, target: str, wasm_tools: str) -> tuple[list[str], list[str]]:
    """``wasm-tools validate`` the output and check the template's imports and exports are there.
    Returns (imports, exports): WIT interface names (component) or import module / export
    interface names (core module)."""
    _tool([wasm_tools, "validate", str(path)], f"wasm-tools validate rejected the build output {path}")
    if target == CARGO_TARGET:
        text = _tool([wasm_tools, "print", "--skeleton", str(path)], f"wasm-tools print failed on {path}")
        imports = sorted(set(_CORE_IMPORT.findall(text)))
        exports = sorted(set(_CORE_EXPORT.findall(text)))
    else:
        text = _tool([wasm_tools, "component", "wit", str(path)], f"wasm-tools component wit failed on {path}")
        imports = sorted({name for kind, name in _WIT_ITEM.findall(text) if kind == "import"})
        exports = sorted({name for kind, name in _WIT_ITEM.findall(text) if kind == "export"})
    missing = [f"import {i}" for i in tmpl.check_imports if i not in imports]
    missing += [f"export {e}" for e in tmpl.check_exports if e not in exports]
    if missing:
        raise ToolchainError(f"the built {target} output lacks {', '.join(missing)}")
    return imports, exports


def _tool(cmd: list[str], failure: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolchainError(f"{failure}: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise ToolchainError(f"{failure}: {detail}")
    return proc.stdout


