"""YOLO26 and YOLOv10 end-to-end heads: `[N, 6 (+ nm | + 3K)]` rows of x1, y1, x2, y2, score, class in input
pixels, already free of duplicates (the one-to-one head needs no NMS).

Only the score threshold, the class filter and `max_detections` apply. YOLO26 keeps scores >= the threshold,
YOLOv10 scores > it (as Roboflow's default stack does). Segmentation rows carry mask coefficients for a
prototype output, pose rows K (x, y, visibility) triples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_daemon.families.answers import RowAnswer
from edge_daemon.families.base import ModelFacts
from edge_daemon.processing import segmentation
from edge_daemon.processing.detection import DetectionParams, Detections, allowed_classes
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry

ROW = 6  # x1, y1, x2, y2, score, class


@dataclass(frozen=True)
class EndToEndDecoder:
    family: str
    task: str
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    inclusive: bool  # YOLO26: score >= threshold; YOLOv10: score > threshold
    output_index: int = 0
    proto_index: int = -1
    num_masks: int = 0
    keypoint_slots: int = 0
    keypoint_names: tuple[tuple[str, ...], ...] = ()

    def rows(self, output: np.ndarray, params: DetectionParams) -> Detections:
        scores = output[:, 4]
        keep = scores >= params.confidence if self.inclusive else scores > params.confidence
        class_ids = output[:, 5].astype(np.int64)
        keep &= (class_ids >= 0) & (class_ids < len(self.class_names))
        if params.class_filter is not None:
            keep &= allowed_classes(self.class_names, params.class_filter)[np.clip(class_ids, 0, None)
                                                                            % len(self.class_names)]
        selected = np.flatnonzero(keep)
        selected = selected[np.argsort(-scores[selected], kind="stable")][:params.max_detections]
        extras = output[selected, ROW:].astype(np.float32)
        return Detections(output[selected, :4].astype(np.float64), scores[selected].astype(np.float64),
                          class_ids[selected], extras)

    def decode(self, outputs: list[np.ndarray], geometry: Geometry, params: InferenceParams) -> dict[str, Any]:
        found = self.rows(outputs[self.output_index], params.detection)
        answer = RowAnswer(self.task, self.class_names, self.input_size, self.proto_index, self.keypoint_slots,
                           self.keypoint_names, mask_smoothing=False)
        return answer(found, outputs, geometry, params)


def fit(facts: ModelFacts) -> EndToEndDecoder | None:
    """A decoder when the outputs are end-to-end rows for the declared task, else None."""
    task, shapes = facts.metadata.task, facts.shapes
    common = {"task": task, "class_names": facts.class_names, "input_size": facts.input_size,
              "family": "yolov10" if facts.metadata.model_type.lower().startswith("yolov10") else "yolo26"}
    common["inclusive"] = common["family"] == "yolo26"
    if task == "instance-segmentation":
        found = segmentation.prediction_and_prototypes(shapes)
        if found is None:
            return None
        output_index, proto_index, num_masks = found
        if len(shapes[output_index]) != 2 or shapes[output_index][1] != ROW + num_masks:
            return None
        return EndToEndDecoder(output_index=output_index, proto_index=proto_index, num_masks=num_masks, **common)
    if len(shapes) != 1 or len(shapes[0]) != 2:
        return None
    columns = shapes[0][1]
    if task == "keypoint-detection":
        slots = facts.keypoint_slots() or ((columns - ROW) // 3 if (columns - ROW) % 3 == 0 else None)
        if not slots or columns != ROW + 3 * slots:
            return None
        return EndToEndDecoder(keypoint_slots=slots, keypoint_names=facts.metadata.keypoint_names, **common)
    if task == "object-detection" and columns == ROW:
        return EndToEndDecoder(**common)
    return None
