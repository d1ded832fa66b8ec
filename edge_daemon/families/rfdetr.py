"""RF-DETR (every size, NAS included): boxes `[Q, 4]` as cx, cy, w, h in 0..1 of the network input, class
logits `[Q, C]` (C may exceed the class count: the extra column is the export's no-object slot), and for
segmentation per-query mask logits `[Q, mh, mw]`.

No NMS: a sigmoid over all Q x C logits, the top Q scores, classes beyond the model's names dropped (and the
background placeholder, whose later ids shift down), then the confidence threshold; one query may give more
than one class. A mask pixel is on where its logit is > 0; masks are not cut to their box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_daemon.families.base import ModelFacts
from edge_daemon.processing.detection import Detections, allowed_classes
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry
from edge_daemon.processing.segmentation import MaskGrid, MaskPatch, aligned_mask
from edge_daemon.responses import detection_predictions, segmentation_predictions


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


@dataclass(frozen=True)
class RFDetrDecoder:
    task: str
    raw_classes: int  # names in the metadata, placeholders included
    dropped: tuple[int, ...]
    class_names: tuple[str, ...]  # served names
    input_size: tuple[int, int]
    boxes_index: int
    logits_index: int
    masks_index: int = -1
    family: str = "rfdetr"

    def detections(self, outputs: list[np.ndarray], params: InferenceParams,
                   size: tuple[int, int] | None = None) -> tuple[Detections, np.ndarray]:
        """Survivors (boxes xyxy in pixels of `size`, by default the network input; best first) and the query
        each came from."""
        logits = outputs[self.logits_index][:, :self.raw_classes]
        queries = logits.shape[0]
        scores = _sigmoid(logits.astype(np.float64)).reshape(-1)
        top = np.argpartition(-scores, min(queries, scores.size) - 1)[:queries]
        top = top[np.argsort(-scores[top], kind="stable")]
        query_ids, raw_classes = top // logits.shape[1], top % logits.shape[1]
        keep = scores[top] > params.detection.confidence
        if self.dropped:
            keep &= ~np.isin(raw_classes, self.dropped)
        class_ids = raw_classes - np.searchsorted(np.asarray(self.dropped), raw_classes, side="left") \
            if self.dropped else raw_classes
        if params.detection.class_filter is not None:
            keep &= allowed_classes(self.class_names, params.detection.class_filter)[
                np.clip(class_ids, 0, len(self.class_names) - 1)]
        selected = np.flatnonzero(keep)[:params.detection.max_detections]
        width, height = size or self.input_size
        cxcywh = outputs[self.boxes_index][query_ids[selected]].astype(np.float64)
        boxes = np.stack([(cxcywh[:, 0] - cxcywh[:, 2] / 2) * width, (cxcywh[:, 1] - cxcywh[:, 3] / 2) * height,
                          (cxcywh[:, 0] + cxcywh[:, 2] / 2) * width, (cxcywh[:, 1] + cxcywh[:, 3] / 2) * height],
                         axis=1) if len(selected) else np.zeros((0, 4))
        found = Detections(boxes, scores[top[selected]], class_ids[selected].astype(np.int64))
        return found, query_ids[selected]

    def decode(self, outputs: list[np.ndarray], geometry: Geometry, params: InferenceParams) -> dict[str, Any]:
        # Boxes are 0..1 of the input, which is the dataset-version frame stretched where there is one.
        found, queries = self.detections(outputs, params, geometry.frame_size(self.input_size))
        if self.task != "instance-segmentation":
            return {"predictions": detection_predictions(found, geometry, self.class_names)}
        patches = [self.mask(outputs[self.masks_index][query], geometry) for query in queries]
        return {"predictions": segmentation_predictions(found, patches, geometry, self.class_names,
                                                        params.mask_format)}

    def mask(self, logits: np.ndarray, geometry: Geometry) -> MaskPatch:
        """The query's mask on the image grid: its logits with the letterbox padding cut off (measured in the
        dataset-version frame where there is one), resized bilinearly to the image size, > 0 (not cut to the
        box)."""
        height, width = logits.shape
        grid = MaskGrid.of(height, width, geometry, geometry.frame_size(self.input_size), clamp=False)
        # A centre crop of a larger image: the grid covers only its middle, so it is padded with zeros out to
        # the whole image first (as Roboflow's default stack does).
        before_y, before_x = max(0, -grid.top), max(0, -grid.left)
        after_y, after_x = max(0, grid.bottom - height), max(0, grid.right - width)
        if before_y or before_x or after_y or after_x:
            logits = np.pad(logits, ((before_y, after_y), (before_x, after_x)))
        part = logits[grid.top + before_y:grid.bottom + before_y, grid.left + before_x:grid.right + before_x]
        return aligned_mask(part, (grid.left, grid.top), grid, geometry, 0.0)


def _outputs_by_role(facts: ModelFacts) -> tuple[int, int, int] | None:
    """(boxes, logits, masks or -1) by shape: two 2-D outputs with the same query count, one of width 4."""
    shapes = facts.shapes
    two_d = [index for index, shape in enumerate(shapes) if len(shape) == 2]
    three_d = [index for index, shape in enumerate(shapes) if len(shape) == 3]
    if len(two_d) != 2 or len(three_d) > 1 or len(shapes) != len(two_d) + len(three_d):
        return None
    boxes = [index for index in two_d if shapes[index][1] == 4]
    if len(boxes) != 1:
        boxes = [index for index in two_d if facts.output_names[index] == "dets"]
    if len(boxes) != 1:
        return None
    logits = next(index for index in two_d if index != boxes[0])
    queries = shapes[boxes[0]][0]
    if shapes[logits][0] != queries or shapes[logits][1] < facts.num_classes:
        return None
    masks = three_d[0] if three_d else -1
    if masks >= 0 and shapes[masks][0] != queries:
        return None
    return boxes[0], logits, masks


def fit(facts: ModelFacts) -> RFDetrDecoder | None:
    task = facts.metadata.task
    if task not in ("object-detection", "instance-segmentation"):
        return None
    roles = _outputs_by_role(facts)
    if roles is None:
        return None
    boxes, logits, masks = roles
    if (task == "instance-segmentation") != (masks >= 0):
        return None
    return RFDetrDecoder(task=task, raw_classes=facts.num_classes, dropped=facts.metadata.dropped_class_ids,
                         class_names=facts.class_names, input_size=facts.input_size, boxes_index=boxes,
                         logits_index=logits, masks_index=masks)


def looks_like_rfdetr(facts: ModelFacts) -> bool:
    """For undeclared types: RF-DETR names its outputs dets/labels and has one class column more than names
    (YOLO-NAS, the other boxes-plus-scores layout, has exactly one per class)."""
    roles = _outputs_by_role(facts)
    return roles is not None and (facts.output_names[roles[0]] == "dets"
                                  or facts.shapes[roles[1]][1] == facts.num_classes + 1)
