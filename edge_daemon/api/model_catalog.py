"""`GET /model/catalog` (every model the daemon can serve, with state and engine-cache entries) and
`POST /model/rebuild` (drop a model's compiled engines and load it again). The console's Models page reads
the first and offers the second; both are plain API routes, behind the same access keys as the rest."""

from __future__ import annotations

from typing import Any

import falcon

from edge_daemon.api.access_control import registry_key
from edge_daemon.api.json_body import read_json_object
from edge_daemon.api.openapi import OpenApiRegistry, Operation, error_responses, json_content, ref
from edge_daemon.api.request_parsing import bearer_token
from edge_daemon.api.schemas import ModelIdRequest
from edge_daemon.engines import cache_admin
from edge_daemon.models.catalog import catalog
from edge_daemon.models.store import ModelId
from edge_daemon.service import InferenceService

_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model_id", "source", "state"],
    "properties": {
        "model_id": {"type": "string"},
        "source": {"type": "string", "enum": ["models_dir", "bundled", "cache", "registry"]},
        "task": {"type": ["string", "null"]},
        "model_type": {"type": ["string", "null"]},
        "classes": {"type": "array", "items": {"type": "string"}},
        "state": {"type": "string", "description": "available (not loaded), loading, downloading, building, "
                                                   "ready or failed"},
        "last_error": {"type": ["string", "null"]},
        "size_bytes": {"type": "integer", "description": "model files on disk"},
        "engine": {"type": ["object", "null"], "description": "the loaded engine: backend, precision, cache key"},
        "engine_cache": {"type": "array", "items": {"type": "object"},
                         "description": "compiled engines cached for this model (key, precision, size)"},
    },
}
_CATALOG_SCHEMA: dict[str, Any] = {"type": "object", "required": ["models"],
                                   "properties": {"models": {"type": "array", "items": _ENTRY_SCHEMA}}}


class _Base:
    def __init__(self, service: InferenceService):
        self.service = service

    def entries(self) -> list[dict[str, Any]]:
        return catalog(self.service.manager, self.service.settings.cache_path)


class CatalogResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"models": self.entries()}


class RebuildResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json_object(req, 64 * 1024, ModelIdRequest)
        model_id = ModelId.parse(body.model_id)
        api_key = registry_key(req, req.get_param("api_key") or bearer_token(req) or body.api_key)
        self.service.manager.unload(model_id)
        cache_admin.remove_model(self.service.settings.cache_path, str(model_id))
        self.service.manager.get(model_id, api_key)
        resp.media = {"models": self.entries()}


def register(app: falcon.App, registry: OpenApiRegistry, service: InferenceService) -> None:
    listing = {"200": {"description": "Every model the daemon can serve", "content": json_content(_CATALOG_SCHEMA)}}
    app.add_route("/model/catalog", CatalogResource(service))
    registry.add(Operation("/model/catalog", "get", "Every model the daemon can serve: source, task, state, engine "
                           "and engine-cache entries", tags=["models"], operation_id="model_catalog",
                           responses=listing))
    app.add_route("/model/rebuild", RebuildResource(service))
    registry.add(Operation(
        "/model/rebuild", "post", "Unload a model, drop its compiled engines and load it again (builds afresh)",
        tags=["models"], operation_id="model_rebuild",
        request_body={"required": True, "content": json_content(ref(ModelIdRequest))},
        responses={**listing, **error_responses(400, 401, 403, 404, 413, 422, 500, 502, 503, 507)}))
