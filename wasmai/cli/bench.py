"""``wasmai bench``: the typer front of :func:`wasmai.bench.bench`."""

from __future__ import annotations

from pathlib import Path

import typer

from wasmai.cli._common import (
    JSON_HELP,
    bundle_option,
    cert_identity_option,
    cert_oidc_issuer_option,
    console,
    dir_option,
    env_option,
    github_ref_option,
    github_repository_option,
    inherit_stdio_option,
    key_option,
    max_graphs_option,
    max_memory_option,
    max_tensor_bytes_option,
    offline_option,
    policy_file_option,
    policy_from_cli,
    run_command,
    sandbox_from_options,
    staging_option,
    trust_config_option,
    trusted_root_option,
)


def bench(
    component: Path = typer.Argument(..., help="The component (.wasm) to benchmark."),
    image: Path | None = typer.Option(None, "--image", help="Image file: time classify() end to end "
                                         "(image-classification components)."),
    input_: list[str] | None = typer.Option(None, "--input", help="NAME=FILE.npy for one graph input "
                                               "(repeatable)."),
    inputs: Path | None = typer.Option(None, "--inputs", help=".npz holding every input by name."),
    random: bool = typer.Option(False, "--random", help="Random tensors matching the component's inputs."),
    dim: list[str] | None = typer.Option(None, "--dim", help="NAME=VALUE for a dynamic axis with "
                                            "--random (default 1; repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --random."),
    n: int = typer.Option(100, "-n", "--iterations", help="Timed calls in the steady state (per instance "
                          "under --concurrency)."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed calls before timing."),
    concurrency: int = typer.Option(1, "--concurrency", help="N instances on N threads for throughput "
                                    "(QPS, p99 under load)."),
    threads: int = typer.Option(0, "--threads", help="ONNX Runtime intra-op threads, for the component and "
                                "native alike (0 = ONNX Runtime's default)."),
    native: bool | None = typer.Option(None, "--native/--no-native", help="Also run the model directly "
                                          "in onnxruntime (default: when the ONNX model is found)."),
    model: Path | None = typer.Option(None, "--model", help="The ONNX model for --native (default: the "
                                         "manifest or .onnx beside the component with the same sha256)."),
    top_k: int = typer.Option(5, "--top-k", help="Predictions per classify() call."),
    graph: list[str] | None = typer.Option(None, "--graph", help="NAME=FILE.onnx for by-name components "
                                              "(repeatable)."),
    allow_target_fallback: bool = typer.Option(False, "--allow-target-fallback",
                                               help="Let the host fall back to CPU if the requested "
                                               "execution target is unavailable."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds each guest call may take."),
    dir_: list[str] | None = dir_option(),
    env: list[str] | None = env_option(),
    inherit_stdio: bool = inherit_stdio_option(),
    max_memory: int | None = max_memory_option(),
    max_tensor_bytes: int | None = max_tensor_bytes_option(),
    max_graphs: int | None = max_graphs_option(),
    plot: Path | None = typer.Option(None, "--plot", help="Write a latency histogram PNG (needs "
                                        "matplotlib: pip install 'wasmai[plot]')."),
    key: Path | None = key_option(),
    cert_identity: str | None = cert_identity_option(),
    cert_oidc_issuer: str | None = cert_oidc_issuer_option(),
    github_repository: str | None = github_repository_option(),
    github_ref: str | None = github_ref_option(),
    trust_config: Path | None = trust_config_option(),
    trusted_root: Path | None = trusted_root_option(),
    staging: bool = staging_option(),
    offline: bool = offline_option(),
    policy: Path | None = policy_file_option(),
    bundle: Path | None = bundle_option(),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Benchmark a component: cold start, steady-state latency percentiles, throughput, memory, and the
    ratio to the same model in onnxruntime (same threads, same process).

    Exit 1 on bad input (one error line)."""

    def work():
        from wasmai.bench import bench as run_bench
        from wasmai.bench import parse_assignments
        from wasmai.errors import WasmaiError

        dims = {}
        for name, value in parse_assignments(dim, "--dim").items():
            try:
                dims[name] = int(value)
            except ValueError:
                raise WasmaiError(f"--dim {name}={value}: the size must be an integer") from None
            if dims[name] < 1:
                raise WasmaiError(f"--dim {name}={value}: the size must be >= 1")
        # No policy option at all = benchmark without verifying (reported as such).
        verify_policy = policy_from_cli(
            key=key, cert_identity=cert_identity, cert_oidc_issuer=cert_oidc_issuer,
            github_repository=github_repository, github_ref=github_ref, trust_config=trust_config,
            trusted_root=trusted_root, staging=staging, offline=offline, policy=policy)
        progress = None if json_out else _progress()
        return run_bench(
            component, image=image, inputs=parse_assignments(input_, "--input"), inputs_npz=inputs,
            random=random, dims=dims, seed=seed, n=n, warmup=warmup, concurrency=concurrency,
            threads=threads, native=native, model=model, top_k=top_k,
            graphs=parse_assignments(graph, "--graph") or None,
            allow_target_fallback=allow_target_fallback, policy=verify_policy, bundle=bundle, plot=plot,
            timeout_s=timeout, progress=progress,
            sandbox=sandbox_from_options(dir_, env, inherit_stdio, max_memory, max_tensor_bytes, max_graphs))

    run_command(work, json_out=json_out, render=render)


def _progress():
    con = console(stderr=True)

    def say(message: str) -> None:
        con.print(f"[dim]bench: {message}[/]")

    return say


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
    if n is None:
        return "-"
    return f"{n / (1 << 20):.1f} MiB"


def render(report) -> None:
    """Rich tables of a :class:`wasmai.bench.BenchReport`, and a terminal histogram."""
    from rich.table import Table

    con = console()
    m = report.model
    con.print(f"[bold]{m.get('name')}[/] ({m.get('task')}, {m.get('placement')}) - {report.component}")
    con.print(f"mode {report.mode}; intra-op threads {report.config['threads'] or 'ORT default'}; "
              f"execution provider {report.execution_provider or '?'}; "
              f"{report.config['warmup']} warm-up + {report.config['n']} timed calls")

    if report.verification:
        v = report.verification
        con.print(f"[green]verified[/] {v.get('kind')} signature: {v.get('policy')}")
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

    def row(t: Table, label: str, s, _fmt: str = "") -> None:
        if s is not None:
            t.add_row(label, *(_num(getattr(s, k)) for k in cols))

    st = report.steady
    nat = report.native
    lat = table(f"steady state: latency per {report.mode} call (ms)")
    row(lat, "component", st.latency_ms, "{:.3f}")
    row(lat, "  ORT run in host", st.ort_run_ms, "{:.3f}")
    if nat.available:
        row(lat, "native onnxruntime", nat.latency_ms, "{:.3f}")
    con.print(lat)
    parts = table("per call (us); host overhead = call time - ORT run in host")
    row(parts, "host overhead", st.host_overhead_us, "{:.1f}")
    for stage, s in (st.stages_us or {}).items():
        row(parts, f"guest {stage}", s, "{:.0f}")
    for stage, s in ((nat.stages_us or {}).items() if nat.available else ()):
        row(parts, f"native {stage}", s, "{:.0f}")
    if parts.row_count:
        con.print(parts)
    if nat.available:
        con.print(f"component / native p50: [bold]{nat.ratio_p50:.3f}x[/] (onnxruntime {nat.onnxruntime_version}, "
                  f"{nat.model})")
    else:
        con.print(f"[yellow]native onnxruntime skipped:[/] {nat.skipped_reason}")
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


def terminal_histogram(hist: dict, width: int = 40) -> str:
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
