"""The ``wasmai`` command line: thin typer fronts over the library functions of each stage.

Exit codes: 0 ok, 1 user error (bad input, failed check, missing tool), 2 usage error,
3 internal error. Every command takes ``--json`` for machine-readable output on stdout.
Command modules import only typer at import time, so ``wasmai --help`` stays fast; each
command imports its stage module when it runs. This module imports not even typer (the app is
made in :mod:`wasmai.cli._app`): :func:`main` starts ``wasmai run``'s worker process first.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

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
#: which both processes need and which is imported once, before the fork (issue 13, CLI cold start:
#: imported after the fork by both, it cost ~40 ms more CPU, which a 2-core machine felt).
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
    (:func:`wasmai.worker.prefork`) before anything else, so that the worker starts ONNX Runtime
    on a thread (:func:`wasmai.host.prepare_host`, with the default intra-op pool a ``wasmai run``
    host asks for) and imports numpy (:data:`RUN_WORKER_IMPORTS`, :data:`RUN_WORKER_ENV`) on
    another core while this process imports typer, parses the arguments and resolves the component.
    The command ends without the interpreter's teardown (:func:`_exit_now`)."""
    argv = sys.argv[1:]
    command = argv[0] if argv and argv[0] in {name for name, _ in COMMANDS} else None
    if command == "run" and "--help" not in argv:
        import wasmai.runtime  # noqa: F401 - for both processes, so imported once
        from wasmai.host import prepare_host
        from wasmai.worker import prefork

        prefork(RUN_WORKER_IMPORTS, RUN_WORKER_ENV, prepare_host)
    from wasmai.cli._app import make_app

    app = make_app([command] if command else None)
    if command != "run":
        app()
        return
    try:
        app()
    except SystemExit as done:
        _exit_now(done.code)
    _exit_now(0)


def _exit_now(code: object) -> NoReturn:
    """End this process with exit code ``code`` (as :class:`SystemExit`'s: None is 0; a value
    that is not an int is printed to stderr and gives 1) as the interpreter's exit would, without
    its teardown of every module: run the :mod:`atexit` functions (multiprocessing reaps the worker,
    pending ``weakref.finalize`` calls such as a temporary directory's cleanup, logging's flush),
    flush stdout and stderr, then ``os._exit``. ``wasmai run`` ends so: tearing down typer, click
    and rich cost ~30 ms of CPU after the result was printed (issue 13, CLI cold start). While a
    thread that is not a daemon runs, raises SystemExit instead (the interpreter waits for it)."""
    import atexit
    import contextlib
    import os
    import threading

    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        raise SystemExit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
