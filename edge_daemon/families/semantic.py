"""Semantic segmentation (DeepLabV3+, and any `[C, H, W]` logits model declared semantic).

As Roboflow's default stack: the letterbox padding is cut off, the logits are resized bilinearly to the
original image, a softmax gives each pixel's class (argmax) and confidence, and pixels whose confidence is
below the request's threshold go to the `background` class. The answer is two 8-bit PNGs (class index, and
confidence x 255) with the class map.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge_daemon.errors import ModelArtifactError
from edge_daemon.families.base import ModelFacts
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry

MAX_CLASSES = 256  # class ids are stored in an 8-bit PNG


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
        resized = cv2.resize(region, target, interpolation=cv2.INTER_LINEAR)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        resized -= resized.max(axis=2, keepdims=True)
        np.exp(resized, out=resized)
        resized /= resized.sum(axis=2, keepdims=True)
        classes = resized.argmax(axis=2).astype(np.uint8)
        confidence = resized.max(axis=2)
        if self.background is not None:
            classes[confidence < threshold] = self.background
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
