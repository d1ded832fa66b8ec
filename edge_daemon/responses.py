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
from edge_daemon.processing.segmentation import MaskPatch, coco_rle, polygon_region


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


def keypoint_predictions(detections: Detections, geometry: Geometry, class_names: tuple[str, ...],
                         keypoint_names: tuple[tuple[str, ...], ...], threshold: float) -> list[dict[str, Any]]:
    """Detection fields plus Roboflow's `keypoints` list: x, y in original pixels (clipped, rounded as boxes
    are), confidence, the keypoint's index in its class list (`class_id`) and name (`class`).

    Only the slots the detected class has names for are answered; a keypoint with confidence below
    `keypoint_confidence`, or of confidence 0, is left out (as Roboflow's default stack does)."""
    predictions = detection_predictions(detections, geometry, class_names)
    if not predictions or detections.keypoints is None:
        return predictions
    slots = detections.keypoints.shape[1]
    points = geometry.points_to_original(detections.keypoints[:, :, :2].reshape(-1, 2)).reshape(-1, slots, 2)
    for prediction, class_points, triples in zip(predictions, points.tolist(), detections.keypoints.tolist()):
        class_id = prediction["class_id"]
        names = keypoint_names[class_id] if class_id < len(keypoint_names) and keypoint_names[class_id] \
            else tuple(str(index) for index in range(slots))
        prediction["keypoints"] = [
            {"x": x, "y": y, "confidence": round(confidence, 6), "class_id": index, "class": name}
            for index, (name, (x, y), (_, _, confidence)) in enumerate(zip(names, class_points, triples))
            if confidence >= threshold and confidence > 0]
    return predictions


def segmentation_predictions(detections: Detections, patches: list[MaskPatch], geometry: Geometry,
                             class_names: tuple[str, ...], mask_format: str) -> list[dict[str, Any]]:
    """Detection fields plus the mask: `points` (largest external contour) or COCO `rle` of the whole mask.

    Points are the (column, row) coordinates of the mask's outermost pixels in the original image, as
    Roboflow's are: cv2.fillPoly of the rounded points gives the mask back (to within half a pixel).
    """
    predictions = detection_predictions(detections, geometry, class_names)
    network_to_original = geometry.original_pixels_per_network_px()
    for prediction, patch in zip(predictions, patches):
        outlines = patch.contours(largest_only=mask_format != "rle",
                                  output_px_per_mask_px=network_to_original * (patch.step_x + patch.step_y) / 2)
        contours = [geometry.points_to_pixel_centres(c) for c in outlines]
        if mask_format == "rle":
            height, width = geometry.original_height, geometry.original_width
            if patch.pixel_origin is not None:  # the mask itself, exactly
                region, top, left = _on_image(patch.mask, patch.pixel_origin, width, height)
            else:
                region, top, left = polygon_region(contours, width, height)
            prediction["rle"] = coco_rle(region, top, left, height, width)
        else:
            points = contours[0] if contours else np.zeros((0, 2))
            prediction["points"] = [{"x": x, "y": y} for x, y in np.round(points, 2).tolist()]
        prediction["mask_format"] = mask_format
    return predictions


def _on_image(mask: np.ndarray, origin: tuple[int, int], width: int, height: int) -> tuple[np.ndarray, int, int]:
    """The part of a mask placed at `origin` (column, row) that lies inside the image, with its position."""
    left, top = origin
    cut_left, cut_top = max(0, -left), max(0, -top)
    region = mask[cut_top:max(cut_top, height - top), cut_left:max(cut_left, width - left)]
    return region, max(0, top), max(0, left)


def classification_fields(scores: np.ndarray, class_names: tuple[str, ...], multilabel: bool,
                          threshold: float) -> dict[str, Any]:
    """Roboflow's single-label (`predictions` list, `top`, `confidence`) or multi-label (`predictions` dict,
    `predicted_classes`) fields."""
    values = scores.tolist()
    if multilabel:
        return {
            "predictions": {name: {"confidence": round(score, 4), "class_id": index}
                            for index, (name, score) in enumerate(zip(class_names, values))},
            "predicted_classes": [name for name, score in zip(class_names, values) if score > threshold],
        }
    ranked = sorted(range(len(values)), key=lambda index: -values[index])
    predictions = [{"class": class_names[index], "class_id": index, "confidence": round(values[index], 4)}
                   for index in ranked if values[index] >= threshold]
    return {
        "predictions": predictions,
        "top": predictions[0]["class"] if predictions else "",
        "confidence": predictions[0]["confidence"] if predictions else 0.0,
    }


def image_response(geometry: Geometry, **fields: Any) -> dict[str, Any]:
    """The per-image envelope; `inference_id` and `time` are filled in by the service."""
    response: dict[str, Any] = {
        "inference_id": None,
        "time": None,
        "image": {"width": geometry.original_width, "height": geometry.original_height},
    }
    response.update(fields)
    return response
