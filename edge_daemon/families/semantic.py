"""Semantic segmentation (DeepLabV3+, and any `[C, H, W]` logits model declared semantic).

As Roboflow's default stack: the letterbox padding is cut off, the logits are resized bilinearly to the
original image, a softmax gives each pixel's class (argmax) and confidence, and pixels whose confidence is
below the request's threshold go to the `background` class with confidence 0. The answer is two 8-bit PNGs
(class index, and confidence x 255) with the class map.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from edge_daemon.errors import ModelArtifactError
from edge_daemon.families.base import ModelFacts
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry

MAX_CLASSES = 256  # class ids are stored in an 8-bit PNG


def _resize_logits(region: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float32 logits resized bilinearly to `size` (width, height). Where an axis shrinks (an image
    smaller than the network input), the filter widens as in Roboflow's default stack (torchvision's resize,
    antialiased): Pillow's float bilinear, one class at a time; OpenCV's plain bilinear otherwise."""
    height, width = region.shape[:2]
    if size[0] >= width and size[1] >= height:
        return cv2.resize(region, size, interpolation=cv2.INTER_LINEAR)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(region[:, :, c])).resize(size, Image.BILINEAR))
                     for c in range(region.shape[2])], axis=2)


def _png(image: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("could not encode a mask as PNG")
    return base64.b64encode(encoded.tobytes()).decode("ascii")


@dataclass(frozen=True)
class SemanticDecoder:
    class_names: tuple[str, ...]
    background: int | None
    family: str = "deeplabv3plus"

    def maps(self, logits: np.ndarray, geometry: Geometry, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(class index, confidence) per original pixel."""
        _, height, width = logits.shape
        x1, y1, x2, y2 = geometry.network_valid_area()
        left, top = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        right, bottom = min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))
        region = np.ascontiguousarray(logits[:, top:bottom, left:right].transpose(1, 2, 0), dtype=np.float32)
        crop_w = geometry.crop_width * geometry.decode_ratio_x
        crop_h = geometry.crop_height * geometry.decode_ratio_y
        target = (max(1, round(crop_w)), max(1, round(crop_h)))
        resized = _resize_logits(region, target)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        resized -= resized.max(axis=2, keepdims=True)
        np.exp(resized, out=resized)
        resized /= resized.sum(axis=2, keepdims=True)
        classes = resized.argmax(axis=2).astype(np.uint8)
        confidence = resized.max(axis=2)
        if self.background is not None:
            below = confidence < threshold
            classes[below] = self.background
            confidence[below] = 0.0  # as Roboflow's default stack: a pixel sent to background has no confidence
        full_classes = np.full((geometry.original_height, geometry.original_width),
                               self.background if self.background is not None else 0, np.uint8)
        full_confidence = np.zeros((geometry.original_height, geometry.original_width), np.float32)
        ox, oy = round(geometry.crop_x * geometry.decode_ratio_x), round(geometry.crop_y * geometry.decode_ratio_y)
        h = min(classes.shape[0], geometry.original_height - oy)
        w = min(classes.shape[1], geometry.original_width - ox)
        full_classes[oy:oy + h, ox:ox + w] = classes[:h, :w]
        full_confidence[oy:oy + h, ox:ox + w] = confidence[:h, :w]
        return full_classes, full_confidence

    def decode(self, outputs: list[np.ndarray], geometry: Geometry, params: InferenceParams) -> dict[str, Any]:
        classes, confidence = self.maps(outputs[0], geometry, params.detection.confidence)
        present = sorted(int(value) for value in np.unique(classes))
        return {"predictions": {
            "segmentation_mask": _png(classes),
            "confidence_mask": _png((confidence * 255).astype(np.uint8)),
            "class_map": {str(index): name for index, name in enumerate(self.class_names)},
            "present_class_ids": present,
        }}


def fit(facts: ModelFacts) -> SemanticDecoder | None:
    if facts.metadata.task != "semantic-segmentation" or len(facts.shapes) != 1 or len(facts.shapes[0]) != 3:
        return None
    channels = facts.shapes[0][0]
    if channels != facts.num_classes:
        return None
    if channels > MAX_CLASSES:
        raise ModelArtifactError(f"semantic segmentation answers at most {MAX_CLASSES} classes, this model has "
                                 f"{channels}")
    names = facts.class_names
    background = next((index for index, name in enumerate(names) if name.lower() == "background"), None)
    return SemanticDecoder(names, background)
