"""Remembered failures: what failed is not tried again on every request, only when trying could help.

Two things fail expensively and repeatedly when nothing remembers them: a TensorRT build (minutes on a
Jetson) and a model load (a refused 110 MB model costs an engine load, about a second and its memory, on
every request that names it). Both keep one record here (reason, time, attempts, whatever the caller
needs to decide later) and try again only after a retry interval, when what they depend on changes, or
when a person asks for it (`edge-daemon models build`, `POST /model/add`).

Records live as small JSON files (written atomically) where other processes and restarts must see them,
or in a bounded in-memory table where they must not outlive the process (a made-up model id must never
fill a disk or the memory).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_daemon.files import write_atomic

Record = dict[str, Any]


def retry_at(record: Record, interval_seconds: float) -> float:
    """When the failure may be tried again (unix time)."""
    return float(record["failed_unix"]) + max(0.0, interval_seconds)


def retry_due(record: Record, interval_seconds: float, now: float | None = None) -> bool:
    """An interval of 0 or less means: try again every time."""
    return interval_seconds <= 0 or (time.time() if now is None else now) >= retry_at(record, interval_seconds)


def utc_text(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def _valid(record: object) -> bool:
    return isinstance(record, dict) and isinstance(record.get("failed_unix"), (int, float))


def read_record(path: Path) -> Record | None:
    """A failure record file, or None when it is missing or unreadable (which then counts as no failure)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if _valid(record) else None


class FailureMemo:
    """Failure records by name: JSON files under `folder`, or (folder None) an in-memory LRU table.

    `on_evict(name)` is called when the in-memory table drops its oldest record to stay under `max_entries`.
    """

    def __init__(self, folder: Path | None = None, max_entries: int = 512,
                 on_evict: Callable[[str], None] | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.max_entries = max_entries
        self.on_evict = on_evict
        self._memory: OrderedDict[str, Record] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{name}.json"

    def get(self, name: str) -> Record | None:
        if self.folder is not None:
            return read_record(self.path(name))
        with self._lock:
            record = self._memory.get(name)
            if record is not None:
                self._memory.move_to_end(name)
            return dict(record) if record is not None else None

    def record(self, name: str, reason: str, **details: Any) -> Record:
        """Remember a failure now (attempts counted on from an earlier record of the same name)."""
        previous = self.get(name) or {}
        now = time.time()
        record: Record = {**details, "reason": reason[:500],
                          "failed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "failed_unix": now, "attempts": int(previous.get("attempts", 0)) + 1}
        self.put(name, record)
        return record

    def put(self, name: str, record: Record) -> None:
        """Store a record as it is (e.g. an existing one with refreshed details)."""
        if self.folder is not None:
            write_atomic(self.path(name), (json.dumps(record, indent=2) + "\n").encode())
            return
        evicted: list[str] = []
        with self._lock:
            self._memory[name] = dict(record)
            self._memory.move_to_end(name)
            while len(self._memory) > self.max_entries:
                evicted.append(self._memory.popitem(last=False)[0])
        for old in evicted:
            if self.on_evict is not None:
                self.on_evict(old)

    def clear(self, name: str) -> None:
        if self.folder is not None:
            try:
                self.path(name).unlink(missing_ok=True)
            except OSError:
                pass
            return
        with self._lock:
            self._memory.pop(name, None)
