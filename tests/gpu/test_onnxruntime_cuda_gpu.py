"""ONNX Runtime's CUDA execution provider with the engine cache, and CUDA device discovery through
NVIDIA's cuda-python (`cuda.bindings`), on a real GPU.

Run on an NVIDIA box (x86 or Jetson) with `pip install onnxruntime-gpu cuda-python` in place of the CPU
`onnxruntime` wheel: `python -m pytest -m gpu tests/gpu/test_onnxruntime_cuda_gpu.py -v -s`. Skipped
unless `-m gpu` is given and the CUDA provider really loads.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.gpu.conftest import detection_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def platform_info():
    from edge_daemon.platform import probe

    info = probe()
    if "CUDAExecutionProvider" not in info.ort_providers:
        pytest.skip(f"ONNX Runtime's CUDA provider does not load here ({'; '.join(info.problems)[:300]})")
    return info


def test_cuda_bindings_find_the_device() -> None:
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    from edge_daemon.platform import probe

    info = probe()
    assert info.gpu is not None, info.problems
    major, minor = (int(part) for part in info.gpu.compute_capability.split("."))
    assert major >= 5 and info.gpu.total_memory_bytes and info.gpu.name
    print(f"\n{info.gpu.name}: compute capability {major}.{minor}, "
          f"{info.gpu.total_memory_bytes / 2**30:.1f} GiB via {info.gpu.source}")


def median_ms(engine, batch: np.ndarray, runs: int = 30) -> float:
    engine.run(batch)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        engine.run(batch)
        timings.append(time.perf_counter() - started)
    return 1000 * float(np.median(timings))


def test_cuda_provider_with_the_engine_cache(platform_info, tmp_path: Path) -> None:
    from edge_daemon.engines import EngineOptions, create_engine
    from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine

    weights = detection_model()
    options = EngineOptions(cache_dir=tmp_path, backend="onnxruntime")
    first = create_engine(weights, model_id="cuda/1", options=options, platform=platform_info)
    second = create_engine(weights, model_id="cuda/1", options=options, platform=platform_info)
    assert first.providers[0] == "CUDAExecutionProvider" and second.providers[0] == "CUDAExecutionProvider"
    assert (first.build.cache_hit, second.build.cache_hit) == (False, True)
    cpu = OnnxRuntimeEngine(weights, 0)
    dims = cpu.inputs[0].shape
    shape = [1 if dim is None else dim for dim in dims[:2]] + [640 if dim is None else dim for dim in dims[2:]]
    batch = np.random.default_rng(0).random(shape, dtype=np.float32)
    for mine, theirs in zip(second.run(batch), cpu.run(batch)):
        assert np.abs(mine - theirs).max() <= 1e-2 * max(1.0, float(np.abs(theirs).max()))
    gpu_ms, cpu_ms = median_ms(second, batch), median_ms(cpu, batch, runs=5)
    print(f"\n{weights.name} {shape}: CUDA EP {gpu_ms:.2f} ms vs CPU {cpu_ms:.2f} ms per batch; "
          f"build {first.build.build_seconds:.2f} s, cached load {second.build.load_seconds:.2f} s")
