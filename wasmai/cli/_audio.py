"""`wasmai run --audio` / `wasmai bench --audio` of voice-activity components: the CLI fronts
over :mod:`wasmai.tasks.vad` (segment tables, the run in a worker)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wasmai.tasks.vad import (
    AudioBenchResult,
    AudioRunResult,
    DetectOptions,
    bench_audio,
    parse_settings,
    run_audio,
)


def render_run(result: AudioRunResult, verbose: bool) -> None:
    """The segments as a rich table (start, end, duration, probability); stage times with ``verbose``."""
    from rich.table import Table

    from wasmai.cli._common import console, host_times, shown

    out = console()
    if result.signature is not None:
        out.print("[green]signature verified[/green]")
    chans = f", {result.channels} ch" if result.channels else ""
    table = Table(title=f"{shown(result.model)} — {len(result.segments)} speech segment(s) in "
                        f"{shown(Path(result.audio).name)} ({result.duration_s:.2f} s, {result.sample_rate} Hz{chans})")
    for col in ("#", "start s", "end s", "duration s", "probability"):
        table.add_column(col, justify="right")
    for i, s in enumerate(result.segments, 1):
        table.add_row(str(i), f"{s.start_s:.3f}", f"{s.end_s:.3f}", f"{s.end_s - s.start_s:.3f}",
                      f"{s.probability:.3f}")
    out.print(table)
    if verbose:
        t = result.guest_timings_us
        out.print(f"guest: decode {t.get('decode_us', 0)} µs, resample {t.get('resample_us', 0)} µs, "
                  f"inference {t.get('inference_us', 0)} µs ({t.get('windows', 0)} windows), "
                  f"postprocess {t.get('postprocess_us', 0)} µs")
        out.print(host_times(result, "detect"))


def render_bench(result: AudioBenchResult) -> None:
    """Stage medians side by side, then the call percentiles and the segment agreement."""
    from rich.table import Table

    from wasmai.cli._common import console, shown

    out = console()
    table = Table(title=f"voice-activity {shown(Path(result.audio).name)} ({result.duration_s:.2f} s, "
                        f"{result.windows} windows), median of {result.runs} runs")
    table.add_column("stage")
    table.add_column("component µs (guest)", justify="right")
    table.add_column("Python reference µs", justify="right")
    for k in ("decode_us", "resample_us", "inference_us", "postprocess_us"):
        ref = result.reference_us.get(k)
        table.add_row(k.removesuffix("_us"), f"{result.component_us[k]:.0f}", "-" if ref is None else f"{ref:.0f}")
    out.print(table)
    c, r = result.component_call_ms, result.reference_call_ms
    out.print(f"detect call: component p50 {c['p50']:.2f} ms p90 {c['p90']:.2f} ms"
              + (f"; reference p50 {r['p50']:.2f} ms p90 {r['p90']:.2f} ms" if r else ""))
    out.print(f"host call overhead (the {result.wav_bytes / 1024:.0f} KiB WAV into the guest, segments out): "
              f"{result.call_overhead_ms:.2f} ms")
    if result.reference_segments or result.segments:
        same = ("same segment count, boundaries within "
                f"{result.max_boundary_diff_ms:.1f} ms" if result.max_boundary_diff_ms is not None
                else f"segment counts differ: {len(result.segments)} vs {len(result.reference_segments)}")
        out.print(f"segments: {len(result.segments)} ({same})")


def cli_run(component: str, audio: Path, *, options: DetectOptions | None, sandbox_options: dict[str, Any],
            policy_options: dict[str, Any], target_options: dict[str, Any], graphs: list[str] | None,
            verbose: bool, json_out: bool, settings: Sequence[str] | None = None) -> None:
    """``wasmai run COMPONENT --audio FILE.wav [--vad KEY=VALUE ...]``: :func:`run_audio` in a
    forked worker (:mod:`wasmai.worker`), printed with :func:`render_run` (or as JSON)."""
    from wasmai.cli._common import run_command
    from wasmai.cli.oci import resolve_target

    def work() -> AudioRunResult:
        from wasmai.inputs import parse_assignments
        from wasmai.sandbox import SandboxOptions
        from wasmai.worker import in_worker

        sandbox = SandboxOptions.from_options(**sandbox_options)
        extra = parse_assignments(graphs, "--graph", form="NAME=FILE.onnx")
        if options is not None:
            options.check()
        overrides = parse_settings(settings)
        path, bundle, pulled, verified, policy = resolve_target(component, policy_options, target_options)
        return in_worker(run_audio, path, audio=audio, options=options, policy=policy, bundle=bundle,
                         sandbox=sandbox, verified=verified, graphs={**pulled, **extra}, overrides=overrides)

    run_command(work, json_out=json_out, render=lambda r: render_run(r, verbose))


def cli_bench(component: str, audio: Path, *, runs: int, warmup: int, sandbox_options: dict[str, Any],
              policy_options: dict[str, Any], target_options: dict[str, Any], json_out: bool) -> None:
    """``wasmai bench COMPONENT --audio FILE.wav``: :func:`bench_audio` in a forked worker (as
    ``run``: a crash or a blocked call ends the worker, not this command), printed with
    :func:`render_bench` (or as JSON)."""
    from wasmai.cli._common import run_command
    from wasmai.cli.oci import resolve_target

    def work() -> AudioBenchResult:
        from wasmai.sandbox import SandboxOptions
        from wasmai.worker import in_worker

        sandbox = SandboxOptions.from_options(**sandbox_options)
        path, bundle, _pulled, verified, policy = resolve_target(component, policy_options, target_options)
        return in_worker(bench_audio, path, audio=audio, runs=runs, warmup=warmup, policy=policy, bundle=bundle,
                         sandbox=sandbox, verified=verified)

    run_command(work, json_out=json_out, render=render_bench)
