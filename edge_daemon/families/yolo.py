"""YOLO heads decoded with NMS: YOLOv5/v7 `[N, 5+nc(+extra)]` and YOLOv8/v9/v11/v12 `[4+nc(+extra), N]`.

The extra columns are 32 mask coefficients (segmentation, with a prototype output) or K (x, y, visibility)
keypoint triples (pose). A YOLO26 or YOLOv10 file exported without `nms=False` carries this raw head too,
whatever its declared type says: it is decoded here, with NMS, rather than answered wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_daemon.families.answers import RowAnswer
from edge_daemon.families.base import ModelFacts
from edge_daemon.processing import detection, segmentation
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry

V5_TYPES = ("yolov5", "yolov7")


@dataclass(frozen=True)
class YoloNmsDecoder:
    family: str
    task: str
    layout: detection.Layout
    num_classes: int
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    output_index: int = 0
    proto_index: int = -1
    num_masks: int = 0
    keypoint_slots: int = 0
    keypoint_names: tuple[tuple[str, ...], ...] = ()

    def decode(self, outputs: list[np.ndarray], geometry: Geometry, params: InferenceParams) -> dict[str, Any]:
        extra = self.num_masks or 3 * self.keypoint_slots
        found = detection.decode(outputs[self.output_index], self.layout, self.num_classes, extra,
                                 params.detection, self.class_names)
        answer = RowAnswer(self.task, self.class_names, self.input_size, self.proto_index, self.keypoint_slots,
                           self.keypoint_names, mask_smoothing=True)
        return answer(found, outputs, geometry, params)


def fit(facts: ModelFacts) -> YoloNmsDecoder | None:
    """A decoder when the outputs are a YOLO NMS head of the declared task, else None."""
    task, nc = facts.metadata.task, facts.num_classes
    shapes = facts.shapes
    prefers_v5 = facts.metadata.model_type.lower().startswith(V5_TYPES)
    common = {"task": task, "num_classes": nc, "class_names": facts.class_names, "input_size": facts.input_size}
    if task == "instance-segmentation":
        found = segmentation.prediction_and_prototypes(shapes)
        if found is None:
            return None
        output_index, proto_index, num_masks = found
        layout = detection.match_layout(shapes[output_index], nc, num_masks, prefers_v5)
        if layout is None:
            return None
        return YoloNmsDecoder("yolov5" if layout == "yolov5" else "yolov8", layout=layout,
                              output_index=output_index, proto_index=proto_index, num_masks=num_masks, **common)
    if len(shapes) != 1 or len(shapes[0]) != 2:
        return None
    if task == "keypoint-detection":
        slots = facts.keypoint_slots()
        if slots is None:
            rows = shapes[0][0] - 4 - nc  # v8 pose: [4 + nc + 3K, N]
            slots = rows // 3 if rows > 0 and rows % 3 == 0 else None
        if slots is None or detection.match_layout(shapes[0], nc, 3 * slots, False) != "yolov8":
            return None
        return YoloNmsDecoder("yolov8", layout="yolov8", keypoint_slots=slots,
                              keypoint_names=facts.metadata.keypoint_names, **common)
    if task != "object-detection":
        return None
    layout = detection.match_layout(shapes[0], nc, 0, prefers_v5)
    if layout is None:
        return None
    return YoloNmsDecoder("yolov5" if layout == "yolov5" else "yolov8", layout=layout, **common)
