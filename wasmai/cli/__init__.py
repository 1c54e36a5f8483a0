"""The ``wasmai`` command line: thin typer fronts over the library functions of each stage.

Exit codes: 0 ok, 1 user error (bad input, failed check, missing tool), 2 usage error,
3 internal error. Every command takes ``--json`` for machine-readable output on stdout.
Command modules import only typer at import time, so ``wasmai --help`` stays fast; each
command imports its stage module when it runs.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from wasmai import __version__

app = typer.Typer(
    name="wasmai",
    help="Ship ML models as signed, sandboxed WebAssembly components (wasi-nn on ONNX Runtime).\n\n"
    "Exit codes: 0 ok, 1 user error or failed check, 2 usage error, 3 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

#: (command name, module under wasmai.cli), in pipeline order.
COMMANDS = [
    ("convert", "convert"),
    ("build", "build"),
    ("keygen", "sign"),
    ("sign", "sign"),
    ("verify", "sign"),
    ("push", "oci"),
    ("pull", "oci"),
    ("run", "run"),
    ("bench", "bench"),
    ("inspect", "inspect"),
    ("serve", "serve"),
    ("doctor", "doctor"),
    ("toolchain", "toolchain"),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wasmai {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """wasmai: convert -> build -> sign -> verify -> run / bench."""


for _name, _module in COMMANDS:
    _mod = importlib.import_module(f"wasmai.cli.{_module}")
    app.command(_name)(getattr(_mod, _name.replace("-", "_")))


def main() -> None:
    """Console-script entry point."""
    app()
