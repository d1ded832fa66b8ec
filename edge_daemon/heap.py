"""Keep the daemon's resident memory tracking its load, not its worst moment (glibc only; a no-op elsewhere).

A long-running daemon with many threads (camera readers, decoders, request workers) meets two glibc habits:
each thread that allocates may get its own malloc arena (up to 8 per core), and freed memory stays in the
arena that held it. Frames and tensors of a few MB are freed thousands of times a minute, so each arena keeps
its own high-water mark. Capping the arenas at 2 took eight 720p cameras from 371-414 MB to 333-347 MB RSS
(bench/streams.py set-up), and trimming the free pages every 10 s keeps the rest from creeping, at one
`malloc_trim` call per period. A fixed mmap threshold did about as well on memory but cost ~50,000 page faults
a second, and a page fault per large buffer of every HTTP request.

The periodic trim is also why free() itself is told not to give memory back: with glibc's own thresholds, the
capped arenas shrank their heaps at nearly every request's last free and faulted the pages in again at the next
(about 470 page faults, ~2 MB, per `shapes/1` request), costing 1-2 ms of CPU a request. So while trimming is on,
buffers under 32 MB come from the heap (no mmap per image or tensor) and free() never trims; the trim thread
hands the free pages back within a period instead.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (glibc malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
HEAP_BUFFERS_UP_TO = 32 * 2**20  # glibc's largest mmap threshold on 64-bit; above it, mmap as before
NO_TRIM_ON_FREE = 2**31 - 1  # free space atop a heap that makes free() trim (mallopt's largest): never


def _glibc() -> Any | None:
    """glibc's handle, or None on musl, macOS or anything without mallopt and malloc_trim."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
            return None
    except OSError:
        return None
    return libc


class HeapKeeper:
    """Caps malloc arenas at start-up and hands free heap pages back to the OS every `trim_seconds`."""

    def __init__(self, arenas: int, trim_seconds: float):
        self.arenas = arenas
        self.trim_seconds = trim_seconds
        self.trims = 0
        self._libc = _glibc()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._libc is not None

    def start(self) -> HeapKeeper:
        """Apply the arena cap (threads started later use it) and start the trimming thread."""
        if self._libc is None:
            return self
        if self.arenas > 0 and self._libc.mallopt(M_ARENA_MAX, self.arenas) != 1:
            log.warning("could not cap malloc arenas at %d", self.arenas)
        if self.trim_seconds > 0:
            # Both or neither: setting either one turns off glibc's adjusting of both.
            if self._libc.mallopt(M_MMAP_THRESHOLD, HEAP_BUFFERS_UP_TO) == 1:
                self._libc.mallopt(M_TRIM_THRESHOLD, NO_TRIM_ON_FREE)
            self._thread = threading.Thread(target=self._loop, name="heap trim", daemon=True)
            self._thread.start()
        return self

    def trim(self) -> None:
        """Give every free page of every arena back to the OS now (glibc's malloc_trim(0))."""
        if self._libc is not None:
            self._libc.malloc_trim(0)
            self.trims += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.trim_seconds):
            self.trim()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
