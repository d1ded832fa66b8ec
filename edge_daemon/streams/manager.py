"""The set of streams: created from the streams file, over HTTP (persisted in the state dir) or by the Roboflow
pipeline routes; started, paused, replaced and stopped here."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from edge_daemon.config import Settings
from edge_daemon.errors import ApiError, NotFound, Unprocessable
from edge_daemon.service import InferenceService
from edge_daemon.streams.config import StreamConfig, load_streams_file, parse_stream
from edge_daemon.streams.metrics import StreamMetrics
from edge_daemon.streams.sinks import Sink
from edge_daemon.streams.sinks.sse import SubscriberLimit
from edge_daemon.streams.stream import Stream, StreamDeps

log = logging.getLogger("edge_daemon.streams")

STATE_FILE = "streams.json"


class Conflict(ApiError):
    status = 409


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: a crash leaves the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)  # camera passwords and webhook secrets live in it
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


class StreamManager:
    def __init__(self, settings: Settings, service: InferenceService, registry: CollectorRegistry):
        self.settings = settings
        self.service = service
        self._streams: dict[str, Stream] = {}
        self._lock = threading.RLock()
        self.metrics = StreamMetrics(registry, self.streams)
        self.deps = StreamDeps(service, service.decode_options.url_policy,
                               threading.BoundedSemaphore(max(1, settings.stream_slots)), self.metrics,
                               SubscriberLimit(max(1, settings.threads // 2)))
        self.state_path = Path(settings.state_dir) / STATE_FILE if settings.state_dir else None

    # ----- start-up and shut-down -------------------------------------------------------------------
    def start(self) -> StreamManager:
        """Start the streams file's streams, then those created over HTTP before the last stop."""
        if self.settings.streams_file:
            for config in load_streams_file(Path(self.settings.streams_file)):
                self._add(config, "file")
        for config in self._load_state():
            if config.id in self._streams:
                log.warning("stream %s from %s is shadowed by the streams file", config.id, self.state_path)
                continue
            self._add(config, "api")
        return self

    def close(self) -> None:
        with self._lock:
            streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.stop()

    def _load_state(self) -> list[StreamConfig]:
        if self.state_path is None or not self.state_path.exists():
            return []
        try:
            document = orjson.loads(self.state_path.read_bytes())
            items = document["streams"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.error("cannot read %s (%s): streams created over HTTP were not restored", self.state_path,
                      error.__class__.__name__)
            return []
        configs = []
        for item in items:
            try:
                configs.append(parse_stream(item))
            except ApiError as error:
                log.error("skipping a saved stream: %s", error.message)
        return configs

    def _save(self) -> None:
        if self.state_path is None:
            return
        with self._lock:
            saved = [stream.config.model_dump(mode="json") for stream in self._streams.values()
                     if stream.origin == "api"]
        write_atomically(self.state_path, orjson.dumps({"streams": saved}, option=orjson.OPT_INDENT_2))

    # ----- queries ----------------------------------------------------------------------------------
    def streams(self) -> list[Stream]:
        with self._lock:
            return list(self._streams.values())

    def get(self, stream_id: str) -> Stream:
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is None:
            raise NotFound(f"no stream {stream_id!r}")
        return stream

    def readiness(self) -> dict[str, Any]:
        return {stream.config.id: {key: value for key, value in stream.snapshot().items()
                                   if key in ("state", "last_error", "last_frame_at", "reconnects")}
                for stream in self.streams()}

    # ----- changes ----------------------------------------------------------------------------------
    def _check(self, config: StreamConfig, origin: str) -> None:
        if config.is_local and origin != "file" and not self.settings.streams_allow_local:
            raise Unprocessable("source: video files and devices can be opened over HTTP only with "
                                "--streams-allow-local (or put the stream in the streams file)")
        if any(sink.type == "mqtt" for sink in config.sinks):
            from edge_daemon.streams.sinks.mqtt import check_available

            check_available()

    def _add(self, config: StreamConfig, origin: str, extra_sinks: list[Sink] | None = None) -> Stream:
        self._check(config, origin)
        with self._lock:
            if config.id in self._streams:
                raise Conflict(f"a stream with id {config.id!r} already exists")
            stream = Stream(config, self.deps, origin, extra_sinks)
            self._streams[config.id] = stream
        return stream.start()

    def create(self, data: Any, origin: str = "api", extra_sinks: list[Sink] | None = None) -> Stream:
        config = data if isinstance(data, StreamConfig) else parse_stream(data)
        stream = self._add(config, origin, extra_sinks)
        if origin == "api":
            self._save()
        return stream

    def replace(self, stream_id: str, data: Any) -> Stream:
        if isinstance(data, dict):
            data = {"id": stream_id, **data}
        config = parse_stream(data)
        if config.id != stream_id:
            raise Unprocessable(f"id: the body's id {config.id!r} differs from the path's {stream_id!r}")
        old = self._editable(stream_id)
        self._check(config, "api")
        old.stop()
        self.metrics.forget(stream_id)  # before the new stream takes its own histogram children
        with self._lock:
            stream = Stream(config, self.deps, "api")
            self._streams[stream_id] = stream
        stream.start()
        self._save()
        return stream

    def delete(self, stream_id: str, origin: str | None = None) -> None:
        stream = self._editable(stream_id) if origin is None else self.get(stream_id)
        with self._lock:
            self._streams.pop(stream_id, None)
        stream.stop()
        self.metrics.forget(stream_id)
        if stream.origin == "api":
            self._save()

    def _editable(self, stream_id: str) -> Stream:
        stream = self.get(stream_id)
        if stream.origin != "api":
            where = "the streams file" if stream.origin == "file" else "/inference_pipelines"
            raise Conflict(f"stream {stream_id!r} comes from {where}; change it there")
        return stream

    def set_paused(self, stream_id: str, paused: bool) -> Stream:
        stream = self.get(stream_id)
        stream.pause() if paused else stream.resume()
        if stream.origin == "api":
            stream.config = stream.config.model_copy(update={"paused": paused})
            self._save()
        return stream
