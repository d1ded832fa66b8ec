"""Training samples from the procedural scenes (numpy + OpenCV only).

Samples are what the network sees at inference: the scene is JPEG round-tripped
at a random quality (camera/client compression), then letterboxed (detection)
or stretched (classification) exactly as the daemon does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from multiprocessing import get_context

import cv2
import numpy as np

from edge_daemon.scenes import MAX_KEYPOINTS, encode_jpeg, generate_classification_scene, generate_scene
from tools.inference import letterbox
from tools.shapes_layout import CLS_SIZE, DET_SIZE, PROTO_SIZE

MAX_OBJECTS = 6


def _jpeg_roundtrip(image: np.ndarray, seed: int) -> np.ndarray:
    """Apply JPEG artefacts at a seed-chosen quality (some images stay lossless)."""
    rng = np.random.default_rng([seed, 77])
    if rng.random() < 0.15:
        return image
    q = int(rng.integers(35, 97))
    return cv2.imdecode(np.frombuffer(encode_jpeg(image, q), np.uint8), cv2.IMREAD_COLOR)


def det_sample(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(RGB DET_SIZE² uint8, boxes (6,4) net px, classes (6,) with -1 padding, masks (6, PROTO_SIZE²) uint8)."""
    scene = generate_scene(seed)
    img, g = letterbox(_jpeg_roundtrip(scene.image, seed), DET_SIZE)
    boxes = np.zeros((MAX_OBJECTS, 4), np.float32)
    classes = np.full((MAX_OBJECTS,), -1, np.int64)
    masks = np.zeros((MAX_OBJECTS, PROTO_SIZE, PROTO_SIZE), np.uint8)
    for i, obj in enumerate(scene.objects[:MAX_OBJECTS]):
        x1, y1, x2, y2 = obj.box
        boxes[i] = [x1 * g.scale + g.pad_left, y1 * g.scale + g.pad_top,
                    x2 * g.scale + g.pad_left, y2 * g.scale + g.pad_top]
        classes[i] = obj.class_id
        # Soft mask on the proto grid: letterbox the mask, then area-average down to it.
        m = cv2.resize(obj.mask.astype(np.float32), (g.new_w, g.new_h), interpolation=cv2.INTER_AREA)
        full = np.zeros((DET_SIZE, DET_SIZE), np.float32)
        full[g.pad_top:g.pad_top + g.new_h, g.pad_left:g.pad_left + g.new_w] = m
        small = cv2.resize(full, (PROTO_SIZE, PROTO_SIZE), interpolation=cv2.INTER_AREA)
        masks[i] = np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[..., ::-1]), boxes, classes, masks


def pose_sample(seed: int, size: int = DET_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(RGB size² uint8, boxes (6,4) net px, classes (6,) with -1 padding, keypoints (6, K, 3)).

    Keypoint rows are x, y in network pixels and a flag: 0 = the class has no such keypoint, 1 = hidden by
    a shape in front, 2 = visible. At the default size (DET_SIZE) the image and boxes are exactly
    det_sample's; `size` letterboxes to another square input (the keypoint model's --pose-size).
    """
    scene = generate_scene(seed)
    img, g = letterbox(_jpeg_roundtrip(scene.image, seed), size)
    boxes = np.zeros((MAX_OBJECTS, 4), np.float32)
    classes = np.full((MAX_OBJECTS,), -1, np.int64)
    kpts = np.zeros((MAX_OBJECTS, MAX_KEYPOINTS, 3), np.float32)
    for i, obj in enumerate(scene.objects[:MAX_OBJECTS]):
        x1, y1, x2, y2 = obj.box
        boxes[i] = [x1 * g.scale + g.pad_left, y1 * g.scale + g.pad_top,
                    x2 * g.scale + g.pad_left, y2 * g.scale + g.pad_top]
        classes[i] = obj.class_id
        k = len(obj.keypoints)
        kpts[i, :k, 0] = obj.keypoints[:, 0] * g.scale + g.pad_left
        kpts[i, :k, 1] = obj.keypoints[:, 1] * g.scale + g.pad_top
        kpts[i, :k, 2] = np.where(obj.keypoints_visible, 2.0, 1.0)
    return np.ascontiguousarray(img[..., ::-1]), boxes, classes, kpts


def cls_sample(seed: int) -> tuple[np.ndarray, int]:
    """(RGB 128x128 uint8 stretched image, label)."""
    scene = generate_classification_scene(seed)
    img = _jpeg_roundtrip(scene.image, seed)
    img = cv2.resize(img, (CLS_SIZE, CLS_SIZE), interpolation=cv2.INTER_LINEAR)
    assert scene.label is not None
    return np.ascontiguousarray(img[..., ::-1]), scene.label


def _each_sample(make: Callable[[int], tuple], seeds: list[int], workers: int) -> Iterator[tuple]:
    """One sample per seed, in seed order, as they come; worker processes only speed it up."""
    if workers > 1:
        with get_context("fork").Pool(workers) as pool:
            yield from pool.imap(make, seeds, chunksize=64)
    else:
        yield from (make(seed) for seed in seeds)


def _samples(make: Callable[[int], tuple], seeds: list[int], workers: int) -> list[tuple]:
    """One sample per seed, in seed order."""
    return list(_each_sample(make, seeds, workers))


def build_det_dataset(seeds: list[int], workers: int = 2) -> dict[str, np.ndarray]:
    """Stack det samples; order stays by seed."""
    samples = _samples(det_sample, seeds, workers)
    return {
        "images": np.stack([s[0] for s in samples]),
        "boxes": np.stack([s[1] for s in samples]),
        "classes": np.stack([s[2] for s in samples]),
        "masks": np.stack([s[3] for s in samples]),
    }


def build_pose_dataset(seeds: list[int], workers: int = 2, size: int = DET_SIZE) -> dict[str, np.ndarray]:
    """Pose samples (letterboxed to `size`) in seed order, written straight into preallocated arrays.

    Unlike stacking a list of samples, this never holds the images twice (20,000 scenes are 8.8 GB once at
    384 px; at 512 px 12,000 scenes are 9.4 GB).
    """
    n = len(seeds)
    out = {
        "images": np.empty((n, size, size, 3), np.uint8),
        "boxes": np.empty((n, MAX_OBJECTS, 4), np.float32),
        "classes": np.empty((n, MAX_OBJECTS), np.int64),
        "keypoints": np.empty((n, MAX_OBJECTS, MAX_KEYPOINTS, 3), np.float32),
    }
    for i, sample in enumerate(_each_sample(partial(pose_sample, size=size), seeds, workers)):
        for key, value in zip(out, sample, strict=True):
            out[key][i] = value
    return out


def build_cls_dataset(seeds: list[int], workers: int = 2) -> dict[str, np.ndarray]:
    """Stack classification samples in seed order."""
    samples = _samples(cls_sample, seeds, workers)
    return {
        "images": np.stack([s[0] for s in samples]),
        "labels": np.asarray([s[1] for s in samples], np.int64),
    }
