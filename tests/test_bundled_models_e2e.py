"""The bundled models served over real HTTP from the default store meet ground truth on generated scenes
(boxes, masks and labels we know exactly because we drew them)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import requests

from edge_daemon.models.store import BUNDLED_ROOT
from tests.support.daemon import ThreadedDaemon

scenes = pytest.importorskip("edge_daemon.scenes")


def _bundled(model_id: str) -> None:
    if not (BUNDLED_ROOT / model_id / "weights.onnx").exists():
        pytest.fail(f"bundled model {model_id} is missing from {BUNDLED_ROOT}")


@pytest.fixture(scope="module")
def bundled_daemon(tmp_path_factory):
    from edge_daemon.config import Settings

    root = tmp_path_factory.mktemp("bundled")
    settings = Settings(host="127.0.0.1", models_dir="", cache_dir=str(root / "cache"), api_url="", ort_threads=2)
    with ThreadedDaemon(settings) as daemon:
        yield daemon


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _corners(prediction: dict) -> tuple[float, float, float, float]:
    half_w, half_h = prediction["width"] / 2, prediction["height"] / 2
    return (prediction["x"] - half_w, prediction["y"] - half_h, prediction["x"] + half_w, prediction["y"] + half_h)


def _best_match(target_box, class_name: str, predictions: list[dict]) -> tuple[float, dict | None]:
    best, found = 0.0, None
    for prediction in predictions:
        if prediction["class"] != class_name:
            continue
        iou = _box_iou(target_box, _corners(prediction))
        if iou > best:
            best, found = iou, prediction
    return best, found


def test_detector_finds_the_drawn_objects(bundled_daemon):
    _bundled("shapes/1")
    matched = total = 0
    for seed in range(4_000_000, 4_000_040):  # far from every training range (the detector's: 0-11,999)
        scene = scenes.generate_scene(seed)
        response = requests.post(bundled_daemon.url + "/shapes/1?confidence=0.4", data=scenes.encode_jpeg(scene.image),
                                 headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        for obj in scene.objects:
            total += 1
            iou, _ = _best_match(obj.box, obj.class_name, predictions)
            matched += iou >= 0.7
    assert total >= 80
    assert matched / total >= 0.9, f"{matched}/{total} objects found with IoU >= 0.7"


def _fill(points: list[dict], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    if len(points) >= 3:
        polygon = np.round([[p["x"], p["y"]] for p in points]).astype(np.int32)
        cv2.fillPoly(mask, [polygon], 1)
    return mask.astype(bool)


def test_segmenter_masks_match_the_drawn_shapes(bundled_daemon):
    """The issue's target: mask IoU >= 0.8 for >= 90 % of the drawn objects, served over HTTP at Roboflow's
    default confidence (measured 0.914 on these 556 objects, and 0.965 for objects at least 8 % of the image's
    short side; see edge_daemon/default_models/README.md)."""
    _bundled("shapes-seg/1")
    results: list[tuple[float, float]] = []  # (mask IoU, object size as a share of the short side)
    for seed in range(20_000, 20_150):
        scene = scenes.generate_scene(seed)
        height, width = scene.image.shape[:2]
        response = requests.post(bundled_daemon.url + "/shapes-seg/1?confidence=0.4",
                                 data=scenes.encode_jpeg(scene.image), headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        for obj in scene.objects:
            truth = obj.mask.astype(bool)
            size = float(np.sqrt(truth.sum())) / min(height, width)
            _, prediction = _best_match(obj.box, obj.class_name, predictions)
            if prediction is None:
                results.append((0.0, size))
                continue
            mask = _fill(prediction["points"], height, width)
            results.append((float((mask & truth).sum() / max((mask | truth).sum(), 1)), size))
    ious = np.array(results)
    assert len(ious) >= 500
    everything = float((ious[:, 0] >= 0.8).mean())
    larger = ious[ious[:, 1] >= 0.08]
    assert float((larger[:, 0] >= 0.8).mean()) >= 0.95, f"objects >= 8 %: {(larger[:, 0] >= 0.8).mean():.3f}"
    assert everything >= 0.90, f"all objects: {everything:.3f}"


def test_classifier_names_the_shape(bundled_daemon):
    _bundled("shapes-cls/1")
    correct = 0
    seeds = range(30_000, 30_100)
    for seed in seeds:
        scene = scenes.generate_classification_scene(seed)
        response = requests.post(bundled_daemon.url + "/shapes-cls/1", data=scenes.encode_jpeg(scene.image),
                                 headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text
        correct += response.json()["top"] == scenes.CLASS_NAMES[scene.label]
    assert correct / len(seeds) >= 0.95, f"top-1 {correct}/{len(seeds)}"


def test_keypoint_model_finds_the_shape_vertices(bundled_daemon):
    """shapes-pose/1 over HTTP (legacy route): each found shape carries its class's keypoints, named as in its
    keypoints_metadata.json, and most visible vertices of shapes at least 8 % of the short side are within 5 %
    of the box's larger side (PCK@0.05: these 40 scenes measure 0.943 with version 5 of the model, 0.922 with
    version 4, 0.930 with version 3, 0.902 with version 2; see edge_daemon/default_models/README.md)."""
    import json

    _bundled("shapes-pose/1")
    metadata = json.loads((BUNDLED_ROOT / "shapes-pose" / "1" / "keypoints_metadata.json").read_text())
    names = {entry["object_class_id"]: [entry["keypoints"][str(i)] for i in range(len(entry["keypoints"]))]
             for entry in metadata}
    correct = total = 0
    for seed in range(40_000, 40_040):
        scene = scenes.generate_scene(seed)
        jpeg = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        answer = requests.post(f"{bundled_daemon.url}/shapes-pose/1?confidence=0.4", data=jpeg,
                               headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        for prediction in predictions:
            assert [point["class"] for point in prediction["keypoints"]] == \
                [names[prediction["class_id"]][point["class_id"]] for point in prediction["keypoints"]]
        short_side = min(scene.image.shape[:2])
        for item in scene.objects:
            width, height = item.box[2] - item.box[0], item.box[3] - item.box[1]
            if max(width, height) < 0.08 * short_side:
                continue
            matched = [p for p in predictions if p["class_id"] == item.class_id and _box_iou(_corners(p), item.box) >= 0.5]
            for index, ((x, y), visible) in enumerate(zip(item.keypoints, item.keypoints_visible)):
                if not visible:
                    continue
                total += 1
                points = {point["class_id"]: point for point in matched[0]["keypoints"]} if matched else {}
                if index in points and np.hypot(points[index]["x"] - x, points[index]["y"] - y) <= \
                        0.05 * max(width, height):
                    correct += 1
    assert total > 100 and correct / total >= 0.8, (correct, total)
    print(f"\nshapes-pose/1 over HTTP: PCK@0.05 {correct / total:.3f} on {total} visible vertices")
