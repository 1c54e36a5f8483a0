"""`wasmai run` / `wasmai bench` of face-detection components: the CLI fronts over
:mod:`wasmai.tasks.face` (tables, the annotated PNG written atomically, the run in a worker)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wasmai.errors import WasmaiError
from wasmai.tasks.face import Face, FaceBenchResult, FaceRunResult, bench_faces, run_faces


def render_faces(faces: Sequence[Face], title: str) -> Any:
    """A rich Table of faces: box corners, width x height, score and the five landmarks (pixels)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("#", "box x1,y1 - x2,y2", "size", "score", "landmarks (eyes, nose, mouth)"):
        table.add_column(col, justify="right" if col in ("#", "size", "score") else "left")
    for i, f in enumerate(faces):
        x1, y1, x2, y2 = f.box
        marks = " ".join(f"({x:.0f},{y:.0f})" for x, y in f.landmarks)
        table.add_row(str(i + 1), f"{x1:.1f},{y1:.1f} - {x2:.1f},{y2:.1f}", f"{x2 - x1:.0f}x{y2 - y1:.0f}",
                      f"{f.score:.4f}", marks)
    return table


def render_run(result: FaceRunResult, verbose: bool) -> None:
    """The faces as a rich table; the annotated file and stage times with ``verbose``."""
    from wasmai.cli._common import console, host_times, shown

    out = console()
    if result.signature is not None:
        out.print("[green]signature verified[/green]")
    out.print(render_faces(result.faces, f"{shown(result.model)} — {len(result.faces)} face(s) in "
                                         f"{shown(Path(result.image).name)} ({result.width}x{result.height})"))
    if result.annotated:
        out.print(f"annotated image written to {shown(result.annotated)}")
    if verbose:
        t = result.guest_timings_us
        out.print("guest: " + ", ".join(f"{k.removesuffix('_us')} {v} µs" if k.endswith("_us") else f"{k} {v}"
                                        for k, v in t.items()))
        out.print(host_times(result, "detect"))


def render_bench(result: FaceBenchResult) -> None:
    """Stage medians of the component and the reference, the call percentiles and the agreement."""
    from rich.table import Table

    from wasmai.cli._common import console, shown

    out = console()
    table = Table(title=f"face-detection {shown(Path(result.image).name)}, median of {result.runs} runs, "
                        f"{result.threads} thread(s)")
    table.add_column("component stage")
    table.add_column("µs (guest)", justify="right")
    table.add_column("reference stage")
    table.add_column("µs (Python)", justify="right")
    ref_rows = [("decode (Pillow)", "decode"), ("P-Net forward", "pnet"), ("R-Net forward", "rnet"),
                ("O-Net forward", "onet"), ("pyramid, NMS, crops", "other")]
    comp_rows = [("decode", "decode"), ("pyramid", "pyramid"), ("P-Net (wasi-nn)", "pnet"), ("P-Net NMS", "nms"),
                 ("R-Net (crops, wasi-nn, NMS)", "rnet"), ("O-Net (crops, wasi-nn, NMS)", "onet")]
    for k in range(max(len(comp_rows), len(ref_rows))):
        c = comp_rows[k] if k < len(comp_rows) else ("", "")
        r = ref_rows[k] if k < len(ref_rows) else ("", "")
        cv = result.component_us.get(c[1])
        rv = result.reference_us.get(r[1])
        table.add_row(c[0], "" if cv is None else f"{cv:.0f}", r[0] if result.reference_us else "",
                      "" if rv is None else f"{rv:.0f}")
    out.print(table)
    cc, rc = result.component_call_ms, result.reference_call_ms
    out.print(f"detect call: component p50 {cc['p50']:.1f} ms p90 {cc['p90']:.1f} ms"
              + (f"; reference p50 {rc['p50']:.1f} ms p90 {rc['p90']:.1f} ms" if rc else ""))
    if rc:
        same = (f"IoU >= {result.min_iou:.4f}, score within {result.max_score_diff:.2e}, landmarks within "
                f"{result.max_landmark_diff_px:.2f} px" if result.min_iou is not None else "no pair to compare")
        out.print(f"faces: component {result.faces}, reference {result.reference_faces} ({same})")


def cli_run(component: str, image: Path, *, annotate: Path | None, sandbox_options: dict[str, Any],
            policy_options: dict[str, Any], target_options: dict[str, Any], verbose: bool, json_out: bool) -> None:
    """``wasmai run FACE.wasm --image PHOTO [--annotate OUT.png]``: :func:`run_faces` in a forked
    worker (:mod:`wasmai.worker`), the PNG written atomically, printed with :func:`render_run`."""
    from wasmai._atomic import write_bytes
    from wasmai.cli._common import run_command
    from wasmai.cli.oci import resolve_target

    def work() -> FaceRunResult:
        from wasmai.sandbox import SandboxOptions
        from wasmai.worker import in_worker

        if annotate is not None and annotate.suffix.lower() != ".png":
            raise WasmaiError(f"--annotate {annotate}: the annotated image is a PNG (give a .png path)")
        sandbox = SandboxOptions.from_options(**sandbox_options)
        path, bundle, _graphs, verified, policy = resolve_target(component, policy_options, target_options)
        result: FaceRunResult = in_worker(run_faces, path, image=image, annotated=annotate is not None,
                                          policy=policy, bundle=bundle, sandbox=sandbox, verified=verified)
        if annotate is not None:
            write_bytes(annotate, result._annotated)
            result.annotated = str(annotate)
        return result

    run_command(work, json_out=json_out, render=lambda r: render_run(r, verbose))


def cli_bench(component: str, image: Path, *, runs: int, warmup: int, threads: int, native: bool | None,
              sandbox_options: dict[str, Any], policy_options: dict[str, Any], target_options: dict[str, Any],
              json_out: bool) -> None:
    """``wasmai bench FACE.wasm --image PHOTO``: :func:`bench_faces` (the Python reference unless
    ``--no-native``) in a forked worker (as ``run``: a crash or a blocked call ends the worker,
    not this command), printed with :func:`render_bench` (or as JSON)."""
    from wasmai.cli._common import run_command
    from wasmai.cli.oci import resolve_target

    def work() -> FaceBenchResult:
        from wasmai.sandbox import SandboxOptions
        from wasmai.worker import in_worker

        sandbox = SandboxOptions.from_options(**sandbox_options)
        path, bundle, _graphs, verified, policy = resolve_target(component, policy_options, target_options)
        return in_worker(bench_faces, path, image=image, runs=runs, warmup=warmup, threads=threads or 1,
                         policy=policy, bundle=bundle, sandbox=sandbox, verified=verified,
                         reference=native is not False)

    run_command(work, json_out=json_out, render=render_bench)
