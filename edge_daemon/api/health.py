"""Liveness, readiness and identity: `/healthz`, `/readiness`, `/info` (shapes as Roboflow's, plus detail)."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import falcon

from edge_daemon import __version__
from edge_daemon.api.openapi import OpenApiRegistry, Operation
from edge_daemon.engines import CACHE_COUNTERS, choose_backend
from edge_daemon.platform.probe import current_platform
from edge_daemon.service import InferenceService

SERVER_ID = str(uuid.uuid4())


def health_problems(service: InferenceService) -> list[str]:
    """Reasons the daemon cannot do its job right now (empty when healthy)."""
    problems = []
    cache = service.settings.cache_path
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".health-"):
            pass
    except OSError as error:
        problems.append(f"cache_dir_unwritable: {error.strerror}")
    for model_id, status in service.manager.statuses().items():
        if status.state == "failed" and model_id in service.settings.preload:
            problems.append(f"preloaded model {model_id} failed: {status.error}")
    return problems


class HealthResource:
    def __init__(self, service: InferenceService):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        problems = health_problems(self.service)
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
