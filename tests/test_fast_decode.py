"""Large JPEGs are decoded at reduced scale for small networks; answers keep the true image size and the
same boxes as a full decode, EXIF rotation included."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
import requests

from edge_daemon.images.decode import DecodeTarget, decode_image_bytes
from tests.support.daemon import ThreadedDaemon


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the Orientation tag (big-endian TIFF)."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _photo(width: int, height: int) -> bytes:
    rng = np.random.default_rng(4)
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (30, 30, 220)
    image[:, width // 2:] = (200, 60, 30)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def test_reduction_factor_never_drops_below_the_network_resolution():
    target = DecodeTarget(640, 640, letterbox=True)
    assert target.reduction(1920, 1080) == 2  # 960x540 still >= the 640x360 the letterbox uses
    assert target.reduction(640, 480) == 1
    assert DecodeTarget(320, 320, letterbox=True).reduction(1920, 1080) == 4
    assert DecodeTarget(64, 64, letterbox=False).reduction(4000, 100) == 1  # stretch needs the short side


@pytest.mark.parametrize("orientation", [1, 6, 8, 3])
def test_reduced_decode_reports_the_true_size(orientation):
    jpeg = _with_exif_orientation(_photo(1024, 512), orientation)
    full = decode_image_bytes(jpeg)
    reduced = decode_image_bytes(jpeg, target=DecodeTarget(64, 64, letterbox=True))
    assert (reduced.original_width, reduced.original_height) == (full.original_width, full.original_height)
    assert full.pixels.shape[:2] == ((1024, 512) if orientation in (6, 8) else (512, 1024))
    assert reduced.pixels.shape[0] * 8 == full.pixels.shape[0]


@pytest.mark.parametrize("orientation", [1, 6])
def test_fast_and_full_decode_give_the_same_boxes(make_settings, orientation):
    jpeg = _with_exif_orientation(_photo(1024, 512), orientation)
    answers = []
    for fast in (True, False):
        with ThreadedDaemon(make_settings(fast_decode=fast)) as server:
            response = requests.post(server.url + "/colour-letterbox/1?confidence=0.05", data=jpeg)
            assert response.status_code == 200, response.text
            answers.append(response.json())
    fast_answer, full_answer = answers
    assert fast_answer["image"] == full_answer["image"]
    expected_size = {"width": 512, "height": 1024} if orientation == 6 else {"width": 1024, "height": 512}
    assert fast_answer["image"] == expected_size

    def boxes(answer: dict) -> list[tuple]:
        return sorted((p["class"], p["x"], p["y"], p["width"], p["height"]) for p in answer["predictions"])

    assert boxes(fast_answer) == boxes(full_answer) and boxes(fast_answer)
    for a, b in zip(sorted(fast_answer["predictions"], key=lambda p: (p["class"], p["x"], p["y"])),
                    sorted(full_answer["predictions"], key=lambda p: (p["class"], p["x"], p["y"]))):
        assert a["confidence"] == pytest.approx(b["confidence"], abs=0.02)
