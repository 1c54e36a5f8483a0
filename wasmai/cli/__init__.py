"""The ``wasmai`` command line: thin typer fronts over the library functions of each stage.

Exit codes: 0 ok, 1 user error (bad input, failed check, missing tool), 2 usage error,
3 internal error. Every command takes ``--json`` for machine-readable output on stdout.
Command modules import only typer at import time, so ``wasmai --help`` stays fast; each
command imports its stage module when it runs. This module imports not even typer (the app is
made in :mod:`wasmai.cli._app`): :func:`main` starts ``wasmai run``'s worker process first.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

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

#: What the worker process :func:`main` forks for ``wasmai run`` imports while the command parses
#: its arguments: what running a component on ``.npy`` inputs needs besides :mod:`wasmai.runtime`,
#: which both processes need and which is imported once, before the fork (issue 13, CLI cold start).
RUN_WORKER_IMPORTS = ("numpy",)
#: ... and the environment it imports them in, where not set: the worker does no linear algebra (it
#: reads .npy files, casts, and sums the outputs), so numpy's OpenBLAS starts no thread pool, whose
#: start costs ~50 ms of CPU on a 2-core machine (measured: ``import numpy`` 231 -> 176 ms of CPU).
RUN_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1"}

_APP: typer.Typer | None = None


def __getattr__(name: str) -> typer.Typer:
    """``wasmai.cli.app``, the app with every command (``wasmai --help``, typer's CliRunner in the
    tests), made on first use: ``wasmai COMMAND`` does not import the other commands' modules."""
    global _APP
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _APP is None:
        from wasmai.cli._app import make_app

        _APP = make_app()
    return _APP


def main() -> None:
    """Console-script entry point. ``wasmai COMMAND ...`` runs an app holding only COMMAND: typer
    turns every registered command's signature into click parameters before it parses the
    arguments, and the other twelve commands' options cost more start-up time than ``run`` itself
    needs (issue 13). Anything else (``--help``, ``--version``, an unknown command) gets the full app.

    ``wasmai run`` (but its ``--help``) imports :mod:`wasmai.runtime` and forks its worker process
    (:func:`wasmai.worker.prefork`) before anything else, so that the worker imports numpy
    (:data:`RUN_WORKER_IMPORTS`, :data:`RUN_WORKER_ENV`) on another core while this process
    imports typer, parses the arguments and resolves the component."""
    argv = sys.argv[1:]
    command = argv[0] if argv and argv[0] in {name for name, _ in COMMANDS} else None
    if command == "run" and "--help" not in argv:
        import wasmai.runtime  # noqa: F401 - for both processes, so imported once
        from wasmai.worker import prefork

        prefork(RUN_WORKER_IMPORTS, RUN_WORKER_ENV)
    from wasmai.cli._app import make_app

    make_app([command] if command else None)()
