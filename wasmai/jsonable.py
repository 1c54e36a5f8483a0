"""Plain JSON values from wasmai's result objects (``--json`` output, benchmark files, bench reports)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """``value`` as JSON types: a dataclass instance -> dict of its fields (fields starting with
    ``_`` left out), dict -> dict with str keys, list/tuple -> list, Path -> str, numpy scalar or
    array -> ``tolist()``; anything else is returned unchanged. Recursive. Never raises."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("_")}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    return value
