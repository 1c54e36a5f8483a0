"""``wasmai doctor``: is everything the pipeline needs on this machine?"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field

from wasmai.toolchain import Check, detect

#: Python distributions each stage needs: (distribution, stage, required).
PYTHON_PACKAGES: list[tuple[str, str, bool]] = [
    ("typer", "cli", True),
    ("rich", "cli", True),
    ("numpy", "all", True),
    ("onnx", "convert", True),
    ("onnxruntime", "convert/run", True),
    ("onnxconverter-common", "convert (fp16)", True),
    ("tomli-w", "manifest", True),
    ("pillow", "convert (images)", True),
    ("sigstore", "sign/verify", True),
    ("model-signing", "sign --key", True),
    ("torch", "convert --torch (extra: torch)", False),
    ("transformers", "convert --hf (extra: hf)", False),
    ("matplotlib", "bench --plot (extra: plot)", False),
]


@dataclass
class DoctorReport:
    """All checks; ``ok`` is False when a required one failed."""

    ok: bool
    toolchain_mode: str
    checks: list[Check] = field(default_factory=list)
    #: False when `wasmai build` lacks a guest toolchain item (``wasmai toolchain install``).
    toolchain_complete: bool = True


def _python_checks() -> list[Check]:
    checks: list[Check] = []
    for dist, stage, required in PYTHON_PACKAGES:
        try:
            version = importlib.metadata.version(dist)
            ok, detail = True, version
        except importlib.metadata.PackageNotFoundError:
            ok, detail = False, "not installed"
        extra = stage.split("extra: ")[-1].rstrip(")") if "extra:" in stage else None
        fix = f"pip install 'wasmai[{extra}]'" if extra else f"pip install {dist}"
        checks.append(Check(f"python: {dist} ({stage})", ok, detail, fix, required))
    return checks


def _runtime_checks() -> list[Check]:
    checks: list[Check] = []
    try:
        import onnxruntime

        eps = ", ".join(onnxruntime.get_available_providers())
        checks.append(Check("onnxruntime execution providers", True, f"{onnxruntime.__version__}: {eps}"))
    except ImportError:
        pass  # reported by the package check
    from wasmai.errors import WasmaiError
    from wasmai.host import native_module

    try:
        host = native_module()
        checks.append(Check("native host (wasmai._host)", True, f"wasi:nn@{host.WASI_NN_VERSION}"))
    except WasmaiError as exc:
        checks.append(Check("native host (wasmai._host)", False, str(exc).splitlines()[0],
                            "reinstall the wasmai wheel (pip install --force-reinstall wasmai), or in a "
                            "checkout pip install -e . (builds host/ with maturin; needs cargo)"))
    return checks


def doctor() -> DoctorReport:
    """Run every check: guest toolchain (rustc + wasm std or build-std fallback, cargo-component,
    wasm-tools), Python packages per stage, ONNX Runtime and its execution providers, and the
    native host extension. Never raises."""
    tc = detect()
    checks = [*tc.checks, *_python_checks(), *_runtime_checks()]
    return DoctorReport(ok=all(c.ok for c in checks if c.required), toolchain_mode=tc.mode, checks=checks,
                        toolchain_complete=all(c.ok for c in tc.checks if c.required))
