"""The ``--plot`` PNG: histograms of the steady-state latencies (matplotlib, optional)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wasmai.bench.report import BenchReport
from wasmai.errors import WasmaiError


def write_plot(report: BenchReport, dest: str | os.PathLike[str]) -> Path:
    """Histogram (40 equal bins, ms) of the steady-state latencies of the component, and of the
    ONNX Runtime baseline when measured, written atomically as a PNG to ``dest``; returns ``dest``.

    Needs matplotlib (``pip install 'wasmai[plot]'``); raises :class:`WasmaiError` if missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise WasmaiError("--plot needs matplotlib: pip install 'wasmai[plot]' (or pip install matplotlib)") from None
    from wasmai._atomic import atomic_path

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    series = [("component", report.steady.samples_ms)]
    if report.ort_baseline.available:
        series.append(("native onnxruntime", report.ort_baseline.samples_ms))
    lo = min(min(s) for _, s in series)
    hi = max(max(s) for _, s in series)
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 40)
    for label, s in series:
        ax.hist(s, bins=bins, alpha=0.6, label=f"{label} (p50 {np.median(s):.3f} ms)")
    ax.set_xlabel(f"latency per {report.mode} call (ms)")
    ax.set_ylabel("calls")
    ax.set_title(f"{report.model.get('name')}: {report.steady.latency_ms.n} calls, "
                 f"{report.config['threads'] or 'default'} intra-op threads")
    ax.legend()
    fig.tight_layout()
    path = Path(dest)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
