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


def test_spec_states_the_rules_the_server_enforces(make_settings, colour_jpeg):
    """Each rule the spec states is the server's own: model ids, non-empty images, batch size, integral numbers."""
    from tests.support.daemon import ThreadedDaemon

    with ThreadedDaemon(make_settings(max_batch=3, api_url="")) as daemon:
        spec = requests.get(daemon.url + "/openapi.json").json()
        validate(spec)
        body = spec["components"]["schemas"]["ObjectDetectionInferenceRequest"]
        pattern = body["properties"]["model_id"]["pattern"]
        for model_id in ("colour/1", "a.b/1.0", "a../1", "a/1\n", "x" * 101 + "/1", "a b/1", "-a/1", "a"):
            stated = re.fullmatch(pattern, model_id) is not None
            answer = requests.post(daemon.url + "/model/remove", json={"model_id": model_id})
            assert (answer.status_code == 200) == stated, (model_id, answer.text)
        batch = next(branch for branch in body["properties"]["image"]["anyOf"] if branch.get("type") == "array")
        assert (batch["minItems"], batch["maxItems"]) == (1, 3)
        image = {"type": "base64", "value": base64.b64encode(colour_jpeg).decode()}
        too_many = requests.post(daemon.url + "/infer/object_detection", json={"model_id": "colour/1",
                                                                               "image": [image] * 4})
        assert too_many.status_code == 413
        value = spec["components"]["schemas"]["ImageReference"]["properties"]["value"]
        assert value["minLength"] == 1
        for blank in ("", "  "):
            empty = requests.post(daemon.url + "/infer/object_detection",
                                  json={"model_id": "colour/1", "image": {"type": "base64", "value": blank}})
            assert empty.status_code == 422 and "ImageReference.value" in empty.json()["message"], empty.text
        # JSON Schema counts 2.0 as an integer, so the server does too; 2.5 stays refused.
        drawn = requests.post(daemon.url + "/infer/object_detection",
                              json={"model_id": "colour/1", "image": image, "visualization_stroke_width": 2.0})
        assert drawn.status_code == 200, drawn.text
        half = requests.post(daemon.url + "/infer/object_detection",
                             json={"model_id": "colour/1", "image": image, "visualization_stroke_width": 2.5})
        assert half.status_code == 422 and "visualization_stroke_width" in half.json()["message"]
        over = requests.post(daemon.url + "/infer/object_detection",
                             json={"model_id": "colour/1", "image": image, "confidence": 5})
        assert over.status_code == 422 and "confidence" in over.json()["message"]
        assert body["properties"]["confidence"]["anyOf"][0]["maximum"] == 1
        listing = spec["paths"]["/v1/vision/custom/list"]
        assert set(listing) == {"get", "post"}
        assert requests.post(daemon.url + "/v1/vision/custom/list").json()["success"] is True


def test_spec_leaves_out_disabled_image_types_and_states_the_url_rule(make_settings):
    """Image types switched off are not offered; the URL rule the spec states is the server's."""
    from tests.support.daemon import ThreadedDaemon

    with ThreadedDaemon(make_settings(allow_url_input=False, api_url="")) as daemon:
        spec = requests.get(daemon.url + "/openapi.json").json()
        validate(spec)
        reference = spec["components"]["schemas"]["ImageReference"]
        assert reference["properties"]["type"]["enum"] == ["base64"]
        query = spec["paths"]["/{project_id}/{model_version}"]["post"]["parameters"]
        assert next(p for p in query if p["name"] == "image_type")["schema"]["enum"] == ["base64"]
        rules = {tuple(rule["if"]["properties"]["type"]["enum"]): rule["then"]["properties"]["value"]["pattern"]
                 for rule in reference["allOf"]}
    with ThreadedDaemon(make_settings(api_url="")) as daemon:
        url_rule = rules[("url",)]
        for url in ("http://a]b/x.jpg", "http://[::1/x.jpg", "http://host:99999/x.jpg"):
            assert re.search(url_rule, url), url  # well-formed enough for the rule; the server refuses it cleanly
            answer = requests.post(daemon.url + "/infer/object_detection",
                                   json={"model_id": "colour/1", "image": {"type": "url", "value": url}})
            assert answer.status_code == 400 and "malformed" in answer.json()["message"], answer.text
        assert not re.search(url_rule, "ftp://host/x.jpg")
