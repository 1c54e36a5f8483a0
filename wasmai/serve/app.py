"""The HTTP front of ``wasmai serve``: Open Inference Protocol v2 routes on Starlette.

Routes (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol):

==========================================================  =========================================
``GET  /v2/health/live``                                    200 while the process runs
``GET  /v2/health/ready``                                   200 once the repository is loaded, 503
                                                            while shutting down
``GET  /v2``                                                server metadata (name, version,
                                                            extensions)
``GET  /v2/models/{m}[/versions/{v}]``                      model metadata (inputs/outputs from
                                                            ``metadata.info``; ``parameters.state``
                                                            and ``reason`` show a refusal)
``GET  /v2/models/{m}[/versions/{v}]/ready``                200 ready, 503 not ready
``POST /v2/models/{m}[/versions/{v}]/infer``                inference: JSON tensors or the binary
                                                            tensor data extension
``POST /v2/models/{m}[/versions/{v}]/classify?top_k=K``     wasmai's convenience route for image
                                                            classifiers: the raw PNG/JPEG body in,
                                                            ``{"predictions": [...]}`` out
``POST /v2/repository/index``                               Triton's repository index: every model
                                                            with its state and reason
``GET  /metrics``                                           Prometheus (:mod:`wasmai.serve.metrics`)
==========================================================  =========================================

Image classifiers take one ``BYTES`` input ``image`` (shape ``[N]``: N encoded PNG/JPEG images;
binary, or base64 text in JSON) and answer ``label`` (BYTES), ``index`` (INT64) and ``score``
(FP32), each ``[N, K]``; K is the request parameter ``top_k``, a requested output's
``classification`` parameter (Triton's classification extension: that output becomes BYTES
``"score:index:label"``), or the model's ``top_k``.

Errors are the protocol's ``{"error": "..."}`` with 400 (bad request or tensor), 404 (unknown
model, version or route), 405, 413 (body or tensor too large), 429 (queue full, with
``Retry-After``), 503 (not ready, draining, waited too long; ``Retry-After``), 504 (guest call
over its timeout), 500 (the component trapped or failed, or its worker process died: the error
names the signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wasmai import __version__
from wasmai.errors import WasmaiError, printable
from wasmai.host import ComponentError, InferenceError, Instance, Prediction
from wasmai.serve.metrics import CONTENT_TYPE, ServeMetrics
from wasmai.serve.pool import DeadlineExceeded, InstancePool, LoadedModel, Overloaded, Unavailable, load_model
from wasmai.serve.protocol import (
    HEADER_LENGTH,
    OIP_DATATYPES,
    InferRequest,
    OutputTensor,
    ProtocolError,
    classification_strings,
    decode_request,
    encode_response,
    parse_header_length,
)
from wasmai.serve.repository import ModelLimits, ModelSource, scan
from wasmai.tensors import Tensor
from wasmai.vocab import Isolation

log = logging.getLogger("wasmai.serve")
access_log = logging.getLogger("wasmai.serve.access")

#: Extensions of the protocol this server implements (server metadata ``extensions``).
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]
#: The name of an image classifier's input, and its outputs.
IMAGE_INPUT = "image"
IMAGE_OUTPUTS = ("label", "index", "score")
#: Largest top-k a request may ask for.
MAX_TOP_K = 1000
#: Bodies larger than this are decoded on a worker thread, not on the event loop.
THREAD_DECODE_BYTES = 256 * 1024
#: Seconds a client is told to wait (``Retry-After``) after a 429 or 503.
RETRY_AFTER_S = 1


class NotFound(WasmaiError):
    """Unknown model, version or route (HTTP 404)."""


class BodyTooLarge(WasmaiError):
    """The request body exceeds the model's ``max_body_bytes`` (HTTP 413)."""


@dataclass
class ServeOptions:
    """What ``wasmai serve`` serves and how.

    ``paths``: model repositories (folders) and/or component files; ``host``/``port``: where to
    listen (loopback by default); ``limits``: the default :class:`ModelLimits` (a model's
    ``config.toml`` overrides them); ``graphs``: load-by-name registrations for every model;
    ``policy``: a :class:`wasmai.sign.VerificationPolicy` every component must pass before it is
    served (None: unsigned components are served); ``poll_interval_s``: seconds between scans of
    the repository for hot reload (0: off); ``shutdown_timeout_s``: seconds in-flight requests
    get to finish after SIGTERM/SIGINT; ``bundle``: the signature bundle of the one component
    given (default: beside it); ``isolation``: where instances run (:class:`~wasmai.vocab.Isolation`:
    a worker process each, or threads of this process)."""

    paths: Sequence[Path]
    host: str = "127.0.0.1"
    port: int = 8080
    limits: ModelLimits = field(default_factory=ModelLimits)
    graphs: dict[str, Path] = field(default_factory=dict)
    policy: Any = None
    poll_interval_s: float = 2.0
    shutdown_timeout_s: float = 30.0
    bundle: Path | None = None
    isolation: Isolation = Isolation.PROCESS


@dataclass
class ModelStatus:
    """One model as the startup table, the repository index and the metadata show it: ``state``
    is READY, LOADING or UNAVAILABLE; ``reason`` why it is unavailable; ``reload_error`` why the
    last reload was refused while the previous version kept serving."""

    name: str
    version: str
    state: str
    reason: str | None
    limits: ModelLimits
    task: str = ""
    sha256: str = ""
    signed: bool = False
    load_ms: float = 0.0
    reload_error: str | None = None


@dataclass
class ModelEntry:
    """A model name in the server: the pool serving it (None until a version loads), the source
    it was loaded from, the last refusal, and the fingerprint awaiting a stable second look."""

    source: ModelSource
    pool: InstancePool | None = None
    reason: str | None = None
    reload_error: str | None = None
    attempted: tuple[tuple[str, int, int], ...] = ()
    pending: tuple[tuple[str, int, int], ...] | None = None
    loading: bool = False

    def status(self) -> ModelStatus:
        """This entry as a :class:`ModelStatus`."""
        if self.pool is not None:
            loaded = self.pool.loaded
            return ModelStatus(self.pool.name, self.pool.version, "READY", None, self.pool.limits,
                               str(loaded.info.get("task", "")), loaded.sha256,
                               loaded.signature is not None, loaded.load_ms, self.reload_error)
        state = "LOADING" if self.loading or self.reason is None else "UNAVAILABLE"
        return ModelStatus(self.source.name, self.source.version, state, self.reason, self.source.limits)


def _oip_shape(shape: Sequence[Any]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def _is_classifier(loaded: LoadedModel) -> bool:
    return loaded.is_classifier


def model_io(loaded: LoadedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The OIP ``inputs`` and ``outputs`` metadata of a loaded model (``-1`` for dynamic axes)."""
    if _is_classifier(loaded):
        return ([{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}],
                [{"name": "label", "datatype": "BYTES", "shape": [-1, -1]},
                 {"name": "index", "datatype": "INT64", "shape": [-1, -1]},
                 {"name": "score", "datatype": "FP32", "shape": [-1, -1]}])

    def spec(s: dict[str, Any]) -> dict[str, Any]:
        return {"name": s["name"], "datatype": OIP_DATATYPES[s["dtype"]], "shape": _oip_shape(s["shape"])}

    return [spec(s) for s in loaded.info.get("inputs", [])], [spec(s) for s in loaded.info.get("outputs", [])]


def error_status(exc: BaseException) -> int:
    """The HTTP status for an exception raised while answering a request (module docstring)."""
    if isinstance(exc, ProtocolError):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, Overloaded):
        return 429
    if isinstance(exc, Unavailable):
        return 503
    if isinstance(exc, DeadlineExceeded):
        return 504
    if isinstance(exc, InferenceError):
        if exc.code in ("invalid-argument", "invalid-encoding", "bad-input", "bad-image"):
            return 400
        return 413 if exc.code == "too-large" else 500
    if isinstance(exc, ComponentError):
        return 504 if exc.code == "timeout" else 500
    if isinstance(exc, WasmaiError):
        return 400
    return 500


def error_response(exc: BaseException) -> JSONResponse:
    """The protocol's error body ``{"error": message}`` with :func:`error_status` (and
    ``Retry-After`` for 429/503). An unexpected exception is logged and answered as 500."""
    status = error_status(exc)
    if isinstance(exc, WasmaiError):
        message = printable(str(exc))
    else:
        log.error("internal error", exc_info=exc, extra={"event": "internal-error"})
        message = f"internal error: {type(exc).__name__}"
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ServerState:
    """The models a server serves, its metrics and its lifecycle (startup, hot reload, drain)."""

    def __init__(self, options: ServeOptions, on_started: Callable[[list[ModelStatus]], None] | None = None) -> None:
        self.options = options
        self.metrics = ServeMetrics()
        self.models: dict[str, ModelEntry] = {}
        self.ready = False
        self.on_started = on_started
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- loading -------------------------------------------------------------------------------

    def _scan(self) -> dict[str, ModelSource]:
        sources = scan(self.options.paths, self.options.limits, self.options.graphs)
        if self.options.bundle is not None:
            sources = {n: replace(s, bundle=self.options.bundle) for n, s in sources.items()}
        return sources

    async def _load(self, entry: ModelEntry, source: ModelSource) -> None:
        """Load ``source`` (verify, compile, warm instances) and make it the entry's pool; on
        failure keep what is served and record the refusal."""
        entry.loading = True
        entry.attempted = source.fingerprint
        try:
            loaded = await asyncio.to_thread(load_model, source, self.options.policy, self.options.isolation)
        except Exception as exc:  # noqa: BLE001 - every failure is a refusal, reported and visible
            reason = printable(str(exc)) if isinstance(exc, WasmaiError) else f"{type(exc).__name__}: {exc}"
            self.metrics.load_failures.labels(source.name).inc()
            if entry.pool is None:
                entry.reason = reason
                entry.source = source
                log.error("model refused", extra={"event": "model-refused", "model": source.name,
                                                  "version": source.version, "reason": reason})
            else:
                entry.reload_error = reason
                log.error("reload refused; the previous version keeps serving",
                          extra={"event": "reload-refused", "model": source.name, "version": source.version,
                                 "serving": entry.pool.version, "reason": reason})
            return
        finally:
            entry.loading = False
        pool = InstancePool(loaded, self.metrics)
        labels = (source.name, source.version)
        self.metrics.load_seconds.labels(*labels).set(loaded.load_ms / 1e3)
        old = entry.pool
        entry.pool, entry.source, entry.reason, entry.reload_error = pool, source, None, None
        if old is not None and old.version != pool.version:
            self.metrics.ready.labels(old.name, old.version).set(0)
        self.metrics.ready.labels(*labels).set(1)
        log.info("model reloaded" if old is not None else "model ready",
                 extra={"event": "model-reloaded" if old is not None else "model-ready", "model": source.name,
                        "version": source.version, "sha256": loaded.sha256,
                        "signed": loaded.signature is not None, "load_ms": round(loaded.load_ms, 1),
                        "instances": pool.live})
        if old is not None:
            self._background(self._drain(old))

    async def _drain(self, pool: InstancePool) -> None:
        deadline = pool.limits.queue_timeout_s + pool.limits.timeout_s
        finished = await pool.drain(deadline)
        log.info("version unloaded", extra={"event": "version-unloaded", "model": pool.name,
                                            "version": pool.version, "drained": finished})

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Scan the command line's paths and load every model (refusals are recorded, not raised).
        Raises WasmaiError when the paths themselves are wrong."""
        sources = await asyncio.to_thread(self._scan)
        for name, source in sources.items():
            self.models[name] = ModelEntry(source)
        for name, source in sources.items():
            await self._load(self.models[name], source)
        self.ready = True
        if self.on_started is not None:
            self.on_started(self.statuses())
        log.info("listening", extra={"event": "listening", "host": self.options.host, "port": self.options.port,
                                     "models": len(self.models)})
        if self.options.poll_interval_s > 0:
            self._background(self._watch())

    async def _watch(self) -> None:
        """Poll the paths every ``poll_interval_s``: load new models, reload changed ones once a
        change is stable for one interval, unload removed ones after draining them."""
        while True:
            await asyncio.sleep(self.options.poll_interval_s)
            try:
                sources = await asyncio.to_thread(self._scan)
            except WasmaiError as exc:
                log.error("repository scan failed", extra={"event": "scan-failed", "reason": printable(str(exc))})
                continue
            for name in [n for n in self.models if n not in sources]:
                entry = self.models.pop(name)
                log.info("model removed", extra={"event": "model-removed", "model": name})
                if entry.pool is not None:
                    self.metrics.ready.labels(entry.pool.name, entry.pool.version).set(0)
                    self._background(self._drain(entry.pool))
            for name, source in sources.items():
                found = self.models.get(name)
                if found is None:
                    # New: loaded once it has stayed the same for one interval (not half-copied).
                    self.models[name] = ModelEntry(source, pending=source.fingerprint)
                    continue
                entry = found
                if entry.loading or source.fingerprint == entry.attempted:
                    entry.pending = None
                    continue
                if entry.pending != source.fingerprint:
                    entry.pending = source.fingerprint  # changed: load once it stays so for one interval
                    continue
                entry.pending = None
                await self._load(entry, source)

    async def stop(self) -> None:
        """Stop watching and unload every model (in-flight requests get their deadline)."""
        self.ready = False
        for task in list(self._tasks):
            task.cancel()
        pools = [e.pool for e in self.models.values() if e.pool is not None]
        await asyncio.gather(*(p.drain(self.options.shutdown_timeout_s) for p in pools))

    def statuses(self) -> list[ModelStatus]:
        """Every model's :class:`ModelStatus`, by name."""
        return [self.models[n].status() for n in sorted(self.models)]

    # --- request helpers -----------------------------------------------------------------------

    def entry(self, name: str, version: str | None) -> ModelEntry:
        """The entry for a model name and optional version. Raises NotFound."""
        entry = self.models.get(name)
        if entry is None:
            raise NotFound(f"unknown model {name!r}")
        served = entry.pool.version if entry.pool is not None else entry.source.version
        if version is not None and version != served:
            raise NotFound(f"model {name!r} has no version {version!r} (serving {served!r})")
        return entry

    def pool(self, name: str, version: str | None) -> InstancePool:
        """The pool serving a model. Raises NotFound or Unavailable (not ready)."""
        entry = self.entry(name, version)
        if entry.pool is None:
            why = "is loading" if entry.loading else f"is not served: {entry.reason}"
            raise Unavailable(f"model {name!r} {why}")
        return entry.pool


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with :class:`BodyTooLarge` as soon as it exceeds ``limit``
    bytes (from ``Content-Length`` before reading, or while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the request body of {declared} bytes exceeds this model's limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body exceeds this model's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _tensor_inputs(req: InferRequest, loaded: LoadedModel) -> list[Tensor]:
    """Match the request's inputs to the model's by name, datatype, rank and fixed axes."""
    specs = {s["name"]: s for s in loaded.info.get("inputs", [])}
    given = {t.name: t for t in req.inputs}
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ProtocolError(f"unknown input(s) {', '.join(map(repr, unknown))}; the model takes "
                            f"{', '.join(map(repr, specs))}")
    tensors = []
    for name, spec in specs.items():
        t = given.get(name)
        if t is None:
            raise ProtocolError(f"missing input {name!r}")
        want = OIP_DATATYPES[spec["dtype"]]
        if t.datatype != want:
            raise ProtocolError(f"input {name!r} is {t.datatype}; the model takes {want}")
        shape = spec["shape"]
        if len(t.shape) != len(shape) or any(isinstance(d, int) and d != n for d, n in zip(shape, t.shape,
                                                                                             strict=True)):
            raise ProtocolError(f"input {name!r} has shape {list(t.shape)}; the model takes {_oip_shape(shape)}")
        tensors.append(t.to_tensor())
    return tensors


def _output_plan(req: InferRequest, names: Sequence[str]) -> list[tuple[str, bool, int]]:
    """(output name, as binary, classification K) for each output to answer, in order."""
    if not req.outputs:
        return [(n, req.binary_output, 0) for n in names]
    plan = []
    for o in req.outputs:
        if o.name not in names:
            raise ProtocolError(f"unknown output {o.name!r}; the model has {', '.join(map(repr, names))}")
        plan.append((o.name, req.binary_output if o.binary is None else o.binary, o.classification))
    return plan


def _top_k(req: InferRequest, plan: Sequence[tuple[str, bool, int]], default: int) -> int:
    k = req.parameters.get("top_k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ProtocolError("parameter top_k must be a positive integer")
    k = max([c for _, _, c in plan if c] + ([k] if k else []), default=default)
    if k > MAX_TOP_K:
        raise ProtocolError(f"top_k {k} is more than {MAX_TOP_K}")
    return int(k)


def _classify_outputs(preds: list[list[Prediction]], plan: Sequence[tuple[str, bool, int]]
                      ) -> list[tuple[OutputTensor, bool]]:
    import numpy as np

    k = min((len(p) for p in preds), default=0)
    rows = [p[:k] for p in preds]
    shape = (len(rows), k)
    out = []
    for name, binary, classes in plan:
        flat = [p for row in rows for p in row]
        if classes:
            limited = [p for row in rows for p in row[:classes]]
            strings = classification_strings([p.label for p in limited], [p.index for p in limited],
                                             [p.score for p in limited])
            out.append((OutputTensor(name, "BYTES", (len(rows), min(k, classes)), elements=strings), binary))
        elif name == "label":
            out.append((OutputTensor(name, "BYTES", shape, elements=[p.label.encode() for p in flat]), binary))
        elif name == "index":
            data = np.asarray([p.index for p in flat], dtype="<i8").tobytes()
            out.append((OutputTensor(name, "INT64", shape, data), binary))
        else:
            data = np.asarray([p.score for p in flat], dtype="<f4").tobytes()
            out.append((OutputTensor(name, "FP32", shape, data), binary))
    return out


def _memory(inst: Instance) -> int:
    return int(inst.host_stats().get("linear_memory_bytes", 0))


# The calls a pool runs on an instance: module-level, so that they (bound to their arguments with
# functools.partial) pickle to a worker process.

def _classify_images(images: Sequence[bytes], k: int, inst: Instance) -> tuple[list[list[Prediction]], int]:
    """The top ``k`` predictions of each image, and the instance's linear memory (bytes)."""
    return [inst.classify(img, k) for img in images], _memory(inst)


def _infer_tensors(tensors: Sequence[Tensor], inst: Instance) -> tuple[list[Tensor], int]:
    """The outputs of ``model.infer(tensors)``, and the instance's linear memory (bytes)."""
    return inst.infer(tensors), _memory(inst)


def build_app(state: ServerState) -> Starlette:
    """The Starlette application over ``state`` (routes in the module docstring), wrapped in the
    JSON access log."""
    metrics = state.metrics

    def record(name: str, version: str, status: int, total_s: float) -> None:
        metrics.requests.labels(name, version, str(status)).inc()
        metrics.total_seconds.labels(name, version).observe(total_s)

    async def live(_request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(_request: Request) -> Response:
        return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)

    async def server_metadata(_request: Request) -> Response:
        return JSONResponse({"name": "wasmai", "version": __version__, "extensions": EXTENSIONS})

    def _version(request: Request) -> str | None:
        v = request.path_params.get("version")
        return str(v) if v is not None else None

    async def model_metadata(request: Request) -> Response:
        try:
            entry = state.entry(request.path_params["name"], _version(request))
        except WasmaiError as exc:
            return error_response(exc)
        status = entry.status()
        params: dict[str, Any] = {"state": status.state}
        inputs: list[dict[str, Any]] = []
        outputs: list[dict[str, Any]] = []
        if entry.pool is not None:
            inputs, outputs = model_io(entry.pool.loaded)
            params.update({"task": status.task, "sha256": status.sha256, "signed": status.signed})
            if status.reload_error:
                params["reload_refused"] = status.reload_error
        elif status.reason:
            params["reason"] = status.reason
        return JSONResponse({"name": status.name, "versions": [status.version], "platform": "wasmai",
                             "inputs": inputs, "outputs": outputs, "parameters": params})

    async def model_ready(request: Request) -> Response:
        try:
            entry = state.entry(request.path_params["name"], _version(request))
        except WasmaiError as exc:
            return error_response(exc)
        status = entry.status()
        body: dict[str, Any] = {"name": status.name, "ready": status.state == "READY"}
        if status.reason:
            body["reason"] = status.reason
        return JSONResponse(body, status_code=200 if status.state == "READY" else 503)

    async def repository_index(_request: Request) -> Response:
        return JSONResponse([{"name": s.name, "version": s.version, "state": s.state, "reason": s.reason or ""}
                             for s in state.statuses()])

    async def prometheus(_request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        start = time.perf_counter()
        labels = (name, _version(request) or "")
        try:
            pool = state.pool(name, _version(request))
            labels = (pool.name, pool.version)
            request.state.model, request.state.version = labels
            body = await read_body(request, pool.limits.max_body_bytes)
            # A newer version may have replaced the pool while the body arrived: use it.
            pool = state.pool(name, _version(request))
            labels = (pool.name, pool.version)
            request.state.model, request.state.version = labels
            header_length = parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
            loaded = pool.loaded
            image_inputs = [IMAGE_INPUT] if _is_classifier(loaded) else []

            def decode() -> InferRequest:
                return decode_request(body, header_length, max_tensor_bytes=pool.limits.max_tensor_bytes,
                                      base64_bytes_inputs=image_inputs)

            req = await asyncio.to_thread(decode) if len(body) > THREAD_DECODE_BYTES else decode()
            if _is_classifier(loaded):
                if [(t.name, t.datatype) for t in req.inputs] != [(IMAGE_INPUT, "BYTES")]:
                    raise ProtocolError(f"an image classifier takes one BYTES input {IMAGE_INPUT!r} "
                                        "holding PNG/JPEG images")
                images = req.inputs[0].elements or []
                plan = _output_plan(req, IMAGE_OUTPUTS)
                k = _top_k(req, plan, pool.limits.top_k)

                (preds, memory), timing = await pool.run(functools.partial(_classify_images, images, k))
                outputs = _classify_outputs(preds, plan)
            else:
                tensors = _tensor_inputs(req, loaded)
                plan = _output_plan(req, [s["name"] for s in loaded.info.get("outputs", [])])

                (result, memory), timing = await pool.run(functools.partial(_infer_tensors, tensors))
                by_name = {t.name: t for t in result}
                outputs = [(OutputTensor.from_tensor(by_name[n]), binary) for n, binary, _ in plan]
            pool.note_memory(memory)
            metrics.queue_seconds.labels(*labels).observe(timing.queue_s)
            metrics.inference_seconds.labels(*labels).observe(timing.call_s)
            request.state.queue_ms = round(timing.queue_s * 1e3, 3)
            request.state.inference_ms = round(timing.call_s * 1e3, 3)
            content, headers = encode_response(pool.name, pool.version, req.id, outputs)
            media = "application/octet-stream" if headers else "application/json"
            response = Response(content, media_type=media, headers=headers)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the protocol's error body
            response = error_response(exc)
        record(*labels, response.status_code, time.perf_counter() - start)
        return response

    async def classify_raw(request: Request) -> Response:
        name = request.path_params["name"]
        start = time.perf_counter()
        labels = (name, _version(request) or "")
        try:
            pool = state.pool(name, _version(request))
            labels = (pool.name, pool.version)
            request.state.model, request.state.version = labels
            if not _is_classifier(pool.loaded):
                raise ProtocolError(f"model {name!r} is not an image classifier; use /infer")
            raw_k = request.query_params.get("top_k", str(pool.limits.top_k))
            if not raw_k.isdigit() or not 1 <= int(raw_k) <= MAX_TOP_K:
                raise ProtocolError(f"top_k must be an integer in 1..{MAX_TOP_K}")
            k = int(raw_k)
            image = await read_body(request, pool.limits.max_body_bytes)
            pool = state.pool(name, _version(request))
            if not image:
                raise ProtocolError("the body must be a PNG or JPEG image")

            (each, memory), timing = await pool.run(functools.partial(_classify_images, [image], k))
            preds = each[0]
            pool.note_memory(memory)
            metrics.queue_seconds.labels(*labels).observe(timing.queue_s)
            metrics.inference_seconds.labels(*labels).observe(timing.call_s)
            response: Response = JSONResponse({
                "model_name": pool.name, "model_version": pool.version,
                "predictions": [{"label": p.label, "index": p.index, "score": p.score} for p in preds]})
        except Exception as exc:  # noqa: BLE001 - every failure becomes the protocol's error body
            response = error_response(exc)
        record(*labels, response.status_code, time.perf_counter() - start)
        return response

    async def http_error(_request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse({"error": detail}, status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    for base in (model, versioned):
        routes += [Route(base, model_metadata, methods=["GET"]),
                   Route(base + "/ready", model_ready, methods=["GET"]),
                   Route(base + "/infer", infer, methods=["POST"]),
                   Route(base + "/classify", classify_raw, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.serve = state
    return app


class AccessLog:
    """ASGI middleware: one JSON access line per HTTP request (method, path, status,
    duration_ms, bytes_in/out, client, and the model, version, queue_ms, inference_ms the
    handler noted in ``request.state``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        seen: dict[str, int] = {"status": 500, "out": 0, "in": 0}

        async def counting_receive() -> Message:
            message = await receive()
            seen["in"] += len(message.get("body", b""))
            return message

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, logging_send)
        finally:
            noted = scope.get("state", {})
            client = scope.get("client")
            access_log.info("request", extra={
                "event": "access", "method": scope["method"], "path": scope["path"], "status": seen["status"],
                "duration_ms": round((time.perf_counter() - start) * 1e3, 3), "bytes_in": seen["in"],
                "bytes_out": seen["out"], "client": f"{client[0]}:{client[1]}" if client else None,
                **{k: noted[k] for k in ("model", "version", "queue_ms", "inference_ms") if k in noted}})
