"""Draw predictions on the original image, for people checking a camera set-up (`format=image`)."""

from __future__ import annotations

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


def draw(image: np.ndarray, response: dict[str, Any], colours: dict[str, str], labels: bool, stroke: int) -> np.ndarray:
    """A copy of `image` (BGR) with boxes, masks and labels, or the top class for classification."""
    canvas = image.copy()
    predictions = response.get("predictions")
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
        if labels:
            text = f"{prediction['class']} {prediction['confidence']:.2f}"
            (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            top = max(0, y1 - height - 6)
            cv2.rectangle(canvas, (x1, top), (x1 + width + 4, top + height + 6), colour, -1)
            cv2.putText(canvas, text, (x1 + 2, top + height + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return canvas


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the visualisation")
    return encoded.tobytes()
