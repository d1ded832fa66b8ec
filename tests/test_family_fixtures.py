"""The model-family fixtures (tests/fixtures/families, made by tools/fixtures/export_families.py) are intact
and exactly as their export.json describes them, which is what the family decoder tests rely on."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort

FAMILIES = Path(__file__).parent / "fixtures" / "families"
BUILT = FAMILIES / "built"
COMMITTED = sorted(p.parent.name for p in FAMILIES.glob("*/export.json"))
# Too big to commit: .ci/run builds these into the git-ignored BUILT folder when the exporter venv installs.
BUILT_NAMES = ["rfdetr-nano-det", "rfdetr-seg-nano", "rfdetr-mini-seg"]
MAX_COMMITTED_BYTES = 15_000_000


def _load(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "export.json").read_text())


def _check(folder: Path) -> None:
    info = _load(folder)
    data = (folder / "weights.onnx").read_bytes()
    assert hashlib.sha256(data).hexdigest() == info["sha256"], "weights.onnx differs from the one export.json describes"
    session = ort.InferenceSession(str(folder / "weights.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(i["name"], i["shape"]) for i in info["inputs"]]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [(o["name"], o["shape"]) for o in info["outputs"]]
    h, w = info["photo_check"]["preprocessing"]["size_hw"]
    dynamic_batch = isinstance(info["inputs"][0]["shape"][0], str)
    batch = 2 if dynamic_batch else 1
    x = np.random.default_rng(0).random((batch, 3, h, w), dtype=np.float32)
    outputs = session.run(None, {session.get_inputs()[0].name: x})
    expected = info["photo_check"]["batch2_output_shapes" if dynamic_batch else "output_shapes"]
    assert [list(o.shape) for o in outputs] == expected
    assert all(np.isfinite(o).all() for o in outputs)


def test_the_committed_set_covers_the_families() -> None:
    assert {"yolo26-det-e2e", "yolo26-det-raw", "yolo26-det-e2e-dynamic", "yolov10-det-e2e", "yolov8-det",
            "yolov8-det-dynamic", "yolo11-det", "yolov8-seg", "yolo26-seg-e2e", "yolov8-pose", "yolov8-pose-k5",
            "yolo26-pose-e2e", "yolov8-cls", "yolo11-cls", "resnet18-cls", "vit-cls", "deeplabv3plus",
            "rfdetr-mini-det", "yolo-nas-s", "yolo-nas-s-dynamic"} <= set(COMMITTED)


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_fixture_matches_its_description(name: str) -> None:
    folder = FAMILIES / name
    info = _load(folder)
    assert info["where"] == "committed"
    assert (folder / "weights.onnx").stat().st_size == info["size_bytes"] <= MAX_COMMITTED_BYTES
    _check(folder)


@pytest.mark.parametrize("name", BUILT_NAMES)
def test_built_fixture_matches_its_description(name: str) -> None:
    folder = BUILT / name
    if not (folder / "export.json").is_file():
        pytest.skip(f"{name} is not built (too big to commit): .ci/run builds it with the exporter venv, see "
                    "tools/fixtures/README.md")
    _check(folder)
