"""Where a model id is resolved: loaded models, then local stores, then the cache, then the registry.

Loading runs in a background thread per model (`downloading` → `loading` → `ready` | `failed`), so a slow
download or build never blocks other models. Requests for a model that is not ready wait up to
`load_wait` seconds, then get 503 with `Retry-After`. Concurrent first requests share one job (and a file
lock serialises downloads across processes sharing the cache). Once cached, a model is served without the
network or a key. A failed load is remembered (`load_failures.py`): until a retry makes sense, requests get
the same error at once and nothing is loaded again.
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
from edge_daemon.errors import ApiError, BadGateway, ModelArtifactError, NotFound, ServiceUnavailable, stage
from edge_daemon.failures import Record, utc_text
from edge_daemon.inference import LoadedModel
from edge_daemon.models.load_failures import LoadFailures, as_error
from edge_daemon.models.metadata import ENVIRONMENT, MODEL_TYPE, read_metadata
from edge_daemon.models.registry_client import RegistryClient
from edge_daemon.models.store import BUNDLED_ROOT, WEIGHTS, ModelId, ModelStore, verify_folder

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]


class ModelEvents(Protocol):
    """What the manager reports (metrics implement it)."""

    def model_state(self, model_id: str, state: str) -> None: ...
    def model_downloaded(self, model_id: str, size: int, seconds: float) -> None: ...
    def model_loaded(self, model_id: str, source: str, seconds: float) -> None: ...
    def model_load_failed(self, model_id: str, reason: str) -> None: ...
    def model_forgotten(self, model_id: str) -> None: ...


@dataclass
class ModelStatus:
    model_id: str
    state: str  # loading (resolving files) | downloading | building (engine) | ready | failed
    since: float = field(default_factory=time.time)
    source: str | None = None  # local | cache | registry
    error: str | None = None
    bytes_downloaded: int = 0
    reason: str | None = None  # failed: the step that failed (metadata, engine, warmup, layout, registry, ...)
    next_try: float | None = None  # failed: when a request may load it again (unix time)
    attempts: int = 0
    status: int | None = None  # failed: the HTTP status its requests get

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"state": self.state, "since": round(self.since, 3),
                                   "seconds_in_state": round(time.time() - self.since, 1)}
        if self.source:
            data["source"] = self.source
        if self.error:
            data["error"] = self.error
        if self.bytes_downloaded:
            data["bytes_downloaded"] = self.bytes_downloaded
        if self.state == "failed":
            data.update(reason=self.reason, attempts=self.attempts,
                        next_try=utc_text(self.next_try) if self.next_try else None)
        return data


class _LoadJob:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.model: LoadedModel | None = None
        self.failure: Record | None = None  # never the exception: its traceback would keep the engine alive
        self.folder: Path | None = None  # where the model's files were found


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
        self.failures = LoadFailures(settings.cache_path, settings.model_retry_seconds, on_forget=self._forgotten)
        self.downloads = 0
        self.evictions = 0
        self.engine_loads = 0

    # ----- public -----------------------------------------------------------------------------------
    def get(self, model_id: ModelId, api_key: str | None = None, wait: float | None = None,
            force: bool = False) -> LoadedModel:
        """The loaded model, starting its load if needed and waiting up to `wait` (default: load_wait) s.

        A model whose load failed answers that failure at once until a retry could help; `force` retries now.
        """
        key = str(model_id)
        with self._guard:
            model = self._loaded.get(key)
            if model is not None:
                self._loaded.move_to_end(key)
                return model
        api_key = api_key or self.settings.api_key or None
        if not force:
            remembered = self.failures.still_failing(key, self.find_folder(model_id), api_key)
            if remembered is not None:
                raise as_error(remembered)
        job = self.start_loading(model_id, api_key, force=force)
        timeout = self.settings.load_wait if wait is None else wait
        if not job.done.wait(timeout):
            status = self.status(key)
            state = status.state if status else "loading"
            raise ServiceUnavailable(f"model {key} is still {state}; retry shortly", headers={"Retry-After": "5"})
        if job.failure is not None:
            raise as_error(job.failure)
        assert job.model is not None
        return job.model

    def start_loading(self, model_id: ModelId, api_key: str | None = None, force: bool = False) -> _LoadJob:
        """Start (or join) the background load of a model; returns its job. `force`: even if it failed lately."""
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
                threading.Thread(target=self._run_job,
                                 args=(model_id, job, api_key or self.settings.api_key or None, force),
                                 name=f"load {key}", daemon=True).start()
            return job

    def find_folder(self, model_id: ModelId) -> Path | None:
        """Where the model's files are now (local stores first, then the cache), or None."""
        for store in [*self.local_stores, self.cache]:
            if store.has(model_id):
                return store.folder(model_id)
        return None

    def loaded(self) -> list[LoadedModel]:
        with self._guard:
            return list(self._loaded.values())

    def statuses(self) -> dict[str, ModelStatus]:
        with self._guard:
            return dict(self._statuses)

    def status(self, model_id: str) -> ModelStatus | None:
        with self._guard:
            return self._statuses.get(model_id)

    def failed(self) -> list[dict[str, object]]:
        """Models whose last load failed, with what their requests get until the next try."""
        return [{"model_id": key, "status": status.status, "message": status.error, "reason": status.reason,
                 "attempts": status.attempts, "next_try": utc_text(status.next_try) if status.next_try else None}
                for key, status in sorted(self.statuses().items()) if status.state == "failed"]

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

    def _run_job(self, model_id: ModelId, job: _LoadJob, api_key: str | None, force: bool) -> None:
        key = str(model_id)
        started = time.perf_counter()
        remembered = None if force else self.failures.still_failing(key, self.find_folder(model_id), api_key)
        if remembered is not None:  # e.g. a preload of a model refused before a restart
            self._finish_failed(key, job, remembered)
            return
        try:
            model, source = self._load(model_id, api_key, job)
        except BaseException as error:
            if not isinstance(error, ApiError):
                log.error("loading %s failed", key, exc_info=error)
            failure = self.failures.remember(key, job.folder, api_key, error)
            del error  # the traceback holds the half-built model's frames: let it go now
            log.warning("loading %s failed: %s (%s); next try after %s or when its files change", key,
                        failure["message"], failure["stage"], utc_text(self.failures.next_try(failure)))
            self._emit("model_load_failed", key if failure["status"] != 404 else "", str(failure["stage"]))
            self._finish_failed(key, job, failure)
            return
        with self._guard:
            self._loaded[key] = model
            self._evict_beyond_limit()
            self._jobs.pop(key, None)
            self._set_state(key, "ready", source=source)
        self.failures.forget(key)
        job.model = model
        job.done.set()
        self._emit("model_loaded", key, source, time.perf_counter() - started)
        log.info("model %s ready (%s, %.2f s)", key, source, time.perf_counter() - started)

    def _finish_failed(self, key: str, job: _LoadJob, failure: Record) -> None:
        job.failure = failure
        with self._guard:
            self._jobs.pop(key, None)
            if failure["status"] == 404:  # exists nowhere: a made-up id leaves no state and no metric labels
                self._statuses.pop(key, None)
            else:
                self._set_state(key, "failed", error=str(failure["message"]), reason=str(failure["stage"]),
                                status=int(failure["status"]), next_try=self.failures.next_try(failure),
                                attempts=int(failure["attempts"]))
        if failure["status"] == 404:
            self._emit("model_forgotten", key)
        job.done.set()

    def _forgotten(self, model_id: str) -> None:
        """A remembered failure was dropped (retry due, files changed, evicted): its failed state goes too."""
        with self._guard:
            status = self._statuses.get(model_id)
            if status is not None and status.state == "failed":
                del self._statuses[model_id]

    def _evict_beyond_limit(self) -> None:
        """Unload least-recently-used models over the limit; their files stay in the cache."""
        while len(self._loaded) > max(1, self.settings.max_active_models):
            evicted, model = self._loaded.popitem(last=False)
            model.retire()
            self._statuses.pop(evicted, None)
            self.evictions += 1
            log.info("unloaded %s (least recently used; files stay cached)", evicted)

    # ----- resolution -------------------------------------------------------------------------------
    def _load(self, model_id: ModelId, api_key: str | None, job: _LoadJob) -> tuple[LoadedModel, str]:
        for store in self.local_stores:
            if store.has(model_id):
                job.folder = store.folder(model_id)
                with stage("files"):
                    verify_folder(job.folder)
                log.info("loading %s from local store %s", model_id, store.root)
                return self._instantiate(model_id, job.folder), "local"
        with self._cache_lock(model_id):
            if self.cache.has(model_id):
                try:
                    folder = self.cache.folder(model_id)
                    verify_folder(folder)
                    log.info("loading %s from cache", model_id)
                    job.folder = folder
                    return self._instantiate(model_id, folder), "cache"
                except ModelArtifactError as error:
                    log.warning("cached %s is unusable (%s); fetching it again", model_id, error.message)
                    self.cache.remove(model_id)
                    job.folder = None
            with stage("registry"):
                job.folder = self.download(model_id, api_key)
            try:
                return self._instantiate(model_id, job.folder), "registry"
            except ModelArtifactError as error:
                self.cache.remove(model_id)
                job.folder = None
                raised = BadGateway(f"the model registry served an unusable model for {model_id}: {error.message}")
                raised.failure_stage = getattr(error, "failure_stage", "registry")  # type: ignore[attr-defined]
                raise raised from None

    def _instantiate(self, model_id: ModelId, folder: Path) -> LoadedModel:
        """Compile (or load from the engine cache) the engine for this device, then wrap it for serving."""
        self._set_state(str(model_id), "building")
        self.engine_loads += 1
        with stage("metadata"):
            metadata = read_metadata(folder, str(model_id))
        resize = metadata.preprocessing.get("resize") or {}
        try:
            input_hw = (int(resize["height"]), int(resize["width"]))
        except (KeyError, TypeError, ValueError):
            input_hw = None
        with stage("engine"):
            engine = create_engine(folder / metadata.weights, model_id=str(model_id),
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
