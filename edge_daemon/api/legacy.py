"""`POST /{project_id}/{model_version}`: Roboflow's one route for detection, segmentation and classification."""

from __future__ import annotations

import time

import falcon

from edge_daemon.api.openapi import (
    OpenApiRegistry,
    Operation,
    error_responses,
    image_file_part,
    path_parameter,
    query_parameters,
    ref,
)
from edge_daemon.api.request_parsing import parse_legacy_request
from edge_daemon.api.schemas import LegacyJsonBody, LegacyQueryParameters, ObjectDetectionResponse
from edge_daemon.models.store import ID_PART_PATTERN, ModelId
from edge_daemon.service import InferenceService

ROUTE = "/{project_id}/{model_version}"


class LegacyInferenceResource:
    def __init__(self, service: InferenceService):
        self.service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response, project_id: str, model_version: str) -> None:
        started = time.perf_counter()
        model_id = ModelId.of(project_id, model_version)
        req.context.model_id = str(model_id)
        settings = self.service.settings
        parsed = parse_legacy_request(req, settings.max_body_bytes, settings.max_batch)
        result = self.service.infer(model_id, parsed.sources, parsed.params, parsed.api_key, started,
                                    draw=parsed.visualisation)
        if parsed.visualisation.output == "image":
            resp.content_type = "image/jpeg"
            resp.data = result.pictures[0]
        else:
            resp.media = result.responses if parsed.is_batch else result.responses[0]
        resp.set_header("X-Model-Id", str(model_id))
        resp.set_header("X-Processing-Time", f"{time.perf_counter() - started:.6f}")
        req.context.stage_ms = result.stage_ms()


def register(app: falcon.App, registry: OpenApiRegistry, service: InferenceService) -> None:
    app.add_route(ROUTE, LegacyInferenceResource(service))
    binary = {"schema": {"type": "string", "format": "binary"}}
    response_schema = {"oneOf": [ref(ObjectDetectionResponse), {"type": "array", "items": ref(ObjectDetectionResponse)}]}
    registry.add(Operation(
        ROUTE, "post", "Run a model on an image (Roboflow-compatible)",
        description=(
            "Detection, instance segmentation or classification, chosen by the model. The image may be a JSON "
            "body (`image: {type, value}` or a list of them, giving a list of responses), base64 text as the "
            "body (hosted-API style, parameters in the query string), `?image=<url>`, a multipart part named "
            "`file`, or raw image bytes. The model is downloaded from the registry on first use and cached."),
        tags=["inference"], operation_id="legacy_infer",
        parameters=[path_parameter("project_id", "Project (dataset) id, e.g. `shapes`.", ID_PART_PATTERN),
                    path_parameter("model_version", "Model version, e.g. `1`.", ID_PART_PATTERN),
                    *query_parameters(LegacyQueryParameters)],
        request_body={"required": False, "content": {
            "application/json": {"schema": ref(LegacyJsonBody)},
            "multipart/form-data": image_file_part("file"),
            "text/plain": {"schema": {"type": "string", "description": "base64 of the image file"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "string",
                                                             "description": "base64 of the image file"}},
            "image/jpeg": binary, "image/png": binary, "application/octet-stream": binary,
        }},
        responses={"200": {"description": "Predictions in Roboflow's JSON shape",
                           "headers": {"X-Model-Id": {"schema": {"type": "string"}},
                                       "X-Processing-Time": {"schema": {"type": "string"}}},
                           "content": {"application/json": {"schema": response_schema}}},
                   **error_responses(400, 401, 403, 404, 413, 422, 500, 502, 503, 507)},
    ))
