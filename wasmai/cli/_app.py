"""The typer app of :mod:`wasmai.cli`: the root options and :func:`make_app`."""

from __future__ import annotations

import importlib
from collections.abc import Collection
from typing import Annotated

import typer

from wasmai import __version__
from wasmai.cli import COMMANDS


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wasmai {__version__}")
        raise typer.Exit(0)


def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """wasmai: convert -> build -> sign -> verify -> run / bench."""


def make_app(names: Collection[str] | None = None) -> typer.Typer:
    """The typer app with the commands ``names`` (default: every command in :data:`COMMANDS`) and
    the root options. Imports each command's module (which imports only typer and the CLI's own
    option modules)."""
    app = typer.Typer(
        name="wasmai",
        help="Ship ML models as signed, sandboxed WebAssembly components (wasi-nn on ONNX Runtime).\n\n"
        "Exit codes: 0 ok, 1 user error or failed check, 2 usage error, 3 internal error.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )
    app.callback()(_root)
    for name, module in COMMANDS:
        if names is None or name in names:
            mod = importlib.import_module(f"wasmai.cli.{module}")
            app.command(name)(getattr(mod, name.replace("-", "_")))
    return app
