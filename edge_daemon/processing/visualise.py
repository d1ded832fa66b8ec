"""Draw predictions on the original image, for people checking a camera set-up (`format=image`)."""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np

_PALETTE = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0))


def _colour(name: str, class_id: int, colours: dict[str, str]) -> tuple[int, int, int]:
    """BGR colour: the model's COLORS entry (#RRGGBB) if it has one, else a fixed palette."""
    text = colours.get(name, "")
    if len(text) == 7 and text.startswith("#"):
        try:
            red, green, blue = (int(text[i:i + 2], 16) for i in (1, 3, 5))
            return blue, green, red
        except ValueError:
            pass
    return _PALETTE[class_id % len(_PALETTE)]


def draw(image: np.ndarray, response: dict[str, Any], colours: dict[str, str], labels: bool, stroke: int,
         skeletons: tuple[tuple[tuple[int, int], ...], ...] = ()) -> np.ndarray:
    """A copy of `image` (BGR) with boxes, masks, keypoints (and their skeleton edges) and labels; the class
    map tinted over a semantic segmentation; or the top class for classification."""
    canvas = image.copy()
    predictions = response.get("predictions")
    if isinstance(predictions, dict) and "segmentation_mask" in predictions:
        return _semantic(canvas, predictions, colours)
    if isinstance(predictions, dict) or "top" in response:  # classification
        text = response.get("top") or ", ".join(response.get("predicted_classes", []))
        if text:
            cv2.putText(canvas, text, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2 + stroke,
                        cv2.LINE_AA)
            cv2.putText(canvas, text, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), max(1, stroke), cv2.LINE_AA)
        return canvas
    overlay = canvas.copy()
    filled = False
    for prediction in predictions or []:
        colour = _colour(prediction["class"], prediction["class_id"], colours)
        points = prediction.get("points")
        if points and len(points) >= 3:
            polygon = np.round([[p["x"], p["y"]] for p in points]).astype(np.int32)
            cv2.fillPoly(overlay, [polygon], colour)
            filled = True
    if filled:
        canvas = cv2.addWeighted(overlay, 0.4, canvas, 0.6, 0)
    for prediction in predictions or []:
        colour = _colour(prediction["class"], prediction["class_id"], colours)
        x1 = round(prediction["x"] - prediction["width"] / 2)
        y1 = round(prediction["y"] - prediction["height"] / 2)
        x2 = round(prediction["x"] + prediction["width"] / 2)
        y2 = round(prediction["y"] + prediction["height"] / 2)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, stroke)
        class_id = prediction["class_id"]
        _keypoints(canvas, prediction.get("keypoints"), skeletons[class_id] if class_id < len(skeletons) else (),
                   colour, stroke)
        if labels:
            text = f"{prediction['class']} {prediction['confidence']:.2f}"
            (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            top = max(0, y1 - height - 6)
            cv2.rectangle(canvas, (x1, top), (x1 + width + 4, top + height + 6), colour, -1)
            cv2.putText(canvas, text, (x1 + 2, top + height + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return canvas


def _keypoints(canvas: np.ndarray, keypoints: list[dict[str, Any]] | None, edges: tuple[tuple[int, int], ...],
               colour: tuple[int, int, int], stroke: int) -> None:
    """Skeleton edges between keypoints that are both present, then a dot per keypoint."""
    if not keypoints:
        return
    by_index = {point["class_id"]: (round(point["x"]), round(point["y"])) for point in keypoints}
    for start, end in edges:
        if start in by_index and end in by_index:
            cv2.line(canvas, by_index[start], by_index[end], colour, stroke, cv2.LINE_AA)
    for centre in by_index.values():
        cv2.circle(canvas, centre, 2 + stroke, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(canvas, centre, 1 + stroke, colour, -1, cv2.LINE_AA)


def _semantic(canvas: np.ndarray, predictions: dict[str, Any], colours: dict[str, str]) -> np.ndarray:
    """Each class's pixels tinted in its colour (the background class left as it is)."""
    encoded = np.frombuffer(base64.b64decode(predictions["segmentation_mask"]), np.uint8)
    classes = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
    if classes is None or classes.shape != canvas.shape[:2]:
        return canvas
    tint = canvas.copy()
    for key, name in predictions.get("class_map", {}).items():
        if name.lower() == "background":
            continue
        tint[classes == int(key)] = _colour(name, int(key), colours)
    return cv2.addWeighted(tint, 0.45, canvas, 0.55, 0)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the visualisation")
    return encoded.tobytes()
