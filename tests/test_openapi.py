"""/openapi.json is a valid OpenAPI 3 document that describes what the server really does; /docs is offline."""

from __future__ import annotations

import base64
import re

import requests
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


def test_spec_validates_and_covers_every_route(daemon):
    spec = requests.get(daemon.url + "/openapi.json").json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    assert "/{project_id}/{model_version}" in paths and "post" in paths["/{project_id}/{model_version}"]
    assert {"/openapi.json", "/docs", "/infer/object_detection", "/infer/instance_segmentation",
            "/infer/classification", "/model/registry", "/model/add", "/model/remove", "/model/clear"} <= set(paths)
    operation = paths["/{project_id}/{model_version}"]["post"]
    query = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert {"api_key", "confidence", "overlap", "max_detections", "image", "format", "image_type"} <= query
    assert {"application/json", "multipart/form-data", "image/jpeg"} <= set(operation["requestBody"]["content"])
    for path, methods in paths.items():
        for method, op in methods.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
            assert "200" in op["responses"]


def _validator(spec: dict, component: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{component}", "components": spec["components"]})


def test_real_responses_match_the_documented_schemas(daemon, colour_jpeg):
    spec = requests.get(daemon.url + "/openapi.json").json()
    body = {"image": {"type": "base64", "value": base64.b64encode(colour_jpeg).decode()}, "confidence": 0.1}
    response = requests.post(daemon.url + "/colour/1", json=body).json()
    assert response["predictions"]
    _validator(spec, "ObjectDetectionResponse").validate(response)
    _validator(spec, "LegacyJsonBody").validate(body)
    error = requests.post(daemon.url + "/colour/1", data=b"{bad json", headers={"Content-Type": "application/json"})
    _validator(spec, "ErrorResponse").validate(error.json())


def test_docs_page_uses_only_local_assets(daemon):
    page = requests.get(daemon.url + "/docs")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    references = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert references, "the page must load Swagger UI"
    assert not [ref for ref in references if re.match(r"^(https?:)?//", ref)], "no CDN or external asset"
    for reference in references:
        asset = requests.get(daemon.url + reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 10_000
    bundle = requests.get(daemon.url + "/docs/static/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle
    assert '"/openapi.json"' in page.text
