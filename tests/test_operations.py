"""Operations surface: health, readiness, info, Prometheus metrics, DeepStack API, logs, CLI tools."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import requests
from prometheus_client.parser import text_string_to_metric_families

from edge_daemon.api.health import CacheWriteCheck
from edge_daemon.config import markdown_reference
from tests.support.daemon import REPO_ROOT, DaemonProcess
from tests.support.images import solid_png
from tests.support.onnx_models import COLOUR_CLASSES, colour_detector, colour_environment, write_model
from tests.support.registry import RegistryServer


def _metrics(url: str) -> dict[str, list]:
    text = requests.get(url + "/metrics").text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _sample(families: dict, name: str, **labels: str) -> float:
    family = name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
    for sample in families.get(family, []):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return 0.0


def test_health_info_and_readiness_without_preload(daemon):
    assert requests.get(daemon.url + "/healthz").json() == {"status": "healthy"}
    ready = requests.get(daemon.url + "/readiness")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    info = requests.get(daemon.url + "/info").json()
    assert info["name"] == "edge-daemon" and info["version"] and info["uuid"]
    assert "colour/1" in info["models_available"]


def test_healthz_does_not_write_to_the_cache_dir_at_every_probe_but_sees_it_break_at_once(daemon):
    """Probes come every few seconds for years: only the first one (then one per WRITE_PROBE_SECONDS) may
    create a file on the box's storage, yet a cache dir that is no longer a directory fails the very next probe,
    and the repair shows at the probe after."""
    cache = Path(daemon.settings.cache_dir)
    assert requests.get(daemon.url + "/healthz").status_code == 200
    after_first = cache.stat().st_mtime_ns
    for _ in range(5):
        assert requests.get(daemon.url + "/healthz").json() == {"status": "healthy"}
    assert cache.stat().st_mtime_ns == after_first, "a probe created or deleted a file in the cache dir"

    moved = cache.with_name("cache-moved")
    cache.rename(moved)
    cache.write_text("not a folder")
    broken = requests.get(daemon.url + "/healthz")
    assert broken.status_code == 503
    assert broken.json()["status"] == "unhealthy" and "cache_dir_unwritable" in broken.json()["reason"]
    cache.unlink()
    moved.rename(cache)
    assert requests.get(daemon.url + "/healthz").json() == {"status": "healthy"}

    shutil.rmtree(cache)  # a removed cache dir is made again by the next probe, not 5 minutes later
    assert requests.get(daemon.url + "/healthz").json() == {"status": "healthy"}
    assert cache.is_dir()


def test_cache_write_check_writes_again_once_its_interval_has_passed(tmp_path):
    now = [0.0]
    check = CacheWriteCheck(tmp_path / "cache", interval=300.0, clock=lambda: now[0])
    assert check.problem() is None and check.writes == 1 and (tmp_path / "cache").is_dir()
    now[0] = 299.0
    assert check.problem() is None and check.writes == 1
    now[0] = 300.0
    assert check.problem() is None and check.writes == 2
    assert not list((tmp_path / "cache").iterdir()), "the probe file is deleted"


def test_metrics_parse_and_move_with_requests(daemon, colour_jpeg):
    before = _metrics(daemon.url)
    for _ in range(3):
        assert requests.post(daemon.url + "/colour/1", data=colour_jpeg).status_code == 200
    requests.post(daemon.url + "/colour/1", data=b"garbage", headers={"Content-Type": "text/plain"})
    after = _metrics(daemon.url)
    route = "/{project_id}/{model_version}"
    ok = {"route": route, "model": "colour/1", "status": "200"}
    assert _sample(after, "edge_daemon_requests_total", **ok) - _sample(before, "edge_daemon_requests_total", **ok) == 3
    assert _sample(after, "edge_daemon_requests_total", route=route, model="colour/1", status="400") == 1
    assert _sample(after, "edge_daemon_stage_duration_seconds_count", stage="inference", model="colour/1") == 3
    buckets = sorted(float(s.labels["le"]) for s in after["edge_daemon_request_duration_seconds"]
                     if s.name.endswith("_bucket") and s.labels["le"] != "+Inf")
    assert buckets[0] <= 0.001 and buckets[-1] >= 10
    assert _sample(after, "edge_daemon_model_state", model="colour/1", state="ready") == 1
    assert _sample(after, "edge_daemon_model_loads_total", source="local") == 1
    assert _sample(after, "process_resident_memory_bytes") > 10e6
    assert "api_key" not in requests.get(daemon.url + "/metrics").text


def test_deepstack_detection_matches_roboflow_route(make_settings, colour_jpeg):
    from tests.support.daemon import ThreadedDaemon

    with ThreadedDaemon(make_settings(deepstack_model="colour/1")) as server:
        roboflow = requests.post(server.url + "/colour/1?confidence=0.1", data=colour_jpeg).json()["predictions"]
        files = {"image": ("frame.jpg", colour_jpeg, "image/jpeg")}
        answer = requests.post(server.url + "/v1/vision/detection", files=files, data={"min_confidence": "0.1"})
        custom = requests.post(server.url + "/v1/vision/custom/colour", files=files, data={"min_confidence": "0.1"})
        bad = requests.post(server.url + "/v1/vision/detection", files=files, data={"min_confidence": "7"})
        missing = requests.post(server.url + "/v1/vision/detection", files={"other": ("x", b"1")})
        listing = requests.get(server.url + "/v1/vision/custom/list").json()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True and body["count"] == len(roboflow) > 0
    assert {"duration", "inferenceMs", "processMs"} <= set(body)
    expected = sorted((p["class"], p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["x"] + p["width"] / 2,
                       p["y"] + p["height"] / 2) for p in roboflow)
    got = sorted((p["label"], p["x_min"], p["y_min"], p["x_max"], p["y_max"]) for p in body["predictions"])
    assert got == expected
    assert custom.json()["predictions"] == body["predictions"] or sorted(
        (p["label"], p["x_min"]) for p in custom.json()["predictions"]) == sorted((p[0], p[1]) for p in got)
    assert bad.status_code == 400 and bad.json() == {"success": False, "error": "Invalid value for min_confidence",
                                                     "code": 400}
    assert missing.status_code == 400 and missing.json()["success"] is False
    assert "colour" in listing["models"]


def test_readiness_flips_when_preloaded_model_is_ready(tmp_path, model_store):
    source = write_model(tmp_path / "files", "remote/3", colour_detector(), colour_environment())
    with RegistryServer() as registry:
        registry.add_model("remote/3", source, COLOUR_CLASSES)
        registry.state.delay = 2.0  # a slow download keeps the model "downloading" for a while
        daemon = DaemonProcess(["--models-dir", str(model_store), "--cache-dir", str(tmp_path / "cache"),
                                "--api-url", registry.url, "--api-key", "good-key", "--preload", "remote/3",
                                "--threads", "4"], log_path=tmp_path / "daemon.log").wait_ready()
        try:
            first = requests.get(daemon.url + "/readiness")
            assert first.status_code == 503
            assert first.json()["waiting_for"] == ["remote/3"]
            assert first.json()["models"]["remote/3"]["state"] in {"loading", "downloading", "building"}
            # Other models answer while the preload is still downloading.
            assert requests.post(daemon.url + "/colour/1", data=solid_png()).status_code == 200
            deadline = time.monotonic() + 30
            while requests.get(daemon.url + "/readiness").status_code != 200:
                assert time.monotonic() < deadline, daemon.log()
                time.sleep(0.2)
            ready = requests.get(daemon.url + "/readiness").json()
            assert ready["models"]["remote/3"]["state"] == "ready"
            assert ready["models"]["remote/3"]["source"] == "registry"
        finally:
            daemon.stop()
    assert "good-key" not in daemon.log()


def test_request_for_a_model_still_loading_gets_503_retry_after(tmp_path, make_settings):
    from tests.support.daemon import ThreadedDaemon

    source = write_model(tmp_path / "files", "slow/1", colour_detector(), colour_environment())
    with RegistryServer() as registry:
        registry.add_model("slow/1", source, COLOUR_CLASSES)
        registry.state.delay = 3.0
        with ThreadedDaemon(make_settings(api_url=registry.url, api_key="good-key", load_wait=0.5)) as server:
            waiting = requests.post(server.url + "/slow/1", data=solid_png())
            assert waiting.status_code == 503
            assert waiting.headers["Retry-After"] == "5"
            assert "still" in waiting.json()["message"]
            deadline = time.monotonic() + 20
            while (answer := requests.post(server.url + "/slow/1", data=solid_png())).status_code == 503:
                assert time.monotonic() < deadline
                time.sleep(0.3)
            assert answer.status_code == 200
        assert registry.state.weight_downloads == {"slow/1": 1}


def test_json_logs_carry_access_fields_and_no_secrets(tmp_path, model_store, colour_jpeg):
    log_path = tmp_path / "daemon.log"
    daemon = DaemonProcess(["--models-dir", str(model_store), "--cache-dir", str(tmp_path / "cache"),
                            "--log-format", "json", "--api-url", ""], log_path=log_path).wait_ready()
    try:
        requests.post(daemon.url + "/colour/1?api_key=super-secret-key", data=colour_jpeg,
                      headers={"Authorization": "Bearer other-secret"})
    finally:
        daemon.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "edge_daemon.access" and line.get("path") == "/colour/1"]
    assert access and access[0]["status"] == 200 and access[0]["model"] == "colour/1"
    assert access[0]["duration_ms"] > 0 and "inference_ms" in access[0]
    assert "super-secret-key" not in log_path.read_text() and "other-secret" not in log_path.read_text()


def test_models_import_makes_an_onnx_file_servable_offline(tmp_path, colour_jpeg):
    from edge_daemon.config import Settings
    from tests.support.daemon import ThreadedDaemon

    onnx_file = tmp_path / "export.onnx"
    onnx_file.write_bytes(colour_detector())
    store = tmp_path / "store"
    command = [sys.executable, "-m", "edge_daemon", "models", "import", str(onnx_file), "--task", "object-detection",
               "--classes", "red,green,blue", "--as", "mine/2", "--resize-format", "Stretch to",
               "--models-dir", str(store), "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (store / "mine" / "2" / "manifest.json").exists()
    wrong = subprocess.run([*command[:-6], "--classes", "a,b", "--as", "bad/1", *command[-4:]],
                           capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert wrong.returncode == 1 and "do not fit 2 classes" in wrong.stderr
    assert not (store / "bad").exists()
    settings = Settings(host="127.0.0.1", models_dir=str(store), cache_dir=str(tmp_path / "cache"), api_url="")
    with ThreadedDaemon(settings) as server:
        response = requests.post(server.url + "/mine/2?confidence=0.1", data=colour_jpeg)
    assert response.status_code == 200 and response.json()["predictions"]
    listing = subprocess.run([sys.executable, "-m", "edge_daemon", "models", "list", "--models-dir", str(store),
                              "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True,
                             cwd=REPO_ROOT, timeout=60)
    assert "mine/2" in listing.stdout and "user" in listing.stdout


def test_cli_infer_prints_json_and_writes_the_picture(tmp_path, model_store, colour_jpeg):
    image = tmp_path / "frame.jpg"
    image.write_bytes(colour_jpeg)
    picture = tmp_path / "drawn.jpg"
    done = subprocess.run([sys.executable, "-m", "edge_daemon", "infer", "colour/1", str(image), "--confidence",
                           "0.1", "--output", str(picture), "--models-dir", str(model_store), "--cache-dir",
                           str(tmp_path / "cache"), "--api-url", ""], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"]
    assert cv2.imread(str(picture)).shape == (120, 200, 3)


def test_readme_configuration_table_is_generated_from_the_options():
    readme = (REPO_ROOT / "README.md").read_text()
    assert markdown_reference() in readme, "regenerate with: python tools/update_readme_config.py"
    help_text = subprocess.run([sys.executable, "-m", "edge_daemon", "serve", "--help"], capture_output=True,
                               text=True, cwd=REPO_ROOT, timeout=30).stdout
    assert "EDGE_DAEMON_MAX_ACTIVE_MODELS" in help_text and "--log-format" in help_text






def test_the_daemon_hands_the_gil_over_at_the_configured_interval(tmp_path):
    """`serve` sets Python's switch interval (1 ms by default, shorter than Python's 5 ms, so camera readers and
    engine callers returning from C get the GIL back sooner); /info shows what the process runs with."""
    settings = [("--gil-switch-ms", "2.5", 2.5), (None, None, 1.0), ("--gil-switch-ms", "0", 5.0)]
    for flag, value, expected in settings:
        args = ["--cache-dir", str(tmp_path / "cache"), "--api-url", "", "--stream-slots", "3"]
        daemon = DaemonProcess(args + ([flag, value] if flag else []), log_path=tmp_path / "daemon.log").wait_ready()
        try:
            concurrency = requests.get(daemon.url + "/info", timeout=10).json()["concurrency"]
        finally:
            daemon.stop()
        assert concurrency["gil_switch_ms"] == expected, (flag, value, concurrency)
        assert concurrency["stream_slots"] == 3 and concurrency["engine_slots"] >= 2
