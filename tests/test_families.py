"""Every model family, served from a models dir over real HTTP, against an independent NumPy decode.

The models are real exports made by each architecture's own exporter (tests/fixtures/families, made by
tools/fixtures/export_families.py) with seeded random weights; their scores on a real photo are spread, so
the thresholds below leave tens of predictions to compare (see each fixture's export.json, photo_check).
The images are a real photo at 512x600 and resized to 451x300 (a letterbox whose height Roboflow truncates).

Tolerances (issue #14): boxes within 1 px, confidence within 1e-4, keypoints within 1 px, masks IoU >= 0.98.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from edge_daemon.config import Settings
from tests.support import family_reference as ref
from tests.support.daemon import ThreadedDaemon

NAMES = ["circle", "square", "triangle"]
K5_NAMES = ["star", "pentagon"]
K5_KEYPOINTS = [{"object_class_id": class_id, "keypoints": {str(i): f"tip{i}" for i in range(5)},
                 "edges": [{"from": i, "to": (i + 1) % 5} for i in range(5)]} for class_id in range(2)]
SIZES = ((512, 600), (451, 300))

# model id -> (fixture, task, model_type, classes, input (w, h), resize format, extra files)
MODELS: dict[str, tuple] = {
    "yolov8-det/1": ("yolov8-det", "object-detection", "yolov8n", NAMES, (320, 320), "Fit (grey edges) in", {}),
    "yolov8-dyn/1": ("yolov8-det-dynamic", "object-detection", "yolov8n", NAMES, (320, 320),
                     "Fit (grey edges) in", {}),
    "yolo11-det/1": ("yolo11-det", "object-detection", "yolov11n", NAMES, (320, 320), "Fit (grey edges) in", {}),
    "yolo26-det/1": ("yolo26-det-e2e", "object-detection", "yolo26n", NAMES, (320, 320), "Fit (grey edges) in", {}),
    "yolo26-dyn/1": ("yolo26-det-e2e-dynamic", "object-detection", "yolo26n", NAMES, (320, 320),
                     "Fit (grey edges) in", {}),
    "yolo26-raw/1": ("yolo26-det-raw", "object-detection", "yolo26n", NAMES, (320, 320), "Fit (grey edges) in", {}),
    "yolov10-det/1": ("yolov10-det-e2e", "object-detection", "yolov10n", NAMES, (320, 320),
                      "Fit (grey edges) in", {}),
    "yolov8-seg/1": ("yolov8-seg", "instance-segmentation", "yolov8n-seg", NAMES, (320, 320),
                     "Fit (grey edges) in", {}),
    "yolo26-seg/1": ("yolo26-seg-e2e", "instance-segmentation", "yolo26n-seg", NAMES, (320, 320),
                     "Fit (grey edges) in", {}),
    "yolov8-pose/1": ("yolov8-pose-k5", "keypoint-detection", "yolov8n-pose", K5_NAMES, (320, 320),
                      "Fit (grey edges) in", {"keypoints_metadata.json": K5_KEYPOINTS}),
    "yolov8-person/1": ("yolov8-pose", "keypoint-detection", "yolov8n-pose", ["person"], (320, 320),
                        "Fit (grey edges) in", {}),
    "yolo26-pose/1": ("yolo26-pose-e2e", "keypoint-detection", "yolo26n-pose", ["person"], (320, 320),
                      "Fit (grey edges) in", {}),
    "yolo-nas/1": ("yolo-nas-s", "object-detection", "yolo_nas_s", NAMES, (320, 320), "Fit (grey edges) in", {}),
    "yolo-nas-dyn/1": ("yolo-nas-s-dynamic", "object-detection", "yolonas", NAMES, (320, 320),
                       "Fit (grey edges) in", {}),
    "rfdetr-det/1": ("rfdetr-mini-det", "object-detection", "rfdetr-nano", NAMES, (384, 384), "Stretch to", {}),
    "rfdetr-seg/1": ("rfdetr-mini-seg", "instance-segmentation", "rfdetr-seg-nano", NAMES, (312, 312),
                     "Stretch to", {}),
    "vit/1": ("vit-cls", "classification", "vit", NAMES, (224, 224), "Stretch to", {}),
    "resnet/1": ("resnet18-cls", "classification", "resnet18", NAMES, (224, 224), "Stretch to", {}),
    "yolov8-cls/1": ("yolov8-cls", "classification", "yolov8n", NAMES, (224, 224), "Stretch to", {}),
    "yolo11-cls/1": ("yolo11-cls", "classification", "yolov11n", NAMES, (224, 224), "Stretch to", {}),
    "deeplab/1": ("deeplabv3plus", "semantic-segmentation", "deeplabv3plus", ["background", *NAMES], (320, 320),
                  "Fit (black edges) in", {}),
}
ROUTES = {"object-detection": "object_detection", "instance-segmentation": "instance_segmentation",
          "keypoint-detection": "keypoints_detection", "classification": "classification",
          "semantic-segmentation": "semantic_segmentation"}


@pytest.fixture(scope="module")
def images() -> list[tuple[bytes, np.ndarray]]:
    """(JPEG bytes, the pixels the daemon decodes from them) for each test size."""
    return ref.photo_jpegs(SIZES)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedDaemon]:
    root = tmp_path_factory.mktemp("families")
    for model_id, (name, task, model_type, classes, size, resize_format, extra) in MODELS.items():
        weights = ref.fixture(name)
        if weights is not None:
            ref.install(root, model_id, weights, task, model_type, classes, size, resize_format, extra)
    settings = Settings(host="127.0.0.1", port=0, threads=8, models_dir=str(root),
                        cache_dir=str(tmp_path_factory.mktemp("cache")), api_url="", ort_threads=1,
                        max_active_models=len(MODELS))
    with ThreadedDaemon(settings) as daemon:
        yield daemon


def _weights(model_id: str) -> Path:
    weights = ref.fixture(MODELS[model_id][0])
    if weights is None:
        pytest.skip(f"fixture {MODELS[model_id][0]} is not built here (tools/fixtures/README.md)")
    return weights


def _ask(daemon: ThreadedDaemon, model_id: str, jpeg: bytes, **params: object) -> dict:
    """The legacy route and the task's /infer route must give the same answer; returns the /infer one."""
    task = MODELS[model_id][1]
    body = {"model_id": model_id, "image": {"type": "base64", "value": base64.b64encode(jpeg).decode()}, **params}
    answer = requests.post(f"{daemon.url}/infer/{ROUTES[task]}", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    legacy = requests.post(f"{daemon.url}/{model_id}", params={k: v for k, v in params.items()
                                                               if not isinstance(v, (list, dict))},
                           data=jpeg, headers={"Content-Type": "image/jpeg"}, timeout=120)
    assert legacy.status_code == 200, legacy.text
    first, second = answer.json(), legacy.json()
    strip = ("inference_id", "time", "detection_id")
    assert _without(first, strip) == _without(second, strip)
    return first


def _without(value: object, keys: tuple[str, ...]) -> object:
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def _compare_boxes(predictions: list[dict], found: ref.Found, box: ref.Letterbox, names: list[str]) -> None:
    assert len(predictions) == len(found.scores) > 0, (len(predictions), len(found.scores))
    corners = np.concatenate([ref.to_original(found.boxes[:, :2], box), ref.to_original(found.boxes[:, 2:], box)],
                             axis=1)
    for prediction, corner, score, klass in zip(predictions, corners, found.scores, found.classes):
        x1, y1 = prediction["x"] - prediction["width"] / 2, prediction["y"] - prediction["height"] / 2
        x2, y2 = prediction["x"] + prediction["width"] / 2, prediction["y"] + prediction["height"] / 2
        assert np.abs(np.array([x1, y1, x2, y2]) - corner).max() <= 1.0, (prediction, corner)
        assert prediction["confidence"] == pytest.approx(float(score), abs=1e-4)
        assert prediction["class"] == names[int(klass)] and prediction["class_id"] == int(klass)


def _setup(model_id: str, image: np.ndarray, pad: int = 114) -> tuple[Path, list[np.ndarray], ref.Letterbox]:
    _, _, model_type, _, size, resize_format, _ = MODELS[model_id]
    mode = "stretch" if resize_format.startswith("Stretch") else "letterbox"
    network, box = ref.prepare(image, size, mode, pad, pillow=model_type.startswith("rfdetr"))
    normalisation = ref.IMAGENET if model_type.startswith(("rfdetr", "resnet", "deeplab")) else \
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) if model_type.startswith("vit") else None
    weights = _weights(model_id)
    return weights, ref.run(weights, ref.tensor(network, normalisation)), box


@pytest.mark.parametrize("model_id", ["yolov8-det/1", "yolov8-dyn/1", "yolo11-det/1", "yolo26-raw/1"])
@pytest.mark.parametrize("size_index", [0, 1])
def test_yolo_nms_detection(served, images, model_id, size_index):
    """The raw YOLOv8-style head (YOLO26 exported without nms=False too): NMS over score > threshold."""
    jpeg, image = images[size_index]
    _, outputs, box = _setup(model_id, image)
    found = ref.yolov8(outputs[0], len(NAMES), 0.25, 0.45)
    answer = _ask(served, model_id, jpeg, confidence=0.25, iou_threshold=0.45)
    _compare_boxes(answer["predictions"], found, box, NAMES)


@pytest.mark.parametrize(("model_id", "inclusive"), [("yolo26-det/1", True), ("yolo26-dyn/1", True),
                                                     ("yolov10-det/1", False)])
@pytest.mark.parametrize("size_index", [0, 1])
def test_end_to_end_detection(served, images, model_id, inclusive, size_index):
    """YOLO26 / YOLOv10 end-to-end rows: a threshold and max_detections only, no NMS."""
    jpeg, image = images[size_index]
    _, outputs, box = _setup(model_id, image)
    found = ref.end_to_end(outputs[0], 0.25, inclusive, limit=25)
    answer = _ask(served, model_id, jpeg, confidence=0.25, max_detections=25)
    _compare_boxes(answer["predictions"], found, box, NAMES)


def test_the_raw_head_of_a_declared_yolo26_is_not_read_as_end_to_end(served, images):
    """Read as end-to-end rows, [1, 7, 2100] would give nonsense (confidence 36 in Roboflow's server)."""
    answer = _ask(served, "yolo26-raw/1", images[0][0], confidence=0.25)
    assert answer["predictions"] and all(0 <= p["confidence"] <= 1 for p in answer["predictions"])
    assert all(p["class"] in NAMES for p in answer["predictions"])


@pytest.mark.parametrize("model_id", ["yolo-nas/1", "yolo-nas-dyn/1"])
@pytest.mark.parametrize("size_index", [0, 1])
def test_yolo_nas_detection(served, images, model_id, size_index):
    """Real super-gradients exports (model.export without pre/post-processing, as Roboflow's YOLO-NAS weights):
    xyxy boxes [1, N, 4] in input pixels + sigmoid scores [1, N, nc]; best score > threshold, then NMS."""
    jpeg, image = images[size_index]
    _, (boxes, scores), box = _setup(model_id, image)
    assert boxes.shape == (2100, 4) and scores.shape == (2100, len(NAMES))
    found = ref.yolo_nas(boxes, scores, 0.25, 0.45)
    answer = _ask(served, model_id, jpeg, confidence=0.25, iou_threshold=0.45)
    _compare_boxes(answer["predictions"], found, box, NAMES)
    assert {p["class"] for p in answer["predictions"]} == set(NAMES)  # every class found: columns not mixed up


@pytest.mark.parametrize("size_index", [0, 1])
def test_rfdetr_detection(served, images, size_index):
    jpeg, image = images[size_index]
    _, (boxes, logits), box = _setup("rfdetr-det/1", image)
    found, _ = ref.rfdetr(boxes, logits, len(NAMES), 0.05, (384, 384))
    answer = _ask(served, "rfdetr-det/1", jpeg, confidence=0.05)
    _compare_boxes(answer["predictions"], found, box, NAMES)


def _mask_ious(predictions: list[dict], masks: list[np.ndarray]) -> list[float]:
    ious = []
    for prediction, expected in zip(predictions, masks):
        got = ref.rle_decode(prediction["rle"])
        union = np.logical_or(got, expected).sum()
        if expected.sum() >= 32 * 32:
            ious.append(float(np.logical_and(got, expected).sum() / union))
    return ious


@pytest.mark.parametrize(("model_id", "end_to_end"), [("yolov8-seg/1", False), ("yolo26-seg/1", True)])
def test_yolo_instance_segmentation(served, images, model_id, end_to_end):
    jpeg, image = images[0]
    _, (output, prototypes), box = _setup(model_id, image)
    found = ref.end_to_end(output, 0.25, True) if end_to_end else ref.yolov8(output, len(NAMES), 0.25, 0.45)
    answer = _ask(served, model_id, jpeg, confidence=0.25, iou_threshold=0.45, response_mask_format="rle")
    _compare_boxes(answer["predictions"], found, box, NAMES)
    masks = [ref.yolo_mask(coefficients, prototypes, network_box, box, (320, 320), sigmoid=not end_to_end)
             for coefficients, network_box in zip(found.extras, found.boxes)]
    ious = _mask_ious(answer["predictions"], masks)
    assert ious and min(ious) >= 0.98, ious


def test_rfdetr_instance_segmentation(served, images):
    jpeg, image = images[0]
    _, outputs, box = _setup("rfdetr-seg/1", image)
    boxes, logits, mask_logits = outputs
    found, queries = ref.rfdetr(boxes, logits, len(NAMES), 0.04, (312, 312))
    answer = _ask(served, "rfdetr-seg/1", jpeg, confidence=0.04, response_mask_format="rle")
    _compare_boxes(answer["predictions"], found, box, NAMES)
    masks = [ref.aligned(mask_logits[query], box, (312, 312), 0.0) for query in queries]
    ious = _mask_ious(answer["predictions"], masks)
    assert ious and min(ious) >= 0.98, ious


@pytest.mark.parametrize(("model_id", "end_to_end", "names", "point_names"), [
    ("yolov8-pose/1", False, K5_NAMES, [f"tip{i}" for i in range(5)]),
    ("yolov8-person/1", False, ["person"], [str(i) for i in range(17)]),
    ("yolo26-pose/1", True, ["person"], [str(i) for i in range(17)]),
])
@pytest.mark.parametrize("size_index", [0, 1])
def test_keypoint_detection(served, images, model_id, end_to_end, names, point_names, size_index):
    """Keypoints mapped back like boxes but not clipped (as Roboflow); those under keypoint_confidence (or of
    confidence 0) left out."""
    jpeg, image = images[size_index]
    _, outputs, box = _setup(model_id, image)
    found = ref.end_to_end(outputs[0], 0.2, True) if end_to_end else ref.yolov8(outputs[0], len(names), 0.2, 0.45)
    answer = _ask(served, model_id, jpeg, confidence=0.2, iou_threshold=0.45, keypoint_confidence=0.3)
    _compare_boxes(answer["predictions"], found, box, names)
    for prediction, extras in zip(answer["predictions"], found.extras):
        triples = extras.reshape(-1, 3)
        kept = [(index, triple) for index, triple in enumerate(triples) if triple[2] >= 0.3]
        assert [point["class_id"] for point in prediction["keypoints"]] == [index for index, _ in kept]
        for point, (index, triple) in zip(prediction["keypoints"], kept):
            expected = ref.to_original(triple[None, :2], box, clip=False)[0]
            assert abs(point["x"] - expected[0]) <= 1 and abs(point["y"] - expected[1]) <= 1
            assert point["confidence"] == pytest.approx(float(triple[2]), abs=1e-4)
            assert point["class"] == point_names[index]


@pytest.mark.parametrize(("model_id", "softmax_in_graph"), [("vit/1", False), ("resnet/1", False),
                                                            ("yolov8-cls/1", True), ("yolo11-cls/1", True)])
def test_classification(served, images, model_id, softmax_in_graph):
    """Softmax once: applied to logits, never again to a graph that ends in one."""
    jpeg, image = images[0]
    _, outputs, _ = _setup(model_id, image)
    scores = outputs[0] if softmax_in_graph else ref.softmax(outputs[0].astype(np.float64))
    answer = _ask(served, model_id, jpeg, confidence=0.0)
    expected = sorted(((float(score), NAMES[index]) for index, score in enumerate(scores)), reverse=True)
    assert [p["class"] for p in answer["predictions"]] == [name for _, name in expected]
    for prediction, (score, _) in zip(answer["predictions"], expected):
        assert prediction["confidence"] == pytest.approx(score, abs=1e-4)
    assert answer["top"] == expected[0][1]


@pytest.mark.parametrize("size_index", [0, 1])
def test_semantic_segmentation(served, images, size_index):
    """Letterbox padding removed, logits resized bilinearly to the original size, softmax, pixels below the
    confidence threshold go to `background`; 8-bit PNG masks and the class map."""
    jpeg, image = images[size_index]
    _, outputs, box = _setup("deeplab/1", image, pad=0)
    logits = outputs[0]
    region = logits[:, box.pad_y:box.pad_y + box.resized_h, box.pad_x:box.pad_x + box.resized_w].transpose(1, 2, 0)
    probabilities = ref.softmax(cv2.resize(np.ascontiguousarray(region), (box.width, box.height),
                                           interpolation=cv2.INTER_LINEAR).astype(np.float64), axis=2)
    classes, best = probabilities.argmax(axis=2), probabilities.max(axis=2)
    classes[best < 0.3] = 0
    best[best < 0.3] = 0.0  # a pixel sent to background has confidence 0
    answer = _ask(served, "deeplab/1", jpeg, confidence=0.3)["predictions"]
    got = cv2.imdecode(np.frombuffer(base64.b64decode(answer["segmentation_mask"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert got.shape == (box.height, box.width)
    assert (got == classes).mean() >= 0.99
    assert answer["class_map"] == {"0": "background", "1": "circle", "2": "square", "3": "triangle"}
    assert answer["present_class_ids"] == sorted(int(v) for v in np.unique(got))
    confidence = cv2.imdecode(np.frombuffer(base64.b64decode(answer["confidence_mask"]), np.uint8),
                              cv2.IMREAD_UNCHANGED)
    assert np.abs(confidence.astype(int) - (best * 255).astype(int)).mean() < 1.0


def test_registry_and_listing_name_each_family(served, images):
    for model_id in ("yolo26-det/1", "yolo26-raw/1", "vit/1", "yolo-nas/1"):
        if ref.fixture(MODELS[model_id][0]) is not None:
            _ask(served, model_id, images[0][0], confidence=0.3)
    families = {m["model_id"]: m["family"] for m in requests.get(f"{served.url}/model/registry").json()["models"]}
    assert families.get("yolo26-det/1") == "yolo26"
    assert families.get("yolo26-raw/1") == "yolov8"  # decoded by the layout its outputs have, with NMS
    assert families.get("vit/1") == "vit"
    assert families.get("yolo-nas/1") == "yolo-nas"


def test_yolo_nas_decoding_follows_the_fact_sheet():
    """The documented layout on hand-made arrays (the real exports are test_yolo_nas_detection): xyxy boxes
    [N, 4] in network pixels, scores [N, nc], then NMS; a score matrix of the wrong class count does not fit."""
    from edge_daemon.families import yolo_nas
    from edge_daemon.families.base import ModelFacts
    from edge_daemon.models.metadata import ModelMetadata
    from edge_daemon.processing.detection import DetectionParams
    from edge_daemon.processing.params import InferenceParams
    from edge_daemon.processing.preprocess import Geometry

    boxes = np.array([[10, 20, 110, 220], [12, 22, 112, 222], [200, 40, 260, 90], [0, 0, 5, 5]], np.float32)
    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.0, 0.1], [0.1, 0.0, 0.7], [0.2, 0.1, 0.1]], np.float32)
    metadata = ModelMetadata("nas/1", "object-detection", "yolo_nas_s", tuple(NAMES))
    decoder = yolo_nas.fit(ModelFacts(metadata, [boxes, scores], ["boxes", "scores"], (320, 320)))
    assert decoder is not None
    geometry = Geometry(640, 640, 0, 0, 640, 640, 0.5, 0.5, 0, 0)  # stretched 640 -> 320
    params = InferenceParams(detection=DetectionParams(confidence=0.4, iou_threshold=0.5))
    predictions = decoder.decode([boxes, scores], geometry, params)["predictions"]
    assert [(p["class"], p["confidence"]) for p in predictions] == [("circle", pytest.approx(0.9)),
                                                                    ("triangle", pytest.approx(0.7))]
    first = predictions[0]  # the second circle box overlaps it (IoU 0.94) and goes
    assert (first["x"] - first["width"] / 2, first["y"] - first["height"] / 2, first["width"]) == (20, 40, 200)
    assert yolo_nas.fit(ModelFacts(metadata, [boxes, scores[:, :2]], ["boxes", "scores"], (320, 320))) is None


def test_a_vit_as_best_onnx_with_class_map_and_as_a_package_gives_the_same_answer(tmp_path, images):
    """Roboflow's cache keeps ViTs as best.onnx with only CLASS_MAP; its packages say the normalisation in
    inference_config.json. `models import` takes the package folder; both serve the reference answer (the
    scores of the ViT's own (x/255 - 0.5) / 0.5 input: ImageNet statistics would give other scores)."""
    import json
    import shutil
    import subprocess
    import sys

    weights = _weights("vit/1")
    store = tmp_path / "store"
    classic = store / "vit-classic" / "1"
    classic.mkdir(parents=True)
    shutil.copyfile(weights, classic / "best.onnx")
    (classic / "environment.json").write_text(json.dumps({
        "CLASS_MAP": {str(i): name for i, name in enumerate(NAMES)},
        "PREPROCESSING": {"resize": {"enabled": True, "width": 224, "height": 224, "format": "Stretch to"}}}))
    (classic / "model_type.json").write_text(json.dumps({"project_task_type": "classification", "model_type": "vit"}))
    package = tmp_path / "package"
    package.mkdir()
    shutil.copyfile(weights, package / "weights.onnx")
    (package / "class_names.txt").write_text("".join(f"{name}\n" for name in NAMES))
    (package / "model_config.json").write_text(json.dumps({"task_type": "classification",
                                                            "model_architecture": "vit"}))
    (package / "inference_config.json").write_text(json.dumps({"network_input": {
        "training_input_size": {"height": 224, "width": 224}, "dynamic_spatial_size_supported": False,
        "color_mode": "rgb", "resize_mode": "stretch", "input_channels": 3, "scaling_factor": 255,
        "normalization": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]}, "post_processing": {"type": "softmax", "fused": False}}))
    imported = subprocess.run([sys.executable, "-m", "edge_daemon", "models", "import", str(package), "--as",
                               "vit-package/1", "--models-dir", str(store), "--cache-dir", str(tmp_path / "cache")],
                              capture_output=True, text=True, cwd=ref.FIXTURES.parents[2], timeout=120)
    assert imported.returncode == 0 and "package metadata" in imported.stdout, imported.stderr
    jpeg, image = images[0]
    network, _ = ref.prepare(image, (224, 224), "stretch")
    expected = ref.softmax(ref.run(weights, ref.tensor(network, ((0.5,) * 3, (0.5,) * 3)))[0].astype(np.float64))
    imagenet = ref.softmax(ref.run(weights, ref.tensor(network, ref.IMAGENET))[0].astype(np.float64))
    assert np.abs(expected - imagenet).max() > 1e-3  # the normalisation matters to this model
    settings = Settings(host="127.0.0.1", port=0, models_dir=str(store), cache_dir=str(tmp_path / "cache"),
                        api_url="", ort_threads=1)
    with ThreadedDaemon(settings) as daemon:
        answers = [requests.post(f"{daemon.url}/{model_id}", data=jpeg, params={"confidence": 0},
                                 headers={"Content-Type": "image/jpeg"}).json()
                   for model_id in ("vit-classic/1", "vit-package/1")]
    for answer in answers:
        scores = {p["class"]: p["confidence"] for p in answer["predictions"]}
        assert scores == pytest.approx({name: round(float(v), 4) for name, v in zip(NAMES, expected)}, abs=1e-4)
        assert answer["top"] == NAMES[int(expected.argmax())]
