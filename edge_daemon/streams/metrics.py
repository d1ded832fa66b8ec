"""Stream metrics in the daemon's own Prometheus registry. Labels are stream ids (validated, no URLs) and sink
labels (`mqtt:0`), never camera URLs; counters come from the live streams, so a deleted stream disappears."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

AGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0)
DECODE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
STATES = ("starting", "running", "reconnecting", "paused", "failed")


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry, streams: Callable[[], list[Any]]):
        self.frame_age = Histogram("edge_daemon_stream_frame_age_seconds",
                                   "Age of the frame when its inference finished (capture to result)", ["stream"],
                                   buckets=AGE_BUCKETS, registry=registry)
        self.decode = Histogram("edge_daemon_stream_decode_seconds",
                                "CPU time of the grabber thread per frame read (receive and decode)", ["stream"],
                                buckets=DECODE_BUCKETS, registry=registry)
        registry.register(_StreamCollector(streams))

    def forget(self, stream_id: str) -> None:
        for histogram in (self.frame_age, self.decode):
            try:
                histogram.remove(stream_id)
            except KeyError:
                pass


class _StreamCollector:
    def __init__(self, streams: Callable[[], list[Any]]):
        self._streams = streams

    def collect(self) -> Any:
        frames = CounterMetricFamily("edge_daemon_stream_frames", "Frames per stream: read, inferred, dropped",
                                     labels=["stream", "kind"])
        reconnects = CounterMetricFamily("edge_daemon_stream_reconnects", "Camera reopen attempts", labels=["stream"])
        state = GaugeMetricFamily("edge_daemon_stream_state", "1 for the state each stream is in",
                                  labels=["stream", "state"])
        sinks = CounterMetricFamily("edge_daemon_stream_sink_messages", "Sink messages sent, dropped, failed",
                                    labels=["stream", "sink", "outcome"])
        for stream in self._streams():
            snapshot = stream.snapshot()
            sid = snapshot["id"]
            for kind in ("read", "inferred", "dropped"):
                frames.add_metric([sid, kind], snapshot["frames"][kind])
            reconnects.add_metric([sid], snapshot["reconnects"])
            for name in STATES:
                state.add_metric([sid, name], 1.0 if snapshot["state"] == name else 0.0)
            for label, stats in stream.sink_stats().items():
                for outcome in ("sent", "dropped", "failed"):
                    sinks.add_metric([sid, label, outcome], getattr(stats, outcome))
        yield from (frames, reconnects, state, sinks)
