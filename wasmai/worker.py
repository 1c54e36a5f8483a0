"""Calls that run in a forked worker process, so that a crash in native code ends the worker,
not the caller.

The component is untrusted and so is every graph it hands to wasi-nn: an ONNX Runtime kernel can
die on a crafted graph (an integer ``Div`` of INT32_MIN by -1 raises SIGFPE on x86-64, at
``graph.load`` when ONNX Runtime folds constants or at ``compute``), and no in-process check can
promise that every kernel is safe. :func:`in_worker` runs a call in a child forked from this
process: its result or its ``WasmaiError`` comes back through a pipe; if the child dies on a
signal, the caller gets one :class:`~wasmai.host.ComponentError` (code ``crash``) naming it and
goes on. ``wasmai run``, ``wasmai bench`` and ``wasmai inspect`` run the component this way.

The child also bounds every guest call in wall time. wasmtime's epochs stop wasm code at the
call's timeout, and the host stops an ONNX Runtime run between kernels, but a call blocked in
the host (a ``wasi:io/poll`` sleep, one long ONNX Runtime kernel, a slow ``graph.load``) does not
return. :func:`call_deadline` arms a timer for the call's timeout + :data:`GRACE_S`; when it fires,
the child answers ComponentError ``timeout`` and exits, so the command ends on time.

The child is forked while this process has not created a native host (as in the CLI), which
starts in milliseconds. ``fork`` copies only the calling thread, so once a host exists (its epoch
ticker, ONNX Runtime's thread pool and watchdog) a lock one of those threads held would stay
locked in the child forever: the child is then started with ``spawn`` (a fresh interpreter;
``fn`` and its arguments must be importable and picklable).

:func:`prefork` forks the worker of the next call ahead of time, first thing in ``wasmai run``:
the child imports what the call needs (numpy, :mod:`wasmai.runtime`) while the parent imports
typer and parses its arguments, on another core (issue 13, the CLI's cold start), then receives
the call over its pipe (pickled: ``fn`` and its arguments must be picklable) and runs it like any
worker. :func:`submit` starts a call and returns at once, so the caller can prepare what comes
after the result (``wasmai run`` imports rich meanwhile).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, ParamSpec, TypeVar

from wasmai._malloc import keep_large_buffers
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


#: Seconds a guest call may overrun its timeout in a worker before the worker answers ``timeout``
#: and exits (the in-host mechanisms stop wasm code and ONNX Runtime runs well within it).
GRACE_S = 1.0

#: In a worker child: the pipe to the parent and the lock that makes its one reply the only one.
_REPLY: multiprocessing.connection.Connection | None = None
_REPLY_LOCK = threading.Lock()


def _reply(conn: multiprocessing.connection.Connection, reply: tuple[bool, Any]) -> None:
    """Send the child's one reply (a later one, e.g. from an expired :func:`call_deadline`, is dropped)."""
    global _REPLY
    with _REPLY_LOCK:
        if _REPLY is None:
            return
        _REPLY = None
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send((False, RuntimeError(f"the worker cannot return its result: {type(exc).__name__}: {exc}")))
        finally:
            conn.close()


#: What :func:`call_deadline` returns when there is nothing to bound (reusable: it holds no state).
NO_DEADLINE = contextlib.nullcontext()


def call_deadline(timeout_s: float | None, what: str) -> contextlib.AbstractContextManager[None]:
    """Bound a guest call made inside this block to ``timeout_s`` + :data:`GRACE_S` seconds of
    wall time when this process is a worker child (elsewhere, or with no timeout, nothing
    happens): past that, the child answers ComponentError ``timeout`` naming ``what`` and exits
    at once (``os._exit``: the blocked call cannot be unwound, and the child is disposable).

    Outside a worker child it returns a shared no-op context manager: it wraps every
    ``Instance.infer``, where a generator-based context manager cost ~5 us per call."""
    conn = _REPLY
    if conn is None or timeout_s is None:
        return NO_DEADLINE
    return _armed_deadline(conn, timeout_s, what)


@contextlib.contextmanager
def _armed_deadline(conn: multiprocessing.connection.Connection, timeout_s: float, what: str) -> Iterator[None]:
    """:func:`call_deadline` in a worker child: the timer that answers ``timeout`` and exits."""
    from wasmai.host import ComponentError

    def expire() -> None:
        limit = timeout_s + GRACE_S
        _reply(conn, (False, ComponentError(
            f"{what} did not return within {limit:.3f} s (timeout {timeout_s:g} s + {GRACE_S:g} s): it was blocked "
            "in the host (a wasi sleep, one long ONNX Runtime kernel or a graph load); the worker process was "
            "stopped", "timeout")))
        os._exit(0)

    timer = threading.Timer(timeout_s + GRACE_S, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


#: A call: the function, its positional and its keyword arguments.
Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def _serve(conn: multiprocessing.connection.Connection, job: Job) -> None:
    """The child: run the call ``job`` and send ``(True, result)`` or ``(False, exception)``."""
    global _REPLY
    fn, args, kwargs = job
    _REPLY = conn
    keep_large_buffers()  # the worker is wasmai's own process (see wasmai._malloc)
    try:
        reply: tuple[bool, Any] = (True, fn(*args, **kwargs))
    except WasmaiError as exc:
        reply = (False, exc)
    except BaseException as exc:  # noqa: BLE001 - carried to the parent, which reports it
        reply = (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
    _reply(conn, reply)


def _serve_later(conn: multiprocessing.connection.Connection, parent_end: multiprocessing.connection.Connection,
                 imports: Sequence[str], env: Mapping[str, str], start: Callable[[], object] | None) -> None:
    """A :func:`prefork` child: close its copy of the parent's end of the pipe (else the parent's
    exit would not close the pipe), set ``env`` where unset, call ``start``, import ``imports``
    (a failure of either is left to the call to report), wait for the call on ``conn`` and
    :func:`_serve` it. Ends quietly when no call comes (the parent exited or was interrupted);
    answers RuntimeError when the call cannot be unpickled here (e.g. a function defined after the
    fork)."""
    global _REPLY
    parent_end.close()
    try:
        for name, value in env.items():
            os.environ.setdefault(name, value)
        if start is not None:
            with contextlib.suppress(Exception):
                start()
        for module in imports:
            with contextlib.suppress(Exception):
                importlib.import_module(module)
        job = conn.recv()
    except (EOFError, KeyboardInterrupt):
        return
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        _REPLY = conn
        _reply(conn, (False, RuntimeError(f"the worker cannot take the call: {type(exc).__name__}: {exc}")))
        return
    _serve(conn, job)


#: The worker :func:`prefork` started for this process's next call, and this process's end of its
#: pipe (None once a call took it).
_EARLY: tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection] | None = None


def prefork(imports: Sequence[str] = (), env: Mapping[str, str] | None = None,
            start: Callable[[], object] | None = None) -> None:
    """Fork the worker of this process's next :func:`submit` / :func:`in_worker` call now, before
    the call is known: the child sets the environment variables ``env`` that are not set (e.g. a
    library's thread count, read when it loads), calls ``start`` (e.g. to begin native work on a
    thread of its own, which then overlaps the imports), imports the modules ``imports`` while this
    process goes on, then waits for the call (``wasmai run`` calls this before it imports typer, so
    that ONNX Runtime starts and numpy loads on another core while the command parses its
    arguments).

    The call then runs exactly as in a worker forked for it (same reply, crash report and
    :func:`call_deadline`); its function and arguments cross the pipe pickled. A worker no call
    takes ends when this process exits (it is a daemon process, and it ends when its pipe closes).
    Does nothing when a worker is already waiting, or once a native host exists in this process
    (``fork`` is not safe then; :func:`submit` spawns)."""
    global _EARLY
    host = sys.modules.get("wasmai.host")
    if _EARLY is not None or (host is not None and host.Host.created):
        return
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=_serve_later, args=(child_end, parent_end, tuple(imports), dict(env or {}), start),
                       name="wasmai-worker", daemon=True)
    proc.start()
    child_end.close()
    _EARLY = (proc, parent_end)


class Call(Generic[T]):
    """A call running in a worker process (:func:`submit`); :meth:`result` waits for its answer."""

    def __init__(self, proc: multiprocessing.process.BaseProcess, conn: multiprocessing.connection.Connection
                 ) -> None:
        self._proc = proc
        self._conn = conn

    def result(self) -> T:
        """The call's return value (pickled), or the exception it raised.

        Raises whatever the call raised (``WasmaiError`` subclasses keep their type and fields),
        :class:`~wasmai.host.ComponentError` with code ``crash`` when the worker dies without
        answering (a signal in native code: :func:`crash_message`), and ``RuntimeError`` for other
        failures inside the worker. ``KeyboardInterrupt`` here kills the worker. A worker that
        answered is not waited for: it exits on its own while the caller goes on (5-30 ms of
        tearing down ONNX Runtime and its memory), and multiprocessing reaps it."""
        from wasmai.host import ComponentError

        proc, conn = self._proc, self._conn
        try:
            try:
                ok, payload = conn.recv()
            except EOFError:
                proc.join()
                raise ComponentError(crash_message(proc.exitcode), "crash") from None
        except BaseException:
            if proc.is_alive():
                proc.kill()
                proc.join()
            raise
        finally:
            conn.close()
        if ok:
            result: T = payload
            return result
        raise payload


def submit(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Call[T]:
    """Start ``fn(*args, **kwargs)`` in a worker child process and return at once: in the worker
    :func:`prefork` started, if one is waiting (the call is pickled to it), else in a child forked
    now (spawned once this process has a native host: see the module's docstring).
    :meth:`Call.result` gives its answer."""
    global _EARLY
    from wasmai.host import Host

    if _EARLY is not None:
        (proc, conn), _EARLY = _EARLY, None
        with contextlib.suppress(OSError):  # a worker that died already: Call.result reports how
            conn.send((fn, args, kwargs))
        return Call(proc, conn)
    ctx = multiprocessing.get_context("spawn") if Host.created else multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_serve, args=(sender, (fn, args, kwargs)), name="wasmai-worker", daemon=True)
    proc.start()
    sender.close()
    return Call(proc, receiver)


def in_worker(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker child process (:func:`submit`); its return value
    (pickled) or the exception it raised, as :meth:`Call.result`."""
    return submit(fn, *args, **kwargs).result()
