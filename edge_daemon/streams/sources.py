"""Opening cameras: one opener per source kind, chosen from one table.

Every open and read is bounded: OpenCV's FFmpeg backend gets open and read timeouts (without them a frozen RTSP
camera blocks `read()` for 30 s or more), snapshots are fetched with a deadline. A read can still block longer
than asked (OpenCV does), which is why the grabber also has a watchdog; see grabber.py.

OpenCV's FFmpeg backend opens one capture at a time in a process (a global lock around the whole open), so an
open here is kept short and a camera that cannot answer never takes its turn:
- a camera must answer before OpenCV opens it (RTSP(S): an OPTIONS request; MJPEG over http(s): a HEAD of its
  path; over TLS, the handshake first); a hung or unreachable camera fails that on its own time, not the lock's;
- FFmpeg's stream probe stops at half a second of video and skips its 20-frame frame-rate estimate (the rate is
  in the stream's own headers), where by default it waited for 5 s of video: 5.2 s per open of a 5 fps camera;
- opens wait their turn in `_FFMPEG_OPENS` with an `OpenTurn`, where the grabber can see that an open has not
  begun yet, and an attempt it gave up on leaves the queue instead of opening.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge_daemon.errors import ApiError
from edge_daemon.images.url_fetch import UrlPolicy, fetch_url, resolve_checked
from edge_daemon.streams.config import StreamConfig

FFMPEG_OPTIONS_VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
QUICK_PROBE = {"fpsprobesize": "0", "analyzeduration": "500000"}  # FFmpeg's defaults: 20 frames, 5 s


def add_quick_probe_options(environ: MutableMapping[str, str] = os.environ) -> None:
    """Add QUICK_PROBE to OpenCV's FFmpeg options variable, keeping every option the operator set there."""
    current = environ.get(FFMPEG_OPTIONS_VARIABLE, "")
    chosen = {pair.split(";", 1)[0].strip() for pair in current.split("|") if pair.strip()}
    extra = [f"{key};{value}" for key, value in QUICK_PROBE.items() if key not in chosen]
    if extra:
        environ[FFMPEG_OPTIONS_VARIABLE] = "|".join([current, *extra] if current else extra)


add_quick_probe_options()  # at import, before any reader thread: OpenCV reads the variable at each open


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


@dataclass
class OpenTurn:
    """One open attempt's place in the queue of FFmpeg opens: whether it joined, when its open began (None while
    it waits for other cameras' opens), and `cancelled`, set by whoever gave up on it."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    queued: bool = False
    started_at: float | None = None

    @property
    def waiting(self) -> bool:
        return self.queued and self.started_at is None


_FFMPEG_OPENS = threading.Lock()


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


def _check_network(url: str, context: OpenContext) -> tuple[str, int]:
    """The address (checked against the URL policy) and port to reach the camera at."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise SourceError("camera URL has no host")
    port = parts.port or {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}.get(parts.scheme, 0)
    try:
        return resolve_checked(parts.hostname, port, context.policy), port
    except ApiError as error:
        raise SourceError(error.message.replace("image URL", "camera URL")) from None


def _unverified_tls() -> ssl.SSLContext:
    """TLS as FFmpeg speaks it to cameras by default (`tls_verify` 0: cameras carry self-signed certificates).
    Only for the liveness check below, which sends no credentials."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _liveness_request(url: str) -> bytes:
    """What asks the camera to say anything at all: RTSP `OPTIONS`, or an HTTP `HEAD` (no body, so even a camera
    that serves one client at a time is free again at once). The path only: no user info, no query string (cheap
    cameras carry their password there), no credentials."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if parts.scheme in ("rtsp", "rtsps"):
        return f"OPTIONS {parts.scheme}://{host}{parts.path or '/'} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: edge-daemon\r\n\r\n".encode()
    return (f"HEAD {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edge-daemon\r\n"
            "Connection: close\r\n\r\n").encode()


def _camera_answers(url: str, address: str, port: int, timeout: float) -> None:
    """Raise SourceError if, within `timeout`, the camera does not accept a connection, complete a TLS handshake
    (rtsps, https) or send anything back to an RTSP OPTIONS or HTTP HEAD request: a hung camera, which would
    otherwise hold the one-at-a-time FFmpeg open for its whole timeout. Any reply counts (one that wants
    credentials, says 404 or 405, or closes the connection, is alive, and OpenCV decides); no credentials are
    sent."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            raw.settimeout(max(0.01, deadline - time.monotonic()))  # the TLS socket keeps it
            connection = raw
            if parts.scheme in ("rtsps", "https"):
                connection = _unverified_tls().wrap_socket(raw, server_hostname=parts.hostname)
            connection.sendall(_liveness_request(url))
            connection.settimeout(max(0.01, deadline - time.monotonic()))
            connection.recv(64)
    except TimeoutError:
        raise SourceError(f"could not open the stream: the camera did not answer within {timeout:g} s") from None
    except (ConnectionResetError, ssl.SSLError):
        return  # it answered, by closing or with TLS OpenCV may still speak: let OpenCV decide
    except OSError as error:
        raise SourceError(f"could not open the stream: {error.strerror or type(error).__name__}") from None


def _ffmpeg(url: str, context: OpenContext, decoder_threads: int, turn: OpenTurn) -> cv2.VideoCapture:
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(context.open_timeout * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(context.read_timeout * 1000)]
    if decoder_threads:
        # OpenCV's default is a decoder thread per core, each with its own frame buffers: about 12 MB more
        # RSS per 720p H.264 stream on two cores, and more on bigger boxes, for rates a camera never needs.
        params += [cv2.CAP_PROP_N_THREADS, decoder_threads]
    turn.queued = True
    with _FFMPEG_OPENS:
        if turn.cancelled.is_set():
            raise SourceError("gave up before its turn to open came (other cameras were opening)")
        turn.started_at = time.monotonic()
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def _open_network(config: StreamConfig, context: OpenContext, turn: OpenTurn) -> Capture:
    address, port = _check_network(config.source, context)
    _camera_answers(config.source, address, port, context.open_timeout)
    capture = _ffmpeg(config.source, context, config.decoder_threads, turn)
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"could not open the {config.kind} stream (unreachable, refused or not a video)")
    return OpenCvCapture(capture, read_timeout=context.read_timeout)


def _open_file(config: StreamConfig, context: OpenContext, turn: OpenTurn) -> Capture:
    path = config.source.removeprefix("file://")
    if not os.path.isfile(path):
        raise SourceError("video file not found")
    capture = _ffmpeg(path, context, config.decoder_threads, turn)
    if not capture.isOpened():
        capture.release()
        raise SourceError("could not open the video file")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    return OpenCvCapture(capture, pace=1.0 / min(max(fps, 1.0), 120.0), loop=config.loop)


def _open_v4l2(config: StreamConfig, context: OpenContext, turn: OpenTurn) -> Capture:
    capture = cv2.VideoCapture(config.source, cv2.CAP_V4L2)
    if not capture.isOpened():
        capture.release()
        raise SourceError("could not open the V4L2 device")
    return OpenCvCapture(capture)


def _open_snapshot(config: StreamConfig, context: OpenContext, turn: OpenTurn) -> Capture:
    policy = UrlPolicy(**{**context.policy.__dict__, "timeout": context.read_timeout})
    return SnapshotCapture(config.source, config.snapshot_interval, policy)


OPENERS: dict[str, Callable[[StreamConfig, OpenContext, OpenTurn], Capture]] = {
    "rtsp": _open_network,
    "mjpeg": _open_network,
    "snapshot": _open_snapshot,
    "file": _open_file,
    "v4l2": _open_v4l2,
}


def open_source(config: StreamConfig, context: OpenContext, turn: OpenTurn | None = None) -> Capture:
    """Open the camera `config` names; raises SourceError with a message fit for `last_error`. `turn` shows
    whether the open is still queued behind other cameras' (and lets the caller give up on it there)."""
    return OPENERS[config.kind](config, context, turn or OpenTurn())
