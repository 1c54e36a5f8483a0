"""A served model version: its verified component, a pool of warm instances and the quotas in
front of them.

Where the instances live is the model's :class:`Backend`, chosen by ``wasmai serve --isolation``:
:class:`ThreadBackend` keeps them in this process (the host releases the GIL during guest calls);
:class:`~wasmai.serve.workers.ProcessBackend` (the default) puts each in its own supervised worker
process (:mod:`wasmai.serve.workers`), so a crash in native code or a call blocked in the host
costs a worker, not the server. All pool bookkeeping happens on the event loop thread (no
locks); guest calls, instantiation and worker starts run on the pool's own bounded thread pool,
so the event loop keeps answering while N instances compute.

Admission (:meth:`InstancePool.run`): a request takes an idle instance, or waits in a bounded
queue (``limits.queue`` entries; a full queue -> :class:`Overloaded`, HTTP 429) for at most
``limits.queue_timeout_s`` (-> :class:`Unavailable`, HTTP 503). The guest call has
``limits.timeout_s``: the host interrupts guest code and stops an ONNX Runtime run at that
time, and the pool stops waiting at the same deadline even when the call overruns it (a single
long kernel or a graph load cannot be interrupted: SECURITY.md) -> :class:`DeadlineExceeded`,
HTTP 504. In thread isolation, an instance that timed out,
trapped or hit its memory limit is discarded (its thread, if still running, is left to finish
and its instance dropped) and a fresh instance is made in the background; at most
``limits.instances`` abandoned calls are tolerated at once before replacements wait for them,
so the threads are bounded by ``2 * instances + 1``. In process isolation, a worker replaces
its own broken instance before it answers and goes back to the pool; a call past its deadline
stays with its worker until the worker answers or is killed at ``timeout_s`` +
:data:`wasmai.worker.GRACE_S`; a worker that died (a signal: HTTP 500 naming it) or was killed
is replaced by a new worker process in the background. Every replacement counts in
``wasmai_instance_replacements_total`` with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from wasmai.errors import WasmaiError
from wasmai.host import Component, ComponentError, Host, Instance
from wasmai.serve.metrics import ServeMetrics
from wasmai.serve.repository import ModelLimits, ModelSource
from wasmai.vocab import Isolation

T = TypeVar("T")

log = logging.getLogger("wasmai.serve")

#: ComponentError codes after which an instance is unusable and replaced (``crash``: its worker
#: process died).
FATAL_CODES = frozenset({"trap", "timeout", "memory-limit", "dead", "host-panic", "crash"})


class Overloaded(WasmaiError):
    """Every instance is busy and the queue is full (HTTP 429, ``Retry-After``)."""


class Unavailable(WasmaiError):
    """The model cannot take the request now: waited too long, draining, or no live instance
    (HTTP 503, ``Retry-After``)."""


class DeadlineExceeded(WasmaiError):
    """The guest call took longer than the model's ``timeout_s`` (HTTP 504)."""


@dataclass
class Timing:
    """Seconds a request waited for an instance (``queue_s``) and spent in the guest (``call_s``)."""

    queue_s: float = 0.0
    call_s: float = 0.0


class Backend(Protocol):
    """Where a pool's members (the units that each run one call at a time) live and how a call
    reaches one. Every method blocks; the pool runs them on its threads."""

    def new(self) -> Any:
        """A new warm member (an instance with its graph loaded). Raises WasmaiError."""

    def call(self, fn: Callable[[Instance], T], member: Any) -> T:
        """``fn(instance)`` on ``member``; raises what ``fn`` raises."""

    def renewed(self, member: Any) -> bool:
        """After a fatal ComponentError: True if ``member`` replaced its instance itself and can
        serve again, False if it must be discarded."""

    def stop(self, member: Any) -> None:
        """Release ``member`` for good."""


class ThreadBackend:
    """Instances in this process, called on the pool's threads (``--isolation thread``)."""

    def __init__(self, host: Host, component: Component) -> None:
        self.host = host
        self.component = component

    def new(self) -> Instance:
        """A new instance with its graph loaded (:func:`new_instance`)."""
        return new_instance(self.host, self.component)

    def call(self, fn: Callable[[Instance], T], member: Any) -> T:
        """``fn(member)`` (:func:`_call`)."""
        return _call(fn, member)

    def renewed(self, member: Any) -> bool:
        """Never: a broken instance is dropped."""
        return False

    def stop(self, member: Any) -> None:
        """Nothing to do: the instance is freed when the pool lets go of it."""


@dataclass
class LoadedModel:
    """What loading a :class:`ModelSource` produced: the :class:`Backend` and its warm
    ``members``, ``metadata.info``, the component's hex ``sha256`` and whether it is an image
    classifier, and the timings (ms)."""

    source: ModelSource
    backend: Backend
    members: list[Any]
    info: dict[str, Any]
    sha256: str
    is_classifier: bool
    load_ms: float
    signature: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def new_instance(host: Host, component: Component) -> Instance:
    """Instantiate ``component`` and load its graph (so the first request does not pay for it)."""
    inst = host.instantiate(component)
    inst.load()
    return inst


def _call(fn: Callable[[Instance], T], inst: Instance) -> T:
    """``fn(inst)`` on a worker thread. When the call kills the instance, the exception's frames
    (``fn``'s, the host wrapper's) are cleared and this frame lets go of the instance: the
    exception lives on in asyncio futures and tracebacks (reference cycles the cyclic collector
    frees only eventually), and must not keep a dead instance's linear memory and ONNX Runtime
    buffers alive with it."""
    try:
        return fn(inst)
    except ComponentError as exc:
        if exc.code in FATAL_CODES:
            del inst
            if exc.__traceback__ is not None:
                traceback.clear_frames(exc.__traceback__)
        raise


def load_model(source: ModelSource, policy: Any, isolation: Isolation = Isolation.PROCESS) -> LoadedModel:
    """Verify (server-wide ``policy`` and the model's own policy file, both when given), compile
    and instantiate ``limits.instances`` warm instances of ``source``: in this process
    (``isolation`` thread) or one per worker process (process: the workers compile the bytes
    read and digest-checked here, after verification). Blocking; run it on a worker thread.

    Raises :class:`WasmaiError` (its :class:`~wasmai.errors.VerificationError`,
    :class:`~wasmai.host.ComponentError`) when the model must not or cannot be served."""
    from wasmai.runtime import load_verified, verify_before_run

    if source.error is not None or source.component is None:
        raise WasmaiError(source.error or "no component")
    start = time.perf_counter()
    digest: str | None = None
    signature = None
    policies = [policy] if policy is not None else []
    if source.policy_file is not None:
        from wasmai.sign import policy_from_options

        own = policy_from_options(policy=source.policy_file)
        if own is not None:
            policies.append(own)
    for p in policies:
        signature = verify_before_run(source.component, p, source.bundle)
        if digest is not None and signature.digest != digest:
            raise WasmaiError(f"{source.component} changed while its signature was verified")
        digest = signature.digest
    verified = time.perf_counter()
    limits = source.limits
    if isolation == Isolation.PROCESS:
        from wasmai.serve.workers import ProcessBackend

        backend = ProcessBackend.for_source(source, digest)
        members = backend.start(limits.instances)
        end = time.perf_counter()
        return LoadedModel(source, backend, members, members[0].info, backend.spec.sha256,
                           members[0].is_classifier, (end - start) * 1e3, signature,
                           {"verify_ms": (verified - start) * 1e3, "start_ms": (end - verified) * 1e3})
    host = Host(graphs=source.graphs, memory_limit_mb=limits.memory_limit_mb, timeout_s=limits.timeout_s,
                max_tensor_bytes=limits.max_tensor_bytes)
    component = load_verified(host, source.component, digest)
    compiled = time.perf_counter()
    threads = ThreadBackend(host, component)
    instances = [threads.new() for _ in range(limits.instances)]
    info = instances[0].info()
    end = time.perf_counter()
    return LoadedModel(source, threads, list(instances), info, component.sha256, component.is_classifier,
                       (end - start) * 1e3, signature,
                       {"verify_ms": (verified - start) * 1e3, "compile_ms": (compiled - verified) * 1e3,
                        "instantiate_ms": (end - compiled) * 1e3})


class InstancePool:
    """The instances of one model version and the quotas in front of them (module docstring).
    Create it on the event loop that serves it."""

    def __init__(self, loaded: LoadedModel, metrics: ServeMetrics) -> None:
        self.loaded = loaded
        self.name = loaded.source.name
        self.version = loaded.source.version
        self.limits: ModelLimits = loaded.source.limits
        self.metrics = metrics
        self.backend = loaded.backend
        self._idle: deque[Any] = deque(loaded.members)
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._live = len(loaded.members)
        self._abandoned = 0
        self._replacing = 0
        self._in_flight = 0
        self._draining = False
        self._closed = False
        self._drained = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=2 * self.limits.instances + 1,
                                            thread_name_prefix=f"wasmai-{self.name}")
        self._peak_memory = 0
        self._gauges()

    # --- bookkeeping ---------------------------------------------------------------------------

    def _labels(self) -> tuple[str, str]:
        return self.name, self.version

    def _gauges(self) -> None:
        m, labels = self.metrics, self._labels()
        m.instances.labels(*labels).set(self._live)
        m.in_flight.labels(*labels).set(self._in_flight)
        m.queued.labels(*labels).set(len(self._waiters))

    @property
    def live(self) -> int:
        """Live instances (idle or busy)."""
        return self._live

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished."""
        return self._in_flight

    def _give(self, inst: Any) -> None:
        """An instance becomes free: hand it to the oldest waiter, else keep it idle (or stop it
        once the pool is closed)."""
        if self._closed:
            self.backend.stop(inst)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(inst)
                self._gauges()
                return
        self._idle.append(inst)
        self._gauges()

    def _discard(self, reason: str, running: asyncio.Future[Any] | None) -> None:
        """Drop a broken instance and start its replacement. ``running``: the call still on a
        thread after its deadline (counted as abandoned until it returns)."""
        self._live -= 1
        self.metrics.replacements.labels(*self._labels(), reason).inc()
        log.warning("instance discarded", extra={"event": "instance-discarded", "model": self.name,
                                                 "version": self.version, "reason": reason})
        if running is not None and not running.done():
            self._abandoned += 1
            running.add_done_callback(lambda _f: self._abandoned_done())
        self._gauges()
        self._maybe_replace()

    def _broken(self, inst: Any, reason: str) -> None:
        """A call broke ``inst``'s instance: back to the pool if it replaced the instance itself
        (a worker process), else discarded and replaced."""
        if self.backend.renewed(inst):
            self.metrics.replacements.labels(*self._labels(), reason).inc()
            log.warning("instance discarded", extra={"event": "instance-discarded", "model": self.name,
                                                     "version": self.version, "reason": reason})
            self._give(inst)
        else:
            self._discard(reason, None)

    def _abandoned_done(self) -> None:
        self._abandoned -= 1
        self._maybe_replace()

    def _maybe_replace(self) -> None:
        if self._draining:
            self._check_drained()
            return
        while self._live + self._replacing < self.limits.instances and self._abandoned <= self.limits.instances:
            self._replacing += 1
            asyncio.get_running_loop().create_task(self._replace())

    async def _replace(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            inst = await loop.run_in_executor(self._executor, self.backend.new)
        except Exception as exc:  # noqa: BLE001 - logged; the pool stays smaller and retries on the next discard
            log.error("instance replacement failed", extra={"event": "instance-failed", "model": self.name,
                                                            "version": self.version, "reason": str(exc)})
            self._replacing -= 1
            self._fail_waiters_if_empty()
            return
        self._replacing -= 1
        self._live += 1
        self._give(inst)

    def _fail_waiters_if_empty(self) -> None:
        if self._live == 0 and self._replacing == 0:
            while self._waiters:
                w = self._waiters.popleft()
                if not w.done():
                    w.set_exception(Unavailable(f"model {self.name!r} has no live instance"))
            self._gauges()

    # --- requests ------------------------------------------------------------------------------

    async def _acquire(self) -> Any:
        if self._closed:
            raise Unavailable(f"model {self.name!r} version {self.version} was unloaded")
        if self._idle:
            return self._idle.popleft()
        if self._live == 0 and self._replacing == 0:
            raise Unavailable(f"model {self.name!r} has no live instance")
        if len(self._waiters) >= self.limits.queue:
            raise Overloaded(f"model {self.name!r}: {self.limits.instances} instance(s) busy and "
                             f"{self.limits.queue} request(s) queued")
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._gauges()
        taken = False
        try:
            inst = await asyncio.wait_for(asyncio.shield(waiter), self.limits.queue_timeout_s)
            taken = True
            return inst
        except TimeoutError:
            raise Unavailable(f"model {self.name!r}: no instance free within "
                              f"{self.limits.queue_timeout_s:g} s") from None
        finally:
            if not taken and waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed an instance just as the wait ended (timeout or cancellation): give it on.
                self._give(waiter.result())
            if not waiter.done():
                waiter.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
            self._gauges()

    def _settle_later(self, inst: Any, fut: asyncio.Future[Any]) -> None:
        """The request went away while ``fut`` runs on ``inst``: when the call returns, give the
        instance back, or treat it as broken if the call broke it (:meth:`_broken`)."""
        def done(f: asyncio.Future[Any]) -> None:
            exc = None if f.cancelled() else f.exception()
            if isinstance(exc, ComponentError) and exc.code in FATAL_CODES:
                self._broken(inst, exc.code)
            else:
                self._give(inst)
        fut.add_done_callback(done)

    async def run(self, fn: Callable[[Instance], T]) -> tuple[T, Timing]:
        """Run ``fn(instance)`` with an instance of this pool (on a worker thread, or in a worker
        process: then ``fn`` must pickle), within the quotas. Returns its result and the
        :class:`Timing`.

        Raises :class:`Overloaded`, :class:`Unavailable`, :class:`DeadlineExceeded`, and whatever
        ``fn`` raises (a fatal :class:`~wasmai.host.ComponentError` replaces the instance; code
        ``crash`` when its worker process died)."""
        timing = Timing()
        start = time.perf_counter()
        self._in_flight += 1
        self._gauges()
        try:
            inst = await self._acquire()
            called = time.perf_counter()
            timing.queue_s = called - start
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self._executor, self.backend.call, fn, inst)
            try:
                result = await asyncio.wait_for(asyncio.shield(fut), self.limits.timeout_s)
            except TimeoutError:
                timing.call_s = time.perf_counter() - called
                if isinstance(self.backend, ThreadBackend):
                    del inst  # this frame lives on in the exception's traceback (see _call)
                    self._discard("timeout", fut)
                else:  # the worker answers within the grace or is killed; replaced either way
                    self._settle_later(inst, fut)
                raise DeadlineExceeded(f"model {self.name!r}: the call took longer than "
                                       f"{self.limits.timeout_s:g} s; the instance was replaced") from None
            except ComponentError as exc:
                timing.call_s = time.perf_counter() - called
                if exc.code in FATAL_CODES:
                    self._broken(inst, exc.code)
                    del inst  # this frame lives on in the exception's traceback (see _call)
                    if exc.code == "timeout":
                        raise DeadlineExceeded(f"model {self.name!r}: {exc}; the instance was replaced") from None
                else:
                    self._give(inst)
                raise
            except asyncio.CancelledError:
                self._settle_later(inst, fut)
                raise
            except BaseException:
                timing.call_s = time.perf_counter() - called
                self._give(inst)
                raise
            timing.call_s = time.perf_counter() - called
            self._give(inst)
            return result, timing
        finally:
            self._in_flight -= 1
            self._gauges()
            if self._draining:
                self._check_drained()

    def note_memory(self, linear_memory_bytes: int) -> None:
        """Record an instance's linear memory size (bytes) for the peak gauge."""
        if linear_memory_bytes > self._peak_memory:
            self._peak_memory = linear_memory_bytes
            self.metrics.memory_peak.labels(*self._labels()).set(linear_memory_bytes)

    # --- lifecycle -----------------------------------------------------------------------------

    def _check_drained(self) -> None:
        if self._draining and self._in_flight == 0:
            self._drained.set()

    async def drain(self, deadline_s: float) -> bool:
        """Wait up to ``deadline_s`` for the requests in flight (a request that found this pool
        before a newer version replaced it is still served), then drop the instances and refuse
        further requests (Unavailable). Returns True if every request finished."""
        self._draining = True
        self._check_drained()
        try:
            await asyncio.wait_for(self._drained.wait(), deadline_s)
            finished = True
        except TimeoutError:
            finished = False
        self._closed = True
        idle = list(self._idle)
        self._idle.clear()
        self._live = 0
        for member in idle:
            await asyncio.to_thread(self.backend.stop, member)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.metrics.forget(self.name, self.version)
        return finished
