"""Where a model id is resolved: loaded models, then local stores, then the cache, then the registry.

Loading runs in a background thread per model (`downloading` → `loading` → `ready` | `failed`), so a slow
download or build never blocks other models. Requests for a model that is not ready wait up to
`load_wait` seconds, then get 503 with `Retry-After`. Concurrent first requests share one job (and a file
lock serialises downloads across processes sharing the cache). Once cached, a model is served without the
network or a key.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edge_daemon.backpressure import EngineGate
from edge_daemon.config import Settings
from edge_daemon.engines import create_engine, engine_options
from edge_daemon.errors import ApiError, BadGateway, ModelArtifactError, NotFound, ServiceUnavailable
from edge_daemon.inference import LoadedModel
from edge_daemon.models.metadata import read_metadata
from edge_daemon.models.registry_client import RegistryClient
from edge_daemon.models.store import BUNDLED_ROOT, ENVIRONMENT, MODEL_TYPE, WEIGHTS, ModelId, ModelStore, verify_folder

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]


class ModelEvents(Protocol):
    """What the manager reports (metrics implement it)."""

    def model_state(self, model_id: str, state: str) -> None: ...
    def model_downloaded(self, model_id: str, size: int, seconds: float) -> None: ...
    def model_loaded(self, model_id: str, source: str, seconds: float) -> None: ...


@dataclass
class ModelStatus:
    model_id: str
    state: str  # loading (resolving files) | downloading | building (engine) | ready | failed
    since: float = field(default_factory=time.time)
    source: str | None = None  # local | cache | registry
    error: str | None = None
    bytes_downloaded: int = 0

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"state": self.state, "since": round(self.since, 3),
                                   "seconds_in_state": round(time.time() - self.since, 1)}
        if self.source:
            data["source"] = self.source
        if self.error:
            data["error"] = self.error
        if self.bytes_downloaded:
            data["bytes_downloaded"] = self.bytes_downloaded
        return data


class _LoadJob:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.model: LoadedModel | None = None
        self.error: BaseException | None = None


class ModelManager:
    def __init__(self, settings: Settings, registry: RegistryClient | None = None,
                 events: ModelEvents | None = None, gate: EngineGate | None = None):
        self.settings = settings
        self.gate = gate
        local_roots = [Path(settings.models_dir)] if settings.models_dir else []
        self.local_stores = [ModelStore(root) for root in [*local_roots, BUNDLED_ROOT]]
        self.cache = ModelStore(settings.cache_path / "models")
        if self.cache.clean_staging():
            log.info("removed unfinished downloads left by an earlier process")
        self.registry = registry or RegistryClient(settings.api_url, settings.registry_timeout)
        self.events = events
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._jobs: dict[str, _LoadJob] = {}
        self._statuses: dict[str, ModelStatus] = {}
        self._guard = threading.Lock()
        self.downloads = 0
        self.evictions = 0
        self.engine_loads = 0

    # ----- public -----------------------------------------------------------------------------------
    def get(self, model_id: ModelId, api_key: str | None = None, wait: float | None = None) -> LoadedModel:
        """The loaded model, starting its load if needed and waiting up to `wait` (default: load_wait) s."""
        key = str(model_id)
        with self._guard:
            model = self._loaded.get(key)
            if model is not None:
                self._loaded.move_to_end(key)
                return model
        job = self.start_loading(model_id, api_key)
        timeout = self.settings.load_wait if wait is None else wait
        if not job.done.wait(timeout):
            status = self.status(key)
            state = status.state if status else "loading"
            raise ServiceUnavailable(f"model {key} is still {state}; retry shortly", headers={"Retry-After": "5"})
        if job.error is not None:
            raise job.error
        assert job.model is not None
        return job.model

    def start_loading(self, model_id: ModelId, api_key: str | None = None) -> _LoadJob:
        """Start (or join) the background load of a model; returns its job."""
        key = str(model_id)
        with self._guard:
            job = self._jobs.get(key)
            if job is None:
                job = _LoadJob()
                if key in self._loaded:
                    job.model = self._loaded[key]
                    job.done.set()
                    return job
                self._jobs[key] = job
                self._set_state(key, "loading")
                threading.Thread(target=self._run_job, args=(model_id, job, api_key or self.settings.api_key or None),
                                 name=f"load {key}", daemon=True).start()
            return job

    def loaded(self) -> list[LoadedModel]:
        with self._guard:
            return list(self._loaded.values())

    def statuses(self) -> dict[str, ModelStatus]:
        with self._guard:
            return dict(self._statuses)

    def status(self, model_id: str) -> ModelStatus | None:
        with self._guard:
            return self._statuses.get(model_id)

    def unload(self, model_id: ModelId) -> bool:
        with self._guard:
            self._statuses.pop(str(model_id), None)
            model = self._loaded.pop(str(model_id), None)
        if model is not None:
            model.retire()
        return model is not None

    def clear(self) -> None:
        with self._guard:
            models = list(self._loaded.values())
            for key in self._loaded:
                self._statuses.pop(key, None)
            self._loaded.clear()
        for model in models:
            model.retire()

    def available(self) -> list[str]:
        """Model ids that can be served without the network: local stores and the cache."""
        found: set[str] = set()
        for store in [*self.local_stores, self.cache]:
            found.update(store.list_ids())
        return sorted(found)

    # ----- background loading ---------------------------------------------------------------------
    def _set_state(self, key: str, state: str, **details: object) -> None:
        """Record a state change (caller may or may not hold the guard; dict writes are atomic)."""
        status = ModelStatus(key, state, **details)  # type: ignore[arg-type]
        previous = self._statuses.get(key)
        if previous is not None and not details.get("source"):
            status.source = previous.source
        self._statuses[key] = status
        self._emit("model_state", key, state)

    def _emit(self, event: str, *args: object) -> None:
        """Tell the listener (metrics); a listener failure is logged, never allowed to break loading."""
        if self.events is None:
            return
        try:
            getattr(self.events, event)(*args)
        except Exception:
            log.exception("model event listener failed on %s", event)

    def _run_job(self, model_id: ModelId, job: _LoadJob, api_key: str | None) -> None:
        key = str(model_id)
        started = time.perf_counter()
        try:
            model, source = self._load(model_id, api_key)
            with self._guard:
                self._loaded[key] = model
                self._evict_beyond_limit()
                self._jobs.pop(key, None)
                self._set_state(key, "ready", source=source)
            job.model = model
            self._emit("model_loaded", key, source, time.perf_counter() - started)
            log.info("model %s ready (%s, %.2f s)", key, source, time.perf_counter() - started)
        except BaseException as error:
            job.error = error
            message = error.message if isinstance(error, ApiError) else error.__class__.__name__
            with self._guard:
                self._jobs.pop(key, None)
                self._set_state(key, "failed", error=message)
            if not isinstance(error, ApiError):
                log.error("loading %s failed", key, exc_info=error)
            else:
                log.warning("loading %s failed: %s", key, message)
        finally:
            job.done.set()

    def _evict_beyond_limit(self) -> None:
        """Unload least-recently-used models over the limit; their files stay in the cache."""
        while len(self._loaded) > max(1, self.settings.max_active_models):
            evicted, model = self._loaded.popitem(last=False)
            model.retire()
            self._statuses.pop(evicted, None)
            self.evictions += 1
            log.info("unloaded %s (least recently used; files stay cached)", evicted)

    # ----- resolution -------------------------------------------------------------------------------
    def _load(self, model_id: ModelId, api_key: str | None) -> tuple[LoadedModel, str]:
        for store in self.local_stores:
            if store.has(model_id):
                folder = store.folder(model_id)
                verify_folder(folder)
                log.info("loading %s from local store %s", model_id, store.root)
                return self._instantiate(model_id, folder), "local"
        with self._cache_lock(model_id):
            if self.cache.has(model_id):
                try:
                    folder = self.cache.folder(model_id)
                    verify_folder(folder)
                    log.info("loading %s from cache", model_id)
                    return self._instantiate(model_id, folder), "cache"
                except ModelArtifactError as error:
                    log.warning("cached %s is unusable (%s); fetching it again", model_id, error.message)
                    self.cache.remove(model_id)
            folder = self.download(model_id, api_key)
            try:
                return self._instantiate(model_id, folder), "registry"
            except ModelArtifactError as error:
                self.cache.remove(model_id)
                raise BadGateway(f"the model registry served an unusable model for {model_id}: "
                                 f"{error.message}") from None

    def _instantiate(self, model_id: ModelId, folder: Path) -> LoadedModel:
        """Compile (or load from the engine cache) the engine for this device, then wrap it for serving."""
        self._set_state(str(model_id), "building")
        self.engine_loads += 1
        metadata = read_metadata(folder, str(model_id))
        resize = metadata.preprocessing.get("resize") or {}
        try:
            input_hw = (int(resize["height"]), int(resize["width"]))
        except (KeyError, TypeError, ValueError):
            input_hw = None
        engine = create_engine(folder / WEIGHTS, model_id=str(model_id),
                               options=engine_options(self.settings, input_hw=input_hw))
        return LoadedModel(str(model_id), folder, engine=engine, gate=self.gate, metadata=metadata,
                           batch_window=self.settings.batch_window_ms / 1000, max_batch=self.settings.max_batch)

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

    def download(self, model_id: ModelId, api_key: str | None, progress: Progress | None = None) -> Path:
        """Fetch a model from the registry into the cache (atomically); returns its folder."""
        if not self.settings.api_url:
            raise NotFound(f"model {model_id} is not in the local store and no registry is configured")
        key = str(model_id)
        info = self.registry.artifact_info(model_id, api_key)
        staged = self.cache.staging_folder()
        started = time.perf_counter()
        self._set_state(key, "downloading")

        def report(done: int, total: int | None) -> None:
            status = self._statuses.get(key)
            if status is not None:
                status.bytes_downloaded = done
            if progress:
                progress(done, total)

        try:
            size = self.registry.download(info.weights_url, staged / WEIGHTS, model_id, report)
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
        self._emit("model_downloaded", key, size, time.perf_counter() - started)
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
