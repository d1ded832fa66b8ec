"""Reference pre/post-processing for the bundled models (numpy + OpenCV only).

This mirrors what the daemon does (letterbox/stretch, YOLOv8 output decoding,
NMS, prototype masks) in the plainest possible way, so evaluation and tests
check the shipped ONNX files independently of the server code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from tools.shapes_layout import DET_SIZE

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterbox: network px = orig px * scale + pad."""

    scale: float
    pad_left: int
    pad_top: int
    new_w: int
    new_h: int
    orig_w: int
    orig_h: int


def letterbox(image: np.ndarray, size: int = DET_SIZE) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect, centre on a grey square canvas (BGR in, BGR out)."""
    h0, w0 = image.shape[:2]
    s = min(size / h0, size / w0)
    new_w, new_h = round(w0 * s), round(h0 * s)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_left, pad_top = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[pad_top:pad_top + new_h, pad_left:pad_left + new_w] = resized
    return canvas, Letterbox(s, pad_left, pad_top, new_w, new_h, w0, h0)


def to_det_input(letterboxed_bgr: list[np.ndarray]) -> np.ndarray:
    """BGR uint8 HWC images -> RGB NCHW float32 in [0, 1]."""
    batch = np.stack(letterboxed_bgr)[..., ::-1]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def to_cls_input(images_bgr: list[np.ndarray], size: int = 128) -> np.ndarray:
    """Stretch to size x size, RGB, scale to [-1, 1] (the classifier's training input)."""
    rs = [cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images_bgr]
    x = np.stack(rs)[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray((x - np.float32(0.5)) / np.float32(0.5))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy NMS on xyxy boxes; returns kept indices in descending score order."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = (xx2 - xx1).clip(0) * (yy2 - yy1).clip(0)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


@dataclass
class Detections:
    """Decoded predictions for one image, boxes in original image pixels."""

    boxes: np.ndarray  # (K, 4) xyxy float
    scores: np.ndarray  # (K,)
    classes: np.ndarray  # (K,) int
    coeffs: np.ndarray | None = None  # (K, 32) mask coefficients, segmentation only


def decode_yolo(
    pred: np.ndarray,
    geom: Letterbox,
    nc: int = 4,
    conf: float = 0.001,
    iou: float = 0.6,
    max_det: int = 100,
    max_candidates: int = 3000,
) -> Detections:
    """One image's output0 (4+nc[+nm], N) -> class-aware NMS'd detections.

    Every (anchor, class) pair above conf is a candidate (multi-label), as in
    the usual YOLOv8 validation setting.
    """
    p = pred.T  # (N, 4+nc+nm)
    scores_all = p[:, 4:4 + nc]
    a_idx, c_idx = np.nonzero(scores_all > conf)
    scores = scores_all[a_idx, c_idx]
    if scores.size > max_candidates:
        top = np.argsort(-scores, kind="stable")[:max_candidates]
        a_idx, c_idx, scores = a_idx[top], c_idx[top], scores[top]
    cx, cy, w, h = p[a_idx, 0], p[a_idx, 1], p[a_idx, 2], p[a_idx, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    # Class-aware NMS in one pass: shift boxes of different classes apart.
    offset = c_idx[:, None].astype(np.float32) * 4096.0
    keep = nms(boxes + offset, scores, iou)[:max_det]
    boxes, scores, c_idx, a_idx = boxes[keep], scores[keep], c_idx[keep], a_idx[keep]
    # Un-letterbox to original pixels.
    boxes = boxes.copy()
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - geom.pad_left) / geom.scale).clip(0, geom.orig_w)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - geom.pad_top) / geom.scale).clip(0, geom.orig_h)
    coeffs = p[a_idx, 4 + nc:] if p.shape[1] > 4 + nc else None
    return Detections(boxes, scores.astype(np.float32), c_idx.astype(np.int64), coeffs)


def instance_mask(coeffs: np.ndarray, protos: np.ndarray, box: np.ndarray, geom: Letterbox) -> tuple[np.ndarray, int, int]:
    """Mask of one instance inside its (original-pixel) box.

    sigmoid(coeffs . protos) lives on the prototype grid; each original
    pixel centre is mapped onto that grid (bilinear), so only the box ROI is
    computed.  Returns (roi_mask bool, x0, y0).
    """
    nm, ph, pw = protos.shape
    logits = (coeffs.astype(np.float32) @ protos.reshape(nm, -1)).reshape(ph, pw)
    prob = 1.0 / (1.0 + np.exp(-logits))
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(geom.orig_w, x1), min(geom.orig_h, y1)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), dtype=bool), x0, y0
    stride = DET_SIZE / pw  # network px per proto cell
    k = geom.scale / stride
    # proto coordinate of ROI pixel (i, j): ((j + x0 + .5) * s + pad) / stride - .5
    m = np.array(
        [[k, 0, (x0 + 0.5) * k + geom.pad_left / stride - 0.5],
         [0, k, (y0 + 0.5) * k + geom.pad_top / stride - 0.5]],
        dtype=np.float64,
    )
    roi = cv2.warpAffine(
        prob.astype(np.float32), m, (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )
    # Crop to the exact box (sub-pixel edges: pixel centres inside the box).
    xs = np.arange(x0, x1) + 0.5
    ys = np.arange(y0, y1) + 0.5
    inside = ((ys >= box[1]) & (ys <= box[3]))[:, None] & ((xs >= box[0]) & (xs <= box[2]))[None, :]
    return (roi > 0.5) & inside, x0, y0


class OnnxModel:
    """Thin onnxruntime wrapper that pins threads for reproducible timing."""

    def __init__(self, path: str, threads: int = 2) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"images": x})
