"""The engine cache with the real ONNX Runtime: compile once, reuse across objects and processes, never
reuse a wrong entry, rebuild a damaged one, and let concurrent processes build once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_daemon.engines import CACHE_COUNTERS, EngineOptions, create_engine
from edge_daemon.engines.cache import EngineCache, KeyInputs, model_slug
from edge_daemon.engines.cache_admin import list_entries, prune
from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine
from edge_daemon.platform import PlatformInfo
from tests.support.onnx_models import colour_detector

REPO = Path(__file__).resolve().parents[1]


def cpu_box(**changes: object) -> PlatformInfo:
    info = PlatformInfo(
        device_kind="x86", arch="x86_64", board_model=None, compatible=(), soc=None, l4t_release=None,
        jetpack=None, cpu_model="Intel(R) N100", cpu_cores=4, cpu_features=("sse4_2", "avx2", "fma"),
        nvidia_driver=None, onnxruntime_version="test", ort_providers=("CPUExecutionProvider",),
        ort_providers_listed=("CPUExecutionProvider",), tensorrt_version=None, cuda_bindings=(), gpu=None)
    return replace(info, **changes)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model" / "weights.onnx"
    path.parent.mkdir()
    path.write_bytes(colour_detector())
    return path


@pytest.fixture
def batch() -> np.ndarray:
    return np.random.default_rng(7).random((2, 3, 64, 64), dtype=np.float32)


def load(weights: Path, cache: Path, model_id: str = "colour/1", **platform: object) -> OnnxRuntimeEngine:
    engine = create_engine(weights, 1, model_id=model_id, options=EngineOptions(cache_dir=cache),
                           platform=cpu_box(**platform))
    assert isinstance(engine, OnnxRuntimeEngine)
    return engine


def test_first_load_writes_an_entry_and_the_next_load_reuses_it(weights: Path, tmp_path: Path,
                                                                batch: np.ndarray) -> None:
    cache = tmp_path / "cache"
    before = CACHE_COUNTERS.snapshot()
    first = load(weights, cache)
    assert first.build.cache_hit is False and first.build.build_seconds is not None
    entry = Path(first.build.cache_path)
    assert entry.parent == cache / "engines" / "colour-1" and entry.name == first.build.cache_key
    metadata = json.loads((entry / "metadata.json").read_text())
    assert metadata["model_id"] == "colour/1" and metadata["artifact"] == "optimized.onnx"
    assert metadata["key_inputs"]["backend"] == "onnxruntime" and metadata["versions"]["onnxruntime"]
    assert metadata["build_seconds"] >= 0 and metadata["created"]
    artifact_mtime = (entry / "optimized.onnx").stat().st_mtime_ns

    second = load(weights, cache)
    assert second.build.cache_hit is True and second.build.build_seconds is None
    assert second.optimization == "none"  # the cached graph is loaded as is, not optimised again
    assert (entry / "optimized.onnx").stat().st_mtime_ns == artifact_mtime
    after = CACHE_COUNTERS.snapshot()
    assert (after["builds"] - before["builds"], after["hits"] - before["hits"]) == (1, 1)

    original = OnnxRuntimeEngine(weights, 1)
    for engine in (first, second):
        for got, want in zip(engine.run(batch), original.run(batch)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_weights_precision_and_fingerprint_each_change_the_key(weights: Path, tmp_path: Path) -> None:
    base = KeyInputs("a" * 64, "tensorrt", "10.3.0", cpu_box().fingerprint(), "fp16", {"batch": [1, 1, 4]})
    assert base.key == KeyInputs("a" * 64, "tensorrt", "10.3.0", dict(reversed(cpu_box().fingerprint().items())),
                                 "fp16", {"batch": [1, 1, 4]}).key
    variants = [replace(base, model_sha256="b" * 64), replace(base, precision="fp32"),
                replace(base, backend_version="10.4.0"), replace(base, input_profile={"batch": [1, 1, 8]}),
                replace(base, device={**base.device, "compute_capability": "7.2"}),
                replace(base, options={"binding": "pycuda"})]
    assert len({base.key, *(variant.key for variant in variants)}) == 1 + len(variants)

    cache = tmp_path / "cache"
    keys = {load(weights, cache).build.cache_key, load(weights, cache, arch="aarch64").build.cache_key}
    retrained = weights.with_name("retrained.onnx")
    retrained.write_bytes(colour_detector("yolov5"))
    keys.add(load(retrained, cache).build.cache_key)
    assert len(keys) == 3
    assert len([entry for entry in list_entries(cache) if entry.model_id == "colour/1"]) == 3


def test_corrupted_artifact_is_detected_logged_and_rebuilt(weights: Path, tmp_path: Path, batch: np.ndarray,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    entry = Path(load(weights, cache).build.cache_path)
    artifact = entry / "optimized.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-40] + b"\0" * 40)
    with caplog.at_level(logging.WARNING, logger="edge_daemon.engines.cache"):
        rebuilt = load(weights, cache)
    assert rebuilt.build.cache_hit is False
    assert "checksum differs from metadata.json (corrupted file)" in caplog.text
    np.testing.assert_allclose(rebuilt.run(batch)[0], OnnxRuntimeEngine(weights, 1).run(batch)[0], rtol=1e-6)
    assert load(weights, cache).build.cache_hit is True


def test_artifact_that_fails_to_load_is_discarded_and_rebuilt(weights: Path, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Checksums match (the file is what was written) but the runtime rejects it: still a rebuild."""
    cache = tmp_path / "cache"
    entry = Path(load(weights, cache).build.cache_path)
    garbage = b"not an onnx graph"
    (entry / "optimized.onnx").write_bytes(garbage)
    metadata = json.loads((entry / "metadata.json").read_text())
    import hashlib

    metadata.update(artifact_bytes=len(garbage), artifact_sha256=hashlib.sha256(garbage).hexdigest())
    (entry / "metadata.json").write_text(json.dumps(metadata))
    with caplog.at_level(logging.WARNING, logger="edge_daemon.engines.cache"):
        rebuilt = load(weights, cache)
    assert rebuilt.build.cache_hit is False
    assert "artifact failed to load (ONNX Runtime cannot load the model" in caplog.text


def test_metadata_mismatch_is_discarded_with_the_differing_fields(weights: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    entry = Path(load(weights, cache).build.cache_path)
    metadata = json.loads((entry / "metadata.json").read_text())
    metadata["key_inputs"]["backend_version"] = "1.0.0"
    (entry / "metadata.json").write_text(json.dumps(metadata))
    with caplog.at_level(logging.WARNING, logger="edge_daemon.engines.cache"):
        assert load(weights, cache).build.cache_hit is False
    assert "metadata does not match the expected key inputs (backend_version)" in caplog.text


def test_engine_options_come_from_settings(tmp_path: Path) -> None:
    from edge_daemon.config import Settings
    from edge_daemon.engines import engine_options

    options = engine_options(Settings(cache_dir=str(tmp_path), ort_threads=3))
    assert (options.cache_dir, options.intra_op_threads, options.backend, options.precision) == (
        tmp_path, 3, "auto", "auto")
    richer = type("Later", (), {"cache_path": tmp_path, "backend": "onnxruntime", "precision": "fp32",
                                "trt_workspace_mib": 512, "trt_max_batch": 2})()
    options = engine_options(richer, input_hw=(480, 640))
    assert (options.backend, options.trt_workspace_bytes, options.trt_max_batch, options.input_hw) == (
        "onnxruntime", 512 << 20, 2, (480, 640))


def test_unwritable_cache_still_serves_and_says_so(weights: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="edge_daemon.engines.cache"):
        engine = load(weights, not_a_folder)
    assert engine.build.cache_hit is False and engine.build.cache_path is None and engine.build.cache_key
    assert "is not usable" in caplog.text and "rebuilt at every start" in caplog.text


def test_long_builds_log_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    from edge_daemon.engines import cache as cache_module

    monkeypatch.setattr(cache_module, "HEARTBEAT_SECONDS", 0.05)
    inputs = KeyInputs("c" * 64, "tensorrt", "10.3.0", cpu_box().fingerprint(), "fp16", None)

    def slow_build(path: Path) -> str:
        time.sleep(0.3)
        path.write_bytes(b"plan")
        return "engine"

    with caplog.at_level(logging.INFO, logger="edge_daemon.engines.cache"):
        outcome = EngineCache(tmp_path).get_or_build("slow/1", inputs, "model.plan", slow_build, Path.read_text)
    assert outcome.value == "engine" and not outcome.cache_hit
    assert "building engine for slow/1 (tensorrt, fp16)" in caplog.text
    assert caplog.text.count("still building slow/1 (tensorrt, fp16)") >= 2


# ----- real processes ---------------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import json, logging, os, sys, time
    from pathlib import Path
    logging.basicConfig(level=logging.INFO)
    started = time.perf_counter()
    import numpy as np
    from edge_daemon.engines import CACHE_COUNTERS, EngineOptions, create_engine
    from edge_daemon.engines import factory

    weights, cache, go, slow = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    if slow:  # make the build long enough that two processes surely overlap inside it
        original = factory.OnnxRuntimeEngine
        class Slow(original):
            def __init__(self, *args, **kwargs):
                if kwargs.get("save_optimized_to"):
                    time.sleep(slow)
                super().__init__(*args, **kwargs)
        factory.OnnxRuntimeEngine = Slow
    if go:  # a barrier: say we are ready, then wait until both processes are
        Path(go + f".ready-{os.getpid()}").touch()
        while not Path(go).exists():
            time.sleep(0.005)
    engine = create_engine(weights, 1, model_id="colour/1", options=EngineOptions(cache_dir=cache))
    batch = np.random.default_rng(7).random((2, 3, 64, 64), dtype=np.float32)
    print(json.dumps({"build": engine.build.to_dict(), "counters": CACHE_COUNTERS.snapshot(),
                      "output": engine.run(batch)[0].tolist(), "optimization": engine.optimization,
                      "process_seconds": time.perf_counter() - started}))
""")


def spawn(weights: Path, cache: Path, go: str = "", slow: float = 0.0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORT_DISABLE_TELEMETRY": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(weights), str(cache), go, str(slow)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def result(process: subprocess.Popen[str]) -> dict:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    return {**json.loads(stdout.strip().splitlines()[-1]), "stderr": stderr}


def test_restarted_process_loads_the_cached_graph_without_optimising(weights: Path, tmp_path: Path,
                                                                     batch: np.ndarray) -> None:
    cache = tmp_path / "cache"
    first = result(spawn(weights, cache))
    second = result(spawn(weights, cache))
    assert first["build"]["cache_hit"] is False and first["counters"]["builds"] == 1
    assert second["build"]["cache_hit"] is True
    assert second["counters"] == {"builds": 0, "hits": 1, "discards": 0, "build_seconds": 0.0}
    assert second["optimization"] == "none" and second["build"]["build_seconds"] is None
    assert second["build"]["cache_key"] == first["build"]["cache_key"]
    print(f"\nbuild {first['build']['build_seconds']:.4f} s; cached load {second['build']['load_seconds']:.4f} s")
    want = OnnxRuntimeEngine(weights, 1).run(batch)[0]
    for run in (first, second):
        np.testing.assert_allclose(np.array(run["output"], np.float32), want, rtol=1e-6, atol=1e-6)


def test_two_processes_started_together_build_once(weights: Path, tmp_path: Path) -> None:
    cache, go = tmp_path / "cache", tmp_path / "go"
    processes = [spawn(weights, cache, str(go), slow=1.5) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    runs = [result(process) for process in processes]
    assert sorted(run["build"]["cache_hit"] for run in runs) == [False, True]
    assert sum(run["counters"]["builds"] for run in runs) == 1
    waiter = next(run for run in runs if run["build"]["cache_hit"])
    assert "waiting for another process that is building colour/1" in waiter["stderr"]
    entries = list_entries(cache)
    assert len(entries) == 1 and entries[0].valid
    assert not list((cache / "engines" / model_slug("colour/1")).glob(".staging-*"))


# ----- listing and pruning ---------------------------------------------------------------------------------
def test_list_and_prune(weights: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    keep = load(weights, cache).build.cache_key
    old = load(weights, cache, arch="aarch64").build.cache_key
    other_weights = weights.with_name("other.onnx")
    other_weights.write_bytes(colour_detector("yolov5"))
    other = load(other_weights, cache, model_id="other/2").build.cache_key
    entries = {entry.key: entry for entry in list_entries(cache)}
    assert set(entries) == {keep, old, other}
    assert entries[other].model_id == "other/2" and entries[other].backend == "onnxruntime"
    assert all(entry.valid and entry.size_bytes > 0 for entry in entries.values())
    week_ago = time.time() - 7 * 86400
    os.utime(entries[old].path, (week_ago, week_ago))

    with pytest.raises(ValueError, match="say what to prune"):
        prune(cache)
    assert [entry.key for entry in prune(cache, older_than=86400)] == [old]
    stale = cache / "engines" / "colour-1" / f".staging-{keep}-1-abc"
    stale.mkdir()
    os.utime(stale, (week_ago, week_ago))
    engine_cache = EngineCache(cache)
    with engine_cache.lock("other-2", other):  # a process is (re)building it: not pruned
        assert [entry.key for entry in prune(cache, keep_keys=[keep])] == []
    assert not stale.exists()
    assert [entry.key for entry in prune(cache, keep_keys=[keep])] == [other]
    assert [entry.key for entry in prune(cache, remove_all=True)] == [keep]
    assert list_entries(cache) == []


def test_graph_saved_at_level_all_is_keyed_on_cpu_features(weights: Path, tmp_path: Path,
                                                           batch: np.ndarray) -> None:
    cache = tmp_path / "cache"
    options = EngineOptions(cache_dir=cache, ort_optimization="all")
    first = create_engine(weights, 1, model_id="colour/1", options=options, platform=cpu_box())
    again = create_engine(weights, 1, model_id="colour/1", options=options, platform=cpu_box())
    other_cpu = create_engine(weights, 1, model_id="colour/1", options=options,
                              platform=cpu_box(cpu_features=("sse4_2", "avx2", "fma", "avx512f")))
    assert again.build.cache_hit and not other_cpu.build.cache_hit
    assert first.build.cache_key != load(weights, cache).build.cache_key
    np.testing.assert_allclose(again.run(batch)[0], OnnxRuntimeEngine(weights, 1).run(batch)[0], rtol=1e-6)
