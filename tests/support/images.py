"""Small encoded test images."""

from __future__ import annotations

import cv2
import numpy as np


def solid_png(bgr: tuple[int, int, int] = (0, 0, 255), width: int = 64, height: int = 64) -> bytes:
    """A one-colour PNG (red by default: the colour models' known answer)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = bgr
    return cv2.imencode(".png", image)[1].tobytes()
