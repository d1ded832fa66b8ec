"""Webhook sink: POST each message as JSON from a bounded queue, retrying with back-off.

A webhook that answers 500 or hangs only fills its own queue; the oldest message is then dropped (and counted),
so memory stays bounded and the stream never waits. With a secret, each POST carries
`X-Edge-Daemon-Signature: sha256=<hex HMAC-SHA256 of the body>`. The host is checked against the daemon's URL
policy before each connection and the connection goes to the checked address.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import queue
import threading
import time
from urllib.parse import urlsplit

from edge_daemon.errors import ApiError
from edge_daemon.images.url_fetch import PinnedHTTPSConnection, UrlPolicy, basic_auth, resolve_checked
from edge_daemon.streams.config import WebhookSinkConfig
from edge_daemon.streams.masking import mask_url
from edge_daemon.streams.sinks import Message, SinkStats

log = logging.getLogger("edge_daemon.streams")

SIGNATURE_HEADER = "X-Edge-Daemon-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    def __init__(self, config: WebhookSinkConfig, label: str, stream_id: str, policy: UrlPolicy):
        self.config = config
        self.label = label
        self.stream_id = stream_id
        self.policy = policy
        self._queue: queue.Queue[Message | None] = queue.Queue(config.queue_size)
        self._stats = SinkStats()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"webhook {stream_id}", daemon=True)
        self._thread.start()

    def send(self, message: Message) -> None:
        if message.topic == "counts":  # an MQTT-only convenience topic
            return
        if message.topic == "detections" and self.config.publish == "change" and not message.changed:
            return
        while True:
            try:
                self._queue.put_nowait(message)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()  # drop the oldest: the newest result matters most
                    with self._lock:
                        self._stats.dropped += 1
                except queue.Empty:
                    pass

    def describe_classes(self, class_names: list[str]) -> None:
        pass

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(self._stats.sent, self._stats.dropped, self._stats.failed,
                             {"queued": self._queue.qsize()})

    def close(self) -> None:
        self._closed.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def _work(self) -> None:
        while not self._closed.is_set():
            message = self._queue.get()
            if message is None:
                return
            delay = 0.5
            for attempt in range(self.config.retries + 1):
                if self._closed.is_set():
                    return
                error = self._post(message)
                if error is None:
                    with self._lock:
                        self._stats.sent += 1
                    break
                if attempt == self.config.retries:
                    with self._lock:
                        self._stats.failed += 1
                    log.warning("webhook %s for stream %s failed: %s", mask_url(self.config.url), self.stream_id,
                                error)
                    break
                self._closed.wait(delay)
                delay = min(delay * 2, 30.0)

    def _post(self, message: Message) -> str | None:
        """POST once; None on a 2xx, else the reason."""
        parts = urlsplit(self.config.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            address = resolve_checked(parts.hostname or "", port, self.policy)
        except ApiError as error:
            return error.message.replace("image URL", "webhook URL")
        headers = {"Content-Type": "application/json", "User-Agent": "edge-daemon",
                   "X-Edge-Daemon-Stream": self.stream_id, "X-Edge-Daemon-Topic": message.topic,
                   "Host": parts.netloc.rsplit("@", 1)[-1], **basic_auth(parts)}
        if self.config.secret:
            headers[SIGNATURE_HEADER] = sign(self.config.secret, message.body)
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = PinnedHTTPSConnection(address, parts.hostname or "", port, self.config.timeout)
        else:
            connection = http.client.HTTPConnection(address, port, timeout=self.config.timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        started = time.monotonic()
        try:
            connection.request("POST", path, body=message.body, headers=headers)
            response = connection.getresponse()
            response.read(65536)
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as error:
            return f"{error.__class__.__name__} after {time.monotonic() - started:.1f} s"
        finally:
            connection.close()
