"""Failed model loads, remembered: a refused model answers its error at once instead of loading again.

Without this, every request for a model the daemon cannot serve loaded its engine again (about a second,
and for a 110 MB export about as much memory each time while it lasted). A failed load is now recorded with
`edge_daemon.failures.FailureMemo`, the memo that also remembers failed TensorRT builds, and the model is
loaded again only when one of these holds:

- the retry interval (`--model-retry-seconds`) has passed;
- its files changed: their sizes or times differ and so does their sha256 (a `touch` alone changes nothing);
- a person asked: `POST /model/add` or `edge-daemon models build` clear the record;
- the daemon was upgraded (a newer version may serve what the old one refused).

Failures of models whose files are here are kept as JSON files in the cache folder, so a restart and the
`edge-daemon` commands see them. Failures of models that are not here (unknown ids, registry errors) stay in
a bounded in-memory table: a client cycling through made-up ids can fill neither the disk nor the memory.
Only what passes by itself is not remembered (an unreachable registry or remote engine server, a cut-off
download): the next request simply tries again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_daemon import __version__
from edge_daemon.errors import ApiError, failure_stage
from edge_daemon.failures import FailureMemo, Record, retry_at, retry_due
from edge_daemon.hashing import sha256_bytes, sha256_file

# Server-side trouble (5xx, e.g. the registry served an unusable file) may pass: try again sooner.
TRANSIENT_RETRY_SECONDS = 30.0
FOLDER = "failed-loads"


def _file_stats(folder: Path) -> dict[str, list[int]]:
    """Size and modification time of each file: a cheap signature, checked on every request."""
    stats: dict[str, list[int]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file():
                info = entry.stat()
                stats[entry.name] = [info.st_size, info.st_mtime_ns]
    return stats


def _file_digests(folder: Path) -> dict[str, str]:
    return {name: sha256_file(folder / name) for name in sorted(_file_stats(folder))}


def _slug(model_id: str) -> str:
    """One file per model id ('project/version' has exactly one slash and no '..')."""
    project, _, version = model_id.partition("/")
    return f"{project}/{version}"


class LoadFailures:
    def __init__(self, cache_root: Path, retry_seconds: float, on_forget: Callable[[str], None] | None = None):
        self.retry_seconds = retry_seconds
        self.on_forget = on_forget
        self.kept = FailureMemo(Path(cache_root) / FOLDER)
        self.transient = FailureMemo(max_entries=256, on_evict=on_forget)

    # ----- decisions ----------------------------------------------------------------------------------
    def interval(self, record: Record) -> float:
        if int(record.get("status", 500)) >= 500:
            return min(self.retry_seconds, TRANSIENT_RETRY_SECONDS)
        return self.retry_seconds

    def next_try(self, record: Record) -> float:
        return retry_at(record, self.interval(record))

    def still_failing(self, model_id: str, folder: Path | None, api_key: str | None) -> Record | None:
        """The remembered failure when loading again could not help yet, else None (and the record is dropped
        when what it depended on changed)."""
        record = self.kept.get(_slug(model_id)) or self.transient.get(model_id)
        if record is None:
            return None
        if retry_due(record, self.interval(record)) or not self._unchanged(record, folder, api_key):
            if not retry_due(record, self.interval(record)):
                self.forget(model_id)
            return None
        return record

    def _unchanged(self, record: Record, folder: Path | None, api_key: str | None) -> bool:
        if record.get("version") != __version__:
            return False
        if record.get("folder") is None:  # the model was not here: it may have arrived, or a new key may help
            return folder is None and record.get("key_digest") == _key_digest(api_key)
        if folder is None or str(folder) != record["folder"]:
            return False
        try:
            stats = _file_stats(folder)
            if stats == record.get("stats"):
                return True
            if _file_digests(folder) != record.get("sha256"):
                return False
        except OSError:
            return False
        self.kept.put(_slug(str(record["model_id"])), {**record, "stats": stats})  # touched, not changed: skip the hashing next time
        return True

    # ----- bookkeeping --------------------------------------------------------------------------------
    def remember(self, model_id: str, folder: Path | None, api_key: str | None, error: BaseException) -> Record:
        """Record a failed load: its status, message and stage, and what a retry would depend on."""
        if isinstance(error, ApiError):
            status, message, headers = error.status, error.message, dict(error.headers)
        else:
            status, message, headers = 500, f"loading {model_id} failed ({error.__class__.__name__})", {}
        details: dict[str, Any] = {"model_id": model_id, "status": status, "message": message, "headers": headers,
                                   "stage": failure_stage(error), "version": __version__,
                                   "folder": str(folder) if folder is not None else None}
        if folder is not None:
            try:
                details.update(stats=_file_stats(folder), sha256=_file_digests(folder))
                return self.kept.record(_slug(model_id), message, **details)
            except OSError:
                pass  # an unreadable folder or a read-only cache: remember it in memory instead
            details.update(folder=None)
        details["key_digest"] = _key_digest(api_key)
        if status == 503 or (details["stage"] == "registry" and status >= 500):
            # Something the model needs was away (the registry, a remote engine's server) or cut a download
            # off: the answer already says "retry", and the next request does (remembering would only delay
            # the recovery).
            return {**details, "reason": message, "failed_unix": time.time(), "attempts": 1}
        return self.transient.record(model_id, message, **details)

    def forget(self, model_id: str) -> None:
        self.kept.clear(_slug(model_id))
        self.transient.clear(model_id)
        if self.on_forget is not None:
            self.on_forget(model_id)


def as_error(record: Record) -> ApiError:
    """A fresh exception per request: a shared one would collect every request's traceback."""
    return ApiError(str(record["message"]), int(record["status"]), dict(record.get("headers") or {}))


def _key_digest(api_key: str | None) -> str:
    return sha256_bytes((api_key or "").encode())[:16]
