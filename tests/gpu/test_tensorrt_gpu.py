"""Real TensorRT on a real NVIDIA device: build a plan from the shipped model, compare it with ONNX Runtime,
and reuse the plan from the engine cache after a process restart.

How to run on a device
----------------------
Jetson (JetPack 5.1+ or 6.x): TensorRT's Python bindings come with JetPack for the system Python, so the
virtual environment must see system packages; pycuda or cuda-python provides the CUDA binding::

    sudo apt-get install -y python3-venv nvidia-tensorrt          # usually present with JetPack
    python3 -m venv --system-site-packages .venv
    .venv/bin/pip install -e '.[dev]' cuda-python                 # or: pip install pycuda (builds from source)
    .venv/bin/python -c "import tensorrt; print(tensorrt.__version__)"
    .venv/bin/python -m pytest -m gpu tests/gpu -v -s

x86 with an NVIDIA GPU: use NVIDIA's TensorRT container (`nvcr.io/nvidia/tensorrt:<yy.mm>-py3`) or
`pip install tensorrt-cu12 cuda-python` where NVIDIA's package index is reachable, then the same pytest line.
The tests skip (never fail) when `-m gpu` is not given or `tensorrt` does not import. Each build can take
minutes on a Jetson; `-s` shows the timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.gpu.conftest import REPO, detection_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def trt():
    return pytest.importorskip("tensorrt", reason="TensorRT does not import here")


CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from edge_daemon.engines import EngineOptions, create_engine
    from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine

    weights, cache = Path(sys.argv[1]), Path(sys.argv[2])
    started = time.perf_counter()
    engine = create_engine(weights, model_id="gpu-test/1",
                           options=EngineOptions(cache_dir=cache, backend="tensorrt", precision="fp32"))
    ready = time.perf_counter() - started
    dims = engine.inputs[0].shape
    shape = [1 if dim is None else dim for dim in dims[:2]] + [640 if dim is None else dim for dim in dims[2:]]
    batch = np.random.default_rng(0).random(shape, dtype=np.float32)
    outputs = engine.run(batch)
    timings = []
    for _ in range(20):
        t = time.perf_counter(); engine.run(batch); timings.append(time.perf_counter() - t)
    reference = OnnxRuntimeEngine(weights, 0).run(batch)
    print(json.dumps({"backend": engine.backend, "build": engine.build.to_dict(), "ready_seconds": ready,
                      "median_ms": 1000 * float(np.median(timings)),
                      "max_abs_diff": [float(np.abs(a - b).max()) for a, b in zip(outputs, reference)],
                      "scale": [float(np.abs(b).max()) for b in reference]}))
""")


def run_child(weights: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORT_DISABLE_TELEMETRY": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(weights), str(cache)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_plan_matches_onnxruntime_and_is_reused_after_a_restart(trt, tmp_path: Path) -> None:
    weights = detection_model()
    first = run_child(weights, tmp_path)
    assert first["backend"] == "tensorrt", first["build"]
    assert first["build"]["cache_hit"] is False and (tmp_path / "engines").is_dir()
    for diff, scale in zip(first["max_abs_diff"], first["scale"]):
        assert diff <= 1e-2 * max(1.0, scale), (diff, scale)  # fp32 TensorRT vs ONNX Runtime CPU
    second = run_child(weights, tmp_path)
    assert second["build"]["cache_hit"] is True and second["build"]["cache_key"] == first["build"]["cache_key"]
    assert second["ready_seconds"] < first["ready_seconds"]
    print(f"\nTensorRT {trt.__version__}: build {first['build']['build_seconds']:.1f} s, cached load "
          f"{second['build']['load_seconds']:.2f} s, {second['median_ms']:.2f} ms per batch")


def test_probe_sees_the_gpu_and_chooses_tensorrt(trt) -> None:
    from edge_daemon.engines.selection import choose_backend
    from edge_daemon.platform import probe

    info = probe()
    print("\n" + info.summary())
    assert info.tensorrt_version == trt.__version__ and info.gpu is not None
    assert choose_backend(info).backend == "tensorrt"


def test_fp16_build_where_the_gpu_has_fast_fp16(trt, tmp_path: Path) -> None:
    from edge_daemon.engines import EngineOptions, create_engine
    from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine

    weights = detection_model()
    engine = create_engine(weights, model_id="gpu-fp16/1", options=EngineOptions(cache_dir=tmp_path,
                                                                                    backend="tensorrt"))
    assert engine.backend == "tensorrt"
    dims = engine.inputs[0].shape
    shape = [1 if dim is None else dim for dim in dims[:2]] + [640 if dim is None else dim for dim in dims[2:]]
    batch = np.random.default_rng(1).random(shape, dtype=np.float32)
    for mine, theirs in zip(engine.run(batch), OnnxRuntimeEngine(weights, 0).run(batch)):
        assert np.abs(mine - theirs).max() <= 5e-2 * max(1.0, float(np.abs(theirs).max()))
    print(f"\nprecision {engine.build.precision}, build {engine.build.build_seconds:.1f} s")
