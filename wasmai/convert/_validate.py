"""Validation against the reference, latency and the wasi-nn compatibility report for :mod:`wasmai.convert`."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from wasmai import tensors
from wasmai.convert._base import (
    HOST_TENSOR_TYPES,
    Feed,
    _op_domains,
    _ort,
    _ort_type_to_tensor_type,
    _session,
    ort_max_opset,
)
from wasmai.errors import ValidationError, WasmaiError, first_line
from wasmai.manifest import EMBED_LIMIT_BYTES, TensorSpec
from wasmai.tensors import numpy_dtype


def _run(path: Path, feeds: list[Feed], threads: int = 1) -> list[list[np.ndarray]]:
    """Run the model at ``path`` with ONNX Runtime on each sample (cast to the input dtypes);
    per sample, the outputs in graph order. Raises :class:`WasmaiError` if ORT fails."""
    sess = _session(path, threads)
    metas = sess.get_inputs()
    results: list[list[np.ndarray]] = []
    for feed in feeds:
        run_feed: Feed = {}
        for m in metas:
            want = numpy_dtype(_ort_type_to_tensor_type(m.type))
            run_feed[m.name] = feed[m.name].astype(want, copy=False)
        try:
            results.append(sess.run(None, run_feed))
        except Exception as exc:  # noqa: BLE001
            raise WasmaiError(f"ONNX Runtime failed on a sample: {first_line(exc)}") from None
    return results


def _topk(scores: np.ndarray, labels: list[str], k: int = 5) -> list[dict[str, Any]]:
    idx = np.argsort(-scores)[:k]
    return [{"index": int(i), "label": labels[i] if i < len(labels) else str(int(i)),
             "score": round(float(scores[i]), 6)}
            for i in idx]


def _validate(ref: list[list[np.ndarray]], cand: list[list[np.ndarray]], out_names: list[str],
              atol: float | None, rtol: float | None, min_top1: float | None, classifier: bool,
              softmax: bool, labels: list[str], sample_names: list[str], source: str) -> dict[str, Any]:
    """Compare candidate outputs with reference outputs.

    Per output (all samples together): ``max_abs_diff = max |c - r|``; ``max_rel_diff =
    max |c - r| / max |r|`` (difference relative to the output's magnitude, stable where r ~ 0);
    ``mismatch_fraction``: share of elements with ``|c - r| > atol + rtol * |r|`` (numpy
    ``allclose`` rule). Classifiers: top-1 agreement over samples on the first output's last axis.
    """
    per_output: list[dict[str, Any]] = []
    failures: list[str] = []
    for j, name in enumerate(out_names):
        r = np.concatenate([np.asarray(s[j], dtype=np.float64).ravel() for s in ref])
        c = np.concatenate([np.asarray(s[j], dtype=np.float64).ravel() for s in cand])
        if r.shape != c.shape:
            raise ValidationError(f"output {name!r}: result has {c.size} values, reference {r.size}")
        diff = np.abs(c - r)
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        entry: dict[str, Any] = {"name": name, "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                 "max_rel_diff": float(diff.max() / scale) if scale > 0 and diff.size else 0.0,
                 "ref_max_abs": scale, "finite": bool(np.all(np.isfinite(c)))}
        if not entry["finite"]:
            failures.append(f"output {name!r} has non-finite values")
        if atol is not None or rtol is not None:
            bound = (atol or 0.0) + (rtol or 0.0) * np.abs(r)
            bad = diff > bound
            entry["mismatch_fraction"] = float(bad.mean()) if bad.size else 0.0
            if bad.any():
                failures.append(f"output {name!r}: max abs diff {entry['max_abs_diff']:.3g} "
                                f"({entry['mismatch_fraction']:.1%} of values beyond "
                                f"atol={atol or 0:g} rtol={rtol or 0:g})")
        per_output.append(entry)
    result: dict[str, Any] = {"source": source, "samples_count": len(ref), "atol": atol, "rtol": rtol,
                              "min_top1_agreement": min_top1, "outputs": per_output}
    if classifier:
        agree = 0
        samples: list[dict[str, Any]] = []
        # one reference and one result entry per validation sample (both run on the same feeds)
        for k, (rs, cs) in enumerate(zip(ref, cand, strict=True)):
            r_scores = np.asarray(rs[0], dtype=np.float64).reshape(-1, np.asarray(rs[0]).shape[-1])
            c_scores = np.asarray(cs[0], dtype=np.float64).reshape(-1, np.asarray(cs[0]).shape[-1])
            for b in range(r_scores.shape[0]):
                rp = tensors.softmax(r_scores[b]) if softmax else r_scores[b]
                cp = tensors.softmax(c_scores[b]) if softmax else c_scores[b]
                same = int(np.argmax(rp)) == int(np.argmax(cp))
                agree += same
                two = np.sort(rp)[-2:] if rp.size > 1 else np.array([0.0, float(rp.max())])
                samples.append({"sample": sample_names[k] if k < len(sample_names) else str(k),
                                "top1_agrees": same, "reference_margin": round(float(two[1] - two[0]), 6),
                                "reference_top5": _topk(rp, labels), "result_top5": _topk(cp, labels)})
        total = max(1, len(samples))
        result["top1_agreement"] = agree / total
        result["samples"] = samples
        if min_top1 is not None and agree / total < min_top1:
            failures.append(f"top-1 agreement {agree}/{total} = {agree / total:.2f} < {min_top1:g}")
    result["passed"] = not failures
    result["failures"] = failures
    return result


def _latency_ms(path: Path, feed: Feed, runs: int) -> float:
    """Median wall time (ms) of ``runs`` single-threaded ORT runs after 2 warm-up runs."""
    sess = _session(path, threads=1)
    metas = sess.get_inputs()
    run_feed = {m.name: feed[m.name].astype(numpy_dtype(_ort_type_to_tensor_type(m.type)), copy=False)
                for m in metas}
    for _ in range(2):
        sess.run(None, run_feed)
    times: list[float] = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        sess.run(None, run_feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(times), 3)


def wasi_nn_compat(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                   opset: int | None) -> dict[str, Any]:
    """The "wasi-nn compatibility" report for a final model: tensor types and which hosts accept
    them (:data:`HOST_TENSOR_TYPES`), dynamic axes, whether the file fits
    :data:`EMBED_LIMIT_BYTES`, non-standard op domains, and the opset against the installed
    onnxruntime (probed by :func:`ort_max_opset`).

    ``inputs``/``outputs``/``opset`` are the model's graph I/O and default-domain opset (as
    :func:`wasmai.manifest.graph_io` returns them). Keys: ``inputs``/``outputs`` (name, wasi-nn dtype, shape),
    ``hosts`` (per host: ``accepts``, ``tensor_types``, ``rejects`` when some are not),
    ``dynamic_axes``, ``embed`` (``size_bytes``, ``limit_bytes``, ``fits``),
    ``custom_op_domains`` and ``opset``. Expects a model that passed the ONNX checker; raises
    ``OSError`` if ``path`` cannot be read."""
    import onnx

    ort = _ort()
    size = path.stat().st_size
    types = sorted({s.dtype for s in [*inputs, *outputs]})
    hosts: dict[str, dict[str, Any]] = {}
    for host, accepted in HOST_TENSOR_TYPES.items():
        rejected = [t for t in types if t not in accepted]
        hosts[host] = {"accepts": not rejected, "tensor_types": list(accepted),
                       **({"rejects": rejected} if rejected else {})}
    max_opset = ort_max_opset()
    domains = _op_domains(path)
    return {
        "inputs": [{"name": s.name, "dtype": s.dtype, "shape": s.shape} for s in inputs],
        "outputs": [{"name": s.name, "dtype": s.dtype, "shape": s.shape} for s in outputs],
        "hosts": hosts,
        "dynamic_axes": {s.name: s.dynamic_axes for s in [*inputs, *outputs] if s.dynamic_axes},
        "embed": {"size_bytes": size, "limit_bytes": EMBED_LIMIT_BYTES, "fits": size <= EMBED_LIMIT_BYTES},
        "custom_op_domains": domains,
        "opset": {"model": opset, "onnxruntime_version": ort.__version__, "onnxruntime_max_opset": max_opset,
                  "onnx_version": onnx.__version__, "supported": opset is not None and opset <= max_opset},
    }
