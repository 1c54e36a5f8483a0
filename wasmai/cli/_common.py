"""Shared CLI plumbing: error handling, JSON output and the rich consoles.

Only the standard library is imported at module level (rich is imported on first use) so that
``wasmai --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from wasmai.jsonable import to_jsonable

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")


def console(stderr: bool = False) -> Console:
    """A rich Console on stdout (or stderr)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def warm_renderer() -> None:
    """Do ahead what the first table a process prints costs beyond the table itself: import rich's
    Console and Table, and render a small table with a title to memory, which loads what rich loads
    on first use (its emoji codes, its table of character widths). ``wasmai run`` does it while its
    worker process computes the result (issue 13, CLI cold start): 30-60 ms not spent after it."""
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title="warm-up — table")
    table.add_column("name")
    table.add_row("[bold]x[/bold]")
    Console(file=io.StringIO(), highlight=False).print(table)


def run_command(fn: Callable[[], T], *, json_out: bool, render: Callable[[T], None] | None = None) -> T:
    """Run a library call for a CLI command.

    On success prints ``render(result)`` (or the result as JSON with ``--json``). A
    :class:`wasmai.errors.WasmaiError` becomes ``error: <message>`` on stderr and its exit code
    (1); any other exception is an internal error, exit 3 (traceback with ``WASMAI_DEBUG=1``).
    """
    from wasmai.errors import WasmaiError

    try:
        result = fn()
    except WasmaiError as exc:
        _fail(str(exc), exc.exit_code, json_out)
    except KeyboardInterrupt:
        _fail("interrupted", 130, json_out)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place internal errors are reported
        if os.environ.get("WASMAI_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set WASMAI_DEBUG=1 for a traceback)", 3, json_out)
    if json_out:
        sys.stdout.write(json.dumps(to_jsonable(result), indent=2) + "\n")
    elif render is not None:
        render(result)
    return result


def host_times(run: Any, call: str) -> str:
    """A task run's host-side times (:class:`wasmai.tasks.TaskRun`: compile or cached load,
    instantiate, graph load, ms) and its ``call``'s time (ms), as one line."""
    cache = "cached load" if run.cache_hit else "cold compile"
    return (f"{cache} {run.compile_ms:.1f} ms, instantiate {run.instantiate_ms:.1f} ms, load {run.load_ms:.1f} ms, "
            f"{call} {run.call_ms:.2f} ms")


def shown(value: object) -> str:
    """``value`` as text for a rich console: :func:`wasmai.errors.printable` (no control characters)
    and markup escaped, for anything a component, a model file or a user chose (labels, names,
    paths), so that ``[green]signature verified[/]`` in a label prints as written."""
    from rich.markup import escape

    from wasmai.errors import printable

    return escape(printable(str(value)))


def _fail(message: str, code: int, json_out: bool) -> NoReturn:
    from wasmai.errors import printable

    message = " ".join(message.split("\n")[:1]) if "\n" in message and len(message) > 2000 else message
    message = "\n".join(printable(line) for line in message.split("\n"))
    if json_out:
        sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)
