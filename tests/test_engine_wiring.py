"""The daemon compiles each model once per device: a restart loads the engine from the cache, /info and
/metrics say so, and the probe/build/cache commands work from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import REPO_ROOT, DaemonProcess


def _counter(url: str, name: str) -> float:
    for family in text_string_to_metric_families(requests.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} missing from /metrics")


def test_restart_loads_the_engine_from_the_cache(model_store, tmp_path, colour_jpeg):
    args = ["--models-dir", str(model_store), "--cache-dir", str(tmp_path / "cache"), "--api-url", ""]
    answers = []
    for run in ("first", "second"):
        daemon = DaemonProcess(args, log_path=tmp_path / f"{run}.log").wait_ready()
        try:
            answers.append(requests.post(daemon.url + "/colour/1?confidence=0.1", data=colour_jpeg).json())
            answers.append((_counter(daemon.url, "edge_daemon_engine_builds_total"),
                            _counter(daemon.url, "edge_daemon_engine_cache_hits_total")))
            info = requests.get(daemon.url + "/info").json()
        finally:
            daemon.stop()
    first, (builds_1, hits_1), second, (builds_2, hits_2) = answers
    assert (builds_1, hits_1) == (1, 0)
    assert (builds_2, hits_2) == (0, 1), "a restart must not compile again"
    assert [p["class"] for p in first["predictions"]] == [p["class"] for p in second["predictions"]]
    assert info["backend"]["backend"] == "onnxruntime"
    assert info["platform"]["device_kind"] in {"x86", "arm64", "raspberry-pi", "jetson", "x86-nvidia"}
    engine = info["models_loaded"][0]["engine"]
    assert engine["cache_hit"] is True and engine["backend"] == "onnxruntime"
    assert list((tmp_path / "cache" / "engines").iterdir())


def test_probe_build_and_cache_commands(model_store, tmp_path):
    common = ["--models-dir", str(model_store), "--cache-dir", str(tmp_path / "cache"), "--api-url", ""]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_daemon", *args], capture_output=True, text=True,
                              cwd=REPO_ROOT, timeout=120)

    probed = run("probe", "--json", *common)
    assert probed.returncode == 0, probed.stderr
    assert json.loads(probed.stdout)["backend"]["backend"] == "onnxruntime"
    built = run("models", "build", "colour/1", *common)
    assert built.returncode == 0 and "built" in built.stdout, built.stderr
    again = run("models", "build", "colour/1", *common)
    assert "loaded from the engine cache" in again.stdout
    listed = run("cache", "ls", *common)
    assert "colour/1" in listed.stdout and "1 engines" in listed.stdout
    pruned = run("cache", "prune", "--all", *common)
    assert "removed 1 engines" in pruned.stdout
    assert "0 engines" in run("cache", "ls", *common).stdout


def test_models_answer_and_readiness_shows_building_while_another_process_builds(model_store, tmp_path,
                                                                                 colour_jpeg):
    """A build in progress elsewhere (this test holds the engine's build lock, as a second daemon building
    it would) keeps colour/1 'building'; other models answer meanwhile, and readiness flips when it ends."""
    import threading
    import time

    from edge_daemon.config import Settings
    from edge_daemon.engines import create_engine, engine_options
    from edge_daemon.engines.cache import EngineCache, model_slug

    probe_cache = tmp_path / "probe-cache"
    engine = create_engine(model_store / "colour" / "1" / "weights.onnx", model_id="colour/1",
                           options=engine_options(Settings(cache_dir=str(probe_cache))))
    key = engine.build.cache_key
    cache = tmp_path / "cache"
    release = threading.Event()
    held = threading.Event()

    def hold_build_lock() -> None:
        with EngineCache(cache).lock(model_slug("colour/1"), key):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold_build_lock)
    holder.start()
    held.wait(10)
    daemon = DaemonProcess(["--models-dir", str(model_store), "--cache-dir", str(cache), "--api-url", "",
                            "--preload", "colour/1", "--load-wait", "0.5"], log_path=tmp_path / "d.log").wait_ready()
    try:
        deadline = time.monotonic() + 20
        while (state := requests.get(daemon.url + "/readiness").json()["models"].get("colour/1", {}).get("state")) \
                != "building":
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.1)
        assert requests.get(daemon.url + "/readiness").status_code == 503
        waiting = requests.post(daemon.url + "/colour/1", data=colour_jpeg)
        assert waiting.status_code == 503 and "building" in waiting.json()["message"]
        assert requests.post(daemon.url + "/colour-v5/1", data=colour_jpeg).status_code == 200
        release.set()
        holder.join(10)
        while requests.get(daemon.url + "/readiness").status_code != 200:
            assert time.monotonic() < deadline + 20, daemon.log()
            time.sleep(0.1)
        assert requests.post(daemon.url + "/colour/1", data=colour_jpeg).status_code == 200
    finally:
        release.set()
        daemon.stop()
    assert state == "building"
