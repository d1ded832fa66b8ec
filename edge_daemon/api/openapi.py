"""Builds the OpenAPI 3.1 document from the same pydantic models that validate requests.

Routes register an `Operation` here; components come from `schemas.SCHEMAS`; query parameters are derived
from a model's fields, so the spec cannot drift from what the server accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from edge_daemon import __version__
from edge_daemon.api.schemas import BATCH_MARK, IMAGE_TYPES_MARK, SCHEMAS, ErrorResponse
from edge_daemon.config import Settings

REF = "#/components/schemas/{model}"


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One OpenAPI query parameter per model field, with its JSON schema and description."""
    schema = model.model_json_schema(ref_template=REF)
    parameters = []
    for name, field_schema in schema.get("properties", {}).items():
        description = field_schema.pop("description", None)
        field_schema.pop("title", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": field_schema}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def path_parameter(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "pattern": pattern} if pattern else {"type": "string"}
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


# What the image decoders read (images/decode.py); a multipart file part of another kind is a 400.
IMAGE_MEDIA_TYPES = "image/jpeg, image/png, image/bmp, image/webp, image/tiff"


def image_file_part(name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A multipart/form-data body whose part `name` is an image file (its encoding names the accepted types)."""
    return {"schema": {"type": "object", "required": [name],
                       "properties": {name: {"type": "string", "format": "binary", "minLength": 1},
                                      **(extra or {})}},
            "encoding": {name: {"contentType": IMAGE_MEDIA_TYPES}}}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error_responses(*statuses: int) -> dict[str, Any]:
    reasons = {400: "Bad request", 401: "Access key missing, or the registry rejected the API key",
               403: "The registry key has no access to the model", 404: "Unknown model or route",
               413: "Payload or image too large", 422: "Invalid parameter or unusable model", 500: "Internal error",
               502: "Registry answered badly", 503: "Registry unreachable, model still loading, or server busy "
                                                    "(see Retry-After)", 507: "No room to cache the model"}
    responses: dict[str, Any] = {
        str(status): {"description": reasons.get(status, "Error"), "content": json_content(ref(ErrorResponse))}
        for status in statuses}
    responses["431"] = {"description": "Request headers too large (answered by the HTTP server itself)",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}
    return responses


@dataclass
class Operation:
    path: str
    method: str
    summary: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    parameters: list[dict[str, Any]] = field(default_factory=list)
    request_body: dict[str, Any] | None = None
    responses: dict[str, Any] = field(default_factory=dict)
    operation_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        operation: dict[str, Any] = {"summary": self.summary, "responses": self.responses,
                                     "operationId": self.operation_id or f"{self.method}_{self.path}"}
        if self.description:
            operation["description"] = self.description
        if self.tags:
            operation["tags"] = self.tags
        if self.parameters:
            operation["parameters"] = self.parameters
        if self.request_body:
            operation["requestBody"] = self.request_body
        return operation


class OpenApiRegistry:
    """Collects operations from the routes and renders the document once."""

    def __init__(self, title: str = "edge-daemon", max_batch: int | None = None,
                 disabled_image_types: tuple[str, ...] = ()):
        self.title = title
        self.max_batch = max_batch  # the server's limit on images per request, stated as maxItems
        self.disabled_image_types = disabled_image_types  # image types this server refuses (400)
        self.operations: list[Operation] = []
        self.extra_schemas: list[type[BaseModel]] = []  # components from surfaces beside api/ (streams)
        self._document: dict[str, Any] | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> OpenApiRegistry:
        """A registry whose document states this server's settings-dependent limits."""
        disabled = tuple(kind for kind, enabled in (("numpy", settings.allow_numpy_input),
                                                    ("url", settings.allow_url_input)) if not enabled)
        return cls(max_batch=settings.max_batch, disabled_image_types=disabled)

    def add(self, operation: Operation) -> None:
        self.operations.append(operation)
        self._document = None

    def add_schemas(self, *models: type[BaseModel]) -> None:
        self.extra_schemas.extend(models)
        self._document = None

    def document(self) -> dict[str, Any]:
        if self._document is None:
            components: dict[str, Any] = {}
            for model in (*SCHEMAS, *self.extra_schemas):
                schema = model.model_json_schema(ref_template=REF, by_alias=True)
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            paths: dict[str, Any] = {}
            for operation in self.operations:
                paths.setdefault(operation.path, {})[operation.method] = operation.as_dict()
            self._document = {
                "openapi": "3.1.0",
                "info": {"title": self.title, "version": __version__,
                         "description": "Roboflow-Inference-compatible computer-vision inference for edge boxes."},
                "paths": paths,
                "components": {"schemas": components},
            }
            _state_runtime_limits(self._document, self.max_batch, self.disabled_image_types)
        return self._document


def _state_runtime_limits(node: Any, max_batch: int | None, disabled_image_types: tuple[str, ...]) -> None:
    """Fill in the settings-dependent rules: BATCH_MARK becomes `maxItems: max_batch` (more images are a 413);
    IMAGE_TYPES_MARK drops the disabled image types from its enum (they are a 400)."""
    if isinstance(node, dict):
        if node.pop(BATCH_MARK, False) and max_batch:
            node["maxItems"] = max_batch
        if node.pop(IMAGE_TYPES_MARK, False):
            node["enum"] = [value for value in node.get("enum", []) if value not in disabled_image_types]
        for value in node.values():
            _state_runtime_limits(value, max_batch, disabled_image_types)
    elif isinstance(node, list):
        for value in node:
            _state_runtime_limits(value, max_batch, disabled_image_types)
