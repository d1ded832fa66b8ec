"""Decoding YOLO detection outputs: layout detection, confidence filter, IoU NMS, back-projection.

Supported raw layouts (one image's slice of the batch):
- YOLOv8 / YOLO11: `[4 + nc (+ nm), N]`: cx, cy, w, h in input pixels, then class scores (no objectness);
- YOLOv5: `[N, 5 + nc (+ nm)]`: cx, cy, w, h, objectness, class scores. As in Roboflow's server the
  objectness is the reported confidence and the class is the best class score.
`nm` mask coefficients trail the class scores for segmentation models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_daemon.errors import ModelArtifactError

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
    """Survivors of NMS for one image, in network-input pixels, best first."""

    boxes: np.ndarray          # (K, 4) xyxy float
    confidences: np.ndarray    # (K,)
    class_ids: np.ndarray      # (K,) int
    mask_coefficients: np.ndarray | None = None  # (K, nm)

    def __len__(self) -> int:
        return len(self.confidences)


def detect_layout(shape: tuple[int, ...], num_classes: int, num_masks: int, model_type: str) -> Layout:
    """Pick the layout of a `[B, a, b]` output from its shape and the declared model type."""
    if len(shape) != 3:
        raise ModelArtifactError(f"detection output must be 3-D [batch, a, b], got {list(shape)}")
    _, rows, cols = shape
    v8_width, v5_width = 4 + num_classes + num_masks, 5 + num_classes + num_masks
    prefers_v5 = model_type.lower().startswith(("yolov5", "yolov7"))
    if prefers_v5 and cols == v5_width:
        return "yolov5"
    if rows == v8_width:
        return "yolov8"
    if cols == v5_width:
        return "yolov5"
    raise ModelArtifactError(
        f"output shape {list(shape)} does not fit {num_classes} classes"
        f"{f' and {num_masks} mask coefficients' if num_masks else ''}: expected [B, {v8_width}, N] (YOLOv8) "
        f"or [B, N, {v5_width}] (YOLOv5)")


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
    """Rows (K, width) above the threshold, their confidences, class ids, and where mask columns start."""
    if layout == "yolov8":
        scores = output[4:4 + num_classes]
        confidences = scores.max(axis=0)
        keep = np.flatnonzero(confidences >= threshold)
        return output[:, keep].T, confidences[keep], scores[:, keep].argmax(axis=0), 4 + num_classes
    confidences = output[:, 4]
    keep = np.flatnonzero(confidences >= threshold)
    rows = output[keep]
    return rows, confidences[keep], rows[:, 5:5 + num_classes].argmax(axis=1), 5 + num_classes


def decode(output: np.ndarray, layout: Layout, num_classes: int, num_masks: int, params: DetectionParams,
           class_names: tuple[str, ...]) -> Detections:
    """Filter one image's raw output by confidence first, then NMS only the survivors."""
    rows, confidences, class_ids, mask_start = _candidates(output, layout, num_classes, params.confidence)
    if params.class_filter is not None:
        allowed = np.array([name in params.class_filter for name in class_names], dtype=bool)
        wanted = allowed[class_ids]
        rows, confidences, class_ids = rows[wanted], confidences[wanted], class_ids[wanted]
    if len(confidences) > MAX_CANDIDATES:
        top = np.argpartition(-confidences, MAX_CANDIDATES)[:MAX_CANDIDATES]
        rows, confidences, class_ids = rows[top], confidences[top], class_ids[top]
    centre, size = rows[:, 0:2], rows[:, 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float64)
    if params.class_agnostic_nms or len(boxes) == 0:
        kept = nms(boxes, confidences, params.iou_threshold, params.max_detections)
    else:
        # Offsetting each class far apart makes one NMS pass class-aware.
        offset = class_ids[:, None] * (float(np.abs(boxes).max()) + 1.0)
        kept = nms(boxes + offset, confidences, params.iou_threshold, params.max_detections)
    coefficients = rows[kept, mask_start:mask_start + num_masks].astype(np.float32) if num_masks else None
    return Detections(boxes[kept], confidences[kept].astype(np.float64), class_ids[kept].astype(np.int64),
                      coefficients)
