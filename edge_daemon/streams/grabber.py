"""One grabber per camera: a reader thread keeps only the newest frame, and a watchdog replaces it when it stalls.

Every frame is decoded, but only the one inference is waiting for is converted to pixels and goes into a
one-frame slot (the others count as dropped), so inference always sees the freshest picture and no backlog can
build up. OpenCV's `read()` can block far longer than its
read timeout on a frozen camera, so the watchdog never waits on the reader: when no frame arrived within
`stall_timeout` it abandons that reader (it exits by itself whenever its `read()` returns) and opens the camera
again in a new one, after a capped exponential back-off with jitter.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge_daemon.streams.config import StreamConfig
from edge_daemon.streams.masking import mask_url, scrub
from edge_daemon.streams.sources import OpenContext, OpenTurn, SourceError, open_source

log = logging.getLogger("edge_daemon.streams")

INITIAL_BACKOFF = 0.5
WATCH_INTERVAL = 0.1


@dataclass
class Frame:
    pixels: np.ndarray | None  # the whole BGR frame; None when it was prepared and nobody needs it whole
    captured_at: float  # wall clock (epoch seconds), for payloads
    monotonic: float    # for ages
    index: int
    width: int = 0      # of the whole frame, even when only the prepared image was kept
    height: int = 0
    prepared: Any = None  # what FrameConverter.prepare made of it (the network-size image), if anything


class FrameBuffers:
    """Whole-frame buffers the readers convert into, shared by every stream of the daemon.

    A conversion (colour conversion, then the model's resize) takes a millisecond or two and the buffer is free
    again right after it, so a buffer per core serves many cameras, where a buffer per reader held 2.7 MB per
    720p camera for good. At most `keep` are out at once: more conversions at a time than cores only share the
    same cores, so a reader waits for a free buffer (up to `wait` seconds, then converts into a new one) rather
    than allocating a 2.7 MB array whenever eight cameras happen to convert together.
    """

    def __init__(self, keep: int, wait: float = 0.25) -> None:
        self.keep = keep
        self.wait = wait
        self._free: list[np.ndarray] = []
        self._out = 0  # buffers taken and not given back
        self._cond = threading.Condition()

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._cond:
            self._cond.wait_for(lambda: self._out < self.keep, self.wait)
            self._out += 1
            for index, buffer in enumerate(self._free):
                if buffer.shape == shape:
                    return self._free.pop(index)
            if self._free and len(self._free) + self._out > self.keep:
                self._free.pop(0)  # a buffer of another camera's size makes room for this one
        return np.empty(shape, np.uint8)

    def give(self, buffer: np.ndarray) -> None:
        with self._cond:
            self._out -= 1
            if len(self._free) + self._out < self.keep:
                self._free.append(buffer)
            self._cond.notify()

    @property
    def held(self) -> int:
        with self._cond:
            return len(self._free)


class FrameConverter(Protocol):
    """What the stream does with a frame as soon as it is converted, in the reader thread."""

    def prepare(self, pixels: np.ndarray) -> Any | None:
        """The network-size image inference will use (None: keep the whole frame); `pixels` is reused after."""

    def keeps_pixels(self) -> bool:
        """Whether the whole frame must be kept too (someone is watching the picture)."""


class FrameSlot:
    """The latest frame only. `put` reports whether it overwrote one nobody took (a dropped frame).

    Inference says when it will next take a frame (`want_by`); from about one camera frame before then, the
    reader converts what it grabs, so the frame is ready, and fresh, when inference comes for it. A waiting
    `take` always counts as wanting one.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._taken = True
        self._waiting = 0
        self._want_from = math.inf  # monotonic time from which grabbed frames are converted
        self.frame_interval = 0.1   # seconds between grabbed frames (the reader keeps it up to date)

    @property
    def wanted(self) -> bool:
        """Whether a grabbed frame should be converted to pixels now."""
        return self._waiting > 0 or time.monotonic() >= self._want_from

    def want_by(self, deadline: float) -> None:
        """Inference will take a frame at `deadline` (monotonic): convert frames from 1.5 frame intervals before."""
        self._want_from = deadline - 1.5 * self.frame_interval

    def put(self, frame: Frame) -> bool:
        with self._cond:
            dropped = not self._taken
            self._frame, self._taken = frame, False
            self._cond.notify_all()
            return dropped

    def take(self, timeout: float) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout` for one."""
        with self._cond:
            if self._taken:
                self._waiting += 1
                try:
                    if not self._cond.wait_for(lambda: not self._taken, timeout):
                        return None
                finally:
                    self._waiting -= 1
            self._taken = True
            self._want_from = math.inf  # until inference says when it wants the next one
            return self._frame

    def peek(self) -> Frame | None:
        with self._cond:
            return self._frame


@dataclass
class Status:
    """What GET /streams/{id} reports about the camera side."""

    state: str = "starting"
    last_error: str | None = None
    last_frame_at: float | None = None
    frames_read: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    source_info: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, state: str, error: str | None = None) -> None:
        with self.lock:
            self.state = state
            if error is not None:
                self.last_error = error


class _Attempt:
    """One open-and-read cycle, owned by its reader thread; `cancelled` tells an abandoned reader to quit."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.turn = OpenTurn(self.cancelled)  # its place among the process's camera opens
        self.ended = threading.Event()
        self.error: str | None = None
        self.opened_at: float | None = None
        self.last_frame: float | None = None
        self.frames = 0

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self.ended.set()


class Grabber:
    """Keeps `slot` filled with the camera's newest frame through every fault, until stopped."""

    def __init__(self, config: StreamConfig, context: OpenContext, slot: FrameSlot, status: Status,
                 on_state: Callable[[str], None] | None = None,
                 on_frame: Callable[[float], None] | None = None,
                 converter: FrameConverter | None = None, buffers: FrameBuffers | None = None):
        self.config = config
        self.converter = converter
        self.buffers = buffers or FrameBuffers(keep=1)
        self.context = context
        self.slot = slot
        self.status = status
        self._on_state = on_state or (lambda state: None)
        self._on_frame = on_frame or (lambda cpu_seconds: None)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._wake = threading.Event()
        self._index = 0
        self._secrets = config.secrets()
        self._attempt: _Attempt | None = None  # the current open-and-read cycle
        self._thread = threading.Thread(target=self._supervise, name=f"stream {config.id}", daemon=True)
        if config.paused:
            self._paused.set()

    # ----- control ----------------------------------------------------------------------------------
    def start(self) -> Grabber:
        self._thread.start()
        return self

    def stop(self, wait: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(wait)

    def pause(self) -> None:
        self._paused.set()
        self._wake.set()

    def resume(self) -> None:
        self._paused.clear()
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    @property
    def waiting_to_open(self) -> bool:
        """Queued behind other cameras' opens (OpenCV opens one camera at a time per process): why a stream can
        stay `starting` or `reconnecting` for a while with nothing wrong with its own camera."""
        attempt = self._attempt
        return attempt is not None and attempt.turn.waiting  # its turn starts before it can open

    # ----- the watchdog -----------------------------------------------------------------------------
    def _set_state(self, state: str, error: str | None = None) -> None:
        changed = self.status.state != state
        self.status.set(state, error)
        if changed:
            self._on_state(state)

    def _supervise(self) -> None:
        backoff = INITIAL_BACKOFF
        first = True
        while not self._stop.is_set():
            if self._paused.is_set():
                self._set_state("paused")
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._set_state("starting" if first else "reconnecting")
            attempt = self._attempt = _Attempt()
            threading.Thread(target=self._read, args=(attempt,), name=f"reader {self.config.id}",
                             daemon=True).start()
            error, permanent = self._watch(attempt)
            attempt.cancelled.set()  # a reader stuck in read() is abandoned; it exits when read() returns
            if self._stop.is_set():
                break
            if self._paused.is_set():
                continue
            if attempt.frames and attempt.opened_at and time.monotonic() - attempt.opened_at > 2 * backoff:
                backoff = INITIAL_BACKOFF  # it ran for a while: a fresh fault starts the back-off again
            if error is not None:
                log.warning("stream %s (%s): %s", self.config.id, mask_url(self.config.source), error)
            if permanent:
                self._set_state("failed", error)
                return
            first = False
            with self.status.lock:
                self.status.reconnects += 1
                self.status.last_error = error
            self._set_state("reconnecting")
            delay = backoff * random.uniform(0.5, 1.0)  # jitter: cameras that dropped together do not retry together
            backoff = min(backoff * 2, self.config.backoff_cap)
            self._wake.wait(delay)
            self._wake.clear()

    def _watch(self, attempt: _Attempt) -> tuple[str | None, bool]:
        """Wait until the attempt fails, stalls, or the stream is stopped/paused: (error, permanent)."""
        started = time.monotonic()
        stall = self.config.stall_timeout
        if self.config.kind == "snapshot":
            stall = max(stall, self.config.snapshot_interval + self.context.read_timeout + 1)
        while not self._stop.is_set() and not self._paused.is_set():
            if attempt.ended.wait(WATCH_INTERVAL):
                permanent = attempt.error is not None and is_permanent(attempt.error)
                return attempt.error or "camera stream ended", permanent
            now = time.monotonic()
            if attempt.opened_at is None:
                if attempt.turn.waiting:
                    continue  # queued behind other cameras' opens (one at a time): its own time starts with its turn
                begun = attempt.turn.started_at or started
                if now - begun > self.config.open_timeout + stall:
                    return f"camera did not open within {self.config.open_timeout + stall:g} s", False
                continue
            last = attempt.last_frame or attempt.opened_at
            if now - last > stall:
                return f"no frame for {stall:g} s (camera frozen or unreachable)", False
            if attempt.frames and self.status.state != "running":
                self._set_state("running")
        return None, False

    # ----- the reader -------------------------------------------------------------------------------
    def _read(self, attempt: _Attempt) -> None:
        try:
            capture = open_source(self.config, self.context, attempt.turn)
        except SourceError as error:
            attempt.fail(str(error))
            return
        except Exception as error:  # noqa: BLE001 (a library failure must not kill the stream)
            attempt.fail(scrub(f"could not open camera: {error}", self._secrets))
            return
        try:
            if attempt.cancelled.is_set():
                return
            attempt.opened_at = time.monotonic()
            info = capture.info()
            with self.status.lock:
                self.status.source_info = info
            shape: tuple[int, ...] | None = None  # of this camera's frames, once one was converted
            while not attempt.cancelled.is_set():
                cpu_started = time.thread_time()
                grabbed = capture.grab()
                # Only frames inference will want are converted to pixels: the others are decoded, counted and
                # dropped, which saves the colour conversion.
                pixels = prepared = None
                width = height = 0
                if grabbed and self.slot.wanted:
                    pixels, prepared, shape = self._convert(capture, shape)
                    if shape is not None:
                        height, width = shape[:2]
                cpu = time.thread_time() - cpu_started
                if attempt.cancelled.is_set():
                    return
                if not grabbed:
                    attempt.fail("video file ended" if self.config.kind == "file" else "camera stream ended")
                    return
                now = time.monotonic()
                if attempt.last_frame is not None:
                    self.slot.frame_interval += 0.2 * ((now - attempt.last_frame) - self.slot.frame_interval)
                attempt.last_frame = now
                attempt.frames += 1
                self._index += 1
                dropped = True
                if pixels is not None or prepared is not None:
                    dropped = self.slot.put(Frame(pixels, time.time(), now, self._index, width, height, prepared))
                with self.status.lock:
                    self.status.frames_read += 1
                    self.status.frames_dropped += dropped
                    self.status.last_frame_at = time.time()
                self._on_frame(cpu)
        except SourceError as error:
            attempt.fail(str(error))
        except Exception as error:  # noqa: BLE001
            attempt.fail(scrub(f"camera read failed: {error}", self._secrets))
        finally:
            try:
                capture.close()
            finally:
                attempt.ended.set()

    def _convert(self, capture: Any, shape: tuple[int, ...] | None
                 ) -> tuple[np.ndarray | None, Any, tuple[int, ...] | None]:
        """(whole frame or None, prepared image or None, the frame's shape) for the frame just grabbed.

        Where the stream prepares frames and nobody needs them whole, the frame is converted into a shared
        buffer and only the network-size image leaves the reader: no 2.7 MB array per 720p frame to allocate
        (and fault in), to hold while it waits, and to fragment the heap with.
        """
        converter = self.converter
        if converter is None or converter.keeps_pixels() or shape is None:
            pixels = capture.retrieve()  # a new array (the first frame tells the shape buffers must have)
            return pixels, None, None if pixels is None else pixels.shape
        buffer = self.buffers.take(shape)
        try:
            pixels = capture.retrieve(buffer)
            if pixels is None:
                return None, None, shape
            prepared = converter.prepare(pixels)
            if prepared is None:  # the stream cannot prepare yet (model not loaded): the whole frame goes on
                return pixels.copy() if pixels is buffer else pixels, None, pixels.shape
            return None, prepared, pixels.shape
        finally:
            self.buffers.give(buffer)  # untouched when the source returned an array of its own


def is_permanent(error: str) -> bool:
    """Errors no retry can fix: the address policy refuses the host, or the file is missing or over."""
    refused = ("is not allowed", "deny list", "allow list")
    return error.startswith(("video file not found", "video file ended")) or any(r in error for r in refused)
