"""Roboflow's model-management routes: what is loaded, and loading/unloading on request.

Unloading frees memory only; downloaded weights stay in the cache (and engines stay compiled).
"""

from __future__ import annotations

from typing import Any

import falcon

from edge_daemon.api.access_control import registry_key
from edge_daemon.api.json_body import read_json_object
from edge_daemon.api.openapi import OpenApiRegistry, Operation, error_responses, json_content, ref
from edge_daemon.api.request_parsing import bearer_token
from edge_daemon.api.schemas import ModelIdRequest, ModelsDescriptions
from edge_daemon.inference import LoadedModel
from edge_daemon.models.store import ModelId
from edge_daemon.service import InferenceService


def describe(model: LoadedModel) -> dict[str, Any]:
    return {"model_id": model.model_id, "task_type": model.task, "family": model.family.name,
            "batch_size": model.batch_size if model.batch_size else "dynamic",
            "input_height": model.input_height, "input_width": model.input_width}


class _Base:
    def __init__(self, service: InferenceService):
        self.service = service

    def registry(self) -> dict[str, Any]:
        listing: dict[str, Any] = {"models": [describe(model) for model in self.service.manager.loaded()]}
        failed = self.service.manager.failed()
        if failed:  # beside Roboflow's shape, only when there is something to show
            listing["failed"] = failed
        return listing


class RegistryResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.registry()


class AddModelResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json_object(req, 64 * 1024, ModelIdRequest)
        api_key = registry_key(req, req.get_param("api_key") or bearer_token(req) or body.api_key)
        self.service.manager.get(ModelId.parse(body.model_id), api_key, force=True)  # asked for: try again now
        resp.media = self.registry()


class RemoveModelResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json_object(req, 64 * 1024, ModelIdRequest)
        self.service.manager.unload(ModelId.parse(body.model_id))
        resp.media = self.registry()


class ClearModelsResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.service.manager.clear()
        resp.media = self.registry()


def register(app: falcon.App, registry: OpenApiRegistry, service: InferenceService) -> None:
    listing = {"200": {"description": "The loaded models", "content": json_content(ref(ModelsDescriptions))}}
    routes = (
        ("/model/registry", "get", RegistryResource, "List the loaded models", None),
        ("/model/add", "post", AddModelResource, "Load (downloading once if needed) a model", ModelIdRequest),
        ("/model/remove", "post", RemoveModelResource, "Unload a model from memory (files stay cached)",
         ModelIdRequest),
        ("/model/clear", "post", ClearModelsResource, "Unload every model from memory (files stay cached)", None),
    )
    for path, method, resource, summary, body in routes:
        app.add_route(path, resource(service))
        registry.add(Operation(
            path, method, summary, tags=["models"], operation_id=path.strip("/").replace("/", "_"),
            request_body={"required": True, "content": json_content(ref(body))} if body else None,
            responses={**listing, **(error_responses(400, 401, 403, 404, 413, 422, 500, 502, 503, 507) if body else {})},
        ))
