"""The console over plain HTTP (no browser needed): how its files are served and cached, which paths load
without an access key, the --console switch, and the API routes it reads (/model/catalog, /model/rebuild,
the Server-Timing header). The browser-driven checks are in test_console_browser.py."""

from __future__ import annotations

import re

import requests

from tests.support.daemon import ThreadedDaemon

KEY = "console-key-9a2e"


def _asset_paths(page: str) -> list[str]:
    return sorted(set(re.findall(r'"(/console/static/[^"]+)"', page)))


def test_page_and_hashed_assets_are_served_and_cached(daemon):
    page = requests.get(daemon.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-cache"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert 'data-auth="open"' in page.text
    paths = _asset_paths(page.text)
    assert {re.sub(r"\.[0-9a-f]{12}\.", ".", path) for path in paths} == {
        "/console/static/console.css", "/console/static/console.js", "/console/static/favicon.svg"}
    for path in paths:
        asset = requests.get(daemon.url + path, timeout=10)
        assert asset.status_code == 200 and asset.content
        assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        again = requests.get(daemon.url + path, headers={"If-None-Match": asset.headers["ETag"]}, timeout=10)
        assert again.status_code == 304 and not again.content
    revalidated = requests.get(daemon.url + "/", headers={"If-None-Match": page.headers["ETag"]}, timeout=10)
    assert revalidated.status_code == 304
    missing = requests.get(daemon.url + "/console/static/console.000000000000.js", timeout=10)
    assert missing.status_code == 404 and "message" in missing.json()


def test_with_access_keys_only_the_page_and_its_files_are_open(make_settings):
    with ThreadedDaemon(make_settings(access_keys=[KEY])) as locked:
        page = requests.get(locked.url + "/", timeout=10)
        assert page.status_code == 200 and 'data-auth="required"' in page.text
        for path in _asset_paths(page.text):
            assert requests.get(locked.url + path, timeout=10).status_code == 200
        for path in ("/console/static/other.js", "/info", "/model/catalog", "/openapi.json"):
            assert requests.get(locked.url + path, timeout=10).status_code == 401, path
        catalog = requests.get(locked.url + "/model/catalog", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        assert catalog.status_code == 200 and KEY not in catalog.text


def test_console_can_be_turned_off(make_settings):
    with ThreadedDaemon(make_settings(console=False)) as off:
        assert requests.get(off.url + "/", timeout=10).status_code == 404
        assert requests.get(off.url + "/console/static/console.css", timeout=10).status_code == 404
        assert "/" not in requests.get(off.url + "/openapi.json", timeout=10).json()["paths"]


def test_catalog_lists_every_store_with_state_engine_and_errors(daemon, colour_jpeg):
    models = {m["model_id"]: m for m in requests.get(daemon.url + "/model/catalog", timeout=10).json()["models"]}
    assert models["shapes/1"]["source"] == "bundled" and models["colour/1"]["source"] == "models_dir"
    assert models["shapes-seg/1"]["task"] == "instance-segmentation"
    assert models["shapes/1"]["classes"] == ["circle", "square", "triangle", "star"]
    assert models["colour/1"]["state"] == "available" and models["colour/1"]["engine"] is None

    assert requests.post(daemon.url + "/colour/1", data=colour_jpeg, timeout=30).status_code == 200
    assert requests.post(daemon.url + "/wrong-classes/1", data=colour_jpeg, timeout=30).status_code == 422
    models = {m["model_id"]: m for m in requests.get(daemon.url + "/model/catalog", timeout=10).json()["models"]}
    ready = models["colour/1"]
    assert ready["state"] == "ready" and ready["engine"]["backend"] == "onnxruntime"
    assert "cache_path" not in ready["engine"]
    [entry] = ready["engine_cache"]
    assert entry["key"] == ready["engine"]["cache_key"] and entry["size_bytes"] > 0 and entry["precision"]
    failed = models["wrong-classes/1"]
    assert failed["state"] == "failed" and "class" in failed["last_error"]


def test_rebuild_drops_the_compiled_engine_and_builds_it_again(daemon, colour_jpeg):
    assert requests.post(daemon.url + "/model/add", json={"model_id": "colour/1"}, timeout=30).status_code == 200
    requests.post(daemon.url + "/model/remove", json={"model_id": "colour/1"}, timeout=30).raise_for_status()
    requests.post(daemon.url + "/model/add", json={"model_id": "colour/1"}, timeout=30).raise_for_status()
    before = {m["model_id"]: m for m in requests.get(daemon.url + "/model/catalog", timeout=10).json()["models"]}
    assert before["colour/1"]["engine"]["cache_hit"] is True  # reloaded from the engine cache

    rebuilt = requests.post(daemon.url + "/model/rebuild", json={"model_id": "colour/1"}, timeout=60)
    assert rebuilt.status_code == 200
    after = {m["model_id"]: m for m in rebuilt.json()["models"]}["colour/1"]
    assert after["state"] == "ready" and after["engine"]["cache_hit"] is False
    assert len(after["engine_cache"]) == 1  # the old engine was replaced, not kept beside the new one
    assert requests.post(daemon.url + "/colour/1", data=colour_jpeg, timeout=30).status_code == 200

    bad = requests.post(daemon.url + "/model/rebuild", json={"model_id": "../etc"}, timeout=10)
    assert bad.status_code == 400 and "message" in bad.json()
    unknown = requests.post(daemon.url + "/model/rebuild", json={"model_id": "nothing/1"}, timeout=30)
    assert unknown.status_code in (404, 503) and "message" in unknown.json()


def test_inference_answers_carry_server_timing(daemon, colour_jpeg):
    response = requests.post(daemon.url + "/colour/1", data=colour_jpeg, timeout=30)
    stages = dict(part.strip().split(";dur=") for part in response.headers["Server-Timing"].split(","))
    assert set(stages) == {"decode", "preprocess", "inference", "postprocess"}
    assert all(float(value) >= 0 for value in stages.values())
