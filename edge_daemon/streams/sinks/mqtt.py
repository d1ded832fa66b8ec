"""MQTT sink (paho-mqtt 2.x, imported only when a stream has an MQTT sink).

Topics under `<topic_prefix>/<stream>/`: `detections` (every inference, or only on change), `counts` (per-class
object counts), `events` (enter/exit), `state` (retained), `availability` (`online`, retained; `offline` as the
Last Will and on a clean stop). Optional Home Assistant discovery makes one count sensor per class.

paho's own network thread connects and reconnects; `send` only publishes while connected and otherwise counts
the message as dropped, and paho's queue is capped, so a dead broker costs neither memory nor inference time.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from typing import Any

import orjson

from edge_daemon.errors import ApiError, Unprocessable
from edge_daemon.images.url_fetch import UrlPolicy, resolve_checked
from edge_daemon.streams.config import MqttSinkConfig
from edge_daemon.streams.masking import mask_url
from edge_daemon.streams.sinks import Message, SinkStats

log = logging.getLogger("edge_daemon.streams")

MAX_QUEUED = 100


def _paho() -> Any:
    try:
        from paho.mqtt import client
    except ImportError:
        raise Unprocessable("an MQTT sink needs paho-mqtt: pip install 'edge-daemon[streams]'") from None
    return client


def check_available() -> None:
    """Fail a stream config with an MQTT sink early (422) when paho-mqtt is missing."""
    _paho()


class MqttSink:
    def __init__(self, config: MqttSinkConfig, label: str, stream_id: str, policy: UrlPolicy):
        mqtt = _paho()
        self.config = config
        self.label = label
        self.stream_id = stream_id
        self.base = f"{config.topic_prefix}/{stream_id}"
        self.availability = f"{self.base}/availability"
        self._stats = SinkStats()
        self._lock = threading.Lock()
        self._classes: list[str] = []
        self._last_state: bytes | None = None
        from urllib.parse import urlsplit

        parts = urlsplit(config.url)
        host = parts.hostname or ""
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-daemon-{stream_id}-"
                                   f"{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311)
        if parts.username:
            self._client.username_pw_set(parts.username, parts.password)
        if parts.scheme == "mqtts":
            self._client.tls_set()
        self._client.will_set(self.availability, b"offline", qos=1, retain=True)
        self._client.reconnect_delay_set(1, 10)
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        try:
            address = resolve_checked(host, port, policy)
        except ApiError as error:
            if "not allowed" in error.message or "list" in error.message:
                self._stats.extra["error"] = error.message.replace("image URL", "MQTT broker")
                log.warning("MQTT sink for stream %s refused: %s", stream_id, self._stats.extra["error"])
                return
            address = host  # not resolvable yet: paho keeps trying
        self._client.connect_async(host if parts.scheme == "mqtts" else address, port, keepalive=30)
        self._client.loop_start()

    # ----- paho callbacks (its network thread) ------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("MQTT broker %s refused stream %s: %s", mask_url(self.config.url), self.stream_id,
                        reason_code)
            return
        client.publish(self.availability, b"online", qos=1, retain=True)
        with self._lock:
            classes, state = list(self._classes), self._last_state
        if state is not None:
            client.publish(f"{self.base}/state", state, qos=1, retain=True)
        if classes:
            self._discovery(classes)
        log.info("MQTT connected to %s for stream %s", mask_url(self.config.url), self.stream_id)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        log.info("MQTT disconnected from %s for stream %s", mask_url(self.config.url), self.stream_id)

    # ----- Sink ---------------------------------------------------------------------------------------
    def send(self, message: Message) -> None:
        if message.topic == "state":
            with self._lock:
                self._last_state = message.body  # re-published (retained) on every reconnect
        elif message.topic == "detections" and self.config.publish == "change" and not message.changed:
            return
        if not self._client.is_connected():
            with self._lock:
                self._stats.dropped += 1
            return
        retain = message.topic == "state"
        info = self._client.publish(f"{self.base}/{message.topic}", message.body,
                                    qos=1 if retain else self.config.qos, retain=retain)
        with self._lock:
            if info.rc == 0:
                self._stats.sent += 1
            else:
                self._stats.dropped += 1

    def describe_classes(self, class_names: list[str]) -> None:
        with self._lock:
            self._classes = list(class_names)
        if self._client.is_connected():
            self._discovery(class_names)

    def _discovery(self, class_names: list[str]) -> None:
        if not self.config.home_assistant:
            return
        node = re.sub(r"[^A-Za-z0-9_-]", "_", f"edge_daemon_{self.stream_id}")
        device = {"identifiers": [node], "name": f"edge-daemon {self.stream_id}", "manufacturer": "edge-daemon"}
        for name in class_names:
            object_id = re.sub(r"[^A-Za-z0-9_-]", "_", f"{name}_count")
            document = {"name": f"{name} count", "unique_id": f"{node}_{object_id}",
                        "state_topic": f"{self.base}/counts",
                        "value_template": "{{ value_json['" + name.replace("'", "") + "'] | default(0) }}",
                        "availability_topic": self.availability, "unit_of_measurement": "objects",
                        "state_class": "measurement", "device": device}
            self._client.publish(f"{self.config.discovery_prefix}/sensor/{node}/{object_id}/config",
                                 orjson.dumps(document), qos=1, retain=True)

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(self._stats.sent, self._stats.dropped, self._stats.failed,
                             {**self._stats.extra, "connected": self._client.is_connected()})

    def close(self) -> None:
        try:
            if self._client.is_connected():
                self._client.publish(self.availability, b"offline", qos=1, retain=True).wait_for_publish(1.0)
            self._client.disconnect()
        except (RuntimeError, ValueError, OSError):
            pass
        self._client.loop_stop()
