"""What the daemon needs to know about a model, read from its Roboflow-style metadata files.

`environment.json` carries CLASS_MAP, PREPROCESSING (a dict or a JSON string) and MULTICLASS;
`model_type.json` carries the task and architecture; an optional `class_names.txt` (one name a line) wins
over CLASS_MAP, as in Roboflow's cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_daemon.errors import ModelArtifactError

Task = Literal["object-detection", "instance-segmentation", "classification"]
TASKS: tuple[Task, ...] = ("object-detection", "instance-segmentation", "classification")


def normalise_task(raw: str) -> Task:
    """Map the task spellings registries use onto the three tasks the daemon serves."""
    text = (raw or "").strip().lower().replace("_", "-")
    if "classification" in text:
        return "classification"
    if "segmentation" in text:
        if "semantic" in text:
            raise ModelArtifactError(f"task {raw!r} is not supported (semantic segmentation)")
        return "instance-segmentation"
    if "detection" in text and "keypoint" not in text:
        return "object-detection"
    raise ModelArtifactError(f"task {raw!r} is not supported")


@dataclass(frozen=True)
class ModelMetadata:
    model_id: str
    task: Task
    model_type: str
    class_names: tuple[str, ...]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    multiclass: bool = False
    output_is_probability: bool | None = None  # None: not declared
    colors: dict[str, str] = field(default_factory=dict)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelArtifactError(f"{path.name} is unreadable: {error.__class__.__name__}") from None
    if not isinstance(value, dict):
        raise ModelArtifactError(f"{path.name} must hold a JSON object")
    return value


def _class_names(folder: Path, environment: dict[str, Any]) -> tuple[str, ...]:
    names_file = folder / "class_names.txt"
    if names_file.exists():
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        return tuple(names)
    class_map = environment.get("CLASS_MAP")
    if not isinstance(class_map, dict) or not class_map:
        raise ModelArtifactError("environment.json has no CLASS_MAP and there is no class_names.txt")
    try:
        ordered = sorted(class_map.items(), key=lambda item: int(item[0]))
    except ValueError:
        raise ModelArtifactError("CLASS_MAP keys must be class indices") from None
    if [int(key) for key, _ in ordered] != list(range(len(ordered))):
        raise ModelArtifactError("CLASS_MAP keys must be 0..N-1 without gaps")
    return tuple(str(name) for _, name in ordered)


def read_metadata(folder: Path, model_id: str) -> ModelMetadata:
    """Parse a model folder's metadata; a missing or malformed field is a ModelArtifactError."""
    environment = _read_json(folder / "environment.json")
    model_type = _read_json(folder / "model_type.json")
    preprocessing = environment.get("PREPROCESSING")
    if isinstance(preprocessing, str):
        try:
            preprocessing = json.loads(preprocessing)
        except json.JSONDecodeError:
            raise ModelArtifactError("environment.json PREPROCESSING is not valid JSON") from None
    if not isinstance(preprocessing, dict):
        raise ModelArtifactError("environment.json has no PREPROCESSING (model package is broken)")
    multiclass = environment.get("MULTICLASS", False)
    return ModelMetadata(
        model_id=model_id,
        task=normalise_task(str(model_type.get("project_task_type", ""))),
        model_type=str(model_type.get("model_type", "") or ""),
        class_names=_class_names(folder, environment),
        preprocessing=preprocessing,
        multiclass=multiclass is True or str(multiclass).lower() == "true",
        output_is_probability=(None if model_type.get("output_is_probability") is None
                               else bool(model_type["output_is_probability"])),
        colors=dict(environment.get("COLORS") or {}),
    )
