"""Task-specific Python beside the guest templates: what ``convert``, ``build``, ``run`` and
``bench`` need for one task beyond tensors (``embedding``: text-embedding; ``vad``:
voice-activity; ``face``: face-detection)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmai.errors import WasmaiError


def call_task(instance: Any, interface: str, func: str, *args: Any) -> Any:
    """Call ``<interface>#<func>`` on a :class:`wasmai.host.Instance` through
    :meth:`~wasmai.host.Instance.call_export` and unwrap a WIT ``result``: the ``ok`` value, or the
    component's ``error`` variant (wasmai/wit/inference.wit ``types.error``) raised as
    :class:`wasmai.host.InferenceError` (code: the wasi-nn error code for ``backend``, else the
    case name; message escaped with :func:`wasmai.errors.printable`). A function without a
    ``result`` returns its value as is. Traps, timeouts and a missing export raise
    :class:`wasmai.host.ComponentError`."""
    from wasmai.errors import printable
    from wasmai.host import InferenceError

    out = instance.call_export(f"{interface}#{func}", *args)
    if not (isinstance(out, tuple) and len(out) == 2 and out[0] in ("ok", "err")):
        return out
    tag, value = out
    if tag == "ok":
        return value
    case, payload = value if isinstance(value, tuple) else ("internal", value)
    if case == "backend" and isinstance(payload, dict):
        code = payload.get("code")
        code = code[0] if isinstance(code, tuple) else code
        raise InferenceError(str(code), printable(str(payload.get("message", ""))))
    raise InferenceError(str(case), printable(str(payload)))


def verify_first(path: Path, policy: Any, bundle: Any, verified: Any) -> Any:
    """The verification a task's run or bench starts with, BEFORE anything is compiled:
    ``verified`` when the caller already made it (:func:`wasmai.cli.oci.resolve_target`), else
    :func:`wasmai.runtime.verify_before_run` under ``policy`` (None: no policy, no verification).
    Raises WasmaiError when ``path`` is not a file, VerificationError when the signature fails."""
    from wasmai.runtime import verify_before_run

    if not path.is_file():
        raise WasmaiError(f"component not found: {path}")
    return verified or (verify_before_run(path, policy, bundle) if policy is not None else None)


def instantiate_task(host: Any, path: Path, signature: Any, task: str,
                     hint: str = "") -> tuple[Any, Any, dict[str, Any]]:
    """Load ``path`` in ``host`` (pinned to ``signature``'s digest when it was verified:
    :func:`wasmai.runtime.load_verified`), instantiate it and check that ``metadata.info`` names
    ``task``. Returns ``(component, instance, info)``. Raises WasmaiError naming the component's
    real task (``hint`` is appended, e.g. which ``--task`` to build with), VerificationError for a
    file changed since its verification, ComponentError from the host."""
    from wasmai.runtime import load_verified

    comp = load_verified(host, path, signature.digest if signature is not None else None)
    inst = host.instantiate(comp)
    info = inst.info()
    if info.get("task") != task:
        raise WasmaiError(f"{path.name} is a {info.get('task') or 'tensor'} component, not {task}{hint}")
    return comp, inst, info


@dataclass(kw_only=True)
class TaskRun:
    """What a task's ``wasmai run`` reports besides its result: the component file, its sha256,
    the model's name and version, the guest's stage times (µs), the host-side times (ms:
    compile or cached load, instantiate, ``load``, the call) and the signature verification."""

    component: str
    sha256: str
    model: str
    guest_timings_us: dict[str, int] = field(default_factory=dict)
    compile_ms: float = 0.0
    cache_hit: bool = False
    instantiate_ms: float = 0.0
    load_ms: float = 0.0
    call_ms: float = 0.0
    signature: Any = None

    @staticmethod
    def facts(path: Path, comp: Any, inst: Any, info: dict[str, Any]) -> dict[str, Any]:
        """The fields that come from the component and its instance (as :func:`instantiate_task`
        returns them), as keyword arguments."""
        return {"component": str(path), "sha256": comp.sha256,
                "model": f"{info.get('name', '')} {info.get('version', '')}".strip(),
                "compile_ms": comp.compile_ms, "cache_hit": comp.cache_hit, "instantiate_ms": inst.instantiate_ms}
