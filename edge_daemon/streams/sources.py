"""Opening cameras: one opener per source kind, chosen from one table.

Every open and read is bounded: OpenCV's FFmpeg backend gets open and read timeouts (without them a frozen RTSP
camera blocks `read()` for 30 s or more), snapshots are fetched with a deadline. A read can still block longer
than asked (OpenCV does), which is why the grabber also has a watchdog; see grabber.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge_daemon.errors import ApiError
from edge_daemon.images.url_fetch import UrlPolicy, fetch_url, resolve_checked
from edge_daemon.streams.config import StreamConfig


class SourceError(Exception):
    """The camera could not be opened or read (message is safe to show: no credentials)."""


class Capture(Protocol):
    """A camera read in two steps, so frames nobody will infer on are never converted to BGR pixels."""

    def grab(self) -> bool:
        """Take in the next frame (demux and decode); False when the source has ended or failed."""

    def retrieve(self, into: np.ndarray | None = None) -> np.ndarray | None:
        """The last grabbed frame as BGR pixels, or None if it cannot be converted. Written into `into` where
        that array has the frame's shape (a new array otherwise); the caller must not keep `into`'s old
        contents. A source may ignore `into` and return an array of its own."""

    def info(self) -> dict[str, Any]:
        """width, height, fps and codec, as far as the source knows them."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class OpenContext:
    """What an opener needs besides the stream config: timeouts and the network policy."""

    open_timeout: float
    read_timeout: float
    policy: UrlPolicy


def _fourcc(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text.strip("\x00 ") if text.isprintable() else ""


class OpenCvCapture:
    """RTSP/RTSPS, HTTP MJPEG, V4L2 and files through OpenCV (FFmpeg backend for network sources)."""

    def __init__(self, capture: cv2.VideoCapture, pace: float = 0.0, loop: bool = False,
                 read_timeout: float = 0.0):
        self._capture = capture
        self._read_timeout = read_timeout
        self._pace = pace  # seconds per frame for files (read them in real time, not as fast as possible)
        self._loop = loop
        self._next = time.monotonic()

    def grab(self) -> bool:
        if self._pace:
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next = max(self._next + self._pace, time.monotonic() - self._pace)
        started = time.monotonic()
        ok = self._capture.grab()
        if self._read_timeout and time.monotonic() - started >= 0.9 * self._read_timeout:
            # FFmpeg's read interrupt fired: OpenCV may still hand back a stale or broken frame; not a new one.
            raise SourceError(f"no frame within the {self._read_timeout:g} s read timeout (camera frozen?)")
        if not ok and self._loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok = self._capture.grab()
        return bool(ok)

    def retrieve(self, into: np.ndarray | None = None) -> np.ndarray | None:
        ok, frame = self._capture.retrieve() if into is None else self._capture.retrieve(into)
        return frame if ok else None

    def info(self) -> dict[str, Any]:
        c = self._capture
        return {"width": int(c.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(c.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                "fps": round(float(c.get(cv2.CAP_PROP_FPS)), 2), "codec": _fourcc(c.get(cv2.CAP_PROP_FOURCC)),
                "backend": c.getBackendName()}

    def close(self) -> None:
        self._capture.release()


class SnapshotCapture:
    """An HTTP snapshot URL polled every `interval` seconds (SSRF-checked, size- and time-bounded fetch)."""

    def __init__(self, url: str, interval: float, policy: UrlPolicy):
        self._url = url
        self._interval = interval
        self._policy = policy
        self._next = time.monotonic()
        self._shape: tuple[int, ...] = ()
        self._frame: np.ndarray | None = None

    def grab(self) -> bool:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = time.monotonic() + self._interval
        try:
            data = fetch_url(self._url, self._policy)
        except ApiError as error:
            raise SourceError(error.message.replace("image URL", "snapshot URL")) from None
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise SourceError("snapshot URL did not return a decodable image")
        self._shape, self._frame = frame.shape, frame
        return True

    def retrieve(self, into: np.ndarray | None = None) -> np.ndarray | None:
        return self._frame  # decoded anew by each grab, so `into` is not needed

    def info(self) -> dict[str, Any]:
        height, width = self._shape[:2] if self._shape else (0, 0)
        return {"width": width, "height": height, "fps": round(1 / self._interval, 3), "codec": "jpeg",
                "backend": "http-snapshot"}

    def close(self) -> None:
        pass


def read_frame(capture: Capture) -> np.ndarray | None:
    """grab() then retrieve(): the next frame, or None when the source has ended or failed."""
    return capture.retrieve() if capture.grab() else None


def _check_network(url: str, context: OpenContext) -> None:
    parts = urlsplit(url)
    if not parts.hostname:
        raise SourceError("camera URL has no host")
    default_port = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}.get(parts.scheme, 0)
    try:
        resolve_checked(parts.hostname, parts.port or default_port, context.policy)
    except ApiError as error:
        raise SourceError(error.message.replace("image URL", "camera URL")) from None


def _ffmpeg(url: str, context: OpenContext, decoder_threads: int) -> cv2.VideoCapture:
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(context.open_timeout * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(context.read_timeout * 1000)]
    if decoder_threads:
        # OpenCV's default is a decoder thread per core, each with its own frame buffers: about 12 MB more
        # RSS per 720p H.264 stream on two cores, and more on bigger boxes, for rates a camera never needs.
        params += [cv2.CAP_PROP_N_THREADS, decoder_threads]
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def _open_network(config: StreamConfig, context: OpenContext) -> Capture:
    _check_network(config.source, context)
    capture = _ffmpeg(config.source, context, config.decoder_threads)
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"could not open the {config.kind} stream (unreachable, refused or not a video)")
    return OpenCvCapture(capture, read_timeout=context.read_timeout)


def _open_file(config: StreamConfig, context: OpenContext) -> Capture:
    path = config.source.removeprefix("file://")
    if not os.path.isfile(path):
        raise SourceError("video file not found")
    capture = _ffmpeg(path, context, config.decoder_threads)
    if not capture.isOpened():
        capture.release()
        raise SourceError("could not open the video file")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    return OpenCvCapture(capture, pace=1.0 / min(max(fps, 1.0), 120.0), loop=config.loop)


def _open_v4l2(config: StreamConfig, context: OpenContext) -> Capture:
    capture = cv2.VideoCapture(config.source, cv2.CAP_V4L2)
    if not capture.isOpened():
        capture.release()
        raise SourceError("could not open the V4L2 device")
    return OpenCvCapture(capture)


def _open_snapshot(config: StreamConfig, context: OpenContext) -> Capture:
    policy = UrlPolicy(**{**context.policy.__dict__, "timeout": context.read_timeout})
    return SnapshotCapture(config.source, config.snapshot_interval, policy)


OPENERS: dict[str, Callable[[StreamConfig, OpenContext], Capture]] = {
    "rtsp": _open_network,
    "mjpeg": _open_network,
    "snapshot": _open_snapshot,
    "file": _open_file,
    "v4l2": _open_v4l2,
}


def open_source(config: StreamConfig, context: OpenContext) -> Capture:
    """Open the camera `config` names; raises SourceError with a message fit for `last_error`."""
    return OPENERS[config.kind](config, context)
