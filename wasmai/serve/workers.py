"""Instances in supervised worker processes (``wasmai serve --isolation process``, the default).

A served graph is untrusted: an ONNX Runtime kernel can die on a crafted one (SIGFPE on an integer
``Div`` of INT32_MIN by -1), and a guest call can block in the host past its timeout (a
``wasi:io/poll`` sleep, one long kernel), where neither wasmtime's epochs nor ONNX Runtime's
terminate flag reach. So each instance of a model lives in its own :class:`Worker` process: a
crash ends that worker, not the server, and a call that is not back in time is ended by killing
the worker. The pool (:mod:`wasmai.serve.pool`) restarts it.

A worker is started with ``spawn`` (a fresh interpreter: the server has native threads, see
:mod:`wasmai.worker`). It gets the component's bytes, which the server read once after
verifying the signature and checked against the verified digest (:func:`component_bytes`); the
worker makes its own :class:`~wasmai.host.Host` with the model's limits, compiles those bytes (the
compilation cache makes every worker after the first cheap), checks the digest again,
instantiates and loads the graph, and answers with ``metadata.info``. Then it serves calls: the
server sends a picklable ``fn`` (a module-level function or a ``functools.partial`` of one:
tensors travel as bytes), the worker answers ``(True, fn(instance))`` or ``(False, exception)``.
A call that breaks the instance (trap, timeout, memory limit) makes the worker replace its
instance before it answers, so the worker stays usable. Each worker's ONNX Runtime intra-op pool
gets the cores divided among the model's instances (:func:`intra_op_threads`).

Cost (measured on 2 shared cores, tiny MLP, no HTTP): a call through a worker takes 0.32-0.37 ms
against 0.06-0.07 ms in process; tensors cross the pipe pickled, ~4 ms per MiB there and back
(an Identity of 1 / 4 / 16 MiB: 4.2 / 20.7 / 79.9 ms against 0.5 / 2.3 / 16.9 ms in process). A
replacement worker starts in 0.43-0.59 s (MLP) and 0.70-0.78 s (EfficientNet-Lite0), its
compilation cached; requests wait in the queue meanwhile.

The server's side of a call (:meth:`Worker.call`) waits at most the model's ``timeout_s`` +
:data:`wasmai.worker.GRACE_S`; past that it kills the worker (SIGKILL) and raises
ComponentError ``timeout``. A worker that dies raises ComponentError ``crash`` naming the signal
(:func:`wasmai.worker.crash_message`).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from wasmai.errors import VerificationError, WasmaiError
from wasmai.host import ComponentError, Instance
from wasmai.serve.pool import FATAL_CODES, new_instance
from wasmai.serve.repository import ModelLimits, ModelSource
from wasmai.worker import GRACE_S, crash_message

T = TypeVar("T")

#: Seconds a worker may take to start and compile the component (no guest code runs then; a
#: large component compiles in seconds, more on a loaded machine). Instantiating and loading the
#: graph is guest code and gets the model's ``timeout_s`` + GRACE_S.
COMPILE_LIMIT_S = 300.0


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to make its instance: the model's ``name`` (process title and
    errors), the ``component`` bytes and their verified hex ``sha256``, the load-by-name
    ``graphs``, the model's ``limits`` and the size of the worker's ONNX Runtime intra-op thread
    pool (:func:`intra_op_threads`)."""

    name: str
    component: bytes
    sha256: str
    graphs: Mapping[str, Path]
    limits: ModelLimits
    intra_op_threads: int = 0


def intra_op_threads(instances: int) -> int:
    """ONNX Runtime intra-op threads per worker: the machine's cores shared by the model's
    ``instances`` workers (at least 1). In one process every instance shares one pool sized to
    the cores; a pool of that size in each of N worker processes would put N times as many busy
    (spinning) threads on the cores, and the workers would slow each other down."""
    return max(1, (os.cpu_count() or 1) // instances)


def component_bytes(path: Path, verified_digest: str | None) -> tuple[bytes, str]:
    """The component file's bytes and their hex sha256, read once. When a signature was
    verified (``verified_digest``), the bytes must have that digest: a file swapped between
    verification and reading raises :class:`~wasmai.errors.VerificationError`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WasmaiError(f"cannot read {path}: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if verified_digest is not None and digest != verified_digest:
        raise VerificationError(f"{path} changed after its signature was verified (now sha256 {digest})")
    return data, digest


def _main(conn: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
    """The worker process: make the instance, report ``(True, None)`` once compiled and
    ``(True, (info, is_classifier))`` once loaded (or ``(False, error)``), then answer calls
    until the server closes the pipe."""
    from wasmai._malloc import keep_large_buffers
    from wasmai.host import Host

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops its workers
    keep_large_buffers()
    limits = spec.limits
    try:
        host = Host(graphs=spec.graphs, memory_limit_mb=limits.memory_limit_mb, timeout_s=limits.timeout_s,
                    max_tensor_bytes=limits.max_tensor_bytes, intra_op_threads=spec.intra_op_threads)
        component = host.load_component(spec.component)
        if component.sha256 != spec.sha256:
            raise VerificationError(f"model {spec.name!r}: the worker compiled other bytes than were verified")
        conn.send((True, None))
        inst = new_instance(host, component)
        conn.send((True, (inst.info(), component.is_classifier)))
    except WasmaiError as exc:
        conn.send((False, exc))
        return
    while True:
        try:
            fn = conn.recv()
        except EOFError:
            return
        try:
            reply: tuple[bool, Any] = (True, fn(inst))
        except ComponentError as exc:
            if exc.code in FATAL_CODES:
                del inst
                try:
                    inst = new_instance(host, component)
                except WasmaiError:
                    conn.send((False, exc))
                    return  # the server's next call finds the worker gone and starts another
            reply = (False, exc)
        except WasmaiError as exc:
            reply = (False, exc)
        except Exception as exc:  # noqa: BLE001 - carried to the server, which answers 500
            reply = (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send((False, RuntimeError(f"the worker cannot return its result: {type(exc).__name__}: {exc}")))


class Worker:
    """One instance of a model in its own process (module docstring). Not thread-safe: the
    pool gives a worker to one request at a time.

    The constructor blocks until the worker has compiled the component (at most
    :data:`COMPILE_LIMIT_S`) and loaded its graph (at most ``timeout_s`` + GRACE_S). Raises
    :class:`~wasmai.errors.WasmaiError` (the worker's own error: a component that cannot be
    compiled or loaded), ComponentError ``crash`` when the worker dies starting, ``timeout``
    when it does not start in time."""

    def __init__(self, spec: WorkerSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.spec = spec
        self.limit_s = spec.limits.timeout_s + GRACE_S
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_main, args=(child, spec), name=f"wasmai-serve-{spec.name}", daemon=True)
        self._proc.start()
        child.close()
        try:
            self._reply(COMPILE_LIMIT_S, "compiling the component")
            self.info, self.is_classifier = self._reply(self.limit_s, f"loading the graph (timeout "
                                                        f"{spec.limits.timeout_s:g} s + {GRACE_S:g} s)")
        except BaseException:
            self.stop()
            raise

    @property
    def alive(self) -> bool:
        """True while the worker process runs."""
        return self._proc.is_alive()

    def _reply(self, limit_s: float, what: str) -> Any:
        """The worker's next answer within ``limit_s`` seconds; kills the worker and raises
        ComponentError ``timeout`` past it, ``crash`` when the worker died."""
        if not self._conn.poll(limit_s):
            self.stop()
            raise ComponentError(
                f"model {self.spec.name!r}: {what} did not return within {limit_s:.3f} s: it was blocked in the "
                "host (a wasi sleep, one long ONNX Runtime kernel or a graph load); its worker process was killed",
                "timeout")
        try:
            ok, payload = self._conn.recv()
        except EOFError:
            self._proc.join()
            raise ComponentError(crash_message(self._proc.exitcode), "crash") from None
        if not ok:
            raise payload
        return payload

    def call(self, fn: Callable[[Instance], T]) -> T:
        """``fn(instance)`` in the worker: its result, or the exception it raised (a fatal
        ComponentError after the worker replaced its instance), ComponentError ``timeout`` when
        the call is not back within ``timeout_s`` + GRACE_S (the worker is killed) and ``crash``
        when the worker died. ``fn`` and its result must pickle."""
        try:
            self._conn.send(fn)
        except (BrokenPipeError, ConnectionResetError):  # died while idle (e.g. the OOM killer)
            self._proc.join()
            raise ComponentError(crash_message(self._proc.exitcode), "crash") from None
        result: T = self._reply(self.limit_s, f"the call (timeout {self.spec.limits.timeout_s:g} s + {GRACE_S:g} s)")
        return result

    def stop(self) -> None:
        """End the worker (SIGKILL: it holds nothing to save) and reap it."""
        self._conn.close()
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()


class ProcessBackend:
    """The pool's :class:`~wasmai.serve.pool.Backend` for ``--isolation process``: each member
    is a :class:`Worker` running one instance of the model."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec

    @classmethod
    def for_source(cls, source: ModelSource, verified_digest: str | None) -> ProcessBackend:
        """The backend of a model found on disk, its component read once (:func:`component_bytes`).
        Raises WasmaiError / VerificationError."""
        if source.component is None:
            raise WasmaiError(source.error or "no component")
        data, digest = component_bytes(source.component, verified_digest)
        return cls(WorkerSpec(source.name, data, digest, dict(source.graphs), source.limits,
                              intra_op_threads(source.limits.instances)))

    def start(self, count: int) -> list[Worker]:
        """``count`` workers, started at once. Raises the first worker's error (the others are
        stopped)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="wasmai-start") as pool:
            futures = [pool.submit(Worker, self.spec) for _ in range(count)]
        errors = [exc for f in futures if (exc := f.exception()) is not None]
        if errors:
            for f in futures:
                if f.exception() is None:
                    f.result().stop()
            raise errors[0]
        return [f.result() for f in futures]

    def new(self) -> Worker:
        """A new worker (blocks until its graph is loaded)."""
        return Worker(self.spec)

    def call(self, fn: Callable[[Instance], T], member: Worker) -> T:
        """``fn(instance)`` in ``member`` (:meth:`Worker.call`)."""
        return member.call(fn)

    def renewed(self, member: Worker) -> bool:
        """True while the worker lives: it replaced its broken instance before answering."""
        return member.alive

    def stop(self, member: Worker) -> None:
        """Stop the worker process."""
        member.stop()
