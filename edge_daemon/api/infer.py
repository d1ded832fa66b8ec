"""Roboflow's JSON routes `POST /infer/{object_detection,instance_segmentation,classification,
keypoints_detection,semantic_segmentation}`.

Same pipeline and response shapes as the legacy route; parameters come from the JSON body (no percentage
rescaling), the key from the query, `Authorization: Bearer` or the body. A model of another task is a 400.
"""

from __future__ import annotations

import time

import falcon
from pydantic import BaseModel

from edge_daemon.api.access_control import registry_key
from edge_daemon.api.json_body import read_json_object
from edge_daemon.api.openapi import OpenApiRegistry, Operation, error_responses, json_content, ref
from edge_daemon.api.request_parsing import bearer_token, build_params, json_sources
from edge_daemon.api.schemas import (
    ClassificationInferenceRequest,
    ClassificationResponse,
    InstanceSegmentationInferenceRequest,
    InstanceSegmentationResponse,
    KeypointsDetectionInferenceRequest,
    KeypointsDetectionResponse,
    MultiLabelClassificationResponse,
    ObjectDetectionInferenceRequest,
    ObjectDetectionResponse,
    SemanticSegmentationInferenceRequest,
    SemanticSegmentationResponse,
)
from edge_daemon.models.store import ModelId
from edge_daemon.service import InferenceService, Visualisation

ROUTES: tuple[tuple[str, str, type[BaseModel], list[type[BaseModel]]], ...] = (
    ("object_detection", "object-detection", ObjectDetectionInferenceRequest, [ObjectDetectionResponse]),
    ("instance_segmentation", "instance-segmentation", InstanceSegmentationInferenceRequest,
     [InstanceSegmentationResponse]),
    ("classification", "classification", ClassificationInferenceRequest,
     [ClassificationResponse, MultiLabelClassificationResponse]),
    ("keypoints_detection", "keypoint-detection", KeypointsDetectionInferenceRequest, [KeypointsDetectionResponse]),
    ("semantic_segmentation", "semantic-segmentation", SemanticSegmentationInferenceRequest,
     [SemanticSegmentationResponse]),
)


class InferTaskResource:
    def __init__(self, service: InferenceService, task: str, schema: type[BaseModel]):
        self.service = service
        self.task = task
        self.schema = schema

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        started = time.perf_counter()
        settings = self.service.settings
        body = read_json_object(req, settings.max_body_bytes, self.schema)
        model_id = ModelId.parse(body.model_id)
        req.context.model_id = str(model_id)
        api_key = registry_key(req, req.get_param("api_key") or bearer_token(req) or body.api_key)
        sources, is_batch = json_sources(body, settings.max_batch)
        params = build_params(body, getattr(body, "iou_threshold", None), legacy=False)
        draw = Visualisation("image_and_json" if body.visualize_predictions else "json",
                             body.visualization_labels, body.visualization_stroke_width)
        result = self.service.infer(model_id, sources, params, api_key, started, task=self.task, draw=draw,
                                    inference_id=body.id)
        resp.media = result.responses if is_batch else result.responses[0]
        resp.set_header("X-Model-Id", str(model_id))
        resp.set_header("X-Processing-Time", f"{time.perf_counter() - started:.6f}")
        req.context.stage_ms = result.stage_ms()


def register(app: falcon.App, registry: OpenApiRegistry, service: InferenceService) -> None:
    for route, task, schema, responses in ROUTES:
        path = f"/infer/{route}"
        app.add_route(path, InferTaskResource(service, task, schema))
        single = {"oneOf": [ref(model) for model in responses]} if len(responses) > 1 else ref(responses[0])
        registry.add(Operation(
            path, "post", f"Run a {task} model (Roboflow JSON route)", tags=["inference"],
            operation_id=f"infer_{route}",
            description=f"`model_id` must name a {task} model, else 400. A list of images gives a list.",
            request_body={"required": True, "content": json_content(ref(schema))},
            responses={"200": {"description": "Predictions",
                               "content": json_content({"oneOf": [single, {"type": "array", "items": single}]})},
                       **error_responses(400, 401, 403, 404, 413, 422, 500, 502, 503, 507)},
        ))
