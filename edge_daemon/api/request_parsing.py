"""Where a request enters: every form a Roboflow client sends becomes image sources plus parameters.

Accepted on `POST /{project_id}/{model_version}`:
1. a JSON body `{"image": {"type", "value"} | [...], "confidence", ...}`;
2. the hosted-API form: parameters in the query string, the body base64 text (optionally a data: URI), or
   `?image=<url>` with the body ignored, whatever Content-Type the client labelled it with;
3. `multipart/form-data` with the image in the part `file`;
4. raw image bytes (`image/jpeg`, `image/png`, `application/octet-stream`, ...).
Query parameters apply to every form; JSON body fields override them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import falcon
import orjson
from pydantic import BaseModel, ValidationError

from edge_daemon.api.access_control import registry_key
from edge_daemon.api.body import read_body
from edge_daemon.api.multipart import read_form
from edge_daemon.api.schemas import InferenceOptions, LegacyJsonBody, LegacyQueryParameters, describe_validation_error
from edge_daemon.errors import BadRequest, PayloadTooLarge, Unprocessable
from edge_daemon.images.decode import IMAGE_TYPES, ImageSource, decode_base64, looks_like_encoded_image
from edge_daemon.images.safe_numpy import NPY_MAGIC
from edge_daemon.inference import InferenceParams
from edge_daemon.processing.detection import DetectionParams
from edge_daemon.processing.preprocess import PreprocSwitches
from edge_daemon.service import Visualisation

DEFAULT_CONFIDENCE = 0.4
DEFAULT_IOU = 0.3
CONFIDENCE_FLOOR = 0.01  # as Roboflow: tiny thresholds only flood NMS


@dataclass
class ParsedRequest:
    sources: list[ImageSource]
    is_batch: bool
    params: InferenceParams
    api_key: str | None
    visualisation: Visualisation = field(default_factory=Visualisation)


def bearer_token(req: falcon.Request) -> str | None:
    header = req.get_header("Authorization") or ""
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def validate_model(model: type[BaseModel], data: Any, strict: bool) -> Any:
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as error:
        raise Unprocessable(describe_validation_error(error)) from None


def _query_dict(req: falcon.Request) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for key, value in req.params.items():
        query[key] = value[-1] if isinstance(value, list) and key not in ("class_filter", "classes") else value
    for key in ("classes", "class_filter"):  # hosted API: classes=a,b
        if key in query:
            raw = query.pop(key)
            items = raw if isinstance(raw, list) else [raw]
            query["class_filter"] = [name.strip() for item in items for name in item.split(",") if name.strip()]
    return query


def _percent(value: float, name: str, legacy: bool) -> float:
    if legacy and value >= 1:
        value = value / 100
    if not 0 <= value <= 1:
        raise Unprocessable(f"{name} must be within [0, 1] (or a percentage up to 100), got {value:g}")
    return value


def build_params(options: Any, iou: float | None, legacy: bool) -> InferenceParams:
    """Normalise validated options (legacy or /infer schemas): percentages, the confidence floor, defaults."""
    confidence = options.confidence
    confidence = DEFAULT_CONFIDENCE if isinstance(confidence, str) else _percent(confidence, "confidence", legacy)
    iou = DEFAULT_IOU if iou is None else _percent(iou, "iou_threshold", legacy)
    class_filter = getattr(options, "class_filter", None)
    detection = DetectionParams(
        confidence=max(confidence, CONFIDENCE_FLOOR),
        iou_threshold=iou,
        max_detections=getattr(options, "max_detections", 300),
        class_agnostic_nms=getattr(options, "class_agnostic_nms", False),
        class_filter=tuple(class_filter) if class_filter is not None else None,
    )
    switches = PreprocSwitches(
        disable_auto_orient=options.disable_preproc_auto_orient,
        disable_contrast=options.disable_preproc_contrast,
        disable_grayscale=options.disable_preproc_grayscale,
        disable_static_crop=options.disable_preproc_static_crop,
    )
    return InferenceParams(detection=detection, switches=switches,
                           mask_decode_mode=getattr(options, "mask_decode_mode", "accurate"),
                           tradeoff_factor=getattr(options, "tradeoff_factor", 0.0),
                           mask_format=getattr(options, "response_mask_format", "polygon"),
                           keypoint_confidence=getattr(options, "keypoint_confidence", 0.0))


def json_sources(body: Any, max_batch: int) -> tuple[list[ImageSource], bool]:
    references = body.image if isinstance(body.image, list) else [body.image]
    if not references:
        raise BadRequest("image list is empty")
    if len(references) > max_batch:
        raise PayloadTooLarge(f"a request may carry at most {max_batch} images, got {len(references)}")
    sources = []
    for reference in references:
        if reference.type not in IMAGE_TYPES:
            raise BadRequest(f"image type {reference.type[:40]!r} is not recognised; use one of "
                             f"{', '.join(IMAGE_TYPES)}")
        sources.append(ImageSource(reference.type, reference.value))  # type: ignore[arg-type]
    return sources, isinstance(body.image, list)


def _body_source(body: bytes, image_type: str) -> ImageSource:
    """A non-JSON body: raw image bytes when it starts like an image file, else base64 text."""
    if image_type == "numpy" or body.startswith(NPY_MAGIC):
        return ImageSource("numpy", body)
    if looks_like_encoded_image(body):
        return ImageSource("bytes", body)
    return ImageSource("bytes", decode_base64(body))


def _multipart_file(req: falcon.Request, limit: int) -> bytes:
    data, _ = read_form(req, limit, "file")
    if not data:
        raise BadRequest("multipart request has no part named 'file' holding the image")
    return data


def parse_legacy_request(req: falcon.Request, max_body_bytes: int, max_batch: int) -> ParsedRequest:
    """Parse any of the four request forms of the legacy route."""
    query = validate_model(LegacyQueryParameters, _query_dict(req), strict=False)
    api_key = query.api_key or bearer_token(req)
    options: InferenceOptions = query
    iou = query.overlap if query.overlap is not None else query.iou_threshold
    content_type = (req.content_type or "").lower()
    is_batch = False
    if query.image:
        sources = [ImageSource("url", query.image)]
    elif content_type.startswith("multipart/form-data"):
        sources = [_body_source(_multipart_file(req, max_body_bytes), query.image_type)]
    else:
        body = read_body(req, max_body_bytes)
        if not body.strip():
            raise BadRequest("request has no image: send a JSON body with 'image', base64 text, raw image bytes,"
                             " a multipart 'file' or ?image=<url>")
        document = _maybe_json(body, content_type)
        if isinstance(document, dict):
            inherited = {name: getattr(query, name) for name in query.model_fields_set
                         if name in LegacyJsonBody.model_fields and name != "image"}
            parsed = validate_model(LegacyJsonBody, {**inherited, **document}, strict=True)
            sources, is_batch = json_sources(parsed, max_batch)
            api_key = api_key or parsed.api_key
            options = parsed
            iou = parsed.iou_threshold if parsed.iou_threshold is not None else parsed.overlap
        elif isinstance(document, str):
            sources = [ImageSource("numpy" if query.image_type == "numpy" else "base64", document)]
        else:
            sources = [_body_source(body, query.image_type)]
    visualisation = Visualisation(options.format, options.labels, options.stroke)
    if visualisation.output == "image" and is_batch:
        raise BadRequest("format=image answers one picture; send one image or use format=image_and_json")
    return ParsedRequest(sources, is_batch, build_params(options, iou, legacy=True), registry_key(req, api_key),
                         visualisation)


def _maybe_json(body: bytes, content_type: str) -> Any:
    """The parsed JSON document if the body is JSON, else None (clients label base64 text as JSON too)."""
    head = body.lstrip()[:1]
    if head not in (b"{", b"[", b'"'):
        return None
    try:
        document = orjson.loads(body)
    except RecursionError:
        raise BadRequest("request body JSON is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        if "json" in content_type or head == b"{":
            raise BadRequest(f"request body is not valid JSON: {error}") from None
        return None
    if isinstance(document, list):
        raise BadRequest("a JSON body must be an object with an 'image' field")
    return document
