"""Task-specific Python beside the guest templates: what ``convert``, ``build``, ``run`` and
``bench`` need for one task beyond tensors (``embedding``: text-embedding; ``vad``:
voice-activity; ``face``: face-detection)."""

from __future__ import annotations

from typing import Any


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
