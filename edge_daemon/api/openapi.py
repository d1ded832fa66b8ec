"""Builds the OpenAPI 3.1 document from the same pydantic models that validate requests.

Routes register an `Operation` here; components come from `schemas.SCHEMAS`; query parameters are derived
from a model's fields, so the spec cannot drift from what the server accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from edge_daemon import __version__
from edge_daemon.api.schemas import SCHEMAS, ErrorResponse

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


def path_parameter(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


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

    def __init__(self, title: str = "edge-daemon"):
        self.title = title
        self.operations: list[Operation] = []
        self.extra_schemas: list[type[BaseModel]] = []  # components from surfaces beside api/ (streams)
        self._document: dict[str, Any] | None = None

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
        return self._document
