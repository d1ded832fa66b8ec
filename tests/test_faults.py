"""Faults end in a clear error or a successful retry, never a corrupt cache entry or a wrong model: registry
down/slow/garbage, truncated downloads, disk full, kill -9 mid-download, two processes on one cache."""

from __future__ import annotations

import resource
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from edge_daemon.models.store import verify_folder
from tests.support.daemon import DaemonProcess, ThreadedDaemon
from tests.support.images import solid_png
from tests.support.onnx_models import COLOUR_CLASSES, colour_detector, colour_environment, slow_detector, write_model
from tests.support.registry import RegistryServer


@pytest.fixture
def registry(tmp_path: Path):
    source = write_model(tmp_path / "files", "remote/3", slow_detector(matmuls=1), colour_environment())
    with RegistryServer() as server:
        server.add_model("remote/3", source, COLOUR_CLASSES)
        yield server


def _cache_entries(cache: Path) -> list[Path]:
    root = cache / "models" / "remote"
    return sorted(root.iterdir()) if root.exists() else []


def _daemon_args(model_store: Path, cache: Path, registry: RegistryServer) -> list[str]:
    return ["--models-dir", str(model_store), "--cache-dir", str(cache), "--api-url", registry.url,
            "--api-key", "good-key", "--threads", "4", "--registry-timeout", "2"]


def test_truncated_download_is_503_then_a_clean_retry(registry, make_settings):
    registry.state.truncate_weights = True
    settings = make_settings(api_url=registry.url, api_key="good-key", registry_timeout=2)
    with ThreadedDaemon(settings) as server:
        cut = requests.post(server.url + "/remote/3", data=solid_png())
        assert cut.status_code == 503, cut.text
        assert _cache_entries(Path(settings.cache_dir)) == []
        registry.state.truncate_weights = False
        assert requests.post(server.url + "/remote/3", data=solid_png()).status_code == 200
    entry = Path(settings.cache_dir) / "models" / "remote" / "3"
    verify_folder(entry)
    assert not any((Path(settings.cache_dir) / "models" / ".staging").iterdir())


def test_slow_registry_times_out_with_503(registry, make_settings):
    registry.state.delay = 3.0
    with ThreadedDaemon(make_settings(api_url=registry.url, api_key="good-key", registry_timeout=0.5)) as server:
        response = requests.post(server.url + "/remote/3", data=solid_png())
    assert response.status_code == 503
    assert "good-key" not in response.text


def test_kill_9_during_download_leaves_no_entry_and_restart_recovers(registry, model_store, tmp_path):
    cache = tmp_path / "cache"
    registry.state.stall_after_half = 30.0
    first = DaemonProcess(_daemon_args(model_store, cache, registry), log_path=tmp_path / "first.log").wait_ready()
    caller = threading.Thread(target=lambda: _swallow(lambda: requests.post(first.url + "/remote/3", data=solid_png(),
                                                                           timeout=60)), daemon=True)
    caller.start()
    deadline = time.monotonic() + 20
    while registry.state.weight_downloads.get("remote/3", 0) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # half the weights are in the staging folder now
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    first.stop()
    assert _cache_entries(cache) == [], "a killed download must not leave a model entry"
    assert any((cache / "models" / ".staging").iterdir()), "the half-written download stayed in staging"

    registry.state.stall_after_half = 0.0
    second = DaemonProcess(_daemon_args(model_store, cache, registry), log_path=tmp_path / "second.log").wait_ready()
    try:
        response = requests.post(second.url + "/remote/3?confidence=0.5", data=solid_png())
        assert response.status_code == 200, second.log()
        assert [p["class"] for p in response.json()["predictions"]] == ["red", "red"]
    finally:
        second.stop()
    verify_folder(cache / "models" / "remote" / "3")
    assert not any((cache / "models" / ".staging").iterdir()), "the dead process's staging folder was cleaned"


def test_two_processes_sharing_a_cache_download_once(registry, model_store, tmp_path):
    cache = tmp_path / "cache"
    registry.state.delay = 1.0
    daemons = [DaemonProcess(_daemon_args(model_store, cache, registry), log_path=tmp_path / f"d{i}.log")
               for i in range(2)]
    try:
        for daemon in daemons:
            daemon.wait_ready()
        results: list[int] = []
        threads = [threading.Thread(target=lambda d=d: results.append(
            requests.post(d.url + "/remote/3", data=solid_png(), timeout=60).status_code)) for d in daemons]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for daemon in daemons:
            daemon.stop()
    assert results == [200, 200]
    assert registry.state.weight_downloads == {"remote/3": 1}


def test_disk_full_while_writing_is_507_and_nothing_half_written(registry, model_store, tmp_path):
    cache = tmp_path / "cache"

    def small_disk() -> None:  # files over 64 KiB cannot be written: as a full disk would refuse
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    daemon = DaemonProcess(_daemon_args(model_store, cache, registry), log_path=tmp_path / "daemon.log",
                           preexec_fn=small_disk).wait_ready()
    try:
        response = requests.post(daemon.url + "/remote/3", data=solid_png())
        assert response.status_code == 507, response.text
        assert "could not write model remote/3 to the cache" in response.json()["message"]
        assert requests.post(daemon.url + "/colour/1", data=solid_png()).status_code == 200  # still serving
    finally:
        daemon.stop()
    assert _cache_entries(cache) == []
    assert not any((cache / "models" / ".staging").iterdir())


def test_registry_garbage_is_502(tmp_path, make_settings):
    source = write_model(tmp_path / "files", "junk/1", colour_detector(), colour_environment())
    with RegistryServer() as server:
        server.add_model("junk/1", source, COLOUR_CLASSES)
        server.state.models["junk/1"].environment = "not json at all"  # type: ignore[assignment]
        with ThreadedDaemon(make_settings(api_url=server.url, api_key="good-key")) as daemon:
            response = requests.post(daemon.url + "/junk/1", data=solid_png())
    assert response.status_code == 502


def _swallow(call) -> None:
    try:
        call()
    except requests.RequestException:
        pass
