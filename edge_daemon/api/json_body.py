"""Reading a JSON object body with the size limit and strict schema validation."""

from __future__ import annotations

import json
from typing import Any

import falcon
import orjson
from pydantic import BaseModel

from edge_daemon.api.body import read_body
from edge_daemon.api.request_parsing import validate_model
from edge_daemon.errors import BadRequest


def read_json_object(req: falcon.Request, limit: int, schema: type[BaseModel], allow_empty: bool = False) -> Any:
    """Parse the body as one JSON object and validate it strictly against `schema`."""
    body = read_body(req, limit)
    if not body.strip() and allow_empty:
        return schema.model_validate({})
    try:
        document = orjson.loads(body)
    except RecursionError:
        raise BadRequest("request body JSON is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("the JSON body must be an object")
    return validate_model(schema, document, strict=True)
