"""`--backend remote` against a real KServe v2 server: MLServer (its own virtualenv, made by .ci/run) serving
the bundled shapes/1 ONNX through an ONNX Runtime runtime on loopback, driven over real HTTP to the daemon.

What users rely on: the same predictions as the local engine, one remote call per dynamic batch, a clear 503
(or the local fallback, when on) while the server is down and recovery when it returns, and a model whose
server metadata disagrees with the local ONNX file refused at load with the difference named."""

from __future__ import annotations

import importlib.util
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge_daemon.config import Settings
from edge_daemon.models.store import BUNDLED_ROOT
from edge_daemon.scenes import encode_jpeg, generate_scene
from tests.support.daemon import ThreadedDaemon
from tests.support.kserve_server import MLServer, mlserver_binary

WEIGHTS = BUNDLED_ROOT / "shapes" / "1" / "weights.onnx"
WRONG_INPUT = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 384, 384]}]}
WRONG_OUTPUT = {"outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1, 9, 3024]}]}

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None,
                       reason="tritonclient is not installed (pip install -e '.[remote]'; .ci/run does)"),
    pytest.mark.skipif(mlserver_binary() is None,
                       reason="mlserver is not installed (.ci/run puts MLServer 1.7.1 in .venv/mlserver)"),
]


@pytest.fixture(scope="module")
def kserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLServer]:
    """One server for the read-only tests: shapes_1 as exported, and two models described wrongly."""
    server = MLServer(tmp_path_factory.mktemp("mlserver"),
                      {"shapes_1": WEIGHTS, "shapes_bad_input": WEIGHTS, "shapes_bad_output": WEIGHTS},
                      declared={"shapes_bad_input": WRONG_INPUT, "shapes_bad_output": WRONG_OUTPUT})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def scenes() -> list[bytes]:
    return [encode_jpeg(generate_scene(seed).image, 92) for seed in (3, 11, 29)]


def remote_settings(make_settings: Callable[..., Settings], url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"backend": "remote", "remote_url": url, "remote_timeout": 3.0}
    values.update(overrides)
    return make_settings(**values)


def boxes(answer: dict[str, Any]) -> list[tuple[str, float, float, float, float, float]]:
    return sorted((p["class"], p["x"], p["y"], p["width"], p["height"], p["confidence"])
                  for p in answer["predictions"])


def assert_same_boxes(remote: dict[str, Any], local: dict[str, Any]) -> None:
    mine, theirs = boxes(remote), boxes(local)
    assert len(mine) == len(theirs) > 0
    for a, b in zip(mine, theirs):
        assert a[0] == b[0]
        assert all(abs(x - y) <= 1.0 for x, y in zip(a[1:5], b[1:5])), (a, b)
        assert abs(a[5] - b[5]) < 1e-3


def infer(url: str, image: bytes, timeout: float = 30) -> requests.Response:
    return requests.post(url + "/shapes/1?confidence=0.4", data=image, headers={"Content-Type": "image/jpeg"},
                         timeout=timeout)


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_remote_predictions_match_the_local_engine(make_settings, kserve, scenes, transport):
    with ThreadedDaemon(make_settings(backend="onnxruntime")) as local:
        expected = [infer(local.url, image).json() for image in scenes]
    url = kserve.grpc_url if transport == "grpc" else kserve.http_url
    with ThreadedDaemon(remote_settings(make_settings, url)) as remote:
        for image, local_answer in zip(scenes, expected):
            answer = infer(remote.url, image)
            assert answer.status_code == 200, answer.text
            assert_same_boxes(answer.json(), local_answer)
        info = requests.get(remote.url + "/info").json()
        loaded = {entry["model_id"]: entry for entry in info["models_loaded"]}["shapes/1"]
        assert loaded["engine"]["backend"] == "remote"
        assert loaded["engine"]["backend_version"] == "mlserver 1.7.1"
        assert loaded["remote"]["url"] == url and loaded["remote"]["model"] == "shapes_1"
        assert loaded["remote"]["up"] is True and loaded["remote"]["fallback_active"] is False
        assert info["backend"]["backend"] == "remote"
        text = requests.get(remote.url + "/metrics").text
        assert metric(text, "edge_daemon_remote_calls_total", model="shapes/1", outcome="ok") >= len(scenes)
        assert metric(text, "edge_daemon_remote_up", model="shapes/1") == 1.0


def test_dynamic_batching_makes_one_remote_call_per_batch(make_settings, kserve, scenes):
    clients = 6
    settings = remote_settings(make_settings, kserve.grpc_url, batch_window_ms=150, engine_slots=1)
    with ThreadedDaemon(settings, threads=clients) as remote:
        assert infer(remote.url, scenes[0]).status_code == 200
        model = remote.service.manager.loaded()[0]
        calls_before, batches_before = model.engine.counts["ok"], model.batcher.batches
        statuses: list[int] = []
        barrier = threading.Barrier(clients)

        def call(index: int) -> None:
            barrier.wait()
            statuses.append(infer(remote.url, scenes[index % len(scenes)]).status_code)

        threads = [threading.Thread(target=call, args=(index,)) for index in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert statuses == [200] * clients
        calls = model.engine.counts["ok"] - calls_before
        assert calls == model.batcher.batches - batches_before  # each engine batch is exactly one remote call
        assert calls < clients  # and requests did share batches


@pytest.mark.parametrize(("server_model", "named"), [("shapes_bad_input", ["'images'", "pixels"]),
                                                     ("shapes_bad_output", ["'output0'", "[-1, 9, 3024]"])])
def test_server_metadata_that_disagrees_is_refused_at_load(make_settings, kserve, scenes, server_model, named):
    settings = remote_settings(make_settings, kserve.grpc_url, remote_model_map=[f"shapes/1={server_model}"])
    with ThreadedDaemon(settings) as remote:
        answer = infer(remote.url, scenes[0])
        assert answer.status_code == 422
        message = answer.json()["message"]
        assert f"'{server_model}' does not match shapes/1" in message
        assert all(part in message for part in named), message
        assert remote.service.manager.status("shapes/1").state == "failed"


def test_a_model_missing_on_the_server_is_refused_at_load(make_settings, kserve, scenes):
    settings = remote_settings(make_settings, kserve.http_url, remote_model_map=["shapes/1=not_there"])
    with ThreadedDaemon(settings) as remote:
        answer = infer(remote.url, scenes[0])
        assert answer.status_code == 422
        assert "has no usable model 'not_there'" in answer.json()["message"]


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_server_killed_mid_run_gives_503_or_fallback_then_recovers(make_settings, tmp_path: Path, scenes):
    server = MLServer(tmp_path / "mlserver", {"shapes_1": WEIGHTS}).start()
    fault = {"remote_breaker_seconds": 2.0, "remote_retries": 1, "remote_timeout": 2.0}
    try:
        with ThreadedDaemon(make_settings(backend="onnxruntime")) as local, \
                ThreadedDaemon(remote_settings(make_settings, server.grpc_url, **fault)) as plain, \
                ThreadedDaemon(remote_settings(make_settings, server.grpc_url, remote_fallback=True,
                                               cache_dir=str(tmp_path / "cache-fallback"), **fault)) as fallback:
            expected = infer(local.url, scenes[1]).json()
            for daemon in (plain, fallback):
                assert infer(daemon.url, scenes[1]).status_code == 200

            server.kill()
            down = infer(plain.url, scenes[1])
            assert down.status_code == 503
            assert re.search(r"inference server grpc://127\.0\.0\.1:\d+ is unavailable for shapes/1",
                             down.json()["message"]), down.json()
            assert int(down.headers["Retry-After"]) >= 1
            for _ in range(4):  # the circuit opens: later requests fail at once, without trying the server
                assert infer(plain.url, scenes[1]).status_code == 503
            assert plain.service.manager.loaded()[0].engine.counts["fast_failed"] >= 1
            remote_info = requests.get(plain.url + "/info").json()["models_loaded"][0]["remote"]
            assert remote_info["up"] is False and remote_info["circuit"] in ("open", "half-open")
            text = requests.get(plain.url + "/metrics").text
            assert metric(text, "edge_daemon_remote_up", model="shapes/1") == 0
            assert metric(text, "edge_daemon_remote_calls_total", model="shapes/1", outcome="fast_failed") >= 1

            # With the fallback on, the local engine answers, with the same boxes, and says so.
            served = infer(fallback.url, scenes[1])
            assert served.status_code == 200, served.text
            assert_same_boxes(served.json(), expected)
            remote_info = requests.get(fallback.url + "/info").json()["models_loaded"][0]["remote"]
            assert remote_info["fallback_active"] is True and remote_info["fallback_enabled"] is True
            text = requests.get(fallback.url + "/metrics").text
            assert metric(text, "edge_daemon_remote_fallback_active", model="shapes/1") == 1.0
            assert metric(text, "edge_daemon_remote_calls_total", model="shapes/1", outcome="fallback") >= 1

            # A model first loaded while the server is down gets the same clear 503.
            with ThreadedDaemon(remote_settings(make_settings, server.grpc_url, **fault)) as cold:
                answer = infer(cold.url, scenes[1])
                assert answer.status_code == 503 and "is unavailable for shapes/1" in answer.json()["message"]

            server.start()
            assert _wait_for(lambda: infer(plain.url, scenes[1]).status_code == 200, 20), "no recovery"
            assert_same_boxes(infer(plain.url, scenes[1]).json(), expected)
            assert requests.get(plain.url + "/info").json()["models_loaded"][0]["remote"]["up"] is True

            def remote_again() -> bool:
                infer(fallback.url, scenes[1])
                return not requests.get(fallback.url + "/info").json()["models_loaded"][0]["remote"][
                    "fallback_active"]

            assert _wait_for(remote_again, 20), "the fallback daemon never went back to the server"
            text = requests.get(fallback.url + "/metrics").text
            assert metric(text, "edge_daemon_remote_fallback_active", model="shapes/1") == 0.0
    finally:
        server.stop()
