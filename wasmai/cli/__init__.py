"""The ``wasmai`` command line: thin typer fronts over the library functions of each stage.

Exit codes: 0 ok, 1 user error (bad input, failed check, missing tool), 2 usage error,
3 internal error. Every command takes ``--json`` for machine-readable output on stdout.
Command modules import only typer at import time, so ``wasmai --help`` stays fast; each
command imports its stage module when it runs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Collection
from typing import Annotated

import typer

from wasmai import __version__

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


_APP: typer.Typer | None = None


def __getattr__(name: str) -> typer.Typer:
    """``wasmai.cli.app``, the app with every command (``wasmai --help``, typer's CliRunner in the
    tests), made on first use: ``wasmai COMMAND`` does not import the other commands' modules."""
    global _APP
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _APP is None:
        _APP = make_app()
    return _APP


def main() -> None:
    """Console-script entry point. ``wasmai COMMAND ...`` runs an app holding only COMMAND: typer
    turns every registered command's signature into click parameters before it parses the
    arguments, and the other twelve commands' options cost more start-up time than ``run`` itself
    needs (issue 13). Anything else (``--help``, ``--version``, an unknown command) gets the full app."""
    argv = sys.argv[1:]
    command = argv[0] if argv and argv[0] in {name for name, _ in COMMANDS} else None
    make_app([command] if command else None)()
