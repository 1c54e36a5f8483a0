"""Calls that run in a forked worker process, so that a crash in native code ends the worker,
not the caller.

The component is untrusted and so is every graph it hands to wasi-nn: an ONNX Runtime kernel can
die on a crafted graph (an integer ``Div`` of INT32_MIN by -1 raises SIGFPE on x86-64, at
``graph.load`` when ONNX Runtime folds constants or at ``compute``), and no in-process check can
promise that every kernel is safe. :func:`in_worker` runs a call in a child forked from this
process: its result or its ``WasmaiError`` comes back through a pipe; if the child dies on a
signal, the caller gets one :class:`~wasmai.host.ComponentError` (code ``crash``) naming it and
goes on. ``wasmai run`` runs the component this way; ``wasmai bench`` measures in process.

The child is forked while this process has not created a native host (as in the CLI), which
starts in milliseconds. ``fork`` copies only the calling thread, so once a host exists (its epoch
ticker, ONNX Runtime's thread pool and watchdog) a lock one of those threads held would stay
locked in the child forever: the child is then started with ``spawn`` (a fresh interpreter;
``fn`` and its arguments must be importable and picklable).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from wasmai.errors import WasmaiError

P = ParamSpec("P")
T = TypeVar("T")

#: What typically raises each signal in native inference code (for the error line).
_CAUSES = {
    signal.SIGFPE: "an integer division by zero or INT_MIN / -1 in a kernel",
    signal.SIGSEGV: "an invalid memory access",
    signal.SIGBUS: "an invalid memory access",
    signal.SIGILL: "an illegal instruction",
    signal.SIGABRT: "an abort in native code",
    signal.SIGKILL: "killed (out of memory?)",
}


def crash_message(exitcode: int | None) -> str:
    """One line describing how a worker ended without a result (``exitcode`` as
    :attr:`multiprocessing.Process.exitcode`: negative = killed by that signal)."""
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode)
        cause = _CAUSES.get(sig)
        return (f"the component crashed the host's native code ({sig.name}"
                f"{', ' + cause if cause else ''}); the worker process died, this process is fine")
    return f"the worker process ended without a result (exit status {exitcode})"


def _serve(conn: multiprocessing.connection.Connection, fn: Callable[..., Any], args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> None:
    """The child: run the call and send ``(True, result)`` or ``(False, exception)``."""
    try:
        reply: tuple[bool, Any] = (True, fn(*args, **kwargs))
    except WasmaiError as exc:
        reply = (False, exc)
    except BaseException as exc:  # noqa: BLE001 - carried to the parent, which reports it
        reply = (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
    try:
        conn.send(reply)
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
        conn.send((False, RuntimeError(f"the worker cannot return its result: {type(exc).__name__}: {exc}")))
    finally:
        conn.close()


def in_worker(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a forked child process; its return value (pickled) or the
    exception it raised.

    Raises whatever ``fn`` raised (``WasmaiError`` subclasses keep their type and fields),
    :class:`~wasmai.host.ComponentError` with code ``crash`` when the child dies without
    answering (a signal in native code: :func:`crash_message`), and ``RuntimeError`` for other
    failures inside the child. ``KeyboardInterrupt`` in the caller kills the child."""
    from wasmai.host import ComponentError, Host

    ctx = multiprocessing.get_context("spawn") if Host.created else multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_serve, args=(sender, fn, args, kwargs), name="wasmai-worker", daemon=True)
    proc.start()
    sender.close()
    try:
        try:
            ok, payload = receiver.recv()
        except EOFError:
            proc.join()
            raise ComponentError(crash_message(proc.exitcode), "crash") from None
        proc.join()
    except BaseException:
        if proc.is_alive():
            proc.kill()
            proc.join()
        raise
    finally:
        receiver.close()
    if ok:
        result: T = payload
        return result
    raise payload
