"""Housekeeping for the engine cache, behind `edge-daemon cache ls|prune`: list entries, trim old ones.

Removal respects the per-key locks of `cache.py`, so an engine being built by another process is never
pulled from under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_daemon.engines.cache import ENGINES_DIR, FAILED_PREFIX, LOCKS_DIR, METADATA, STAGING_PREFIX
from edge_daemon.failures import read_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EntryInfo:
    path: Path
    slug: str
    key: str
    model_id: str | None
    backend: str | None
    backend_version: str | None
    precision: str | None
    created: str | None
    build_seconds: float | None
    size_bytes: int
    last_used: float
    valid: bool

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "slug": self.slug, "key": self.key, "model_id": self.model_id,
                "backend": self.backend, "backend_version": self.backend_version, "precision": self.precision,
                "created": self.created, "build_seconds": self.build_seconds, "size_bytes": self.size_bytes,
                "last_used": self.last_used, "valid": self.valid}


def _folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _entry_info(path: Path) -> EntryInfo:
    try:
        metadata = json.loads((path / METADATA).read_text(encoding="utf-8"))
        valid = isinstance(metadata, dict) and metadata.get("key") == path.name
    except (OSError, ValueError):
        metadata, valid = {}, False
    metadata = metadata if isinstance(metadata, dict) else {}
    inputs = metadata.get("key_inputs") if isinstance(metadata.get("key_inputs"), dict) else {}
    stat = path.stat()
    return EntryInfo(path=path, slug=path.parent.name, key=path.name, model_id=metadata.get("model_id"),
                     backend=inputs.get("backend"), backend_version=inputs.get("backend_version"),
                     precision=inputs.get("precision"), created=metadata.get("created"),
                     build_seconds=metadata.get("build_seconds"), size_bytes=_folder_size(path),
                     last_used=stat.st_mtime, valid=valid)


def _entry_dirs(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for slug_dir in sorted(root.iterdir()):
        if not slug_dir.is_dir() or slug_dir.name.startswith("."):
            continue
        for entry in sorted(slug_dir.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                yield entry


def list_entries(cache_dir: Path) -> list[EntryInfo]:
    """Every cached engine under `<cache_dir>/engines`, newest use first."""
    entries = [_entry_info(path) for path in _entry_dirs(Path(cache_dir) / ENGINES_DIR)]
    return sorted(entries, key=lambda entry: entry.last_used, reverse=True)


def list_failures(cache_dir: Path) -> list[dict[str, Any]]:
    """Remembered failed builds (each with its `path`), newest first; unreadable records are skipped."""
    root = Path(cache_dir) / ENGINES_DIR
    records: list[dict[str, Any]] = []
    for path in root.glob(f"*/{FAILED_PREFIX}*.json") if root.is_dir() else []:
        record = read_record(path)
        if record is not None:
            records.append({**record, "path": str(path)})
    return sorted(records, key=lambda record: record["failed_unix"], reverse=True)


def forget_failures(cache_dir: Path) -> None:
    """Drop every failed-build record (readable or not), so the next load tries those builds again."""
    root = Path(cache_dir) / ENGINES_DIR
    for path in root.glob(f"*/{FAILED_PREFIX}*.json") if root.is_dir() else []:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _try_lock(lock_file: Path) -> Iterator[bool]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prune(cache_dir: Path, keep_keys: Iterable[str] | None = None, older_than: float | None = None,
          remove_all: bool = False, now: float | None = None) -> list[EntryInfo]:
    """Remove entries not in `keep_keys`, unused for more than `older_than` seconds, invalid ones, or all.

    Entries being built (their key locked by a process) are skipped. Staging folders left by a crashed build
    are removed when unlocked and older than an hour; `remove_all` also forgets failed builds. Returns what
    was removed.
    """
    if keep_keys is None and older_than is None and not remove_all:
        raise ValueError("say what to prune: keep_keys, older_than or remove_all")
    keep = set(keep_keys) if keep_keys is not None else None
    now = time.time() if now is None else now
    root = Path(cache_dir) / ENGINES_DIR
    removed = _remove_unlocked(root, [
        info for info in list_entries(cache_dir)
        if remove_all or not info.valid or (keep is not None and info.key not in keep)
        or (older_than is not None and now - info.last_used > older_than)])
    _remove_stale_staging(root, now)
    if remove_all:
        forget_failures(cache_dir)
    return removed


def _remove_unlocked(root: Path, entries: list[EntryInfo]) -> list[EntryInfo]:
    """Remove these engine entries, except any whose key another process holds locked (being built)."""
    removed: list[EntryInfo] = []
    for info in entries:
        with _try_lock(root / info.slug / LOCKS_DIR / f"{info.key}.lock") as locked:
            if not locked:
                log.info("not removing %s: a process holds its lock", info.path)
                continue
            shutil.rmtree(info.path, ignore_errors=True)
            removed.append(info)
            log.info("removed cached engine %s (%s)", info.path, info.model_id or "unknown model")
    return removed


def _remove_stale_staging(root: Path, now: float, age: float = 3600.0) -> None:
    """Staging folders whose key is not locked belong to a build that died; remove the old ones."""
    if not root.is_dir():
        return
    for slug_dir in root.iterdir():
        if not slug_dir.is_dir():
            continue
        for staging in slug_dir.glob(f"{STAGING_PREFIX}*"):
            key = staging.name[len(STAGING_PREFIX):].split("-", 1)[0]
            with contextlib.suppress(OSError), _try_lock(slug_dir / LOCKS_DIR / f"{key}.lock") as locked:
                if locked and now - staging.stat().st_mtime > age:
                    shutil.rmtree(staging, ignore_errors=True)


def remove_model(cache_dir: Path, model_id: str) -> list[EntryInfo]:
    """Remove one model's compiled engines and failed-build records, so its next load builds afresh.

    Like `prune`, an entry whose key another process holds locked (being built) is left alone.
    """
    root = Path(cache_dir) / ENGINES_DIR
    removed = _remove_unlocked(root, [info for info in list_entries(cache_dir) if info.model_id == model_id])
    for failure in list_failures(cache_dir):
        if failure.get("model_id") == model_id:
            Path(failure["path"]).unlink(missing_ok=True)
    return removed
