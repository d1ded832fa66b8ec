"""Dynamic batching: concurrent requests for one model are gathered for a few milliseconds and run as one
engine batch, then each request gets its own rows back. Only for engines with a dynamic batch dimension.
A request that is alone in the model runs at once: the window costs nothing without concurrency."""

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


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], list[np.ndarray]], max_batch: int, window_seconds: float,
                 name: str = "batcher", in_flight: Callable[[], int] | None = None):
        self._run = run
        # Requests currently inside the model: waiting only pays when others may join the batch.
        self._in_flight = in_flight
        self.max_batch = max(1, max_batch)
        self.window = window_seconds
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self.batches = 0
        self.images = 0
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Outputs for `tensor`'s rows, computed in whatever batch it joined."""
        pending = _Pending(tensor)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.outputs

    def _work(self) -> None:
        while True:
            batch = [self._queue.get()]
            size = len(batch[0].tensor)
            alone = self._in_flight is not None and self._in_flight() <= 1 and self._queue.empty()
            deadline = time.monotonic() + (0.0 if alone else self.window)
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
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
        self.batches += 1
        self.images += len(stacked)
        offset = 0
        for item in batch:
            rows = len(item.tensor)
            item.outputs = [output[offset:offset + rows] for output in outputs]
            offset += rows
            item.done.set()
