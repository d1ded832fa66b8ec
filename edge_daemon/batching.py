"""Dynamic batching: concurrent requests for one model are gathered for a few milliseconds and run as one
engine batch, then each request gets its own rows back. Only for engines with a dynamic batch dimension.

A batch waits for more requests only while some are on their way (announced with `expect`, still decoding or
preprocessing) and at most the window: a request alone runs at once, and a batch holding everyone who could
join never idles the engine for the rest of the window."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np


class _Pending:
    __slots__ = ("done", "error", "outputs", "tensor")

    def __init__(self, tensor: np.ndarray):
        self.tensor = tensor
        self.done = threading.Event()
        self.outputs: list[np.ndarray] = []
        self.error: BaseException | None = None


class Arrival:
    """A request on its way to the batcher; `close` (idempotent) says it arrived or gave up."""

    __slots__ = ("_batcher", "_open")

    def __init__(self, batcher: DynamicBatcher):
        self._batcher = batcher
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._batcher._arrived()


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], list[np.ndarray]], max_batch: int, window_seconds: float,
                 name: str = "batcher", workers: int = 1):
        """`workers`: batches gathered and run at once (the engine slots), so one batch's gathering and the
        callers' pre- and postprocessing overlap another's run instead of idling the engine."""
        self._run = run
        self._expected = 0  # announced requests not yet queued: waiting only pays while some are coming
        self._lock = threading.Lock()
        self.max_batch = max(1, max_batch)
        self.window = window_seconds
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self.batches = 0
        self.images = 0
        for index in range(max(1, workers)):
            threading.Thread(target=self._work, name=f"{name} #{index}", daemon=True).start()

    def expect(self) -> Arrival:
        """Announce a request that will call `run` soon (close the arrival if it never does)."""
        with self._lock:
            self._expected += 1
        return Arrival(self)

    def _arrived(self) -> None:
        with self._lock:
            self._expected -= 1

    def run(self, tensor: np.ndarray, arrival: Arrival | None = None) -> list[np.ndarray]:
        """Outputs for `tensor`'s rows, computed in whatever batch it joined."""
        pending = _Pending(tensor)
        self._queue.put(pending)
        if arrival is not None:
            arrival.close()  # after the put: the batch being gathered never misses a request it counted
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.outputs

    def _work(self) -> None:
        while True:
            batch = [self._queue.get()]
            size = len(batch[0].tensor)
            deadline = time.monotonic() + self.window
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._expected <= 0 and self._queue.empty()):
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                batch.append(item)
                size += len(item.tensor)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            stacked = batch[0].tensor if len(batch) == 1 else np.concatenate([item.tensor for item in batch])
            outputs = self._run(stacked)
        except BaseException as error:  # noqa: BLE001 (handed to every waiting request)
            for item in batch:
                item.error = error
                item.done.set()
            return
        with self._lock:
            self.batches += 1
            self.images += len(stacked)
        offset = 0
        for item in batch:
            rows = len(item.tensor)
            item.outputs = [output[offset:offset + rows] for output in outputs]
            offset += rows
            item.done.set()
