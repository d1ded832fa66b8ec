"""The part of Roboflow Workflows that edge-daemon runs: one model step whose outputs reference that step.

Anything else (more steps, other blocks, workflows stored on Roboflow's platform) is refused with a 422 that
names the unsupported block, so a client learns at `initialise` time rather than from empty results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edge_daemon.errors import Unprocessable

# Block types (old and namespaced names) → the model task they run.
MODEL_BLOCKS: dict[str, str] = {}
for _task, _names in {
    "object-detection": ("ObjectDetectionModel", "RoboflowObjectDetectionModel",
                         "roboflow_core/roboflow_object_detection_model@v1",
                         "roboflow_core/roboflow_object_detection_model@v2"),
    "instance-segmentation": ("InstanceSegmentationModel", "RoboflowInstanceSegmentationModel",
                              "roboflow_core/roboflow_instance_segmentation_model@v1",
                              "roboflow_core/roboflow_instance_segmentation_model@v2"),
    "classification": ("ClassificationModel", "RoboflowClassificationModel", "MultiLabelClassificationModel",
                       "RoboflowMultiLabelClassificationModel", "roboflow_core/roboflow_classification_model@v1",
                       "roboflow_core/roboflow_classification_model@v2",
                       "roboflow_core/roboflow_multi_label_classification_model@v1",
                       "roboflow_core/roboflow_multi_label_classification_model@v2"),
    "keypoint-detection": ("KeypointsDetectionModel", "RoboflowKeypointDetectionModel",
                           "roboflow_core/roboflow_keypoint_detection_model@v1",
                           "roboflow_core/roboflow_keypoint_detection_model@v2"),
}.items():
    for _name in _names:
        MODEL_BLOCKS[_name] = _task

STEP_FIELDS = ("predictions", "inference_id", "model_id", "*")
_SELECTOR = re.compile(r"^\$steps\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_*]+)$")
_INPUT = re.compile(r"^\$inputs\.([A-Za-z0-9_-]+)$")


@dataclass(frozen=True)
class OneModelWorkflow:
    step_name: str
    task: str
    model_id: str
    confidence: float | None
    iou_threshold: float | None
    max_detections: int | None
    classes: list[str] | None
    outputs: dict[str, str]  # output name → step field (predictions, inference_id, model_id, *)

    def render(self, response: dict[str, Any]) -> dict[str, Any]:
        """One result as Roboflow's memory sink holds it: {output name: value}."""
        fields = {"predictions": {key: response[key] for key in ("image", "predictions", "top", "confidence",
                                                                  "predicted_classes") if key in response},
                  "inference_id": response.get("inference_id"), "model_id": self.model_id}
        rendered: dict[str, Any] = {}
        for name, field in self.outputs.items():
            rendered[name] = dict(fields) if field == "*" else fields[field]
        return rendered


def _resolve(value: Any, inputs: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        match = _INPUT.match(value)
        if match:
            if match.group(1) not in inputs:
                raise Unprocessable(f"{where}: {value} names no workflow input with a value "
                                    "(give it in workflows_parameters or as the input's default_value)")
            return inputs[match.group(1)]
    return value


def parse_workflow(specification: Any, parameters: dict[str, Any] | None,
                   image_input_name: str = "image") -> OneModelWorkflow:
    """The one model step of `specification`, or a 422 naming what is not supported."""
    where = "processing_configuration.workflow_specification"
    if not isinstance(specification, dict):
        raise Unprocessable(f"{where}: must be a JSON object")
    steps = specification.get("steps")
    if not isinstance(steps, list) or not steps:
        raise Unprocessable(f"{where}.steps: a workflow needs one model step")
    for index, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("type"), str):
            raise Unprocessable(f"{where}.steps[{index}]: each step needs a type")
        if step["type"] not in MODEL_BLOCKS:
            raise Unprocessable(f"{where}.steps[{index}]: unsupported workflow block {step['type']!r} "
                                f"(step {step.get('name')!r}); edge-daemon runs workflows of one model step")
    if len(steps) > 1:
        names = ", ".join(repr(step["type"]) for step in steps[1:])
        raise Unprocessable(f"{where}.steps: unsupported workflow block(s) {names}: edge-daemon runs workflows "
                            "of exactly one model step")
    step = steps[0]
    name = step.get("name")
    if not isinstance(name, str) or not name:
        raise Unprocessable(f"{where}.steps[0].name: required")
    inputs: dict[str, Any] = {}
    declared_images = []
    for item in specification.get("inputs") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise Unprocessable(f"{where}.inputs: each input needs a name")
        if item.get("type") in ("WorkflowImage", "InferenceImage", "WorkflowVideoMetadata"):
            declared_images.append(item["name"])
        elif "default_value" in item:
            inputs[item["name"]] = item["default_value"]
    inputs.update(parameters or {})
    image = step.get("image", step.get("images"))
    if image is not None and image != f"$inputs.{image_input_name}":
        raise Unprocessable(f"{where}.steps[0].image: must be $inputs.{image_input_name} (the video frame)")
    model_id = _resolve(step.get("model_id"), inputs, f"{where}.steps[0].model_id")
    if not isinstance(model_id, str) or "/" not in model_id:
        raise Unprocessable(f"{where}.steps[0].model_id: must be 'project/version'")
    outputs: dict[str, str] = {}
    for index, output in enumerate(specification.get("outputs") or []):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise Unprocessable(f"{where}.outputs[{index}]: each output needs a name and a selector")
        match = _SELECTOR.match(str(output.get("selector", "")))
        if not match or match.group(1) != name:
            raise Unprocessable(f"{where}.outputs[{index}].selector: must reference the model step "
                                f"($steps.{name}.predictions or $steps.{name}.*)")
        if match.group(2) not in STEP_FIELDS:
            raise Unprocessable(f"{where}.outputs[{index}].selector: step field {match.group(2)!r} is not one of "
                                f"{', '.join(STEP_FIELDS)}")
        outputs[output["name"]] = match.group(2)
    if not outputs:
        raise Unprocessable(f"{where}.outputs: at least one output referencing the model step is needed")

    def number(key: str, kind: type) -> Any:
        value = _resolve(step.get(key), inputs, f"{where}.steps[0].{key}")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Unprocessable(f"{where}.steps[0].{key}: must be a number")
        return kind(value)

    classes = _resolve(step.get("class_filter"), inputs, f"{where}.steps[0].class_filter")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise Unprocessable(f"{where}.steps[0].class_filter: must be a list of class names")
    return OneModelWorkflow(name, MODEL_BLOCKS[step["type"]], model_id, number("confidence", float),
                            number("iou_threshold", float), number("max_detections", int), classes, outputs)
