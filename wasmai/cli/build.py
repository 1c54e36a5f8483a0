"""``wasmai build``: ONNX model -> WebAssembly component importing wasi:nn (see :mod:`wasmai.build`)."""

from __future__ import annotations

from pathlib import Path

import typer

from wasmai.cli._common import JSON_HELP, console, run_command


def build(
    model: Path = typer.Argument(..., help="The ONNX model.", show_default=False),
    manifest: Path | None = typer.Option(
        None, "--manifest", "-m",
        help="Model manifest (TOML). Default: MODEL.toml beside the model; without one a tensor "
             "manifest is derived from the ONNX graph."),
    task: str | None = typer.Option(
        None, "--task", help="Template to build: tensor or image-classification (a folder under "
                             "templates/). Default: the manifest's task."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Output file. Default: MODEL.wasm beside the model "
                                     "(MODEL.core.wasm for wasm32-wasip1)."),
    target: str = typer.Option(
        "wasm32-wasip2", "--target",
        help="wasm32-wasip2 (component), wasm32-wasip1 (core module without the WASI adapter) or "
             "wasm32-unknown-unknown (refused: Rust's std there has no clock)."),
    release: bool = typer.Option(True, "--release/--debug", help="Cargo profile."),
    embed: bool = typer.Option(
        False, "--embed", help="Embed the ONNX bytes in the component (the default; at most 256 MiB)."),
    by_name: str | None = typer.Option(
        None, "--by-name", metavar="NAME",
        help="Do not embed: the guest calls wasi:nn load-by-name(NAME); the host registers the model."),
    target_device: str = typer.Option(
        "cpu", "--target-device", help="wasi-nn execution target for embedded models: cpu, gpu or tpu."),
    emit_crate: Path | None = typer.Option(
        None, "--emit-crate", metavar="DIR",
        help="Write the generated Rust crate to DIR and stop (build it with cargo component build)."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Ignore an earlier build of the same inputs; compile the crate again."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Build an ONNX model into a WebAssembly component (wasm32-wasip2) that runs it through wasi:nn."""

    def work():
        from wasmai.build import build as build_fn
        from wasmai.errors import WasmaiError

        if embed and by_name is not None:
            raise WasmaiError("--embed and --by-name exclude each other")

        if json_out:
            return build_fn(model, manifest=manifest, task=task, output=output, target=target,
                            release=release, by_name=by_name, device=target_device, emit_crate=emit_crate,
                            rebuild=rebuild, progress=_error_echo())
        return _with_progress(lambda say: build_fn(
            model, manifest=manifest, task=task, output=output, target=target, release=release,
            by_name=by_name, device=target_device, emit_crate=emit_crate, rebuild=rebuild,
            progress=say))

    run_command(work, json_out=json_out, render=_render)


class _ErrorBlocks:
    """Pass cargo's stderr lines through, printing compiler error blocks to stderr as they come."""

    def __init__(self, emit) -> None:
        self.emit = emit
        self.inside = False

    def __call__(self, line: str) -> bool:
        if line.startswith("error"):
            self.inside = True
        elif not line.strip():
            if self.inside:
                self.emit("")
            self.inside = False
        if self.inside:
            self.emit(line)
        return self.inside


def _error_echo():
    import sys

    return _ErrorBlocks(lambda text: sys.stderr.write(text + "\n"))


def _with_progress(call):
    """Run ``call(say)`` under a rich progress display on stderr fed by cargo's output."""
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = console(stderr=True)
    compiled = 0
    with Progress(SpinnerColumn(), TextColumn("[bold]building[/bold] {task.description}"),
                  TextColumn("{task.completed} crates"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task_id = bar.add_task("preparing", total=None)
        errors = _ErrorBlocks(lambda text: bar.console.print(escape(text), highlight=False, soft_wrap=True))

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


def _render(result) -> None:
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
