"""Liveness, readiness and identity: `/healthz`, `/readiness`, `/info` (shapes as Roboflow's, plus detail)."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon

from edge_daemon import __version__
from edge_daemon.api.openapi import OpenApiRegistry, Operation
from edge_daemon.engines import CACHE_COUNTERS, choose_backend
from edge_daemon.platform.probe import current_platform
from edge_daemon.service import InferenceService

SERVER_ID = str(uuid.uuid4())
WRITE_PROBE_SECONDS = 300.0


class CacheWriteCheck:
    """Whether the cache dir still takes new files, without writing to the box's storage at every probe.

    Liveness probes come every few seconds for years (the systemd watchdog, Docker's HEALTHCHECK, Kubernetes),
    and a file created and deleted each time is a metadata write and a journal commit on an SD card each time.
    So the real write runs at most every `interval` seconds while it succeeds (and at every probe while it
    fails, so recovery shows at once); in between, a stat of the folder (no write) catches at once a folder
    that is gone, a file system remounted read-only and a full disk.
    """

    def __init__(self, folder: Path, interval: float = WRITE_PROBE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.folder = folder
        self.interval = interval
        self.clock = clock
        self.writes = 0
        self._written_at: float | None = None
        self._problem: str | None = None
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        """Why the cache dir cannot take files now, or None."""
        quick = self._stat_problem()
        if quick is not None:
            return quick
        with self._lock:
            now = self.clock()
            due = self._written_at is None or now - self._written_at >= self.interval
            if due or self._problem is not None or not self.folder.exists():  # gone: recreate it now
                self._problem, self._written_at = self._write_problem(), now
            return self._problem

    def _stat_problem(self) -> str | None:
        try:
            stats = os.statvfs(self.folder)
        except FileNotFoundError:
            return None  # not made yet, or removed: problem() runs the write probe, which recreates it
        except OSError as error:
            return f"cache_dir_unwritable: {error.strerror}"
        if not self.folder.is_dir():
            return "cache_dir_unwritable: not a directory"
        if stats.f_flag & os.ST_RDONLY:
            return "cache_dir_unwritable: read-only file system"
        if stats.f_bavail == 0:
            return "cache_dir_unwritable: no space left on device"
        return None

    def _write_problem(self) -> str | None:
        self.writes += 1
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".health-"):
                pass
        except OSError as error:
            return f"cache_dir_unwritable: {error.strerror}"
        return None


def health_problems(service: InferenceService, cache_check: CacheWriteCheck) -> list[str]:
    """Reasons the daemon cannot do its job right now (empty when healthy)."""
    problems = []
    cache_problem = cache_check.problem()
    if cache_problem is not None:
        problems.append(cache_problem)
    for model_id, status in service.manager.statuses().items():
        if status.state == "failed" and model_id in service.settings.preload:
            problems.append(f"preloaded model {model_id} failed: {status.error}")
    return problems


class HealthResource:
    def __init__(self, service: InferenceService):
        self.service = service
        self.cache_check = CacheWriteCheck(service.settings.cache_path)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        problems = health_problems(self.service, self.cache_check)
        if problems:
            resp.status = 503
            resp.media = {"status": "unhealthy", "reason": "; ".join(problems)}
        else:
            resp.media = {"status": "healthy"}


class ReadinessResource:
    def __init__(self, service: InferenceService, details: list[Callable[[], dict[str, Any]]] | None = None):
        self.service = service
        self.details = details if details is not None else []  # sections other surfaces add (streams)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        statuses = self.service.manager.statuses()
        models = {model_id: status.as_dict() for model_id, status in statuses.items()}
        waiting = [model_id for model_id in self.service.settings.preload
                   if statuses.get(model_id) is None or statuses[model_id].state != "ready"]
        if waiting:
            resp.status = 503
            resp.set_header("Retry-After", "5")
            resp.media = {"status": "not ready", "waiting_for": waiting, "models": models}
        else:
            resp.media = {"status": "ready", "models": models}
        for section in self.details:
            resp.media.update(section())


class InfoResource:
    def __init__(self, service: InferenceService):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = info(self.service)


def info(service: InferenceService) -> dict[str, Any]:
    platform = current_platform()
    choice = choose_backend(platform, service.settings.backend, service.settings.precision)
    return {
        "name": "edge-daemon",
        "version": __version__,
        "uuid": SERVER_ID,
        "pid": os.getpid(),
        "uptime_seconds": round(time.time() - service.started_at, 1),
        "backend": choice.to_dict(),
        "platform": platform.to_dict(),
        "engine_cache": CACHE_COUNTERS.snapshot(),
        "concurrency": {"engine_slots": service.gate.slots, "stream_slots": service.settings.stream_slots,
                        "gil_switch_ms": round(sys.getswitchinterval() * 1000, 3)},
        "models_available": service.manager.available(),
        "models_loaded": [_loaded_model(model) for model in service.manager.loaded()],
    }


def _loaded_model(model: Any) -> dict[str, Any]:
    entry = {"model_id": model.model_id, "engine": _engine_build(model)}
    remote_status = getattr(model.engine, "remote_status", None)
    if remote_status is not None:  # backend remote: where it runs, circuit state, local fallback in use
        entry["remote"] = remote_status()
    return entry


def _engine_build(model: Any) -> dict[str, Any] | None:
    build = getattr(model.engine, "build", None)
    return build.to_dict() if build is not None else None


def register(app: falcon.App, registry: OpenApiRegistry, service: InferenceService,
             readiness_details: list[Callable[[], dict[str, Any]]] | None = None) -> None:
    routes = (
        ("/healthz", HealthResource, "Liveness: 200 healthy, or 503 with the reason"),
        ("/readiness", ReadinessResource, "Readiness: 200 once preloaded models are ready; per-model state"),
        ("/info", InfoResource, "Server name, version, uptime, backend, models"),
    )
    for path, resource, summary in routes:
        app.add_route(path, resource(service, readiness_details) if resource is ReadinessResource
                      else resource(service))
        responses: dict[str, Any] = {"200": {"description": summary, "content": {"application/json": {}}}}
        if path != "/info":
            responses["503"] = {"description": "Not healthy / not ready", "content": {"application/json": {}}}
        registry.add(Operation(path, "get", summary, tags=["operations"], operation_id=f"get_{path.strip('/')}",
                               responses=responses))
