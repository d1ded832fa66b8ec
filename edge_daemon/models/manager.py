"""Where a model id is resolved: loaded models, then local stores, then the cache, then the registry.

Concurrent first requests for one model share a single download and a single load (a per-id lock inside
the process and a file lock across processes sharing the cache). Once a model is in the cache it is served
without the network or a key.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_daemon.config import Settings
from edge_daemon.errors import ApiError, BadGateway, ModelArtifactError, NotFound
from edge_daemon.inference import LoadedModel
from edge_daemon.models.registry_client import RegistryClient
from edge_daemon.models.store import BUNDLED_ROOT, ENVIRONMENT, MODEL_TYPE, WEIGHTS, ModelId, ModelStore, verify_folder

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, settings: Settings, registry: RegistryClient | None = None):
        self.settings = settings
        local_roots = [Path(settings.models_dir)] if settings.models_dir else []
        self.local_stores = [ModelStore(root) for root in [*local_roots, BUNDLED_ROOT]]
        self.cache = ModelStore(settings.cache_path / "models")
        self.registry = registry or RegistryClient(settings.api_url, settings.registry_timeout)
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._id_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.downloads = 0
        self.evictions = 0
        self.engine_loads = 0

    # ----- public -----------------------------------------------------------------------------------
    def get(self, model_id: ModelId, api_key: str | None = None) -> LoadedModel:
        """The loaded model for `model_id`, loading (and downloading) it once if needed."""
        key = str(model_id)
        with self._guard:
            model = self._loaded.get(key)
            if model is not None:
                self._loaded.move_to_end(key)
                return model
            id_lock = self._id_locks.setdefault(key, threading.Lock())
        with id_lock:
            with self._guard:
                model = self._loaded.get(key)
            if model is None:
                model = self._load(model_id, api_key or self.settings.api_key or None)
                with self._guard:
                    self._loaded[key] = model
                    self._evict_beyond_limit()
            return model

    def _evict_beyond_limit(self) -> None:
        """Unload least-recently-used models over the limit; their files stay in the cache."""
        while len(self._loaded) > max(1, self.settings.max_active_models):
            evicted, _ = self._loaded.popitem(last=False)
            self.evictions += 1
            log.info("unloaded %s (least recently used; files stay cached)", evicted)

    def loaded(self) -> list[LoadedModel]:
        with self._guard:
            return list(self._loaded.values())

    def unload(self, model_id: ModelId) -> bool:
        with self._guard:
            return self._loaded.pop(str(model_id), None) is not None

    def clear(self) -> None:
        with self._guard:
            self._loaded.clear()

    # ----- resolution -------------------------------------------------------------------------------
    def _load(self, model_id: ModelId, api_key: str | None) -> LoadedModel:
        for store in self.local_stores:
            if store.has(model_id):
                folder = store.folder(model_id)
                verify_folder(folder)
                log.info("loading %s from local store %s", model_id, store.root)
                return self._instantiate(model_id, folder)
        with self._cache_lock(model_id):
            if self.cache.has(model_id):
                try:
                    return self._load_cached(model_id)
                except ModelArtifactError as error:
                    log.warning("cached %s is unusable (%s); fetching it again", model_id, error.message)
                    self.cache.remove(model_id)
            folder = self._download(model_id, api_key)
            try:
                return self._instantiate(model_id, folder)
            except ModelArtifactError as error:
                self.cache.remove(model_id)
                raise BadGateway(f"the model registry served an unusable model for {model_id}: "
                                 f"{error.message}") from None

    def _load_cached(self, model_id: ModelId) -> LoadedModel:
        folder = self.cache.folder(model_id)
        verify_folder(folder)
        log.info("loading %s from cache", model_id)
        return self._instantiate(model_id, folder)

    def _instantiate(self, model_id: ModelId, folder: Path) -> LoadedModel:
        self.engine_loads += 1
        return LoadedModel(str(model_id), folder, intra_op_threads=self.settings.ort_threads)

    @contextmanager
    def _cache_lock(self, model_id: ModelId) -> Iterator[None]:
        """Serialise downloads of one model across processes sharing this cache directory."""
        lock_dir = self.cache.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{model_id.project}__{model_id.version}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _download(self, model_id: ModelId, api_key: str | None) -> Path:
        if not self.settings.api_url:
            raise NotFound(f"model {model_id} is not in the local store and no registry is configured")
        info = self.registry.artifact_info(model_id, api_key)
        staged = self.cache.staging_folder()
        try:
            self.registry.download(info.weights_url, staged / WEIGHTS, model_id)
            self.registry.download(info.environment_url, staged / ENVIRONMENT, model_id)
            _write_registry_metadata(staged, model_id, info.task, info.model_type, info.classes)
            folder = self.cache.install(staged, model_id)
        except ApiError:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        except OSError as error:
            shutil.rmtree(staged, ignore_errors=True)
            raise ApiError(f"could not write model {model_id} to the cache: {error.strerror}", 507) from None
        self.downloads += 1
        log.info("cached %s from the registry", model_id)
        return folder


def _write_registry_metadata(folder: Path, model_id: ModelId, task: str, model_type: str,
                             classes: tuple[str, ...]) -> None:
    (folder / MODEL_TYPE).write_text(json.dumps({"project_task_type": task, "model_type": model_type,
                                                 "model_id": str(model_id)}) + "\n", encoding="utf-8")
    if classes:
        (folder / "class_names.txt").write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
    try:
        json.loads((folder / ENVIRONMENT).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadGateway(f"the model registry sent an invalid environment.json for {model_id}") from None
