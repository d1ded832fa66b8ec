"""A circuit breaker for a remote engine: after a few failures in a row, calls fail at once for a while.

Without it, every request to a dead server would wait for its connection attempts and time-outs before the
client got its 503; with it, the box answers (or falls back) immediately and probes the server with one call
once `open_seconds` have passed ("half-open"). A success closes the circuit again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 3, open_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.failure_threshold = max(1, failure_threshold)
        self.open_seconds = max(0.0, open_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        """closed (calls go through), open (calls fail fast) or half-open (one probe call is allowed)."""
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self.open_seconds else "open"

    def seconds_until_retry(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.open_seconds - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may go to the server now; in half-open state only one caller gets through."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half-open" and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False
            self.last_error = None

    def failure(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            self.last_error = reason
            if self._probing or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()  # (re)open: the next probe comes after another full wait
            self._probing = False
