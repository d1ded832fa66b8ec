"""Model families: the one table that says, for each family Roboflow trains, which tasks and declared types it
serves, how its input is normalised, and how its outputs are recognised and decoded.

A model is decoded by the first family of its task whose layout its outputs fit, trying the families its
declared `model_type` names first. A model whose outputs fit another family than the declared one (a YOLO26
file exported with the raw head, an imported model of unknown type) is served by the family it fits, and the
log says so. A model whose outputs fit none is refused with a 422 that names the type and the shapes: never
answered wrongly.
"""

from __future__ import annotations

import logging

from edge_daemon.errors import ModelArtifactError
from edge_daemon.families import classifiers, end_to_end, rfdetr, semantic, yolo, yolo_nas
from edge_daemon.families.base import IMAGENET, SYMMETRIC, UNIT, Decoder, Family, ModelFacts

log = logging.getLogger(__name__)

DET, SEG, POSE = "object-detection", "instance-segmentation", "keypoint-detection"
CLS, SEM = "classification", "semantic-segmentation"

# The order is also the order in which an undeclared model_type is guessed.
FAMILIES: tuple[Family, ...] = (
    Family("yolov8", (DET, SEG, POSE),
           ("yolov5", "yolov7", "yolov8", "yolov9", "yolov11", "yolo11", "yolov12", "yolo12"), UNIT, yolo.fit,
           "YOLOv8/v9/v11/v12 [4+nc(+32|+3K), N] or YOLOv5/v7 [N, 5+nc(+32)], then NMS"),
    Family("yolo26", (DET, SEG, POSE), ("yolo26",), UNIT, end_to_end.fit,
           "end-to-end rows [N, 6 (+32 | +3K)]: x1, y1, x2, y2, score, class"),
    Family("yolov10", (DET,), ("yolov10",), UNIT, end_to_end.fit, "end-to-end rows [N, 6]"),
    Family("rfdetr", (DET, SEG), ("rfdetr",), IMAGENET, rfdetr.fit,
           "boxes [Q, 4] (cx, cy, w, h in 0..1) + logits [Q, C] (+ mask logits [Q, mh, mw])"),
    Family("yolo-nas", (DET,), ("yolonas",), UNIT, yolo_nas.fit, "boxes [N, 4] (x1, y1, x2, y2) + scores [N, nc]"),
    Family("vit", (CLS,), ("vit",), SYMMETRIC, classifiers.fit, "scores [nc]"),
    Family("resnet", (CLS,), ("resnet", "dinov3"), IMAGENET, classifiers.fit, "scores [nc]"),
    Family("yolov8-cls", (CLS,), ("yolov8", "yolov11", "yolo11", "yolo26"), UNIT, classifiers.fit, "scores [nc]"),
    Family("deeplabv3plus", (SEM,), ("deeplabv3", "deeplab"), IMAGENET, semantic.fit, "logits [nc, H, W]"),
)

# Ultralytics writes the task into its exports; a file of another task than declared is refused.
_EXPORT_TASKS = {"detect": DET, "segment": SEG, "pose": POSE, "classify": CLS}


def candidates(facts: ModelFacts) -> list[tuple[Family, bool]]:
    """The families to try, declared ones first (longest matching type prefix), each with `declared`."""
    task, model_type = facts.metadata.task, facts.metadata.model_type
    rows = [family for family in FAMILIES if task in family.tasks]
    declared = sorted((family for family in rows if family.declared_by(model_type)),
                      key=lambda family: -family.declared_by(model_type))
    guesses = [family for family in rows if family not in declared]
    if facts.onnx.property("end2end") is True:  # the export says which head it has
        guesses.sort(key=lambda family: family.fit is not end_to_end.fit)
    if rfdetr.looks_like_rfdetr(facts):
        guesses.sort(key=lambda family: family.name != "rfdetr")
    return [(family, True) for family in declared] + [(family, False) for family in guesses]


def resolve(facts: ModelFacts) -> tuple[Family, Decoder]:
    """The family that decodes this model, and its decoder; ModelArtifactError (422) when none fits."""
    metadata = facts.metadata
    exported_as = _EXPORT_TASKS.get(str(facts.onnx.property("task")))
    if exported_as is not None and exported_as != metadata.task:
        raise ModelArtifactError(f"model {metadata.model_id} is declared {metadata.task}, but its ONNX file was "
                                 f"exported for {exported_as} (task={facts.onnx.property('task')!r}; outputs "
                                 f"{_shapes(facts)})")
    tried = candidates(facts)
    for family, declared in tried:
        decoder = family.fit(facts)
        if decoder is None:
            continue
        if not declared:
            log.warning("model %s: model_type %r with outputs %s is served as %s (%s)", metadata.model_id,
                        metadata.model_type, _shapes(facts), family.name, family.summary)
        return family, decoder
    expected = "; ".join(f"{family.name}: {family.summary}" for family, declared in tried if declared) or \
        "; ".join(f"{family.name}: {family.summary}" for family, _ in tried)
    raise ModelArtifactError(
        f"{metadata.task} model of type {metadata.model_type or 'unknown'!r}: outputs {_shapes(facts)} do not fit "
        f"{facts.num_classes} classes in any layout the daemon serves ({expected})")


def input_spec(family: Family, facts: ModelFacts):
    """The family's input normalisation, overridden by whatever the model's metadata declares."""
    declared = facts.metadata.network_input
    return family.input.overridden(colour=declared.colour, scale=declared.scale, mean=declared.mean,
                                   std=declared.std)


def _shapes(facts: ModelFacts) -> str:
    return ", ".join(f"{name} {[1, *shape]}" for name, shape in zip(facts.output_names, facts.shapes))
