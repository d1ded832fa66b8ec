"""DeepStack / CodeProject.AI detection API, so Blue Iris, Frigate's `deepstack` detector and Home
Assistant integrations can use edge-daemon unchanged.

`POST /v1/vision/detection` (multipart `image`, `min_confidence`) runs the configured default detection
model; `POST /v1/vision/custom/{model}` runs `model` (`project` = its newest local version, or
`project:version`). Errors are `{"success": false, "error": ..., "code": ...}` as DeepStack's.
"""

from __future__ import annotations

import time
from typing import Any

import falcon

from edge_daemon.api.multipart import read_form
from edge_daemon.api.openapi import OpenApiRegistry, Operation, image_file_part
from edge_daemon.errors import ApiError, BadRequest
from edge_daemon.images.decode import ImageSource
from edge_daemon.inference import InferenceParams
from edge_daemon.models.store import ID_PART, NO_DOUBLE_DOT, ModelId
from edge_daemon.processing.detection import DetectionParams
from edge_daemon.service import InferenceService

DEFAULT_MIN_CONFIDENCE = 0.4
# `project` or `project:version`, each part as ModelId allows.
CUSTOM_MODEL_PATTERN = f"^{NO_DOUBLE_DOT}{ID_PART}(:{ID_PART})?$"


def _form(req: falcon.Request, limit: int) -> tuple[bytes, dict[str, str]]:
    if not (req.content_type or "").lower().startswith("multipart/form-data"):
        raise BadRequest("send multipart/form-data with the picture in the field 'image'")
    image, fields = read_form(req, limit, "image")
    if not image:
        raise BadRequest("no image: send the picture in the multipart field 'image'")
    return image, fields


def _min_confidence(text: str | None) -> float:
    if text is None or text == "":
        return DEFAULT_MIN_CONFIDENCE
    try:
        value = float(text)
    except ValueError:
        raise BadRequest("Invalid value for min_confidence") from None
    if not 0 <= value <= 1:
        raise BadRequest("Invalid value for min_confidence")
    return value


class DeepStackDetection:
    def __init__(self, service: InferenceService, fixed_model: str | None = None):
        self.service = service
        self.fixed_model = fixed_model

    def _model_id(self, name: str | None) -> ModelId:
        if name is None:
            return ModelId.parse(self.fixed_model or self.service.settings.deepstack_model)
        project, _, version = name.partition(":")
        if version:
            return ModelId.of(project, version)
        versions = [model_id.split("/")[1] for model_id in self.service.manager.available()
                    if model_id.split("/")[0] == project]
        numeric = sorted((v for v in versions if v.isdigit()), key=int)
        return ModelId.of(project, numeric[-1] if numeric else (versions[-1] if versions else "1"))

    def on_post(self, req: falcon.Request, resp: falcon.Response, model: str | None = None) -> None:
        started = time.perf_counter()
        try:
            model_id = self._model_id(model)
            image, fields = _form(req, self.service.settings.max_body_bytes)
            confidence = _min_confidence(fields.get("min_confidence", req.get_param("min_confidence")))
            params = InferenceParams(detection=DetectionParams(confidence=max(confidence, 0.01)))
            result = self.service.infer(model_id, [ImageSource("bytes", image)], params,
                                       task="object-detection", started=started)
        except ApiError as error:
            resp.status = error.status
            resp.media = {"success": False, "error": error.message, "code": error.status}
            for name, value in error.headers.items():
                resp.set_header(name, value)
            return
        req.context.model_id = str(model_id)
        req.context.stage_ms = result.stage_ms()
        predictions = [_deepstack_prediction(p) for p in result.responses[0]["predictions"]]
        total_ms = (time.perf_counter() - started) * 1000
        resp.media = {
            "success": True,
            "predictions": predictions,
            "count": len(predictions),
            "duration": round(total_ms / 1000, 4),
            "inferenceMs": round(result.times.inference * 1000, 2),
            "processMs": round(total_ms, 2),
            "code": 200,
        }


def _deepstack_prediction(prediction: dict[str, Any]) -> dict[str, Any]:
    half_w, half_h = prediction["width"] / 2, prediction["height"] / 2
    return {"label": prediction["class"], "confidence": prediction["confidence"],
            "x_min": round(prediction["x"] - half_w), "y_min": round(prediction["y"] - half_h),
            "x_max": round(prediction["x"] + half_w), "y_max": round(prediction["y"] + half_h)}


class DeepStackModelList:
    def __init__(self, service: InferenceService):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"success": True, "models": sorted({m.split("/")[0] for m in self.service.manager.available()})}

    on_post = on_get


def register(app: falcon.App, registry: OpenApiRegistry, service: InferenceService) -> None:
    detection = DeepStackDetection(service)
    app.add_route("/v1/vision/detection", detection)
    app.add_route("/v1/vision/custom/list", DeepStackModelList(service))
    app.add_route("/v1/vision/custom/{model}", detection)
    form = {"multipart/form-data": image_file_part("image", {
        "min_confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": DEFAULT_MIN_CONFIDENCE}})}
    answer: dict[str, Any] = {"200": {"description": "`{success, predictions: [{label, confidence, x_min, y_min, "
                                                     "x_max, y_max}], count, duration, inferenceMs, processMs}`",
                                      "content": {"application/json": {}}}}
    for status, reason in ((400, "bad input"), (401, "access key missing"), (404, "unknown model"),
                           (413, "too large"), (422, "unusable model"), (500, "internal error"),
                           (502, "registry answered badly"), (503, "model loading or server busy"),
                           (507, "no room to cache the model")):
        answer[str(status)] = {"description": f"`{{success: false, error, code}}`: {reason}",
                               "content": {"application/json": {}}}
    registry.add(Operation("/v1/vision/detection", "post", "DeepStack/CodeProject.AI object detection",
                           tags=["deepstack"], operation_id="deepstack_detection",
                           description="Runs the default detection model (EDGE_DAEMON_DEEPSTACK_MODEL).",
                           request_body={"required": True, "content": form}, responses=answer))
    registry.add(Operation("/v1/vision/custom/{model}", "post", "DeepStack custom-model detection",
                           tags=["deepstack"], operation_id="deepstack_custom",
                           parameters=[{"name": "model", "in": "path", "required": True,
                                        "schema": {"type": "string", "pattern": CUSTOM_MODEL_PATTERN},
                                        "description": "`project` (newest local version) or `project:version`"}],
                           request_body={"required": True, "content": form}, responses=answer))
    for method in ("get", "post"):  # Blue Iris and CodeProject.AI clients list models with POST
        registry.add(Operation("/v1/vision/custom/list", method, "DeepStack: list custom models", tags=["deepstack"],
                               operation_id=f"deepstack_list_{method}",
                               responses={"200": {"description": "`{success, models}`",
                                                  "content": {"application/json": {}}}}))
