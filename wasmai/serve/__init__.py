"""``wasmai serve``: components as a sandboxed inference service speaking the KServe Open
Inference Protocol v2 over HTTP (uvicorn + Starlette).

* :mod:`wasmai.serve.repository` - the model repository (folders, ``config.toml``, limits);
* :mod:`wasmai.serve.pool` - verified loading, warm instance pools, queue and timeout quotas;
* :mod:`wasmai.serve.workers` - instances in supervised worker processes (``--isolation process``);
* :mod:`wasmai.serve.protocol` - OIP v2 JSON and the binary tensor data extension;
* :mod:`wasmai.serve.app` - routes, errors, hot reload, the JSON access log;
* :mod:`wasmai.serve.metrics` - Prometheus metrics.

:func:`create_app` gives the ASGI application (for tests or another ASGI server); :func:`serve`
runs it on uvicorn until SIGTERM/SIGINT, then stops accepting connections and gives in-flight
requests ``shutdown_timeout_s`` to finish.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from wasmai.serve.app import AccessLog, ModelStatus, ServeOptions, ServerState, build_app
from wasmai.serve.repository import ModelLimits, ModelSource, scan

__all__ = ["ModelLimits", "ModelSource", "ModelStatus", "ServeOptions", "create_app", "scan", "serve"]


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGTERM/SIGINT end a graceful shutdown with a normal return
    (exit code 0) instead of re-raising the signal once the server has stopped."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def create_app(options: ServeOptions, on_started: Callable[[list[ModelStatus]], None] | None = None) -> ASGIApp:
    """The ASGI application serving ``options.paths``; models load in its lifespan startup and
    ``on_started`` gets their statuses then. Raises WasmaiError (at startup) when a path is wrong."""
    return AccessLog(build_app(ServerState(options, on_started)))


def serve(options: ServeOptions, on_started: Callable[[list[ModelStatus]], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT on ``options.host``:``options.port`` (uvicorn, one server
    process; inference in worker processes or on its threads: ``options.isolation``). Logs are
    JSON lines on stderr. Raises WasmaiError when a path is wrong (before binding), or when the
    address cannot be bound."""
    from wasmai._malloc import keep_large_buffers
    from wasmai.errors import WasmaiError
    from wasmai.serve import logs

    logs.configure()
    keep_large_buffers()  # the server owns its process (instances run here with --isolation thread)
    scan(options.paths, options.limits, options.graphs)  # a wrong path fails here, as one error line
    config = uvicorn.Config(create_app(options, on_started), host=options.host, port=options.port,
                            access_log=False, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=int(max(1, options.shutdown_timeout_s)))
    server = _Server(config)
    server.run()
    if not server.started:
        raise WasmaiError(f"wasmai serve could not start on {options.host}:{options.port} (see the log above)")
