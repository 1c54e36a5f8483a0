"""``wasmai run --text`` and ``wasmai bench --text``: the text-embedding fronts (library code in
:mod:`wasmai.tasks.embedding`). Only typer is imported at module level."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from wasmai.cli._common import console, run_command, shown

if TYPE_CHECKING:
    from wasmai.tasks.embedding import EmbedResult, TextBenchReport

TextOpt = Annotated[list[str] | None, typer.Option(
    "--text", rich_help_panel="Inputs",
    help="A text for a text-embedding component (repeatable): dimension, norms and pairwise cosines "
         "(--json: the vectors).")]


def run_text(component: str, texts: list[str], *, graphs: list[str] | None, allow_target_fallback: bool,
             verbose: bool, json_out: bool, sandbox_options: dict[str, Any], policy_options: dict[str, Any],
             target_options: dict[str, Any]) -> None:
    """``wasmai run COMPONENT --text ... [--text ...]``: embed in a forked worker, print the
    dimension, each text's norm and the pairwise cosine table (``--json``: everything, vectors
    included). Errors are one ``error:`` line, exit 1."""

    def work() -> EmbedResult:
        from wasmai.cli.oci import resolve_target
        from wasmai.inputs import parse_assignments
        from wasmai.sandbox import SandboxOptions
        from wasmai.tasks.embedding import run_text as embed_texts
        from wasmai.worker import in_worker

        sandbox = SandboxOptions.from_options(**sandbox_options)
        path, signature, pulled, verified, verify_policy = resolve_target(component, policy_options, target_options)
        named = parse_assignments(graphs, "--graph", form="NAME=FILE.onnx")
        return in_worker(embed_texts, path, texts, graphs={**pulled, **named},
                         allow_target_fallback=allow_target_fallback, policy=verify_policy, bundle=signature,
                         sandbox=sandbox, verified=verified)

    run_command(work, json_out=json_out, render=lambda r: _render_run(r, verbose))


def _label(text: str, width: int = 32) -> str:
    one_line = " ".join(text.split())
    return shown(one_line if len(one_line) <= width else one_line[:width - 1] + "…") or "(empty)"


def _render_run(result: EmbedResult, verbose: bool) -> None:
    from rich.table import Table

    out = console()
    if result.signature is not None:
        out.print("[green]signature verified[/green]")
    info = result.info
    out.print(f"{shown(result.model)}: dimension {result.dimension}, {info.get('pooling')} pooling, "
              f"{info.get('normalization')} normalization, max length {info.get('max-length')} tokens")
    table = Table(title="pairwise cosine similarity")
    table.add_column("#", justify="right")
    table.add_column("text")
    table.add_column("norm", justify="right")
    for j in range(len(result.texts)):
        table.add_column(str(j), justify="right")
    for i, text in enumerate(result.texts):
        table.add_row(str(i), _label(text), f"{result.norms[i]:.4f}", *(f"{c:.4f}" for c in result.cosine[i]))
    out.print(table)
    if verbose:
        t = result.guest_timings_us
        out.print(f"load {result.load_ms:.1f} ms, embed {result.call_ms:.1f} ms; guest: tokenize "
                  f"{t.get('tokenize-us', 0)} µs, inference {t.get('inference-us', 0)} µs, pool "
                  f"{t.get('pool-us', 0)} µs ({t.get('batches', 0)} graph runs)")


def bench_text(component: str, texts: list[str], *, n: int, warmup: int, threads: int, native: bool | None,
               model: Any, json_out: bool, sandbox_options: dict[str, Any], policy_options: dict[str, Any],
               target_options: dict[str, Any]) -> None:
    """``wasmai bench COMPONENT --text ...``: the component's ``embed`` with its guest stage
    timings next to the Python pipeline (tokenizers + onnxruntime + mean pool + L2), measured in a
    forked worker (as ``run``: a crash or a blocked call ends the worker, not this command)."""

    def work() -> TextBenchReport:
        from wasmai.cli.oci import resolve_target
        from wasmai.sandbox import SandboxOptions
        from wasmai.tasks.embedding import bench_text as run_bench
        from wasmai.worker import in_worker

        sandbox = SandboxOptions.from_options(**sandbox_options)
        path, signature, _graphs, verified, verify_policy = resolve_target(component, policy_options, target_options)
        return in_worker(run_bench, path, texts, n=n, warmup=warmup, threads=threads, model=model,
                         native=native is not False, policy=verify_policy, bundle=signature, sandbox=sandbox,
                         verified=verified)

    run_command(work, json_out=json_out, render=_render_bench)


def _render_bench(report: TextBenchReport) -> None:
    from rich.table import Table

    out = console()
    cold = report.cold_start_ms
    out.print(f"{report.texts} texts, {report.n} calls; cold start: load + instantiate "
              f"{cold['load_instantiate_ms']:.1f} ms, graph load {cold['graph_load_ms']:.1f} ms, first embed "
              f"{cold['first_embed_ms']:.1f} ms")
    table = Table(title="embed: component vs Python pipeline (p50)")
    for col in ("stage", "component", "python"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    ref = report.reference_stages_us or {}
    for key, name in (("tokenize-us", "tokenize µs"), ("inference-us", "inference µs"), ("pool-us", "pool µs")):
        table.add_row(name, f"{report.guest_stages_us[key]:.0f}", f"{ref[key]:.0f}" if key in ref else "-")
    table.add_row("total ms", f"{report.component_ms['p50']:.2f}",
                  f"{report.reference_ms['p50']:.2f}" if report.reference_ms else "-")
    out.print(table)
    if report.ratio_p50 is not None:
        out.print(f"component / python p50: {report.ratio_p50:.3f}x; max 1 - cosine between them: "
                  f"{report.max_one_minus_cosine:.2e}")
    out.print(f"python side: {shown(report.reference)}")
    for note in report.notes:
        out.print(f"[dim]note: {shown(note)}[/dim]")
