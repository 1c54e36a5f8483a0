"""``wasmai build``: ONNX model -> WebAssembly component importing wasi:nn (see :mod:`wasmai.build`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wasmai.cli._common import console, run_command
from wasmai.cli.options import ExecutionTargetOpt, JsonOpt
from wasmai.vocab import ExecutionTarget

if TYPE_CHECKING:
    from wasmai.build import BuildResult, CrateResult

def build(
    model: Annotated[Path, typer.Argument(help="The ONNX model.", show_default=False)],
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m",
        help="Model manifest (TOML). Default: MODEL.toml beside the model; without one a tensor "
             "manifest is derived from the ONNX graph.")] = None,
    task: Annotated[str | None, typer.Option(
        "--task", help="Template to build: a folder under wasmai/templates/ (tensor, image-classification). "
                       "Default: the manifest's task.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output file. Default: MODEL.wasm beside the model "
                               "(MODEL.core.wasm for wasm32-wasip1).")] = None,
    target: Annotated[str, typer.Option(
        "--target",
        help="Rust target: wasm32-wasip2 (component), wasm32-wasip1 (core module without the WASI adapter) "
             "or wasm32-unknown-unknown (refused: Rust's std there has no clock).")] = "wasm32-wasip2",
    release: Annotated[bool, typer.Option("--release/--debug", help="Cargo profile.")] = True,
    embed: Annotated[bool, typer.Option(
        "--embed", help="Embed the ONNX bytes in the component (the default; at most 256 MiB).")] = False,
    by_name: Annotated[str | None, typer.Option(
        "--by-name", metavar="NAME",
        help="Do not embed: the guest calls wasi:nn load-by-name(NAME); the host registers the model.")] = None,
    execution_target: ExecutionTargetOpt = ExecutionTarget.CPU,
    emit_crate: Annotated[Path | None, typer.Option(
        "--emit-crate", metavar="DIR",
        help="Write the generated Rust crate to DIR and stop (build it with cargo component build).")] = None,
    rebuild: Annotated[bool, typer.Option(
        "--rebuild", help="Ignore an earlier build of the same inputs; compile the crate again.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Build an ONNX model into a WebAssembly component (wasm32-wasip2) that runs it through wasi:nn.

    Examples:

      [dim]# the model embedded; its manifest (effnet-int8.toml) beside it[/dim]
      wasmai build effnet-int8.onnx -o effnet-int8.wasm

      [dim]# not embedded: run it with --graph big=big.onnx (wasi-nn load-by-name)[/dim]
      wasmai build big.onnx --by-name big

      [dim]# ask for a GPU; machine-readable result for CI[/dim]
      wasmai build model.onnx --execution-target gpu --json

      [dim]# write the Rust guest crate and stop[/dim]
      wasmai build model.onnx --emit-crate crate/
    """

    def work() -> BuildResult | CrateResult:
        from wasmai.build import build as build_fn
        from wasmai.errors import WasmaiError

        if embed and by_name is not None:
            raise WasmaiError("--embed and --by-name exclude each other")

        def call(say: Callable[[str], object]) -> BuildResult | CrateResult:
            return build_fn(model, manifest=manifest, task=task, output=output, target=target, release=release,
                            by_name=by_name, execution_target=execution_target, emit_crate=emit_crate,
                            rebuild=rebuild, progress=say)

        if json_out:
            from wasmai.build import ErrorBlocks

            # stdout carries the JSON: compiler errors go to stderr as they come.
            errors = ErrorBlocks(lambda text: sys.stderr.write(text + "\n"))
            return call(errors)
        return _with_progress(call)

    run_command(work, json_out=json_out, render=_render)


def _with_progress(call: Callable[[Callable[[str], object]], BuildResult | CrateResult]) -> BuildResult | CrateResult:
    """Run ``call(say)`` under a rich progress display on stderr fed by cargo's output; compiler
    error blocks are printed above it as they come."""
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from wasmai.build import ErrorBlocks

    err = console(stderr=True)
    compiled = 0
    with Progress(SpinnerColumn(), TextColumn("[bold]building[/bold] {task.description}"),
                  TextColumn("{task.completed} crates"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task_id = bar.add_task("preparing", total=None)
        errors = ErrorBlocks(lambda text: bar.console.print(escape(text), highlight=False, soft_wrap=True))

        def say(line: str) -> None:
            nonlocal compiled
            if errors(line):
                return
            stripped = line.strip()
            if stripped.startswith("Compiling "):
                compiled += 1
            if stripped:
                bar.update(task_id, description=escape(stripped[:100]), completed=compiled)

        return call(say)


def _render(result: BuildResult | CrateResult) -> None:
    from wasmai.build import CrateResult

    out = console()
    if isinstance(result, CrateResult):
        out.print(f"wrote the {result.template} crate (world {result.world}, {result.placement}) to "
                  f"{result.crate_dir}")
        out.print(f"build it there with: {result.build_command}")
        return
    how = "reused cached build" if result.cached else f"built in {result.build_seconds:.1f} s"
    out.print(f"{result.output}  {result.size_bytes / 1024:.1f} KiB  sha256 {result.sha256[:16]}...  "
              f"({result.template}, {result.target}, {result.profile}, {result.placement}; {how})")
    out.print(f"world {result.world}: exports {', '.join(result.exports)}")
