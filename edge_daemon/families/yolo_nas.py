"""YOLO-NAS: boxes `[N, 4]` as x1, y1, x2, y2 in network pixels and class scores `[N, nc]`, then NMS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_daemon.families.base import ModelFacts
from edge_daemon.processing import detection
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry
from edge_daemon.responses import detection_predictions


@dataclass(frozen=True)
class YoloNasDecoder:
    class_names: tuple[str, ...]
    boxes_index: int
    scores_index: int
    family: str = "yolo-nas"

    def decode(self, outputs: list[np.ndarray], geometry: Geometry, params: InferenceParams) -> dict[str, Any]:
        scores = outputs[self.scores_index]
        confidences = scores.max(axis=1)
        keep = np.flatnonzero(confidences > params.detection.confidence)
        found = detection.nms_candidates(outputs[self.boxes_index][keep].astype(np.float64), confidences[keep],
                                         scores[keep].argmax(axis=1), params.detection, self.class_names)
        return {"predictions": detection_predictions(found, geometry, self.class_names)}


def fit(facts: ModelFacts) -> YoloNasDecoder | None:
    shapes = facts.shapes
    if facts.metadata.task != "object-detection" or len(shapes) != 2 or any(len(shape) != 2 for shape in shapes):
        return None
    if shapes[0][0] != shapes[1][0]:
        return None
    boxes = 0 if shapes[0][1] == 4 else 1
    scores = 1 - boxes
    if shapes[boxes][1] != 4 or shapes[scores][1] != facts.num_classes:
        return None
    return YoloNasDecoder(facts.class_names, boxes, scores)
