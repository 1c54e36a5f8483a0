"""``wasmai bench``: the typer front of :func:`wasmai.bench.bench`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wasmai.cli._common import console, run_command, shown
from wasmai.cli._text import TextOpt
from wasmai.cli.oci import COMPONENT_HELP
from wasmai.cli.options import (
    INPUT_PANEL,
    AllowTargetFallbackOpt,
    BundleOpt,
    CertIdentityOpt,
    CertOidcIssuerOpt,
    DirOpt,
    EnvOpt,
    GithubRefOpt,
    GithubRepositoryOpt,
    GraphOpt,
    ImageOpt,
    InheritStdioOpt,
    InputOpt,
    InputsOpt,
    InsecureOpt,
    JsonOpt,
    KeyOpt,
    MaxGraphsOpt,
    MaxMemoryOpt,
    MaxOrtMemoryOpt,
    MaxTensorBytesOpt,
    OfflineOpt,
    PasswordStdinOpt,
    PolicyFileOpt,
    StagingOpt,
    TimeoutOpt,
    TopKOpt,
    TrustConfigOpt,
    TrustedRootOpt,
    UsernameOpt,
    option_groups,
)

if TYPE_CHECKING:
    from wasmai.bench import BenchReport
    from wasmai.bench.stats import Stats

MEASURE_PANEL = "Measurement"


def bench(
    component: Annotated[str, typer.Argument(help=f"The component (.wasm) to benchmark, or {COMPONENT_HELP}.")],
    image: ImageOpt = None,
    input_: InputOpt = None,
    inputs: InputsOpt = None,
    random: Annotated[bool, typer.Option(
        "--random", rich_help_panel=INPUT_PANEL, help="Random tensors matching the component's inputs.")] = False,
    dim: Annotated[list[str] | None, typer.Option(
        "--dim", metavar="NAME=SIZE", rich_help_panel=INPUT_PANEL,
        help="Size of a dynamic axis with --random (default 1; repeatable).")] = None,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel=INPUT_PANEL, help="Seed for --random.")] = 0,
    audio: Annotated[Path | None, typer.Option(
        "--audio", rich_help_panel="Inputs",
        help="WAV file for a voice-activity component: per-stage guest times vs the Python pipeline.")] = None,
    text: TextOpt = None,
    n: Annotated[int, typer.Option(
        "-n", "--iterations", rich_help_panel=MEASURE_PANEL,
        help="Timed calls in the steady state (per instance under --concurrency).")] = 100,
    warmup: Annotated[int, typer.Option(
        "--warmup", rich_help_panel=MEASURE_PANEL, help="Untimed calls before timing.")] = 10,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", rich_help_panel=MEASURE_PANEL,
        help="N instances on N threads for throughput (QPS, p99 under load).")] = 1,
    threads: Annotated[int, typer.Option(
        "--threads", rich_help_panel=MEASURE_PANEL,
        help="ONNX Runtime intra-op threads, for the component and the ONNX Runtime baseline alike "
        "(0 = ONNX Runtime's default).")] = 0,
    native: Annotated[bool | None, typer.Option(
        "--native/--no-native", rich_help_panel=MEASURE_PANEL,
        help="Also run the model directly in onnxruntime, the baseline (default: when the ONNX model is "
        "found); with tensor inputs, also in the host's own ONNX Runtime library through its C API.")] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", rich_help_panel=MEASURE_PANEL,
        help="The ONNX model for --native (default: the manifest or .onnx beside the component with the "
        "same sha256).")] = None,
    top_k: TopKOpt = 5,
    plot: Annotated[Path | None, typer.Option(
        "--plot", rich_help_panel=MEASURE_PANEL,
        help="Write a latency histogram PNG (needs matplotlib: pip install 'wasmai[plot]').")] = None,
    graph: GraphOpt = None,
    allow_target_fallback: AllowTargetFallbackOpt = False,
    timeout: TimeoutOpt = None,
    dir_: DirOpt = None,
    env: EnvOpt = None,
    inherit_stdio: InheritStdioOpt = False,
    max_memory: MaxMemoryOpt = None,
    max_ort_memory: MaxOrtMemoryOpt = None,
    max_tensor_bytes: MaxTensorBytesOpt = None,
    max_graphs: MaxGraphsOpt = None,
    key: KeyOpt = None,
    cert_identity: CertIdentityOpt = None,
    cert_oidc_issuer: CertOidcIssuerOpt = None,
    github_repository: GithubRepositoryOpt = None,
    github_ref: GithubRefOpt = None,
    trust_config: TrustConfigOpt = None,
    trusted_root: TrustedRootOpt = None,
    staging: StagingOpt = False,
    offline: OfflineOpt = False,
    policy: PolicyFileOpt = None,
    bundle: BundleOpt = None,
    insecure: InsecureOpt = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Benchmark a component: cold start, steady-state latency percentiles, throughput, memory, and the
    ratio to the same model in onnxruntime (same threads, same process).

    Exit 1 on bad input (one error line).

    [bold]Examples:[/bold]

    [dim]# random inputs (dynamic axis batch=8), 200 timed calls, next to onnxruntime[/dim]
    wasmai bench model.wasm --random --dim batch=8 -n 200

    [dim]# an image classifier end to end, 2 instances on 2 threads, signature checked first[/dim]
    wasmai bench model.wasm --key wasmai.pub --image cat.png -n 50 --concurrency 2 --threads 1

    [dim]# your own tensors, a latency histogram and the JSON report[/dim]
    wasmai bench model.wasm --inputs inputs.npz --plot latency.png --json > report.json

    [dim]# a voice-activity component on a WAV file, per stage, next to silero-vad's Python pipeline[/dim]
    wasmai bench vad.wasm --audio speech.wav -n 20 --warmup 2

    [dim]# a face-detection component: per-stage guest times next to facenet-pytorch's MTCNN[/dim]
    wasmai bench face.wasm --image photo.png -n 10 --threads 1

    [dim]# a text-embedding component: guest tokenize/inference/pool next to the Python pipeline[/dim]
    wasmai bench emb.wasm --text "A man is eating food." --text "A man eats bread." -n 20

    [dim]# a pushed component by digest, its attached signature verified first[/dim]
    wasmai bench oci://ghcr.io/acme/model@sha256:4c98... --key wasmai.pub --random
    """

    # The sandbox, signature-policy and component-target flags, shared by every task's front.
    # No policy option at all = benchmark without verifying (reported as such).
    sandbox_options, policy_options, target_options = option_groups(locals())
    if audio is not None:  # voice-activity components (wasmai.tasks.vad)
        from wasmai.cli._audio import cli_bench

        cli_bench(component, audio, runs=n, warmup=warmup, json_out=json_out, sandbox_options=sandbox_options,
                  policy_options=policy_options, target_options=target_options)
        return

    if text:  # text-embedding components (wasmai.tasks.embedding)
        from wasmai.cli._text import bench_text

        bench_text(component, text, n=n, warmup=warmup, threads=threads, native=native, model=model,
                   json_out=json_out, sandbox_options=sandbox_options, policy_options=policy_options,
                   target_options=target_options)
        return

    from wasmai.tasks.face import is_face_component

    if image is not None and is_face_component(component):  # face-detection components (wasmai.tasks.face)
        from wasmai.cli._face import cli_bench as face_bench

        face_bench(component, image, runs=n, warmup=warmup, threads=threads, native=native, json_out=json_out,
                   sandbox_options=sandbox_options, policy_options=policy_options, target_options=target_options)
        return

    def work() -> BenchReport:
        from wasmai.bench import BenchOptions
        from wasmai.bench import bench as run_bench
        from wasmai.cli.oci import resolve_target
        from wasmai.inputs import load_arrays, parse_assignments, parse_dims
        from wasmai.sandbox import SandboxOptions
        from wasmai.worker import in_worker

        dims = parse_dims(dim)
        sandbox = SandboxOptions.from_options(**sandbox_options)
        graphs = {name: Path(p) for name, p in parse_assignments(graph, "--graph", form="NAME=FILE.onnx").items()}
        arrays = load_arrays(input_, inputs) if (input_ or inputs is not None) else None
        path, signature, pulled_graphs, verified, verify_policy = resolve_target(component, policy_options,
                                                                                 target_options)
        opts = BenchOptions(
            component=path, image=image, inputs=arrays, random=random, dims=dims, seed=seed, n=n,
            warmup=warmup, concurrency=concurrency, threads=threads, ort_baseline=native, model=model,
            top_k=top_k, graphs={**pulled_graphs, **graphs}, allow_target_fallback=allow_target_fallback,
            sandbox=sandbox, policy=verify_policy, bundle=signature, verified=verified, plot=plot)
        # In a forked worker, as `run`: a graph that crashes ONNX Runtime, or a call blocked past its
        # timeout, ends the worker, not this command. Every figure is measured inside the worker.
        return in_worker(run_bench, opts, progress=None if json_out else _progress)

    run_command(work, json_out=json_out, render=render)


def _progress(message: str) -> None:
    """The progress callback: ``bench: <message>`` dimmed on stderr (a module-level function, so
    that a spawned worker can be given it)."""
    console(stderr=True).print(f"[dim]bench: {message}[/]")


def _num(v: float) -> str:
    """At most 6 characters for values below 100000: 4-5 significant digits."""
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _fmt_bytes(n: int | None) -> str:
    """Bytes as MiB with one decimal; ``-`` for unknown."""
    if n is None:
        return "-"
    return f"{n / (1 << 20):.1f} MiB"


def render(report: BenchReport) -> None:
    """Rich tables of a :class:`wasmai.bench.BenchReport`, and a terminal histogram."""
    from rich.table import Table

    con = console()
    m = report.model
    con.print(f"[bold]{shown(m.get('name'))}[/] ({shown(m.get('task'))}, {shown(m.get('placement'))}) - "
              f"{shown(report.component)}")
    con.print(f"mode {report.mode}; intra-op threads {report.config['threads'] or 'ORT default'}; "
              f"execution provider {shown(report.execution_provider or '?')}; "
              f"{report.config['warmup']} warm-up + {report.config['n']} timed calls")

    if report.verification:
        v = report.verification
        con.print(f"[green]verified[/] {shown(v.get('kind'))} signature: {shown(v.get('policy'))}")
    cs = report.cold_start
    cold = Table(title="cold start (ms)")
    for col in ("compile" + (" (cached)" if cs.cache_hit else ""), "instantiate", "graph load",
                "first call", "total"):
        cold.add_column(col, justify="right")
    cold.add_row(*(f"{v:.2f}" for v in (cs.compile_ms, cs.instantiate_ms, cs.load_ms, cs.first_call_ms,
                                       cs.total_ms)))
    con.print(cold)

    from rich import box

    cols = ("min", "p50", "p90", "p99", "max", "mean", "stdev")

    def table(title: str) -> Table:
        t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
        t.add_column("", no_wrap=True)
        for col in cols:
            t.add_column(col, justify="right", no_wrap=True)
        return t

    def row(t: Table, label: str, s: Stats | None) -> None:
        if s is not None:
            t.add_row(label, *(_num(getattr(s, k)) for k in cols))

    st = report.steady
    base = report.ort_baseline
    lat = table(f"steady state: latency per {report.mode} call (ms)")
    row(lat, "component", st.latency_ms)
    row(lat, "  ORT run in host", st.ort_run_ms)
    lib = report.library_baseline
    if base.available:
        row(lat, "native onnxruntime", base.latency_ms)
    if lib.available:
        row(lat, "  same library, C API", lib.latency_ms)
    con.print(lat)
    parts = table("per call (us); host overhead = call time - ORT run in host - guest work")
    row(parts, "host overhead", st.host_overhead_us)
    row(parts, "guest work", st.guest_work_us)
    for stage, s in (st.stages_us or {}).items():
        row(parts, f"guest {stage}", s)
    for stage, s in ((base.stages_us or {}).items() if base.available else ()):
        row(parts, f"native {stage}", s)
    if parts.row_count:
        con.print(parts)
    if base.available:
        con.print(f"component / native p50: [bold]{base.ratio_p50:.3f}x[/] (onnxruntime {base.onnxruntime_version}, "
                  f"{base.model})")
    else:
        con.print(f"[yellow]native onnxruntime skipped:[/] {base.skipped_reason}")
    if lib.available:
        con.print(f"component / the host's own ONNX Runtime library p50: [bold]{lib.ratio_p50:.3f}x[/] "
                  "(the Python package links another build of it)")
    if report.throughput is not None:
        tp = report.throughput
        con.print(f"throughput: {tp.concurrency} instances on {tp.concurrency} threads, {tp.calls} calls in "
                  f"{tp.wall_s:.2f} s: [bold]{tp.qps:.1f} QPS[/], p50 {tp.latency_ms.p50:.3f} ms, "
                  f"p99 {tp.latency_ms.p99:.3f} ms under load")
    mem = report.memory
    con.print(f"memory: peak RSS {_fmt_bytes(mem.peak_rss_bytes)} (process, before native), "
              f"component linear memory {_fmt_bytes(mem.linear_memory_bytes)}")
    if report.histogram_ms:
        con.print(terminal_histogram(report.histogram_ms))
    for note in report.notes:
        con.print(f"[dim]note: {note}[/]")
    if report.plot:
        con.print(f"plot: {report.plot}")


def terminal_histogram(hist: dict[str, Any], width: int = 40) -> str:
    """A text histogram of ``{"edges", "counts"}`` (ms), one bar per bin."""
    counts, edges = hist["counts"], hist["edges"]
    top = max(counts) or 1
    lines = ["component latency histogram (ms):"]
    for i, c in enumerate(counts):
        bar = "#" * max(1 if c else 0, round(c / top * width))
        lines.append(f"  {edges[i]:9.3f} - {edges[i + 1]:9.3f} | {bar} {c}")
    if hist.get("above"):
        lines.append(f"  {'above':>9} > {edges[-1]:9.3f} (p99) | {hist['above']}")
    return "\n".join(lines)
