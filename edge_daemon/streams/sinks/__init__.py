"""Where a stream's results go. Every sink is non-blocking for the stream: `send` only enqueues (bounded) or
hands over to a client library's own network thread, so a dead sink can neither grow memory nor slow inference.

Kinds come from one table, keyed by the `type` field of the sink config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_daemon.images.url_fetch import UrlPolicy


@dataclass
class Message:
    """One thing to publish: `topic` is detections, state or events; `body` is its JSON, encoded once."""

    topic: str
    body: bytes
    changed: bool = True  # for detections: did the set of detected classes change since the last one


@dataclass
class SinkStats:
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Sink(Protocol):
    label: str   # e.g. "mqtt:0", the metrics label

    def send(self, message: Message) -> None:
        """Hand over for delivery; never blocks."""

    def describe_classes(self, class_names: list[str]) -> None:
        """The model's classes are known (Home Assistant discovery uses them)."""

    def stats(self) -> SinkStats: ...

    def close(self) -> None: ...


def build_sink(config: Any, index: int, stream_id: str, policy: UrlPolicy) -> Sink:
    """The sink for one `sinks[i]` entry of a stream config."""
    from edge_daemon.streams.sinks.mqtt import MqttSink
    from edge_daemon.streams.sinks.webhook import WebhookSink

    kinds: dict[str, Callable[..., Sink]] = {"mqtt": MqttSink, "webhook": WebhookSink}
    return kinds[config.type](config, f"{config.type}:{index}", stream_id, policy)
