"""Command-line values and input tensors, parsed and matched once for every command.

* :func:`parse_assignments` - the one ``NAME=VALUE`` parser (``--input``, ``--graph``, ``--env``,
  ``--dim``).
* :func:`load_arrays` - the one loader of ``--input NAME=FILE.npy`` / ``--input FILE.npy`` and
  ``--inputs FILE.npz``.
* :func:`match_inputs` - the one matcher of arrays to a component's declared inputs, used by
  ``wasmai run`` and ``wasmai bench`` alike: by name, or by position for an empty or numeric
  name; cast to the declared dtype only when numpy allows it as ``same_kind``; rank and fixed
  axes checked. Every failure is one :class:`WasmaiError` line.
* :func:`read_image` - the bytes of ``--image``.
* :func:`random_inputs` - seeded random tensors for ``wasmai bench --random``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wasmai.errors import WasmaiError, first_line
from wasmai.manifest import TensorSpec

if TYPE_CHECKING:
    from numpy.typing import NDArray


def parse_assignments(items: Sequence[str] | None, flag: str, *, form: str = "NAME=VALUE",
                      allow_empty_value: bool = False, positional: bool = False) -> dict[str, str]:
    """``["NAME=VALUE", ...]`` -> ``{NAME: VALUE}`` in the given order (the value may contain
    ``=``; a repeated name keeps its last value). With ``positional`` an item without ``=`` is a
    value for the next position: its key is its index (``"0"``, ``"1"``, ...).

    Raises :class:`WasmaiError` ``<flag> must look like <form>, got '<item>'`` on an item without
    ``=`` (unless ``positional``), with an empty name, or with an empty value (unless
    ``allow_empty_value``)."""
    out: dict[str, str] = {}
    for index, item in enumerate(items or ()):
        name, sep, value = item.partition("=")
        if not sep and positional:
            name, value = str(index), item
        elif not sep or not name or not (value or allow_empty_value):
            raise WasmaiError(f"{flag} must look like {form}, got {item!r}")
        out[name] = value
    return out


def parse_dims(items: Sequence[str] | None) -> dict[str, int]:
    """``--dim NAME=SIZE`` items -> ``{axis name: size}``; sizes are integers >= 1.
    Raises :class:`WasmaiError` on a malformed item or size."""
    dims: dict[str, int] = {}
    for name, value in parse_assignments(items, "--dim").items():
        try:
            dims[name] = int(value)
        except ValueError:
            raise WasmaiError(f"--dim {name}={value}: the size must be an integer") from None
        if dims[name] < 1:
            raise WasmaiError(f"--dim {name}={value}: the size must be >= 1")
    return dims


def load_arrays(inputs: Sequence[str] | None = None, npz: str | os.PathLike[str] | None = None
                ) -> dict[str, NDArray[Any]]:
    """Arrays by input name from ``--input`` items (``NAME=FILE.npy``, or ``FILE.npy`` alone for
    the input at that position: key ``"0"``, ``"1"``, ...) and/or one ``.npz`` whose keys are input
    names (read first; ``--input`` items override it). Pickled objects are refused.

    Raises :class:`WasmaiError` ``cannot read --input[s] ...`` naming the file that is missing or
    not a readable .npy / .npz."""
    import numpy as np

    out: dict[str, NDArray[Any]] = {}
    if npz is not None:
        try:
            with np.load(npz, allow_pickle=False) as archive:
                if not hasattr(archive, "files"):
                    raise WasmaiError(f"cannot read --inputs {npz}: not an .npz archive")
                out.update({k: np.asarray(archive[k]) for k in archive.files})
        except (OSError, ValueError) as exc:
            raise WasmaiError(f"cannot read --inputs {npz}: {first_line(exc)}") from None
    for name, path in parse_assignments(inputs, "--input", form="NAME=FILE.npy", positional=True).items():
        try:
            out[name] = np.asarray(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise WasmaiError(f"cannot read --input {path}: {first_line(exc)}") from None
    return out


def read_image(image: str | os.PathLike[str] | bytes) -> bytes:
    """The bytes of an ``--image`` file (PNG or JPEG; decoded later by the component), or
    ``image`` itself when it already is bytes. Raises :class:`WasmaiError` if unreadable."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    try:
        with open(image, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise WasmaiError(f"cannot read --image {image}: {exc.strerror or exc}") from None


def input_specs(info: Mapping[str, Any]) -> list[TensorSpec]:
    """The ``inputs`` of a component's ``metadata.info()`` (``{"name", "dtype", "shape"}`` dicts,
    see :meth:`wasmai.host.Instance.info`) as :class:`TensorSpec`, in the component's order."""
    return [TensorSpec(str(s["name"]), str(s["dtype"]), list(s["shape"])) for s in info.get("inputs", [])]


def match_inputs(arrays: Mapping[str, Any], specs: Sequence[TensorSpec]) -> list[tuple[TensorSpec, NDArray[Any]]]:
    """Arrays -> ``(input spec, C-contiguous array)`` for every declared input, in the component's
    order. An array is matched by its name, or - when the name is empty or a number and no input
    has that name - by position (empty: the array's own position; ``"2"``: input 2). It is cast to
    the input's dtype when ``numpy.can_cast(..., casting="same_kind")`` allows (e.g. float64 ->
    fp32, int32 -> i64; never float -> int), and its rank and fixed axes must match.

    Raises :class:`WasmaiError` on an unknown name or position, an input given twice, a missing
    input, an impossible cast or a wrong shape."""
    import numpy as np

    from wasmai.tensors import numpy_dtype

    names = [s.name for s in specs]
    takes = ", ".join(names) or "no inputs"
    by_name = {s.name: s for s in specs}
    matched: dict[str, Any] = {}
    unknown: list[str] = []
    for position, (key, array) in enumerate(arrays.items()):
        spec = by_name.get(key)
        if spec is None and (key == "" or key.isdigit()):
            index = position if key == "" else int(key)
            if index >= len(specs):
                raise WasmaiError(f"input #{index}: the component takes {len(specs)} input(s): {takes}")
            spec = specs[index]
        if spec is None:
            unknown.append(key)
            continue
        if spec.name in matched:
            raise WasmaiError(f"input {spec.name!r} is given twice")
        matched[spec.name] = array
    if unknown:
        raise WasmaiError(f"unknown input(s) {', '.join(sorted(unknown))}; the component takes {takes}")
    out = []
    for s in specs:
        if s.name not in matched:
            raise WasmaiError(f"missing input {s.name!r} (the component takes {takes})")
        arr = np.asarray(matched[s.name])
        want = numpy_dtype(s.dtype)
        if arr.dtype != want:
            if not np.can_cast(arr.dtype, want, casting="same_kind"):
                raise WasmaiError(f"input {s.name!r} is {arr.dtype}, the component takes {s.dtype} ({want}), "
                                  "and numpy casts it only with loss of kind")
            arr = arr.astype(want)
        fixed_ok = arr.ndim == len(s.shape) and all(
            not isinstance(d, int) or d == n for d, n in zip(s.shape, arr.shape, strict=True))
        if not fixed_ok:
            raise WasmaiError(f"input {s.name!r} has shape {list(arr.shape)}, the component wants {s.shape}")
        out.append((s, np.ascontiguousarray(arr)))
    return out


def random_inputs(specs: Sequence[TensorSpec], dims: Mapping[str, int] | None = None,
                  seed: int = 0) -> dict[str, NDArray[Any]]:
    """Random tensors matching ``specs``, by input name. Dynamic axes take ``dims[name]`` or 1.

    Floats: standard normal; u8: uniform 0..255; i32/i64: uniform 0..9 (valid as indices for
    embedding-style inputs); bf16: the upper 16 bits of standard-normal float32 values. Same
    ``seed``, same tensors (``numpy.random.default_rng``). Raises :class:`WasmaiError` when
    ``dims`` names no dynamic axis of ``specs`` or a dtype is unknown."""
    import numpy as np

    from wasmai.tensors import numpy_dtype

    dims = dims or {}
    rng = np.random.default_rng(seed)
    unknown = set(dims) - {d for s in specs for d in s.shape if isinstance(d, str)}
    if unknown:
        raise WasmaiError(f"--dim names no dynamic axis of this component: {', '.join(sorted(unknown))}")
    out: dict[str, NDArray[Any]] = {}
    for s in specs:
        shape = tuple(int(dims.get(d, 1)) if isinstance(d, str) else d for d in s.shape)
        np_dtype = numpy_dtype(s.dtype)
        arr: NDArray[Any]
        if s.dtype in ("fp16", "fp32", "fp64"):
            arr = rng.standard_normal(shape).astype(np_dtype)
        elif s.dtype == "u8":
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif s.dtype == "bf16":
            arr = (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        else:
            arr = rng.integers(0, 10, size=shape).astype(np_dtype)
        out[s.name] = np.ascontiguousarray(arr)
    return out
