"""One running stream: its grabber, its inference loop at up to `max_fps`, tracking, and its sinks."""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import orjson

from edge_daemon.errors import ApiError
from edge_daemon.images.url_fetch import UrlPolicy
from edge_daemon.inference import InferenceParams, LoadedModel, PreparedImage
from edge_daemon.models.store import ModelId
from edge_daemon.processing.detection import DetectionParams
from edge_daemon.processing.preprocess import Geometry
from edge_daemon.service import InferenceService
from edge_daemon.streams.config import StreamConfig
from edge_daemon.streams.grabber import Frame, FrameBuffers, FrameSlot, Grabber, Status
from edge_daemon.streams.masking import mask_url, scrub
from edge_daemon.streams.metrics import StreamMetrics
from edge_daemon.streams.sinks import Message, Sink, SinkStats, build_sink
from edge_daemon.streams.sinks.sse import EventHub, SubscriberLimit
from edge_daemon.streams.sources import OpenContext
from edge_daemon.streams.tracking import IouTracker, Zones, zone_events

log = logging.getLogger("edge_daemon.streams")

# Model errors no retry fixes: unknown model, unusable model, registry refusal.
FATAL_STATUSES = (401, 403, 404, 422)
# Whole frames are kept this long after a picture of the stream was last asked for.
PIXELS_KEPT_SECONDS = 30.0
MEASURED_AFTER_FRAMES = 10  # frames read before the frame-gap average (which starts at a guess) is reported


def iso_time(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class StreamDeps:
    """What every stream shares: the service (engines, batching), the address policy, the share of engine
    slots streams may hold, metrics, the SSE connection cap and the buffers readers convert frames into."""

    service: InferenceService
    policy: UrlPolicy
    share: threading.BoundedSemaphore
    metrics: StreamMetrics
    subscribers: SubscriberLimit
    frame_buffers: FrameBuffers = field(default_factory=lambda: FrameBuffers(keep=os.cpu_count() or 1))


class Stream:
    def __init__(self, config: StreamConfig, deps: StreamDeps, origin: str = "api",
                 extra_sinks: list[Sink] | None = None):
        self.config = config
        self.origin = origin  # "api" (persisted), "file" (the streams file) or "pipeline" (Roboflow routes)
        self.deps = deps
        self.status = Status()
        self.slot = FrameSlot()
        self.hub = EventHub(deps.subscribers)
        self.sinks: list[Sink] = [build_sink(sink, index, config.id, deps.policy)
                                  for index, sink in enumerate(config.sinks)] + list(extra_sinks or [])
        # Below the stall timeout, so a read that timed out is noticed (and its stale frame refused) in time.
        read_timeout = 0.75 * config.stall_timeout
        context = OpenContext(config.open_timeout, read_timeout, deps.policy)
        decode = deps.metrics.decode.labels(config.id)
        self.grabber = Grabber(config, context, self.slot, self.status, on_state=self._state_changed,
                               on_frame=decode.observe, converter=self, buffers=deps.frame_buffers)
        self._frame_age = deps.metrics.frame_age.labels(config.id)
        self.params = InferenceParams(detection=DetectionParams(
            confidence=config.confidence, iou_threshold=config.iou_threshold, max_detections=config.max_detections,
            class_filter=tuple(config.classes) if config.classes else None))
        self.model_id = ModelId.parse(config.model_id)
        self.tracker = IouTracker() if config.tracking else None
        self.zones = Zones([(zone.name, zone.points) for zone in config.zones])
        self.inferred = 0
        self.skipped = 0  # frames not inferred because the stream share was busy (counted in dropped)
        self.latest: dict[str, Any] | None = None
        self.latest_pixels: np.ndarray | None = None  # the frame `latest` is about, kept while pictures are asked
        self.colours: dict[str, str] = {}
        self._signature: tuple[tuple[str, int], ...] | None = None
        self._described = False
        self._lock = threading.Lock()
        self._pictures = threading.Condition(self._lock)
        self._pixels_wanted_until = 0.0  # monotonic; whole frames are kept until then
        # When `latest` had no whole frame: the network image, its geometry and the frame's width and height.
        self._latest_network: tuple[np.ndarray, Geometry, int, int] | None = None
        self._model: LoadedModel | None = None  # the model instance frames are prepared for, once it answered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._infer_loop, name=f"infer {config.id}", daemon=True)

    # ----- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Stream:
        log.info("stream %s: %s %s -> %s at up to %g fps, %d sink(s)", self.config.id, self.config.kind,
                 mask_url(self.config.source), self.config.model_id, self.config.max_fps, len(self.sinks))
        self.grabber.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.grabber.stop(wait=1.0)
        self._thread.join(2.0)
        self.hub.close()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s of stream %s", sink.label, self.config.id)

    def pause(self) -> None:
        self.grabber.pause()

    def resume(self) -> None:
        self.grabber.resume()

    # ----- what the API shows -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The minimum contract of GET /streams/{id}, plus detail."""
        status = self.status
        with status.lock:
            last_frame_at = status.last_frame_at
            described = {
                "id": self.config.id,
                "source": mask_url(self.config.source),
                "model_id": self.config.model_id,
                "state": status.state,
                "last_error": status.last_error,
                "last_frame_at": iso_time(last_frame_at) if last_frame_at else None,
                "frames": {"read": status.frames_read, "inferred": self.inferred,
                           "dropped": status.frames_dropped + self.skipped},
                "reconnects": status.reconnects,
                "waiting_to_open": self.grabber.waiting_to_open,
                "source_info": dict(status.source_info),
            }
            interval = self.slot.frame_interval
            if status.state == "running" and status.frames_read >= MEASURED_AFTER_FRAMES and interval > 0:
                # As frames arrive: the container's `fps` is a guess for MJPEG over HTTP (FFmpeg says 25).
                described["source_info"]["measured_fps"] = round(1.0 / interval, 1)
        described["origin"] = self.origin
        return described

    def describe(self) -> dict[str, Any]:
        described = self.snapshot()
        described["config"] = self.config.public()
        described["sinks"] = [{"sink": label, "sent": stats.sent, "dropped": stats.dropped, "failed": stats.failed,
                               **stats.extra} for label, stats in self.sink_stats().items()]
        return described

    def sink_stats(self) -> dict[str, SinkStats]:
        return {sink.label: sink.stats() for sink in self.sinks}

    # ----- publishing -------------------------------------------------------------------------------
    def _publish(self, message: Message) -> None:
        for sink in self.sinks:
            try:
                sink.send(message)
            except Exception:
                log.exception("sink %s of stream %s failed", sink.label, self.config.id)
        self.hub.publish(message)

    def _state_changed(self, state: str) -> None:
        with self.status.lock:
            error = self.status.last_error
        body = orjson.dumps({"stream_id": self.config.id, "state": state, "last_error": error,
                             "at": iso_time(time.time())})
        self._publish(Message("state", body))

    # ----- pictures ---------------------------------------------------------------------------------
    def picture(self, timeout: float | None = None) -> tuple[dict[str, Any], np.ndarray] | None:
        """The latest result and the whole frame it is about; None at once while there is no result yet.

        Whole frames are kept only for PIXELS_KEPT_SECONDS after a picture was last asked for (preview, latest
        picture): the rest of the time only the network-size image of a frame waits for inference. So the first
        picture asked for waits up to `timeout` for the next inferred frame (by default two inference periods
        and a camera frame, at most 10 s).
        """
        if timeout is None:
            timeout = min(10.0, 2.0 / self.config.max_fps + 1.0)
        with self._pictures:
            self._pixels_wanted_until = time.monotonic() + PIXELS_KEPT_SECONDS
            if self.latest is not None and self.status.state == "running":
                self._pictures.wait_for(lambda: self.latest_pixels is not None, timeout)
            latest, pixels, network = self.latest, self.latest_pixels, self._latest_network
        if latest is None:
            return None
        if pixels is None and network is not None:  # paused or stalled since: the model's view, at full size
            pixels = self._network_picture(*network)
        return (latest, pixels) if pixels is not None else None

    def _network_picture(self, network: np.ndarray, geometry: Geometry, width: int, height: int) -> np.ndarray:
        """The network-size image a result was inferred on, drawn back over a grey frame of the camera's size."""
        height_in, width_in = network.shape[:2]
        left, top, right, bottom = self._region_box(width, height)
        canvas = np.full((height, width, 3), 114, np.uint8)
        matrix = geometry.network_to_original((width_in, height_in))
        canvas[top:bottom, left:right] = cv2.warpAffine(
            network, matrix, (right - left, bottom - top), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(114, 114, 114))
        return canvas

    # ----- frame conversion (the grabber's reader thread) ----------------------------------------------
    def keeps_pixels(self) -> bool:
        return time.monotonic() < self._pixels_wanted_until

    def prepare(self, pixels: np.ndarray) -> PreparedImage | None:
        """The network-size image of the frame (its region of interest) for the model that last answered."""
        model = self._model
        if model is None:
            return None
        try:
            prepared = model.prepare(self._region(pixels), self.params)
        except Exception:  # the whole frame goes on instead, and inference reports any error
            log.debug("stream %s: preparing a frame failed", self.config.id, exc_info=True)
            return None
        if np.shares_memory(prepared.pixels, pixels):  # `pixels` is a reader's buffer, converted into again
            prepared = replace(prepared, pixels=prepared.pixels.copy())
        return prepared

    def _region(self, pixels: np.ndarray) -> np.ndarray:
        """The region of interest of a whole frame (a view)."""
        left, top, right, bottom = self._region_box(pixels.shape[1], pixels.shape[0])
        return pixels[top:bottom, left:right]

    def _region_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The region of interest (left, top, right, bottom) in a frame of this size: all of it without one."""
        if not self.config.roi:
            return 0, 0, width, height
        x1, y1, x2, y2 = self.config.roi
        left, top = int(x1 * width), int(y1 * height)
        return left, top, max(left + 1, int(x2 * width)), max(top + 1, int(y2 * height))

    # ----- inference --------------------------------------------------------------------------------
    def _infer_loop(self) -> None:
        interval = 1.0 / self.config.max_fps
        next_at = time.monotonic()
        gate = self.deps.service.gate
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            frame = self.slot.take(0.5)
            if frame is None or self._stop.is_set():
                continue
            # Paced from the schedule, not from when the frame came: a late frame must not stretch every period.
            next_at = max(next_at + interval, time.monotonic())
            self.slot.want_by(next_at)  # the reader has the next frame converted, and fresh, by then
            # Interactive requests first: when HTTP requests queue for an engine, or streams already hold
            # their share of engine slots, this frame is skipped (counted as dropped) rather than queued.
            if gate.waiting >= max(1, gate.max_queue // 2) or not self.deps.share.acquire(timeout=interval):
                self.skipped += 1
                continue
            try:
                self._infer(frame)
            finally:
                self.deps.share.release()

    def _infer(self, frame: Frame) -> None:
        width, height = frame.width, frame.height
        left, top = self._region_box(width, height)[:2]
        image = frame.prepared if frame.prepared is not None else self._region(frame.pixels)
        try:
            result = self.deps.service.infer_pixels(self.model_id, [image], self.params)
        except ApiError as error:
            self._model = None  # unloaded or reloaded: whole frames until the model answers again
            message = f"inference: {error.message}"
            if error.status in FATAL_STATUSES:
                log.error("stream %s stops: %s", self.config.id, message)
                self.status.set("failed", message)
                self._stop.set()
                self.grabber.stop(wait=0)
                self._state_changed("failed")
            else:
                self.status.set(self.status.state, message)
            return
        except Exception as error:
            log.exception("stream %s inference failed", self.config.id)
            self.status.set(self.status.state, scrub(f"inference: {error}", self.config.secrets()))
            return
        response = result.responses[0]
        predictions = response.get("predictions")
        if isinstance(predictions, list):
            if left or top:
                _shift(predictions, left, top)
            response["image"] = {"width": width, "height": height}
        events = self._track(predictions if isinstance(predictions, list) else [], width, height)
        payload = {**response, "stream_id": self.config.id, "frame_timestamp": iso_time(frame.captured_at),
                   "frame_id": frame.index}
        if self.config.zones and isinstance(predictions, list):
            payload["zones"] = self.zones.counts(predictions, width, height)
        counts = Counter(p["class"] for p in predictions) if isinstance(predictions, list) else Counter()
        signature = tuple(sorted(counts.items()))
        changed, self._signature = signature != self._signature, signature
        if not self._described:
            self._described = True
            self.colours = dict(result.model.metadata.colors)
            for sink in self.sinks:
                sink.describe_classes(list(result.model.metadata.class_names))
        self._frame_age.observe(time.monotonic() - frame.monotonic)
        self._model = result.model
        with self._pictures:
            self.latest, self.latest_pixels = payload, frame.pixels
            self._latest_network = (None if frame.pixels is not None else
                                    (frame.prepared.pixels, frame.prepared.geometry, width, height))
            self.inferred += 1
            if frame.pixels is not None:
                self._pictures.notify_all()
        self._publish(Message("detections", orjson.dumps(payload), changed))
        self._publish(Message("counts", orjson.dumps(dict(counts)), changed))
        for event in events:
            event.update(stream_id=self.config.id, frame_timestamp=payload["frame_timestamp"])
            self._publish(Message("events", orjson.dumps(event)))

    def _track(self, predictions: list[dict[str, Any]], width: int, height: int) -> list[dict[str, Any]]:
        if self.tracker is None:
            return []
        started, ended = self.tracker.update(predictions)
        return zone_events(self.tracker, self.zones, predictions, started, ended, width, height)


def _shift(predictions: list[dict[str, Any]], left: int, top: int) -> None:
    """Predictions on the region of interest, moved into whole-frame coordinates."""
    for prediction in predictions:
        prediction["x"] += left
        prediction["y"] += top
        for point in prediction.get("points") or []:
            point["x"] += left
            point["y"] += top
