"""Decoding YOLO-style detection heads: layout matching, confidence filter, true-IoU NMS.

Raw layouts (one image's slice of the batch):
- YOLOv8 / YOLO11: `[4 + nc (+ extra), N]`: cx, cy, w, h in input pixels, then class scores (no objectness);
- YOLOv5: `[N, 5 + nc (+ extra)]`: cx, cy, w, h, objectness, class scores. As in Roboflow's server the
  objectness is the reported confidence and the class is the best class score.
`extra` columns trail the class scores: mask coefficients (segmentation) or keypoint triples (pose).
The NMS here also serves other families whose boxes need it (YOLO-NAS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Layout = Literal["yolov8", "yolov5"]
MAX_CANDIDATES = 3000


@dataclass(frozen=True)
class DetectionParams:
    confidence: float = 0.4
    iou_threshold: float = 0.3
    max_detections: int = 300
    class_agnostic_nms: bool = False
    class_filter: tuple[str, ...] | None = None


@dataclass
class Detections:
    """Survivors of NMS (or of an end-to-end head) for one image, in network-input pixels, best first."""

    boxes: np.ndarray          # (K, 4) xyxy float
    confidences: np.ndarray    # (K,)
    class_ids: np.ndarray      # (K,) int
    extras: np.ndarray | None = None  # (K, extra): mask coefficients or keypoint triples
    keypoints: np.ndarray | None = None  # (K, slots, 3): x, y in network pixels, confidence

    def __len__(self) -> int:
        return len(self.confidences)

    @property
    def mask_coefficients(self) -> np.ndarray | None:
        return self.extras


def match_layout(shape: tuple[int, ...], num_classes: int, extra: int, prefers_v5: bool) -> Layout | None:
    """The layout of one image's 2-D output `[a, b]`, or None when it fits neither."""
    if len(shape) != 2:
        return None
    rows, cols = shape
    v8_width, v5_width = 4 + num_classes + extra, 5 + num_classes + extra
    if prefers_v5 and cols == v5_width:
        return "yolov5"
    if rows == v8_width:
        return "yolov8"
    if cols == v5_width:
        return "yolov5"
    return None


def allowed_classes(class_names: tuple[str, ...], class_filter: tuple[str, ...]) -> np.ndarray:
    """A boolean per class id: is it in the request's class filter."""
    return np.array([name in class_filter for name in class_names], dtype=bool)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Greedy IoU non-maximum suppression; returns kept indices, best first. A box is dropped if IoU > threshold."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest])
        inter_h = np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])
        inter = np.maximum(inter_w, 0) * np.maximum(inter_h, 0)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _candidates(output: np.ndarray, layout: Layout, num_classes: int,
                threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows (K, width) above the threshold, their confidences, class ids, and where extra columns start.

    Scores must be above the threshold (`>`), as in Roboflow's default stack."""
    if layout == "yolov8":
        scores = output[4:4 + num_classes]
        confidences = scores.max(axis=0)
        keep = np.flatnonzero(confidences > threshold)
        return output[:, keep].T, confidences[keep], scores[:, keep].argmax(axis=0), 4 + num_classes
    confidences = output[:, 4]
    keep = np.flatnonzero(confidences > threshold)
    rows = output[keep]
    return rows, confidences[keep], rows[:, 5:5 + num_classes].argmax(axis=1), 5 + num_classes


def decode(output: np.ndarray, layout: Layout, num_classes: int, extra: int, params: DetectionParams,
           class_names: tuple[str, ...]) -> Detections:
    """Filter one image's raw output by confidence first, then NMS only the survivors."""
    rows, confidences, class_ids, extra_start = _candidates(output, layout, num_classes, params.confidence)
    centre, size = rows[:, 0:2], rows[:, 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float64)
    extras = rows[:, extra_start:extra_start + extra].astype(np.float32) if extra else None
    return nms_candidates(boxes, confidences, class_ids, params, class_names, extras)


def nms_candidates(boxes: np.ndarray, confidences: np.ndarray, class_ids: np.ndarray, params: DetectionParams,
                   class_names: tuple[str, ...], extras: np.ndarray | None = None) -> Detections:
    """Class filter, candidate cap and NMS (per class unless class-agnostic) over thresholded boxes (xyxy)."""
    if params.class_filter is not None:
        wanted = allowed_classes(class_names, params.class_filter)[class_ids]
        boxes, confidences, class_ids = boxes[wanted], confidences[wanted], class_ids[wanted]
        extras = extras[wanted] if extras is not None else None
    if len(confidences) > MAX_CANDIDATES:
        top = np.argpartition(-confidences, MAX_CANDIDATES)[:MAX_CANDIDATES]
        boxes, confidences, class_ids = boxes[top], confidences[top], class_ids[top]
        extras = extras[top] if extras is not None else None
    if params.class_agnostic_nms or len(boxes) == 0:
        kept = nms(boxes, confidences, params.iou_threshold, params.max_detections)
    else:
        # Offsetting each class far apart makes one NMS pass class-aware.
        offset = class_ids[:, None] * (float(np.abs(boxes).max()) + 1.0)
        kept = nms(boxes + offset, confidences, params.iou_threshold, params.max_detections)
    return Detections(boxes[kept], confidences[kept].astype(np.float64), class_ids[kept].astype(np.int64),
                      extras[kept] if extras is not None else None)
