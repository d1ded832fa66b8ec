"""Where responses are shaped: Roboflow's JSON for each task, built from decoded results.

Field names and meanings follow Roboflow's Inference Server (`x`, `y` are the box centre in original-image
pixels; `class` is the name; None fields are omitted), so existing clients read them unchanged.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from edge_daemon.processing.detection import Detections
from edge_daemon.processing.preprocess import Geometry


def detection_predictions(detections: Detections, geometry: Geometry,
                          class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Boxes back in original pixels (clipped, rounded corners, as Roboflow), one dict per detection."""
    if not len(detections):
        return []
    corners = geometry.boxes_to_original(detections.boxes)
    predictions = []
    for (x1, y1, x2, y2), confidence, class_id in zip(corners.tolist(), detections.confidences.tolist(),
                                                      detections.class_ids.tolist()):
        predictions.append({
            "x": (x1 + x2) / 2,
            "y": (y1 + y2) / 2,
            "width": x2 - x1,
            "height": y2 - y1,
            "confidence": round(confidence, 6),
            "class": class_names[class_id],
            "class_id": class_id,
            "detection_id": str(uuid.uuid4()),
        })
    return predictions


def image_response(geometry: Geometry, predictions: Any, **extra: Any) -> dict[str, Any]:
    """The per-image envelope; `inference_id` and `time` are filled in by the API layer."""
    response: dict[str, Any] = {
        "inference_id": None,
        "time": None,
        "image": {"width": geometry.original_width, "height": geometry.original_height},
        "predictions": predictions,
    }
    response.update(extra)
    return response


def round_floats(values: np.ndarray, digits: int = 4) -> list[float]:
    return [round(value, digits) for value in values.tolist()]
