"""Shared fixtures: a model store with small real ONNX models, settings, and a running daemon."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from edge_daemon.config import Settings
from tests.support.daemon import ThreadedDaemon
from tests.support.onnx_models import (
    classifier_environment,
    colour_classifier,
    colour_detector,
    colour_environment,
    seg_environment,
    shape_segmenter,
    write_model,
)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user model store (`--models-dir`) holding the colour detectors in both layouts and a faulty one."""
    root = tmp_path_factory.mktemp("models")
    write_model(root, "colour/1", colour_detector("yolov8"), colour_environment())
    write_model(root, "colour-letterbox/1", colour_detector("yolov8"), colour_environment("Fit (grey edges) in"))
    write_model(root, "colour-v5/1", colour_detector("yolov5", dynamic_batch=False), colour_environment(),
                model_type="yolov5s")
    write_model(root, "faulty/1", colour_detector(fail_on_nonzero=True), colour_environment())
    write_model(root, "wrong-classes/1", colour_detector("yolov8"),
                {**colour_environment(), "CLASS_MAP": {"0": "a", "1": "b"}})
    write_model(root, "colour-drawn/1", colour_detector("yolov8"), {**colour_environment(), "COLORS": {"red": "#00FF00"}})
    write_model(root, "disks/1", shape_segmenter(), seg_environment(), task="instance-segmentation",
                model_type="yolov8n-seg")
    # The colour classifiers expect ViT's (x/255 - 0.5) / 0.5 input, so they are declared as ViTs.
    write_model(root, "colour-cls/1", colour_classifier(), classifier_environment(), task="classification",
                model_type="vit")
    folder = write_model(root, "colour-multi/1", colour_classifier(), classifier_environment(multiclass=True),
                         task="multi-label-classification", model_type="vit")
    model_type = folder / "model_type.json"
    import json

    model_type.write_text(json.dumps({**json.loads(model_type.read_text()), "output_is_probability": False}))
    from edge_daemon.models.store import ModelId, write_manifest

    write_manifest(folder, ModelId("colour-multi", "1"))
    return root


@pytest.fixture
def make_settings(tmp_path: Path, model_store: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {"host": "127.0.0.1", "port": 0, "threads": 8, "models_dir": str(model_store),
                                     "cache_dir": str(tmp_path / "cache"), "api_url": "http://127.0.0.1:9",
                                     "ort_threads": 1, "state_dir": str(tmp_path / "state")}
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def daemon(make_settings: Callable[..., Settings]) -> Iterator[ThreadedDaemon]:
    with ThreadedDaemon(make_settings(allow_numpy_input=True)) as running:
        yield running


@pytest.fixture(scope="session")
def colour_image() -> np.ndarray:
    """A 200x120 BGR photo-like image: red left half, blue right half, some noise."""
    rng = np.random.default_rng(3)
    image = np.zeros((120, 200, 3), np.uint8)
    image[:, :100] = (30, 40, 220)
    image[:, 100:] = (210, 60, 20)
    noise = rng.integers(-10, 10, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def colour_jpeg(colour_image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", colour_image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return encoded.tobytes()
