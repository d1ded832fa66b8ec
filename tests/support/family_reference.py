"""Independent NumPy decodes of each family's raw outputs, written from the family fact sheet
(shared/reference/model-families.md), to check the daemon's HTTP answers against.

Nothing here imports the daemon's decoding code: preprocessing, NMS, back-projection and masks are written
again, plainly, so a shared mistake cannot hide.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort
from PIL import Image

from edge_daemon.models.store import ModelId, write_manifest
from tests.support.third_party import package_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "families"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def fixture(name: str) -> Path | None:
    """A family fixture's weights (committed, or built by .ci/run), or None when absent."""
    for folder in (FIXTURES / name, FIXTURES / "built" / name):
        if (folder / "weights.onnx").is_file():
            return folder / "weights.onnx"
    return None


def photo() -> np.ndarray | None:
    """A real photo (matplotlib's public-domain sample of Grace Hopper, 512x600), BGR."""
    path = package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")
    return cv2.imread(str(path)) if path is not None else None


def photo_jpegs(sizes: list[tuple[int, int]]) -> list[tuple[bytes, np.ndarray]]:
    """The photo at each (width, height) as (JPEG bytes, the pixels a decoder gets from them); skips the test
    without it."""
    picture = photo()
    if picture is None:
        pytest.skip("matplotlib's sample photo (test data) is not installed")
    out = []
    for width, height in sizes:
        resized = picture if picture.shape[:2] == (height, width) else cv2.resize(picture, (width, height),
                                                                                interpolation=cv2.INTER_AREA)
        jpeg = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
        out.append((jpeg, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)))
    return out


def install(root: Path, model_id: str, weights: Path, task: str, model_type: str, classes: list[str],
            resize: tuple[int, int], resize_format: str, extra: dict[str, object] | None = None) -> Path:
    """A models-dir entry in Roboflow's classic format; `extra` files (name -> JSON) are added as they are."""
    project, version = model_id.split("/")
    folder = root / project / version
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, folder / "weights.onnx")
    environment = {"CLASS_MAP": {str(index): name for index, name in enumerate(classes)},
                   "PREPROCESSING": {"resize": {"enabled": True, "width": resize[0], "height": resize[1],
                                                "format": resize_format}}}
    (folder / "environment.json").write_text(json.dumps(environment))
    (folder / "model_type.json").write_text(json.dumps({"project_task_type": task, "model_type": model_type}))
    for name, content in (extra or {}).items():
        (folder / name).write_text(json.dumps(content) if not isinstance(content, str) else content)
    write_manifest(folder, ModelId(project, version))
    return folder


def install_package(root: Path, model_id: str, weights: Path, task: str, architecture: str, classes: list[str],
                    network_input: dict[str, object]) -> Path:
    """A models-dir entry in Roboflow's package format (inference_config.json `network_input` as given)."""
    project, version = model_id.split("/")
    folder = root / project / version
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, folder / "weights.onnx")
    (folder / "class_names.txt").write_text("".join(f"{name}\n" for name in classes))
    (folder / "model_config.json").write_text(json.dumps({"task_type": task, "model_architecture": architecture}))
    (folder / "inference_config.json").write_text(json.dumps({"network_input": network_input}))
    write_manifest(folder, ModelId(project, version))
    return folder


# ----- preprocessing ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Letterbox:
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    width: int  # original size
    height: int
    resized_w: int = 0  # the image's size inside the network input
    resized_h: int = 0


def prepare(image: np.ndarray, size: tuple[int, int], mode: str, pad: int = 114,
            pillow: bool = False) -> tuple[np.ndarray, Letterbox]:
    """Roboflow's resize: 'stretch', or 'letterbox' with the scaled size truncated (int(), as Roboflow's default
    stack: no rounding) and the slack split; a letterbox maps back with one scale for both axes."""
    height, width = image.shape[:2]
    target_w, target_h = size
    if mode == "stretch":
        if pillow:  # RF-DETR: Pillow's bilinear (antialiased when shrinking), as Roboflow's default stack
            return (np.asarray(Image.fromarray(image).resize((target_w, target_h), Image.BILINEAR)),
                    Letterbox(target_w / width, target_h / height, 0, 0, width, height, target_w, target_h))
        return (cv2.resize(image, (target_w, target_h), interpolation=cv2.INTER_LINEAR),
                Letterbox(target_w / width, target_h / height, 0, 0, width, height, target_w, target_h))
    scale = min(target_w / width, target_h / height)
    new_w, new_h = int(width * scale), int(height * scale)
    canvas = np.full((target_h, target_w, 3), pad, np.uint8)
    pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.resize(image, (new_w, new_h),
                                                                  interpolation=cv2.INTER_LINEAR)
    return canvas, Letterbox(scale, scale, pad_x, pad_y, width, height, new_w, new_h)


def rfdetr_prepare(image: np.ndarray, size: tuple[int, int], mode: str, version: tuple[int, int] | None,
                   pad: int = 0) -> tuple[np.ndarray, Letterbox, tuple[int, int]]:
    """RF-DETR in Roboflow's default stack (sheet §7: uint8 → Pillow bilinear → /255 → ImageNet; letterbox in
    pixel space; non-square via `dataset_version_resize_dimensions`). Stretch, fit-longer-edge (served as
    stretch) or no version size: one Pillow stretch to `size`. Otherwise the mode is made at the version size
    (w, h) on uint8 pixels - letterbox (reflect-edges too): OpenCV bilinear to the truncated size, centred, the
    rest `pad`; center-crop: the centred window of that size, no resize, zeros where the image is smaller - and
    the result is stretched with Pillow to `size`. Returns the network image, how the image sits in the frame
    the mode was made at, and that frame's size (the boxes' 0..1 are of it)."""
    height, width = image.shape[:2]
    if mode in ("stretch", "fit-longer-edge") or version is None:
        network, box = prepare(image, size, "stretch", pillow=True)
        return network, box, size
    frame_w, frame_h = version
    if mode == "center-crop":
        frame = np.zeros((frame_h, frame_w, 3), np.uint8)
        # Per axis: a larger image loses floor(excess / 2) before its window; a smaller one gets floor(slack / 2)
        # of zeros before it. `left`/`top` < 0: the image starts that far before the frame.
        left = (frame_w - width) // 2 if frame_w >= width else -((width - frame_w) // 2)
        top = (frame_h - height) // 2 if frame_h >= height else -((height - frame_h) // 2)
        window = image[max(0, -top):max(0, -top) + min(height, frame_h),
                       max(0, -left):max(0, -left) + min(width, frame_w)]
        frame[max(0, top):max(0, top) + window.shape[0], max(0, left):max(0, left) + window.shape[1]] = window
        box = Letterbox(1.0, 1.0, left, top, width, height, width, height)
    else:
        frame, box = prepare(image, version, "letterbox", pad)
    network = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR)) if version != size else frame
    return network, box, version


def tensor(image: np.ndarray, normalisation: tuple | None = None) -> np.ndarray:
    rgb = image[:, :, ::-1].astype(np.float32) / 255.0
    if normalisation is not None:
        rgb = (rgb - np.array(normalisation[0], np.float32)) / np.array(normalisation[1], np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])


def run(weights: Path, batch: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    return [output[0] for output in session.run(None, {session.get_inputs()[0].name: batch})]


def to_original(points: np.ndarray, box: Letterbox, clip: bool = True) -> np.ndarray:
    """(N, 2) network points to original pixels: undo pad and scale, clip (box corners; Roboflow's default
    stack does not clip keypoints), round."""
    x = (points[:, 0] - box.pad_x) / box.scale_x
    y = (points[:, 1] - box.pad_y) / box.scale_y
    if clip:
        x, y = np.clip(x, 0, box.width), np.clip(y, 0, box.height)
    return np.round(np.stack([x, y], axis=1))


# ----- decodes ----------------------------------------------------------------------------------------------
@dataclass
class Found:
    boxes: np.ndarray  # (K, 4) xyxy, network pixels
    scores: np.ndarray
    classes: np.ndarray
    extras: np.ndarray  # (K, E)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area(box) + area(others) - inter)


def nms(found: Found, iou: float, limit: int) -> Found:
    """Greedy per-class NMS with true IoU (a box goes when IoU > threshold), best first."""
    order = list(np.argsort(-found.scores, kind="stable"))
    keep: list[int] = []
    while order and len(keep) < limit:
        best = order.pop(0)
        keep.append(best)
        rest = np.array(order, dtype=int)
        if rest.size:
            same = found.classes[rest] == found.classes[best]
            overlap = _iou(found.boxes[best], found.boxes[rest])
            order = [int(i) for i, s, o in zip(rest, same, overlap) if not (s and o > iou)]
    index = np.array(keep, dtype=int)
    return Found(found.boxes[index], found.scores[index], found.classes[index], found.extras[index])


def yolov8(output: np.ndarray, nc: int, confidence: float, iou: float = 0.3, limit: int = 300) -> Found:
    """[4 + nc + extra, N]: cx, cy, w, h, class scores, extras; score > confidence, then NMS."""
    rows = output.T
    scores = rows[:, 4:4 + nc]
    best = scores.max(axis=1)
    keep = best > confidence
    rows, best, classes = rows[keep], best[keep], scores[keep].argmax(axis=1)
    boxes = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                      rows[:, 0] + rows[:, 2] / 2, rows[:, 1] + rows[:, 3] / 2], axis=1)
    return nms(Found(boxes, best, classes, rows[:, 4 + nc:]), iou, limit)


def yolo_nas(boxes: np.ndarray, scores: np.ndarray, confidence: float, iou: float = 0.3, limit: int = 300) -> Found:
    """boxes [N, 4] x1, y1, x2, y2 and class scores [N, nc]: best class score > confidence, then NMS."""
    best = scores.max(axis=1)
    keep = best > confidence
    return nms(Found(boxes[keep].astype(np.float64), best[keep], scores[keep].argmax(axis=1),
                     np.zeros((int(keep.sum()), 0))), iou, limit)


def end_to_end(output: np.ndarray, confidence: float, inclusive: bool, limit: int = 300) -> Found:
    """[N, 6 + extra]: x1, y1, x2, y2, score, class; a threshold only, best first."""
    keep = output[:, 4] >= confidence if inclusive else output[:, 4] > confidence
    rows = output[keep]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][:limit]
    return Found(rows[:, :4], rows[:, 4], rows[:, 5].astype(int), rows[:, 6:])


def rfdetr(boxes: np.ndarray, logits: np.ndarray, nc: int, confidence: float,
           size: tuple[int, int]) -> tuple[Found, np.ndarray]:
    """Sigmoid over Q x C, top Q, classes < nc, score > confidence; boxes cx, cy, w, h in 0..1. Returns the
    detections and the query of each."""
    queries, columns = logits.shape
    scores = (1 / (1 + np.exp(-logits.astype(np.float64)))).reshape(-1)
    top = np.argsort(-scores, kind="stable")[:queries]
    query, klass = top // columns, top % columns
    keep = (klass < nc) & (scores[top] > confidence)
    query, klass, score = query[keep], klass[keep], scores[top][keep]
    cx, cy, w, h = (boxes[query].astype(np.float64) * [size[0], size[1], size[0], size[1]]).T
    found = Found(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1), score, klass,
                  np.zeros((len(score), 0)))
    return found, query


def aligned(values: np.ndarray, box: Letterbox, size: tuple[int, int], threshold: float) -> np.ndarray:
    """Roboflow's default-stack mask alignment: cut the letterbox padding off the mask grid (rounded to it),
    resize bilinearly to the original size, > threshold. A negative padding (a centre crop of a larger image)
    pads the grid with zeros instead."""
    mask_h, mask_w = values.shape
    sx, sy = mask_w / size[0], mask_h / size[1]
    new_w, new_h = box.resized_w, box.resized_h
    left, top = round(sx * box.pad_x), round(sy * box.pad_y)
    right_pad = round(sx * (size[0] - box.pad_x - new_w))
    bottom_pad = round(sy * (size[1] - box.pad_y - new_h))
    grown = np.pad(values, ((max(0, -top), max(0, -bottom_pad)), (max(0, -left), max(0, -right_pad))))
    left, top, right_pad, bottom_pad = (max(0, v) for v in (left, top, right_pad, bottom_pad))
    part = np.ascontiguousarray(grown[top:grown.shape[0] - bottom_pad, left:grown.shape[1] - right_pad],
                                dtype=np.float32)
    return cv2.resize(part, (box.width, box.height), interpolation=cv2.INTER_LINEAR) > threshold


def yolo_mask(coefficients: np.ndarray, prototypes: np.ndarray, network_box: np.ndarray, box: Letterbox,
              size: tuple[int, int], sigmoid: bool = True) -> np.ndarray:
    """sigmoid(c . P) on the prototype grid, zero outside the box rounded to the grid (half-open), aligned to
    the original image, > 0.5. YOLO26 (`sigmoid=False`): the logits c . P themselves, > 0."""
    _, mask_h, mask_w = prototypes.shape
    logits = np.tensordot(coefficients, prototypes, axes=1).astype(np.float64)
    probability = 1 / (1 + np.exp(-logits)) if sigmoid else logits
    x1, y1, x2, y2 = np.round(network_box * np.array([mask_w / size[0], mask_h / size[1]] * 2))
    cols, rows = np.arange(mask_w)[None, :], np.arange(mask_h)[:, None]
    probability = probability * ((cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2))
    return aligned(probability, box, size, 0.5 if sigmoid else 0.0)


def softmax(values: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def rle_decode(rle: dict) -> np.ndarray:
    """COCO compressed RLE (column-major) to a (H, W) bool mask."""
    height, width = rle["size"]
    counts: list[int] = []
    text, position = rle["counts"], 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[position]) - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            position += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    flat = np.zeros(height * width, bool)
    cursor, on = 0, False
    for count in counts:
        if on:
            flat[cursor:cursor + count] = True
        cursor += count
        on = not on
    return flat.reshape(width, height).T
