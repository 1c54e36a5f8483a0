"""Prometheus metrics of ``wasmai serve`` (``GET /metrics``, text exposition format 0.0.4).

One :class:`ServeMetrics` per server, in its own ``CollectorRegistry`` (two servers in one
process do not collide). Names (seconds and bytes, Prometheus base units):

* ``wasmai_requests_total{model,version,status}`` - inference requests by HTTP status;
* ``wasmai_request_queue_seconds``, ``wasmai_request_inference_seconds``,
  ``wasmai_request_seconds`` ``{model,version}`` - histograms of the wait for an instance, the
  guest call and the whole request (decode, wait, call, encode);
* ``wasmai_requests_in_flight{model,version}`` - requests admitted and not answered (waiting or
  running); ``wasmai_requests_queued{model,version}`` - those waiting;
* ``wasmai_instances{model,version}`` - live instances; ``wasmai_instance_replacements_total
  {model,version,reason}`` - instances discarded after a trap, timeout or memory-limit;
* ``wasmai_model_ready{model,version}`` - 1 while served; ``wasmai_model_load_seconds
  {model,version}`` - verify + compile + instantiate + warm time of the version served;
  ``wasmai_model_load_failures_total{model}`` - refused loads and reloads;
* ``wasmai_linear_memory_peak_bytes{model,version}`` - largest linear memory of any instance
  (:meth:`wasmai.host.Instance.host_stats`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Latency buckets, seconds: 0.5 ms .. 60 s.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """The server's metrics in a private registry; :meth:`render` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        mv = ["model", "version"]
        self.requests = Counter("wasmai_requests", "Inference requests by HTTP status.", [*mv, "status"], registry=r)
        self.queue_seconds = Histogram("wasmai_request_queue_seconds", "Wait for a free instance.", mv,
                                       buckets=BUCKETS, registry=r)
        self.inference_seconds = Histogram("wasmai_request_inference_seconds", "Guest call (infer/classify).",
                                           mv, buckets=BUCKETS, registry=r)
        self.total_seconds = Histogram("wasmai_request_seconds", "Whole request: decode, queue, call, encode.",
                                       mv, buckets=BUCKETS, registry=r)
        self.in_flight = Gauge("wasmai_requests_in_flight", "Requests admitted and not yet answered.", mv,
                               registry=r)
        self.queued = Gauge("wasmai_requests_queued", "Requests waiting for an instance.", mv, registry=r)
        self.instances = Gauge("wasmai_instances", "Live instances.", mv, registry=r)
        self.replacements = Counter("wasmai_instance_replacements", "Instances discarded and replaced.",
                                    [*mv, "reason"], registry=r)
        self.ready = Gauge("wasmai_model_ready", "1 while the model version is served.", mv, registry=r)
        self.load_seconds = Gauge("wasmai_model_load_seconds", "Verify, compile, instantiate and warm time.",
                                  mv, registry=r)
        self.load_failures = Counter("wasmai_model_load_failures", "Refused loads and reloads.", ["model"],
                                     registry=r)
        self.memory_peak = Gauge("wasmai_linear_memory_peak_bytes", "Largest linear memory of an instance.",
                                 mv, registry=r)

    def forget(self, model: str, version: str) -> None:
        """Drop the per-version gauges of a version no longer served (counters stay)."""
        for gauge in (self.in_flight, self.queued, self.instances, self.ready, self.load_seconds, self.memory_peak):
            try:
                gauge.remove(model, version)
            except KeyError:
                pass

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)
