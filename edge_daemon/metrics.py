"""Prometheus metrics for one daemon: requests, stage latencies, model lifecycle, cache, process memory.

Each app owns its own registry (tests build many apps in one process). Labels are bounded: routes are
URI templates, never raw paths; API keys never appear anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import falcon
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector

# Edge latencies: a millisecond of post-processing up to a ten-second cold start.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOAD_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0)
STATES = ("loading", "downloading", "building", "ready", "failed")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends
        r = self.registry
        self.requests = Counter("edge_daemon_requests_total", "HTTP requests answered",
                                ["route", "model", "status"], registry=r)
        self.request_seconds = Histogram("edge_daemon_request_duration_seconds", "Whole-request latency",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("edge_daemon_stage_duration_seconds",
                                       "Time per pipeline stage (decode, preprocess, inference, postprocess)",
                                       ["stage", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("edge_daemon_requests_in_flight", "Requests being handled", registry=r)
        self.queued = Gauge("edge_daemon_requests_queued", "Requests waiting for an engine slot", registry=r)
        self.images = Counter("edge_daemon_images_total", "Images run through a model", ["model"], registry=r)
        self.model_states = Gauge("edge_daemon_model_state", "1 for the state each model is in",
                                 ["model", "state"], registry=r)
        self.model_load_seconds = Histogram("edge_daemon_model_load_duration_seconds",
                                            "Model load (download/compile included) duration",
                                            ["source"], buckets=LOAD_BUCKETS, registry=r)
        self.download_seconds = Histogram("edge_daemon_model_download_duration_seconds", "Model download time",
                                          buckets=LOAD_BUCKETS, registry=r)
        self.downloaded_bytes = Counter("edge_daemon_downloaded_bytes_total", "Bytes of model weights downloaded",
                                        registry=r)
        r.register(_EngineCacheCollector())
        self.model_load_failures = Counter(
            "edge_daemon_model_load_failures_total",
            "Failed model loads by the step that failed (files, registry, metadata, engine, warmup, layout); "
            "ids that exist nowhere are counted without a model label", ["model", "reason"], registry=r)
        self.model_loads = Counter("edge_daemon_model_loads_total",
                                   "Model loads by where the files came from (registry = cache miss)",
                                   ["source"], registry=r)

    # ----- ModelEvents ------------------------------------------------------------------------------
    def model_state(self, model_id: str, state: str) -> None:
        for name in STATES:
            self.model_states.labels(model_id, name).set(1 if name == state else 0)

    def model_downloaded(self, model_id: str, size: int, seconds: float) -> None:
        self.downloaded_bytes.inc(size)
        self.download_seconds.observe(seconds)

    def model_loaded(self, model_id: str, source: str, seconds: float) -> None:
        self.model_loads.labels(source).inc()
        self.model_load_seconds.labels(source).observe(seconds)

    def model_load_failed(self, model_id: str, reason: str) -> None:
        self.model_load_failures.labels(model_id, reason).inc()

    def model_forgotten(self, model_id: str) -> None:
        for name in STATES:
            try:
                self.model_states.remove(model_id, name)
            except KeyError:
                pass

    # ----- per inference ----------------------------------------------------------------------------
    def observe_inference(self, model_id: str, images: int, decode: float, preprocess: float, inference: float,
                          postprocess: float) -> None:
        self.images.labels(model_id).inc(images)
        for stage, seconds in (("decode", decode), ("preprocess", preprocess), ("inference", inference),
                               ("postprocess", postprocess)):
            self.stage_seconds.labels(stage, model_id).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCacheCollector:
    """Engine-cache totals kept by edge_daemon.engines (process-wide), exposed as counters."""

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        from edge_daemon.engines import CACHE_COUNTERS

        totals = CACHE_COUNTERS.snapshot()
        yield CounterMetricFamily("edge_daemon_engine_builds", "Engines compiled (cache misses)",
                                  value=totals["builds"])
        yield CounterMetricFamily("edge_daemon_engine_cache_hits", "Engines loaded from the engine cache",
                                  value=totals["hits"])
        yield CounterMetricFamily("edge_daemon_engine_cache_discards",
                                  "Cached engines discarded as stale or corrupt", value=totals["discards"])
        yield CounterMetricFamily("edge_daemon_engine_build_seconds", "Seconds spent compiling engines",
                                  value=totals["build_seconds"])


class RemoteEngineCollector:
    """Per loaded model on the remote backend: server up, local fallback in use, calls by outcome."""

    def __init__(self, loaded: Callable[[], list[Any]]):
        self._loaded = loaded

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("edge_daemon_remote_up", "1 while the model's KServe v2 server takes calls "
                               "(circuit closed)", labels=["model"])
        fallback = GaugeMetricFamily("edge_daemon_remote_fallback_active",
                                     "1 while the model runs on the local engine because its server is down",
                                     labels=["model"])
        calls = CounterMetricFamily("edge_daemon_remote_calls", "Remote engine calls by outcome (ok, unreachable, "
                                    "rejected, fast_failed by the open circuit, fallback to the local engine)",
                                    labels=["model", "outcome"])
        for model in self._loaded():
            status_of = getattr(model.engine, "remote_status", None)
            if status_of is None:
                continue
            status = status_of()
            up.add_metric([model.model_id], 1.0 if status["up"] else 0.0)
            fallback.add_metric([model.model_id], 1.0 if status["fallback_active"] else 0.0)
            for outcome, count in status["calls"].items():
                calls.add_metric([model.model_id, outcome], count)
        yield up
        yield fallback
        yield calls


class MetricsMiddleware:
    """Counts and times every request by route template and status."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()
        self.metrics.in_flight.inc()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        started = req.context.get("metrics_started")
        if started is None:
            return
        self.metrics.in_flight.dec()
        route = req.uri_template or "unmatched"
        status = str(resp.status)[:3] if not isinstance(resp.status, int) else str(resp.status)
        # A 404 names a model that exists nowhere: made-up ids must not grow the label set.
        model = req.context.get("model_id", "") if status != "404" else ""
        self.metrics.requests.labels(route, model, status).inc()
        self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)


class MetricsResource:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self.metrics.exposition()
