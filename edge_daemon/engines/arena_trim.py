"""When to shrink ONNX Runtime's CPU memory arena, so memory follows the recent load and not the worst burst.

The arena keeps every block it ever grew to: one burst of batch-16 requests to a 384 px detector leaves
~150 MB resident for good (batch 8: ~60 MB). Disabling the arena instead costs a page fault per tensor on
every run. So the arena stays, and once a period passes whose largest batch was smaller than the largest
since the last shrink, one run asks ORT to give its unused blocks back ("memory.enable_memory_arena_shrinkage").
A steady load never shrinks (every period has the same largest batch); a burst is given back one to two
periods later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ArenaTrimPolicy:
    """Decides, run by run, whether this run should shrink the arena afterwards. Thread-safe."""

    def __init__(self, period_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.period = period_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._period_start = clock()
        self._period_peak = 0        # largest batch run in the current period
        self._held_peak = 0          # largest batch since the arena last shrank (what it is sized for)
        self.shrinks = 0

    def should_shrink(self, batch: int) -> bool:
        """Record a run of `batch` images; True when this run is the one to shrink the arena after."""
        if self.period <= 0:
            return False
        with self._lock:
            now = self._clock()
            shrink = False
            if now - self._period_start >= self.period:
                shrink = self._period_peak < self._held_peak
                if shrink:
                    self._held_peak = 0
                    self.shrinks += 1
                self._period_start, self._period_peak = now, 0
            self._period_peak = max(self._period_peak, batch)
            self._held_peak = max(self._held_peak, batch)
            return shrink
