"""One route answers detection, segmentation and classification according to the model; the /infer JSON
routes give the same predictions; masks come as polygons or COCO RLE; visualisation draws real pixels."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
import requests

from tests.support.family_reference import rle_decode


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _solid(width: int, height: int, bgr: tuple[int, int, int]) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = bgr
    return image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _fill(points: list[dict], width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    polygon = np.round([[p["x"], p["y"]] for p in points]).astype(np.int32)
    cv2.fillPoly(mask, [polygon], 1)
    return mask.astype(bool)


def _expected_masks(width: int = 256, height: int = 192) -> dict[str, np.ndarray]:
    """The segmenter's disk and square mapped through the 256x192 -> 128x128 letterbox (scale 0.5, pad 16)."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    return {"disk": (xx - 64) ** 2 + (yy - 32) ** 2 <= 32 ** 2,
            "square": (np.abs(xx - 192) <= 24) & (np.abs(yy - 160) <= 24)}


@pytest.mark.parametrize(("mode", "min_iou"), [("accurate", 0.9), ("tradeoff", 0.87), ("fast", 0.85)])
def test_segmentation_polygons_match_the_masks(daemon, mode, min_iou):
    red = _png(_solid(256, 192, (0, 0, 255)))
    response = requests.post(f"{daemon.url}/disks/1?mask_decode_mode={mode}&tradeoff_factor=0.5", data=red)
    assert response.status_code == 200, response.text
    predictions = sorted(response.json()["predictions"], key=lambda p: p["x"])
    assert [p["class"] for p in predictions] == ["disk", "disk"]
    expected = _expected_masks()
    for prediction, shape in zip(predictions, ("disk", "square")):
        assert prediction["mask_format"] == "polygon"
        assert len(prediction["points"]) >= 4
        assert _iou(_fill(prediction["points"], 256, 192), expected[shape]) >= min_iou


def test_rle_decodes_to_the_polygon_mask(daemon):
    red = _png(_solid(256, 192, (0, 0, 255)))
    polygons = requests.post(f"{daemon.url}/disks/1", data=red).json()["predictions"]
    rles = requests.post(f"{daemon.url}/disks/1?response_mask_format=rle", data=red).json()["predictions"]
    expected = _expected_masks()
    for polygon, rle, shape in zip(sorted(polygons, key=lambda p: p["x"]), sorted(rles, key=lambda p: p["x"]),
                                   ("disk", "square")):
        assert rle["mask_format"] == "rle" and "points" not in rle
        assert rle["rle"]["size"] == [192, 256]
        decoded = rle_decode(rle["rle"])
        assert _iou(decoded, _fill(polygon["points"], 256, 192)) >= 0.95
        assert _iou(decoded, expected[shape]) >= 0.9


def test_single_label_classification(daemon):
    response = requests.post(f"{daemon.url}/colour-cls/1", data=_png(_solid(50, 40, (0, 0, 255))))
    assert response.status_code == 200, response.text
    body = response.json()
    logits = np.array([5.0, -5.0, -5.0])  # mean R, G, B of a red image after (x/255 - 0.5)/0.5, times 5
    softmax = np.exp(logits) / np.exp(logits).sum()
    assert body["top"] == "red"
    assert body["confidence"] == pytest.approx(round(softmax[0], 4))
    assert body["predictions"] == [{"class": "red", "class_id": 0, "confidence": round(float(softmax[0]), 4)}]
    assert body["image"] == {"width": 50, "height": 40}
    muted = requests.post(f"{daemon.url}/colour-cls/1?confidence=0.05",
                          data=_png(_solid(50, 40, (100, 110, 160)))).json()
    assert [p["class"] for p in muted["predictions"]] == ["red", "green", "blue"]  # sorted, best first
    confidences = [p["confidence"] for p in muted["predictions"]]
    assert confidences == sorted(confidences, reverse=True) and sum(confidences) == pytest.approx(1, abs=1e-3)


def test_multi_label_classification(daemon):
    magenta = _png(_solid(30, 30, (255, 0, 255)))  # red and blue at full strength
    body = requests.post(f"{daemon.url}/colour-multi/1", data=magenta).json()
    assert set(body["predictions"]) == {"red", "green", "blue"}
    assert body["predictions"]["red"]["class_id"] == 0
    assert body["predictions"]["red"]["confidence"] == pytest.approx(1 / (1 + np.exp(-5)), abs=1e-4)
    assert sorted(body["predicted_classes"]) == ["blue", "red"]


@pytest.mark.parametrize(("route", "model", "extra"), [
    ("object_detection", "colour/1", {"iou_threshold": 0.3}),
    ("instance_segmentation", "disks/1", {"mask_decode_mode": "accurate"}),
    ("classification", "colour-cls/1", {}),
])
def test_infer_routes_match_the_legacy_route(daemon, colour_jpeg, route, model, extra):
    value = base64.b64encode(colour_jpeg).decode()
    legacy = requests.post(f"{daemon.url}/{model}?confidence=0.1", data=colour_jpeg).json()
    body = {"model_id": model, "image": {"type": "base64", "value": value}, "confidence": 0.1, **extra}
    response = requests.post(f"{daemon.url}/infer/{route}", json=body)
    assert response.status_code == 200, response.text
    routed = response.json()

    def strip(result: dict) -> object:
        predictions = result["predictions"]
        if isinstance(predictions, list):
            return [{k: v for k, v in p.items() if k != "detection_id"} for p in predictions]
        return predictions

    assert strip(routed) == strip(legacy)
    keyed = requests.post(f"{daemon.url}/infer/{route}?api_key=abc", json={**body, "image": [body["image"]] * 2},
                          headers={"Authorization": "Bearer xyz"})
    assert keyed.status_code == 200 and len(keyed.json()) == 2


def test_infer_route_refuses_a_model_of_another_task(daemon, colour_jpeg):
    body = {"model_id": "colour/1", "image": {"type": "base64", "value": base64.b64encode(colour_jpeg).decode()}}
    response = requests.post(f"{daemon.url}/infer/classification", json=body)
    assert response.status_code == 400
    assert "object-detection model" in response.json()["message"]


def test_format_image_draws_boxes_on_the_original(daemon):
    red = _solid(100, 80, (0, 0, 255))
    response = requests.post(f"{daemon.url}/colour-drawn/1?confidence=0.5&format=image&stroke=3&labels=true",
                             data=_png(red))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    picture = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (80, 100, 3)
    # The 0.9 box is x 9..41, y 8..32 (see test_request_forms); COLORS paints it green on the red image.
    _, green, red_channel = picture[20, 9].astype(int)
    assert green > 180 and red_channel < 90
    assert picture[60, 60, 2] > 200 and picture[60, 60, 1] < 60  # far from any box: still red
    both = requests.post(f"{daemon.url}/colour-drawn/1?confidence=0.5&format=image_and_json", data=_png(red)).json()
    drawn = cv2.imdecode(np.frombuffer(base64.b64decode(both["visualization"]), np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == (80, 100, 3) and both["predictions"]


def test_model_management_routes(daemon):
    assert requests.get(f"{daemon.url}/model/registry").json() == {"models": []}
    added = requests.post(f"{daemon.url}/model/add", json={"model_id": "disks/1"}).json()
    assert added == {"models": [{"model_id": "disks/1", "task_type": "instance-segmentation", "family": "yolov8",
                                 "batch_size": "dynamic", "input_height": 128, "input_width": 128}]}
    requests.post(f"{daemon.url}/model/add", json={"model_id": "colour-v5/1"})
    listed = {m["model_id"]: m for m in requests.get(f"{daemon.url}/model/registry").json()["models"]}
    assert listed["colour-v5/1"]["batch_size"] == 1
    removed = requests.post(f"{daemon.url}/model/remove", json={"model_id": "disks/1"}).json()
    assert [m["model_id"] for m in removed["models"]] == ["colour-v5/1"]
    assert requests.post(f"{daemon.url}/model/clear").json() == {"models": []}
    bad = requests.post(f"{daemon.url}/model/add", json={"model_id": "../etc"})
    assert bad.status_code == 400


def test_region_rle_equals_the_full_image_mask():
    """The RLE encoder works on a box region only; decoding must give the full-image mask exactly."""
    from edge_daemon.processing.segmentation import coco_rle

    rng = np.random.default_rng(0)
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(1, 20, 2))
        top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
        rows, cols = int(rng.integers(1, height - top + 1)), int(rng.integers(1, width - left + 1))
        region = (rng.random((rows, cols)) < 0.5).astype(np.uint8)
        full = np.zeros((height, width), bool)
        full[top:top + rows, left:left + cols] = region.astype(bool)
        assert (rle_decode(coco_rle(region, top, left, height, width)) == full).all()


@pytest.mark.parametrize("original_px_per_mask_px", [1, 2, 4])
def test_filling_the_points_gives_the_mask_back(original_px_per_mask_px):
    """Clients turn `points` back into a mask with cv2.fillPoly (supervision does): on the original image that
    must give the decoded mask back, also when one mask pixel spans several original pixels. Only pixels on
    the edge of diagonal staircases may differ: the outline is simplified to within half a pixel."""
    from edge_daemon.processing.preprocess import Geometry
    from edge_daemon.processing.segmentation import MaskPatch

    k = original_px_per_mask_px
    size = 48 * k
    geometry = Geometry(size, size, 0, 0, size, size, 1 / k, 1 / k, 0, 0)
    for radius, centre in ((2.5, (9.3, 10.1)), (6, (20.0, 14.5)), (17, (24.6, 25.2))):
        star = np.array([(centre[0] + (radius if i % 2 == 0 else radius / 2) * np.cos(i * np.pi / 5),
                          centre[1] + (radius if i % 2 == 0 else radius / 2) * np.sin(i * np.pi / 5))
                         for i in range(10)])
        network = np.zeros((48, 48), np.uint8)  # the decoded mask, one mask pixel per network pixel
        cv2.fillPoly(network, [np.round((star - 0.5) * 16).astype(np.int32)], 1, shift=4)
        outline = MaskPatch(network, 0.0, 0.0, 1.0, 1.0).contours(output_px_per_mask_px=k)[0]
        filled = _fill([{"x": x, "y": y} for x, y in geometry.points_to_pixel_centres(outline)], size, size)
        blocky = cv2.resize(network, (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
        ring = cv2.dilate(blocky.astype(np.uint8), np.ones((3, 3))) > cv2.erode(blocky.astype(np.uint8),
                                                                              np.ones((3, 3)))
        differ = filled != blocky
        assert not (differ & ~ring).any()  # simplified staircases move the edge by half a pixel at most
        assert differ.sum() <= 0.1 * ring.sum()
