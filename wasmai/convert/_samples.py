"""Calibration/validation samples for :mod:`wasmai.convert`: image folders, NPZ files, random inputs, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wasmai.convert._base import (
    RANDOM_SAMPLES,
    Feed,
    InputSpec,
    _example_array,
)
from wasmai.errors import WasmaiError, first_line
from wasmai.manifest import Preprocess, TensorSpec
from wasmai.tensors import numpy_dtype


def _read_labels(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WasmaiError(f"--labels: cannot read {path}: {exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    labels = [line.strip() for line in lines]
    if not labels:
        raise WasmaiError(f"--labels: {path} is empty")
    return labels


def _load_npz(path: Path, inputs: list[TensorSpec]) -> list[Feed]:
    """NPZ with one array per input name. An array of the input's rank is split along axis 0
    into batch-1 samples; one of rank+1 holds one full input per entry of axis 0."""
    input_names = [i.name for i in inputs]
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise WasmaiError(f"NPZ file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - zip/npy format errors
        raise WasmaiError(f"cannot read NPZ {path}: {first_line(exc)}") from None
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise WasmaiError(f"NPZ {path} lacks arrays for inputs {', '.join(missing)} "
                          f"(has {', '.join(arrays) or 'none'})")
    per_input: dict[str, list[np.ndarray]] = {}
    for spec in inputs:
        arr = arrays[spec.name]
        if arr.ndim == len(spec.shape) + 1:
            per_input[spec.name] = [arr[i] for i in range(arr.shape[0])]
        elif arr.ndim == len(spec.shape):
            per_input[spec.name] = [arr[i:i + 1] for i in range(arr.shape[0])]
        else:
            raise WasmaiError(f"NPZ {path}: array {spec.name!r} has rank {arr.ndim}, the input has rank "
                              f"{len(spec.shape)} (give rank {len(spec.shape)} or {len(spec.shape) + 1})")
    counts = {n: len(v) for n, v in per_input.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise WasmaiError(f"NPZ {path}: inputs need the same non-zero number of samples along axis 0 ({counts})")
    return [{n: per_input[n][i] for n in input_names} for i in range(next(iter(counts.values())))]


def _image_samples(folder: Path, pre: Preprocess, input_name: str) -> tuple[list[Feed], list[str]]:
    from wasmai.preprocess import list_images, preprocess_image

    files = list_images(folder)
    return [{input_name: preprocess_image(f, pre)} for f in files], [f.name for f in files]


def _samples_from(path: Path, task: str, pre: Preprocess | None, inputs: list[TensorSpec],
                  what: str) -> tuple[list[Feed], list[str]]:
    """Samples from a folder of images (image tasks) or an NPZ file."""
    if path.is_dir():
        if task != "image-classification" or pre is None:
            raise WasmaiError(f"--{what} {path}: a folder of images needs --task image-classification "
                              "(use an NPZ for tensors)")
        if len(inputs) != 1:
            raise WasmaiError(f"--{what}: image folders need a model with one input, this one has {len(inputs)}")
        return _image_samples(path, pre, inputs[0].name)
    if path.is_file():
        feeds = _load_npz(path, inputs)
        return feeds, [f"{path.name}[{i}]" for i in range(len(feeds))]
    raise WasmaiError(f"--{what}: not found: {path}")


def _random_samples(inputs: list[TensorSpec], given: dict[str, InputSpec], rng: np.random.Generator,
                    vocab: int, n: int = RANDOM_SAMPLES) -> list[Feed]:
    feeds: list[Feed] = []
    for _ in range(n):
        feed: Feed = {}
        for spec in inputs:
            if spec.name in given:
                shape = given[spec.name].shape
            else:
                shape = [d if isinstance(d, int) else (8 if i == 1 and spec.dtype == "i64" else 1)
                         for i, d in enumerate(spec.shape)]
            feed[spec.name] = _example_array(InputSpec(spec.name, shape, spec.dtype), rng, vocab)
        feeds.append(feed)
    return feeds


def _check_feeds(feeds: list[Feed], inputs: list[TensorSpec], what: str) -> list[Feed]:
    """Cast each sample to the model's input dtypes and check ranks and fixed dims."""
    out: list[Feed] = []
    for k, feed in enumerate(feeds):
        fixed: Feed = {}
        for spec in inputs:
            arr = feed[spec.name]
            want = spec.shape
            # same rank checked first, so the zip is over equal lengths
            if arr.ndim != len(want) or any(isinstance(d, int) and d != a
                                            for d, a in zip(want, arr.shape, strict=True)):
                raise WasmaiError(f"{what} sample {k}: input {spec.name!r} has shape {list(arr.shape)}, "
                                  f"the model needs {want}")
            fixed[spec.name] = np.ascontiguousarray(arr.astype(numpy_dtype(spec.dtype), copy=False))
        out.append(fixed)
    return out
