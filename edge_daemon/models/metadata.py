"""What the daemon needs to know about a model, read from either of Roboflow's two metadata formats.

- **Classic** (the `/ort` artifact and Roboflow's classic cache): `environment.json` (CLASS_MAP, PREPROCESSING as
  a dict or a JSON string, MULTICLASS, COLORS) and `model_type.json` (task and architecture); an optional
  `class_names.txt` (one name a line) wins over CLASS_MAP, except for classifiers, whose names Roboflow always
  takes from CLASS_MAP.
- **Package** (Roboflow's `inference_models` packages): `inference_config.json` (`image_pre_processing`,
  `network_input` with colour order, scaling, normalisation and resize mode, `post_processing`,
  `class_names_operations`), `class_names.txt`, and the task and architecture in `model_config.json`
  (`task_type`, `model_architecture`) or `model_type.json`.

Either format may add `keypoints_metadata.json` (keypoint names and skeleton edges per class). The weights are
`weights.onnx`, or the names Roboflow's cache uses for some families (`best.onnx` for ViT/ResNet/DINOv3,
`yolov5s_weights.onnx` for YOLOv5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_daemon.errors import ModelArtifactError

Task = Literal["object-detection", "instance-segmentation", "classification", "keypoint-detection",
               "semantic-segmentation"]
TASKS: tuple[Task, ...] = ("object-detection", "instance-segmentation", "classification", "keypoint-detection",
                           "semantic-segmentation")
WEIGHTS_NAMES = ("weights.onnx", "best.onnx", "yolov5s_weights.onnx")
ENVIRONMENT, INFERENCE_CONFIG = "environment.json", "inference_config.json"
MODEL_TYPE, MODEL_CONFIG = "model_type.json", "model_config.json"
KEYPOINTS = "keypoints_metadata.json"
# Roboflow's placeholder for a dataset's super-category, which RF-DETR exports keep as a class.
BACKGROUND_PLACEHOLDER = "background_class83422"
_RESIZE_FORMATS = {"stretch": "Stretch to", "letterbox": "Fit (black edges) in",
                   "center-crop": "Center crop", "letterbox-reflect-edges": "Fit (reflect edges) in",
                   "fit-longer-edge": "Fit (black edges) in"}


def normalise_task(raw: str) -> Task:
    """Map the task spellings registries use onto the tasks the daemon serves."""
    text = (raw or "").strip().lower().replace("_", "-")
    if "classification" in text:
        return "classification"
    if "keypoint" in text or text in ("pose", "pose-estimation"):
        return "keypoint-detection"
    if "segmentation" in text:
        return "semantic-segmentation" if "semantic" in text else "instance-segmentation"
    if "detection" in text or text == "detect":
        return "object-detection"
    raise ModelArtifactError(f"task {raw!r} is not supported")


@dataclass(frozen=True)
class NetworkInput:
    """How pixels become the network's input, where the metadata says it (package format); None: the family's
    default."""

    colour: str | None = None  # "rgb" | "bgr"
    scale: float | None = None  # multiplies the 0-255 pixels first
    mean: tuple[float, float, float] | None = None  # then (x - mean) / std, per channel in network order
    std: tuple[float, float, float] | None = None


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
    weights: str = "weights.onnx"
    format: str = "classic"  # or "package"
    network_input: NetworkInput = field(default_factory=NetworkInput)
    keypoint_names: tuple[tuple[str, ...], ...] = ()  # per class
    skeletons: tuple[tuple[tuple[int, int], ...], ...] = ()  # per class: keypoint index pairs
    dropped_class_ids: tuple[int, ...] = ()  # raw output classes to drop (background placeholder)


def _read_json(path: Path, expect: type = dict) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelArtifactError(f"{path.name} is unreadable: {error.__class__.__name__}") from None
    if not isinstance(value, expect):
        raise ModelArtifactError(f"{path.name} must hold a JSON {'object' if expect is dict else 'list'}")
    return value


def weights_file(folder: Path) -> Path:
    """The model's ONNX file under any of the names Roboflow's caches use."""
    for name in WEIGHTS_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise ModelArtifactError(f"model files incomplete: no {' or '.join(WEIGHTS_NAMES)}")


def _names_file(folder: Path) -> tuple[str, ...] | None:
    names_file = folder / "class_names.txt"
    if not names_file.exists():
        return None
    return tuple(line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip())


def _class_map(environment: dict[str, Any]) -> tuple[str, ...] | None:
    class_map = environment.get("CLASS_MAP")
    if not isinstance(class_map, dict) or not class_map:
        return None
    try:
        ordered = sorted(class_map.items(), key=lambda item: int(item[0]))
    except ValueError:
        raise ModelArtifactError("CLASS_MAP keys must be class indices") from None
    if [int(key) for key, _ in ordered] != list(range(len(ordered))):
        raise ModelArtifactError("CLASS_MAP keys must be 0..N-1 without gaps")
    return tuple(str(name) for _, name in ordered)


def _task_and_type(folder: Path) -> tuple[str, str]:
    if (folder / MODEL_TYPE).is_file():
        declared = _read_json(folder / MODEL_TYPE)
        return str(declared.get("project_task_type", "")), str(declared.get("model_type", "") or "")
    if (folder / MODEL_CONFIG).is_file():
        declared = _read_json(folder / MODEL_CONFIG)
        return (str(declared.get("task_type", "")),
                str(declared.get("model_architecture", "") or declared.get("model_variant", "") or ""))
    raise ModelArtifactError(f"model files incomplete: neither {MODEL_TYPE} nor {MODEL_CONFIG}")


def _keypoints(folder: Path, classes: int) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[tuple[int, int], ...], ...]]:
    """Per-class keypoint names and skeleton edges from keypoints_metadata.json (a list of
    {object_class_id, keypoints: {"0": name, ...}, edges: [{from, to}]})."""
    if not (folder / KEYPOINTS).is_file():
        return (), ()
    entries = _read_json(folder / KEYPOINTS, list)
    names: list[tuple[str, ...]] = [() for _ in range(classes)]
    edges: list[tuple[tuple[int, int], ...]] = [() for _ in range(classes)]
    try:
        for entry in entries:
            class_id = int(entry["object_class_id"])
            if not 0 <= class_id < classes:
                raise ModelArtifactError(f"{KEYPOINTS} names class {class_id}, the model has {classes} classes")
            points = sorted((int(key), str(value)) for key, value in entry["keypoints"].items())
            names[class_id] = tuple(value for _, value in points)
            edges[class_id] = tuple((int(edge["from"]), int(edge["to"])) for edge in entry.get("edges") or [])
            if any(not (0 <= a < len(points) and 0 <= b < len(points)) for a, b in edges[class_id]):
                raise ModelArtifactError(f"{KEYPOINTS}: an edge of class {class_id} names a missing keypoint")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelArtifactError(f"{KEYPOINTS} entries need object_class_id, keypoints and edges") from None
    return tuple(names), tuple(edges)


def _version_size(declared: Any) -> list[int] | None:
    """`dataset_version_resize_dimensions` ({"width", "height"} or null) as [width, height]."""
    if declared is None:
        return None
    try:
        width, height = int(declared["width"]), int(declared["height"])
    except (KeyError, TypeError, ValueError):
        raise ModelArtifactError(f"{INFERENCE_CONFIG}: dataset_version_resize_dimensions needs integer width "
                                 "and height") from None
    if width <= 0 or height <= 0:
        raise ModelArtifactError(f"{INFERENCE_CONFIG}: dataset_version_resize_dimensions must be positive")
    return [width, height]


def _package_preprocessing(config: dict[str, Any]) -> tuple[dict[str, Any], NetworkInput]:
    """Translate `inference_config.json` into the PREPROCESSING steps the preprocessor reads, plus the
    normalisation it declares."""
    steps = dict(config.get("image_pre_processing") or {})
    network = config.get("network_input")
    if not isinstance(network, dict):
        raise ModelArtifactError(f"{INFERENCE_CONFIG} has no network_input")
    mode = str(network.get("resize_mode", "stretch"))
    if mode not in _RESIZE_FORMATS:
        raise ModelArtifactError(f"{INFERENCE_CONFIG}: unknown resize_mode {mode!r}")
    size = network.get("training_input_size") or {}
    resize: dict[str, Any] = {"enabled": True, "format": _RESIZE_FORMATS[mode]}
    if size:
        resize.update(width=size.get("width"), height=size.get("height"))
    if network.get("padding_value") is not None:
        resize["padding_value"] = network["padding_value"]
    # RF-DETR makes a non-stretch resize at the dataset version's size first (preprocess.version_size).
    resize["resize_mode"] = mode
    resize["version_size"] = _version_size(network.get("dataset_version_resize_dimensions"))
    steps["resize"] = resize
    mean = std = None
    normalisation = network.get("normalization")
    if normalisation:
        try:
            mean, std = (tuple(float(v) for v in normalisation[0]), tuple(float(v) for v in normalisation[1]))
        except (TypeError, ValueError, IndexError):
            raise ModelArtifactError(f"{INFERENCE_CONFIG}: normalization must be [[mean x3], [std x3]]") from None
        if len(mean) != 3 or len(std) != 3 or not all(std):
            raise ModelArtifactError(f"{INFERENCE_CONFIG}: normalization must be [[mean x3], [std x3]]")
    scale = network.get("scaling_factor")
    colour = str(network.get("color_mode", "rgb")).lower()
    return steps, NetworkInput(colour, 1.0 / float(scale) if scale else None, mean, std)  # type: ignore[arg-type]


def read_metadata(folder: Path, model_id: str) -> ModelMetadata:
    """Parse a model folder's metadata, classic or package; a missing or malformed field is a
    ModelArtifactError naming it."""
    raw_task, model_type = _task_and_type(folder)
    task = normalise_task(raw_task)
    multiclass = "multi-label" in raw_task.lower().replace("_", "-")
    weights = weights_file(folder).name
    names_file = _names_file(folder)
    network_input = NetworkInput()
    output_is_probability: bool | None = None
    dropped: list[int] = []
    if (folder / ENVIRONMENT).is_file():
        environment = _read_json(folder / ENVIRONMENT)
        preprocessing = environment.get("PREPROCESSING")
        if isinstance(preprocessing, str):
            try:
                preprocessing = json.loads(preprocessing)
            except json.JSONDecodeError:
                raise ModelArtifactError("environment.json PREPROCESSING is not valid JSON") from None
        if not isinstance(preprocessing, dict):
            raise ModelArtifactError("environment.json has no PREPROCESSING (model package is broken)")
        from_map = _class_map(environment)
        # Roboflow's classifiers list only environment.json: their names always come from CLASS_MAP.
        names = (from_map or names_file) if task == "classification" else (names_file or from_map)
        declared = environment.get("MULTICLASS", False)
        multiclass = multiclass or declared is True or str(declared).lower() == "true"
        colors = dict(environment.get("COLORS") or {})
        form = "classic"
    elif (folder / INFERENCE_CONFIG).is_file():
        config = _read_json(folder / INFERENCE_CONFIG)
        preprocessing, network_input = _package_preprocessing(config)
        names, colors, form = names_file, {}, "package"
        post = config.get("post_processing") or {}
        if isinstance(post, dict) and post.get("type") in ("softmax", "sigmoid"):
            multiclass = multiclass or post["type"] == "sigmoid"
            output_is_probability = bool(post.get("fused")) or None
        for operation in config.get("class_names_operations") or []:
            if (isinstance(operation, dict) and operation.get("type") == "class_name_removal" and names
                    and operation.get("class_name") in names):
                dropped.append(names.index(str(operation["class_name"])))
    else:
        raise ModelArtifactError(f"model files incomplete: neither {ENVIRONMENT} nor {INFERENCE_CONFIG}")
    if not names:
        raise ModelArtifactError("no class names: neither class_names.txt nor environment.json CLASS_MAP")
    if BACKGROUND_PLACEHOLDER in names:
        dropped.append(names.index(BACKGROUND_PLACEHOLDER))
    if (folder / MODEL_TYPE).is_file():
        declared_probability = _read_json(folder / MODEL_TYPE).get("output_is_probability")
        if declared_probability is not None:
            output_is_probability = bool(declared_probability)
    keypoint_names, skeletons = _keypoints(folder, len(names) - len(set(dropped)))
    return ModelMetadata(
        model_id=model_id, task=task, model_type=model_type, class_names=tuple(names),
        preprocessing=preprocessing, multiclass=multiclass, output_is_probability=output_is_probability,
        colors=colors, weights=weights, format=form, network_input=network_input,
        keypoint_names=keypoint_names, skeletons=skeletons, dropped_class_ids=tuple(sorted(set(dropped))),
    )
