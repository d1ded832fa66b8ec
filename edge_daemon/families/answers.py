"""The answer of a YOLO-style head once its rows are chosen: the same for NMS and end-to-end heads.

Detection answers boxes; segmentation adds masks from the rows' coefficients and the prototype output;
keypoint detection reads the rows' extra columns as K (x, y, confidence) triples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_daemon.processing import segmentation
from edge_daemon.processing.detection import Detections
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry
from edge_daemon.responses import detection_predictions, keypoint_predictions, segmentation_predictions


@dataclass(frozen=True)
class RowAnswer:
    task: str
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    proto_index: int = -1
    keypoint_slots: int = 0
    keypoint_names: tuple[tuple[str, ...], ...] = ()
    mask_smoothing: bool = True  # sigmoid then > 0.5 (YOLOv8); False: logits > 0 (YOLO26, as Roboflow does)

    def __call__(self, found: Detections, outputs: list[np.ndarray], geometry: Geometry,
                 params: InferenceParams) -> dict[str, Any]:
        if self.task == "instance-segmentation":
            patches = segmentation.yolo_masks(found, outputs[self.proto_index], geometry, self.input_size,
                                              params.mask_decode_mode, params.tradeoff_factor,
                                              smoothing=self.mask_smoothing)
            return {"predictions": segmentation_predictions(found, patches, geometry, self.class_names,
                                                            params.mask_format)}
        if self.task == "keypoint-detection":
            found.keypoints = found.extras.reshape(len(found), self.keypoint_slots, 3) if len(found) else None
            return {"predictions": keypoint_predictions(found, geometry, self.class_names, self.keypoint_names,
                                                        params.keypoint_confidence)}
        return {"predictions": detection_predictions(found, geometry, self.class_names)}
