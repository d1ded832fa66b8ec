"""`edge-daemon probe`, `edge-daemon models build` and `edge-daemon cache ls|prune`: see what this box is,
compile engines ahead of time, and look after the engine cache."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edge_daemon.config import Settings
from edge_daemon.engines import CACHE_COUNTERS, cache_admin, choose_backend, create_engine, engine_options
from edge_daemon.errors import ApiError
from edge_daemon.models.manager import ModelManager
from edge_daemon.models.store import WEIGHTS, ModelId
from edge_daemon.platform.probe import current_platform


def probe(settings: Settings, as_json: bool) -> int:
    platform = current_platform()
    choice = choose_backend(platform, settings.backend, settings.precision)
    if as_json:
        print(json.dumps({"platform": platform.to_dict(), "backend": choice.to_dict()}, indent=2))
    else:
        print(platform.summary())
        print(f"backend: {choice.backend} ({choice.precision}); {choice.reason}")
    return 0


def build(settings: Settings, model_id: str) -> int:
    """Resolve (downloading if needed), compile and check a model now, so the first request does not wait.

    Asked for explicitly, it tries again what the daemon remembers as failed: the model's load (a daemon
    sharing this cache then loads it at its next request) and a TensorRT build that failed recently.
    """
    parsed = ModelId.parse(model_id)
    manager = ModelManager(settings.replace(trt_retry_hours=0.0))
    started = time.perf_counter()
    try:
        model = manager.get(parsed, settings.api_key or None, wait=24 * 3600.0, force=True)
    except ApiError as error:
        print(f"{model_id}: {error.message}", file=sys.stderr)
        return 1
    record = getattr(model.engine, "build", None)
    state = "loaded from the engine cache" if record is not None and record.cache_hit else "built"
    print(f"{model_id}: {model.engine.backend} engine {state} in {time.perf_counter() - started:.1f} s"
          + (f" ({record.cache_path})" if record is not None and record.cache_path else ""))
    if record is not None and record.fallback_reason:
        print(f"{model_id}: {record.fallback_reason}")
    print(json.dumps(CACHE_COUNTERS.snapshot()))
    manager.clear()
    return 0


def cache_list(settings: Settings) -> int:
    entries = cache_admin.list_entries(settings.cache_path)
    print(f"{'MODEL':24} {'BACKEND':12} {'PRECISION':9} {'SIZE':>9} {'BUILD s':>8}  KEY")
    for entry in entries:
        print(f"{entry.model_id or '?':24} {entry.backend or '?':12} {entry.precision or '?':9} "
              f"{entry.size_bytes / 1e6:8.1f}M {entry.build_seconds or 0:8.1f}  {entry.key[:16]}"
              + ("" if entry.valid else "  (invalid)"))
    print(f"{len(entries)} engines in {Path(settings.cache_path) / 'engines'}")
    for failure in cache_admin.list_failures(settings.cache_path):
        print(f"failed build: {failure.get('model_id')} on {failure.get('backend')} {failure.get('backend_version')} "
              f"at {failure.get('failed')} (attempt {failure.get('attempts')}): {failure.get('reason')}")
    return 0


def cache_prune(settings: Settings, older_than_days: float | None, remove_all: bool) -> int:
    if older_than_days is None and not remove_all:
        removed = cache_admin.prune(settings.cache_path, keep_keys=_live_keys(settings))
    else:
        removed = cache_admin.prune(settings.cache_path, older_than=older_than_days * 86400 if older_than_days
                                    else None, remove_all=remove_all)
    freed = sum(entry.size_bytes for entry in removed)
    print(f"removed {len(removed)} engines, {freed / 1e6:.1f} MB")
    return 0


def _live_keys(settings: Settings) -> set[str]:
    """Keys of engines this box would use for the models it has: everything else is stale."""
    manager = ModelManager(settings)
    keys: set[str] = set()
    for model_id in manager.available():
        parsed = ModelId.parse(model_id)
        store = next(s for s in [*manager.local_stores, manager.cache] if s.has(parsed))
        engine = create_engine(store.folder(parsed) / WEIGHTS, model_id=model_id, options=engine_options(settings))
        record = getattr(engine, "build", None)
        if record is not None and record.cache_key:
            keys.add(record.cache_key)
    return keys
