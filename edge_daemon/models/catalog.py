"""Every model the daemon can serve without the network, with what a person checking the box wants to see:
where it comes from, its task and classes, its state, the engine it runs on and its engine-cache entries.

Read-only: it looks at the stores, the manager's states and the engine cache, and loads nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_daemon.engines import cache_admin
from edge_daemon.errors import ApiError
from edge_daemon.models.manager import ModelManager
from edge_daemon.models.metadata import read_metadata
from edge_daemon.models.store import ModelId, ModelStore


def _sources(manager: ModelManager) -> list[tuple[str, ModelStore]]:
    """Stores in lookup order, each with the name a person knows it by."""
    user = [("models_dir", store) for store in manager.local_stores[:-1]]
    return [*user, ("bundled", manager.local_stores[-1]), ("cache", manager.cache)]


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def _describe_files(model_id: str, folder: Path) -> dict[str, Any]:
    try:
        metadata = read_metadata(folder, model_id)
    except ApiError as error:
        return {"task": None, "metadata_error": error.message}
    return {"task": metadata.task, "model_type": metadata.model_type or None,
            "classes": list(metadata.class_names), "colors": metadata.colors}


def _engine_entry(entry: cache_admin.EntryInfo) -> dict[str, Any]:
    return {"key": entry.key, "backend": entry.backend, "backend_version": entry.backend_version,
            "precision": entry.precision, "size_bytes": entry.size_bytes, "build_seconds": entry.build_seconds,
            "created": entry.created, "valid": entry.valid}


def catalog(manager: ModelManager, cache_dir: Path) -> list[dict[str, Any]]:
    """One entry per servable or known model id, in lookup order (the first store that has it wins)."""
    statuses = manager.statuses()
    loaded = {model.model_id: model for model in manager.loaded()}
    entries_by_model: dict[str, list[dict[str, Any]]] = {}
    for entry in cache_admin.list_entries(cache_dir):
        if entry.model_id:
            entries_by_model.setdefault(entry.model_id, []).append(_engine_entry(entry))
    failures: dict[str, str] = {}
    for failure in cache_admin.list_failures(cache_dir):
        model_id = failure.get("model_id")
        if isinstance(model_id, str) and model_id not in failures:
            failures[model_id] = str(failure.get("reason") or "engine build failed")
    models: dict[str, dict[str, Any]] = {}
    for source, store in _sources(manager):
        for model_id in store.list_ids():
            if model_id in models:
                continue
            folder = store.folder(ModelId.parse(model_id))
            models[model_id] = {"model_id": model_id, "source": source, "size_bytes": _folder_bytes(folder),
                                **_describe_files(model_id, folder)}
    for model_id in statuses:  # a model being downloaded has a state before it has files
        models.setdefault(model_id, {"model_id": model_id, "source": "registry", "task": None})
    for model_id, entry in models.items():
        status = statuses.get(model_id)
        entry["state"] = status.state if status is not None else ("ready" if model_id in loaded else "available")
        entry["last_error"] = (status.error if status is not None else None) or failures.get(model_id)
        model = loaded.get(model_id)
        build = getattr(model.engine, "build", None) if model is not None else None
        entry["engine"] = build.to_dict() if build is not None else None
        if entry["engine"] is not None:
            entry["engine"].pop("cache_path", None)  # a server path says nothing useful to a browser
        entry["engine_cache"] = entries_by_model.get(model_id, [])
    return list(models.values())
