"""A bounded queue in front of the engines: a full box answers 503 + Retry-After at once instead of
letting latency grow without bound, and no request waits longer than its deadline."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from edge_daemon.errors import ServiceUnavailable


class EngineGate:
    def __init__(self, slots: int, max_queue: int, timeout: float):
        self.slots = max(1, slots)
        self.max_queue = max(0, max_queue)
        self.timeout = timeout
        self._semaphore = threading.BoundedSemaphore(self.slots)
        self._lock = threading.Lock()
        self.waiting = 0
        self.rejected = 0

    @contextmanager
    def enter(self) -> Iterator[None]:
        """Hold one engine slot for the duration of the block, or raise 503."""
        if self._semaphore.acquire(blocking=False):
            try:
                yield
            finally:
                self._semaphore.release()
            return
        with self._lock:
            if self.waiting >= self.max_queue:
                self.rejected += 1
                raise ServiceUnavailable(f"server busy: {self.waiting} requests already waiting for an engine",
                                         headers={"Retry-After": "1"})
            self.waiting += 1
        try:
            acquired = self._semaphore.acquire(timeout=self.timeout)
        finally:
            with self._lock:
                self.waiting -= 1
        if not acquired:
            with self._lock:
                self.rejected += 1
            raise ServiceUnavailable(f"server busy: no engine free within {self.timeout:g} s",
                                     headers={"Retry-After": "1"})
        try:
            yield
        finally:
            self._semaphore.release()
