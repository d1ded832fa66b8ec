"""Server-Sent Events: each subscriber gets its own small ring buffer, so a slow reader loses old messages
instead of holding memory or the stream; the number of open SSE (and MJPEG preview) connections is capped
(each holds a worker)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator

from edge_daemon.errors import ServiceUnavailable
from edge_daemon.streams.sinks import Message

KEEPALIVE_SECONDS = 10.0
BUFFER = 32


class Subscription:
    def __init__(self, hub: EventHub):
        self._hub = hub
        self._cond = threading.Condition()
        self._items: collections.deque[Message] = collections.deque(maxlen=BUFFER)
        self.closed = False

    def put(self, message: Message) -> None:
        with self._cond:
            self._items.append(message)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify()

    def end(self) -> None:
        """Leave the hub (frees a connection from the cap); safe to call more than once."""
        self._hub.unsubscribe(self)

    def batches(self) -> Iterator[list[Message]]:
        """Messages as they come, [] after KEEPALIVE_SECONDS of silence, until the stream closes."""
        try:
            while True:
                with self._cond:
                    if not self._items and not self.closed:
                        self._cond.wait(KEEPALIVE_SECONDS)
                    if self.closed:
                        return
                    items = list(self._items)
                    self._items.clear()
                yield items
        finally:
            self.end()

    def frames(self) -> Iterator[bytes]:
        """SSE text: `event: <topic>` + `data: <json>`, and a comment line as keep-alive."""
        try:
            yield b"retry: 2000\n\n"
            for items in self.batches():
                if not items:
                    yield b": keep-alive\n\n"
                for message in items:
                    yield b"event: " + message.topic.encode() + b"\ndata: " + message.body + b"\n\n"
        finally:
            self.end()  # also when the client left before the first batch


class SubscriberLimit:
    """Open SSE connections, daemon-wide."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.lock = threading.Lock()


class EventHub:
    """One stream's SSE subscribers."""

    def __init__(self, limit: SubscriberLimit):
        self._limit = limit
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        with self._limit.lock:
            if self._limit.count >= self._limit.limit:
                raise ServiceUnavailable(f"too many event subscribers ({self._limit.limit} open)",
                                         headers={"Retry-After": "5"})
            self._limit.count += 1
        subscription = Subscription(self)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription not in self._subscribers:
                return
            self._subscribers.remove(subscription)
        with self._limit.lock:
            self._limit.count -= 1

    def publish(self, message: Message) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription.put(message)

    def close(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription.close()
