"""Download on first request from a loopback registry, cache atomically, serve forever after without it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import requests

from tests.support.daemon import DaemonProcess, ThreadedDaemon
from tests.support.images import solid_png
from tests.support.onnx_models import COLOUR_CLASSES, colour_detector, colour_environment, write_model
from tests.support.registry import RegistryServer


@pytest.fixture
def registry(tmp_path: Path):
    source = write_model(tmp_path / "registry-files", "remote/3", colour_detector("yolov8"), colour_environment())
    with RegistryServer() as server:
        server.add_model("remote/3", source, COLOUR_CLASSES)
        yield server




def test_first_request_downloads_once_then_restart_serves_offline(registry, tmp_path, model_store):
    cache = tmp_path / "cache"
    args = ["--models-dir", str(model_store), "--cache-dir", str(cache), "--api-url", registry.url,
            "--threads", "4", "--ort-threads", "1"]
    first = DaemonProcess(args, log_path=tmp_path / "first.log").wait_ready()
    try:
        response = requests.post(first.url + "/remote/3?api_key=good-key&confidence=0.5", data=solid_png())
        assert response.status_code == 200, response.text
        expected = response.json()["predictions"]
        assert [p["class"] for p in expected] == ["red", "red"]
        again = requests.post(first.url + "/remote/3?confidence=0.5", data=solid_png())  # no key needed now
        assert again.status_code == 200
    finally:
        first.stop()
    assert registry.state.weight_downloads == {"remote/3": 1}
    folder = cache / "models" / "remote" / "3"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"weights.onnx", "environment.json", "model_type.json", "class_names.txt"}
    assert not any((cache / "models" / ".staging").iterdir()), "no half-written staging folders remain"
    assert "good-key" not in first.log(), "the API key must never reach the logs"
    assert all("good-key" not in path.name for path in cache.rglob("*"))

    registry.stop()  # the registry is gone; a restarted daemon must not need it
    second = DaemonProcess(args, log_path=tmp_path / "second.log").wait_ready()
    try:
        response = requests.post(second.url + "/remote/3?confidence=0.5", data=solid_png())
        assert response.status_code == 200, response.text
        assert [(p["class"], p["x"], p["y"]) for p in response.json()["predictions"]] == [
            (p["class"], p["x"], p["y"]) for p in expected]
    finally:
        second.stop()


def test_twenty_concurrent_first_requests_download_once(registry, make_settings):
    registry.state.delay = 0.5  # keep the download in flight while the other requests arrive
    with ThreadedDaemon(make_settings(api_url=registry.url, api_key="good-key"), threads=20) as daemon:
        results: list[int] = []
        barrier = threading.Barrier(20)

        def call() -> None:
            barrier.wait()
            results.append(requests.post(daemon.url + "/remote/3", data=solid_png(), timeout=60).status_code)

        threads = [threading.Thread(target=call) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200] * 20
        assert registry.state.weight_downloads == {"remote/3": 1}
        assert len(registry.state.artifact_requests) == 1


@pytest.mark.parametrize(("model", "key", "status", "words"), [
    ("remote/3", "bad-key", 401, "API key"),
    ("missing/1", "good-key", 404, "not found"),
])
def test_registry_errors_map_to_clear_statuses(registry, make_settings, model, key, status, words):
    with ThreadedDaemon(make_settings(api_url=registry.url)) as daemon:
        response = requests.post(f"{daemon.url}/{model}?api_key={key}", data=solid_png())
    assert response.status_code == status
    message = response.json()["message"]
    assert words in message
    assert key not in message
    assert registry.state.weight_downloads == {}


def test_unreachable_registry_is_503(make_settings):
    with ThreadedDaemon(make_settings(api_url="http://127.0.0.1:9")) as daemon:
        response = requests.post(f"{daemon.url}/remote/3?api_key=secret-key-123", data=solid_png())
    assert response.status_code == 503
    assert "secret-key-123" not in response.text


def test_registry_serving_a_broken_model_is_502_and_nothing_is_cached(tmp_path, make_settings):
    broken = write_model(tmp_path / "files", "junk/1", b"this is not onnx", colour_environment())
    with RegistryServer() as server:
        server.add_model("junk/1", broken, COLOUR_CLASSES)
        settings = make_settings(api_url=server.url, api_key="good-key")
        with ThreadedDaemon(settings) as daemon:
            response = requests.post(f"{daemon.url}/junk/1", data=solid_png())
    assert response.status_code == 502
    assert "unusable model" in response.json()["message"]
    assert not (Path(settings.cache_dir) / "models" / "junk" / "1").exists()


def test_corrupted_cache_entry_is_fetched_again(registry, make_settings):
    settings = make_settings(api_url=registry.url, api_key="good-key")
    with ThreadedDaemon(settings) as daemon:
        assert requests.post(f"{daemon.url}/remote/3", data=solid_png()).status_code == 200
    weights = Path(settings.cache_dir) / "models" / "remote" / "3" / "weights.onnx"
    weights.write_bytes(weights.read_bytes()[:-10])  # bit rot / truncated by a disk fault
    with ThreadedDaemon(settings) as daemon:
        assert requests.post(f"{daemon.url}/remote/3", data=solid_png()).status_code == 200
    assert registry.state.weight_downloads == {"remote/3": 2}


def test_local_store_wins_over_registry(registry, make_settings, tmp_path):
    local = tmp_path / "local-store"
    write_model(local, "remote/3", colour_detector("yolov8"), colour_environment())
    with ThreadedDaemon(make_settings(api_url=registry.url, models_dir=str(local))) as daemon:
        assert requests.post(f"{daemon.url}/remote/3", data=solid_png()).status_code == 200
    assert registry.state.artifact_requests == []


def test_evicted_model_is_reloaded_from_cache_without_download(registry, make_settings):
    settings = make_settings(api_url=registry.url, api_key="good-key", max_active_models=1)
    with ThreadedDaemon(settings) as daemon:
        manager = daemon.service.manager
        assert requests.post(f"{daemon.url}/remote/3", data=solid_png()).status_code == 200
        weights = Path(settings.cache_dir) / "models" / "remote" / "3" / "weights.onnx"
        before = weights.stat()
        assert requests.post(f"{daemon.url}/colour/1", data=solid_png()).status_code == 200  # evicts remote/3
        assert [m["model_id"] for m in requests.get(f"{daemon.url}/model/registry").json()["models"]] == ["colour/1"]
        assert manager.evictions == 1
        assert weights.exists() and weights.stat().st_mtime_ns == before.st_mtime_ns  # files stay
        again = requests.post(f"{daemon.url}/remote/3", data=solid_png())
        assert again.status_code == 200
        assert registry.state.weight_downloads == {"remote/3": 1}
        assert len(registry.state.artifact_requests) == 1  # not even a metadata call
        assert manager.downloads == 1
        assert weights.stat().st_ino == before.st_ino
