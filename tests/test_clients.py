"""Roboflow's own client libraries read the daemon's answers as they are, over real HTTP.

- `inference-sdk`'s InferenceHTTPClient in both modes: v0 (the legacy `/{project}/{version}` route, image as a
  base64 body) and v1 (`/model/registry`, `/model/add`, then the task's `/infer/...` route, image in JSON).
  Its answer must be exactly the JSON the daemon gives a plain HTTP client for the same image bytes.
- `supervision`: `sv.Detections.from_inference` (boxes, classes, polygon and RLE masks) and
  `sv.KeyPoints.from_inference` read those answers into arrays equal to the JSON's numbers.

Served: the bundled models (shapes/1, shapes-seg/1, shapes-cls/1) on a generated scene and family fixtures
(yolov8-pose-k5 with a keypoints_metadata.json, yolo26-pose-e2e, yolov8-seg, deeplabv3plus, rfdetr) on a real
photo. Both libraries are optional test tools installed by .ci/run; without them these tests skip and say so.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from edge_daemon import scenes
from edge_daemon.config import Settings
from tests.support import family_reference as ref
from tests.support.daemon import ThreadedDaemon
from tests.test_families import MODELS, ROUTES

FAMILY_MODELS = ("yolov8-pose/1", "yolo26-pose/1", "yolov8-seg/1", "deeplab/1", "rfdetr-det/1", "rfdetr-seg/1")
BUNDLED = {"shapes/1": "object-detection", "shapes-seg/1": "instance-segmentation", "shapes-cls/1": "classification"}
# model id -> request parameters under their /infer names (spread scores of the random-weight fixtures: see
# tools/fixtures/README.md; the bundled models are trained, their default threshold is fine).
PARAMS: dict[str, dict[str, object]] = {
    "shapes/1": {"confidence": 0.3},
    "shapes-seg/1": {"confidence": 0.3},
    "shapes-cls/1": {"confidence": 0.0},
    "yolov8-pose/1": {"confidence": 0.2, "iou_threshold": 0.45, "keypoint_confidence": 0.3},
    "yolo26-pose/1": {"confidence": 0.2, "keypoint_confidence": 0.3},
    "yolov8-seg/1": {"confidence": 0.25, "iou_threshold": 0.45},
    "deeplab/1": {"confidence": 0.3},
    "rfdetr-det/1": {"confidence": 0.05},
    "rfdetr-seg/1": {"confidence": 0.04},
}
VOLATILE = ("inference_id", "time", "detection_id")


def _task(model_id: str) -> str:
    return BUNDLED.get(model_id) or MODELS[model_id][1]


def _without(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_without(v) for v in value]
    return value


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """JPEG files the clients send as they are: a generated scene (bundled models) and a real photo."""
    folder = tmp_path_factory.mktemp("pictures")
    photo = ref.photo()
    if photo is None:
        pytest.skip("matplotlib's sample photo (test data) is not installed")
    files = {"scene": folder / "scene.jpg", "photo": folder / "photo.jpg"}
    files["scene"].write_bytes(scenes.encode_jpeg(scenes.generate_scene(7, 640, 480).image, 92))
    files["photo"].write_bytes(scenes.encode_jpeg(photo, 92))
    return files


def _picture(pictures: dict[str, Path], model_id: str) -> Path:
    return pictures["scene" if model_id in BUNDLED else "photo"]


def _models_dir(root: Path) -> Path:
    for model_id in FAMILY_MODELS:
        name, task, model_type, classes, size, resize_format, extra = MODELS[model_id]
        weights = ref.fixture(name)
        if weights is not None:
            ref.install(root, model_id, weights, task, model_type, classes, size, resize_format, extra)
    return root


def _settings(tmp_path_factory: pytest.TempPathFactory, **overrides: object) -> Settings:
    return Settings(host="127.0.0.1", port=0, threads=8, models_dir=str(_models_dir(tmp_path_factory.mktemp("m"))),
                    cache_dir=str(tmp_path_factory.mktemp("cache")), api_url="", ort_threads=1,
                    max_active_models=len(FAMILY_MODELS) + len(BUNDLED), **overrides)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedDaemon]:
    with ThreadedDaemon(_settings(tmp_path_factory)) as daemon:
        yield daemon


def _need_fixture(model_id: str) -> None:
    if model_id not in BUNDLED and ref.fixture(MODELS[model_id][0]) is None:
        pytest.skip(f"fixture {MODELS[model_id][0]} is not built here (tools/fixtures/README.md)")


def _direct(daemon: ThreadedDaemon, model_id: str, picture: Path, **extra: object) -> dict:
    """What a plain HTTP client gets from the task's /infer route for these exact bytes."""
    body = {"model_id": model_id, "image": {"type": "base64", "value": base64.b64encode(picture.read_bytes()).decode()},
            **PARAMS[model_id], **extra}
    answer = requests.post(f"{daemon.url}/infer/{ROUTES[_task(model_id)]}", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


# ----- inference-sdk ----------------------------------------------------------------------------------------
def _sdk():
    return pytest.importorskip("inference_sdk", reason="inference-sdk is not installed (.ci/run installs it)")


def _configuration(sdk, model_id: str, **extra: object):
    """The SDK's spelling of PARAMS (one configuration serves both modes: it maps the names per mode)."""
    names = {"confidence": "confidence_threshold", "iou_threshold": "iou_threshold",
             "keypoint_confidence": "keypoint_confidence_threshold"}
    given = {names[key]: value for key, value in PARAMS[model_id].items()}
    return sdk.InferenceConfiguration(api_key_transport="legacy", **given, **extra)


def _client(sdk, daemon: ThreadedDaemon, mode: str, model_id: str, api_key: str | None = None, **extra: object):
    client = sdk.InferenceHTTPClient(api_url=daemon.url, api_key=api_key)
    client.configure(_configuration(sdk, model_id, **extra))
    return client.select_api_v0() if mode == "v0" else client.select_api_v1()


SDK_CASES = [(mode, model_id) for model_id in (*BUNDLED, *FAMILY_MODELS) for mode in ("v0", "v1")
             if not (model_id == "deeplab/1" and mode == "v1")]


@pytest.mark.parametrize(("mode", "model_id"), SDK_CASES)
def test_inference_sdk_reads_every_task_unchanged(served, pictures, mode, model_id):
    """v0 needs an API key by the SDK's own rule (any string: the daemon is open); v1 goes without one."""
    sdk = _sdk()
    _need_fixture(model_id)
    picture = _picture(pictures, model_id)
    client = _client(sdk, served, mode, model_id, api_key="any-key" if mode == "v0" else None)
    got = client.infer(str(picture), model_id=model_id)
    expected = _direct(served, model_id, picture)
    assert _without(got) == _without(expected)
    assert got["image"] == ({"width": 640, "height": 480} if model_id in BUNDLED else {"width": 512, "height": 600})
    assert expected["predictions"], f"{model_id} found nothing: the comparison would be empty"
    if _task(model_id) in ("object-detection", "instance-segmentation", "keypoint-detection"):
        for mine, theirs in zip(got["predictions"], expected["predictions"]):
            assert (mine["x"], mine["y"], mine["width"], mine["height"]) == \
                (theirs["x"], theirs["y"], theirs["width"], theirs["height"])
            assert mine["class"] == theirs["class"] and mine["class_id"] == theirs["class_id"]


@pytest.mark.parametrize("mode", ["v0", "v1"])
def test_inference_sdk_reads_instance_masks_as_rle(served, pictures, mode):
    """`response_mask_format="rle"` goes out under both modes and the COCO RLE comes back as sent."""
    sdk = _sdk()
    model_id = "shapes-seg/1"
    client = _client(sdk, served, mode, model_id, api_key="any-key", response_mask_format="rle")
    got = client.infer(str(pictures["scene"]), model_id=model_id)
    expected = _direct(served, model_id, pictures["scene"], response_mask_format="rle")
    assert got["predictions"] and all("rle" in p and "points" not in p for p in got["predictions"])
    assert _without(got) == _without(expected)


def test_inference_sdk_v1_registers_the_model_through_model_add(tmp_path_factory, pictures):
    """v1 reads /model/registry, finds nothing on a fresh daemon, loads with /model/add, then takes the task
    and input size from the registry entry."""
    sdk = _sdk()
    with ThreadedDaemon(_settings(tmp_path_factory)) as daemon:
        assert requests.get(f"{daemon.url}/model/registry", timeout=10).json()["models"] == []
        client = sdk.InferenceHTTPClient(api_url=daemon.url).select_api_v1()
        client.configure(sdk.InferenceConfiguration(api_key_transport="legacy"))
        description = client.get_model_description("yolov8-pose/1" if ref.fixture("yolov8-pose-k5") else "shapes/1")
        assert description.task_type in ("keypoint-detection", "object-detection")
        assert (description.input_width, description.input_height) in ((320, 320), (384, 384))
        listed = [m.model_id for m in client.list_loaded_models().models]
        assert listed == [description.model_id]


def test_inference_sdk_reads_server_info(served):
    sdk = _sdk()
    info = sdk.InferenceHTTPClient(api_url=served.url).get_server_info()
    plain = requests.get(f"{served.url}/info", timeout=10).json()
    assert (info.name, info.version, info.uuid) == (plain["name"], plain["version"], plain["uuid"]) != ("", "", "")


def test_inference_sdk_v1_refuses_semantic_segmentation_on_its_side(served):
    """The SDK's v1 mode knows four task routes; for `semantic-segmentation` (named right by the daemon's
    registry) it raises before sending the image. v0 reads the answer (test above). An SDK limit, not ours."""
    sdk = _sdk()
    _need_fixture("deeplab/1")
    client = _client(sdk, served, "v1", "deeplab/1")
    with pytest.raises(sdk.http.errors.ModelTaskTypeNotSupportedError, match="semantic-segmentation"):
        client.infer(np.zeros((64, 64, 3), np.uint8), model_id="deeplab/1")
    entries = {m["model_id"]: m["task_type"] for m in requests.get(f"{served.url}/model/registry").json()["models"]}
    assert entries["deeplab/1"] == "semantic-segmentation"


@pytest.mark.parametrize(("mode", "transport"), [("v0", "legacy"), ("v0", "header"), ("v0", "both"),
                                                 ("v1", "legacy"), ("v1", "header"),
                                                ("v1", "both")])
def test_inference_sdk_gets_through_access_keys(tmp_path_factory, pictures, transport, mode):
    """With access keys on, the SDK's key opens the door however it sends it: the query/body ("legacy"), the
    `Authorization: Bearer` header, or both."""
    sdk = _sdk()
    with ThreadedDaemon(_settings(tmp_path_factory, access_keys=["door-key"])) as daemon:
        client = sdk.InferenceHTTPClient(api_url=daemon.url, api_key="door-key")
        client.configure(sdk.InferenceConfiguration(api_key_transport=transport, confidence_threshold=0.3))
        client = client.select_api_v0() if mode == "v0" else client.select_api_v1()
        answer = client.infer(str(pictures["scene"]), model_id="shapes/1")
        assert answer["predictions"]
        wrong = sdk.InferenceHTTPClient(api_url=daemon.url, api_key="not-the-key")
        wrong.configure(sdk.InferenceConfiguration(api_key_transport=transport))
        wrong = wrong.select_api_v0() if mode == "v0" else wrong.select_api_v1()
        with pytest.raises(sdk.http.errors.HTTPCallErrorError) as error:
            wrong.infer(str(pictures["scene"]), model_id="shapes/1")
        assert error.value.status_code == 401


# ----- supervision ------------------------------------------------------------------------------------------
def _sv():
    return pytest.importorskip("supervision", reason="supervision is not installed (.ci/run installs it)")


def _corners(predictions: list[dict]) -> np.ndarray:
    return np.array([[p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["x"] + p["width"] / 2,
                      p["y"] + p["height"] / 2] for p in predictions])


def _check_detections(detections, answer: dict) -> None:
    predictions = answer["predictions"]
    assert len(detections) == len(predictions) > 0
    np.testing.assert_allclose(detections.xyxy, _corners(predictions), atol=1e-9)
    np.testing.assert_allclose(detections.confidence, [p["confidence"] for p in predictions], atol=1e-9)
    assert detections.class_id.tolist() == [p["class_id"] for p in predictions]
    assert detections["class_name"].tolist() == [p["class"] for p in predictions]


@pytest.mark.parametrize("model_id", ["shapes/1", "rfdetr-det/1"])
def test_supervision_reads_detections(served, pictures, model_id):
    sv = _sv()
    _need_fixture(model_id)
    answer = _direct(served, model_id, _picture(pictures, model_id))
    detections = sv.Detections.from_inference(answer)
    _check_detections(detections, answer)
    assert detections.mask is None


@pytest.mark.parametrize("model_id", ["shapes-seg/1", "yolov8-seg/1", "rfdetr-seg/1"])
def test_supervision_reads_rle_masks_exactly(served, pictures, model_id):
    """COCO RLE answers: one full-image bool mask per detection, equal pixel for pixel to the RLE."""
    sv = _sv()
    _need_fixture(model_id)
    answer = _direct(served, model_id, _picture(pictures, model_id), response_mask_format="rle")
    detections = sv.Detections.from_inference(answer)
    _check_detections(detections, answer)
    height, width = answer["image"]["height"], answer["image"]["width"]
    assert detections.mask is not None and detections.mask.shape == (len(detections), height, width)
    for mask, prediction in zip(detections.mask, answer["predictions"]):
        assert prediction["rle"]["size"] == [height, width]
        assert np.array_equal(mask, ref.rle_decode(prediction["rle"]))


@pytest.mark.parametrize("model_id", ["shapes-seg/1", "yolov8-seg/1"])
def test_supervision_reads_polygon_masks(served, pictures, model_id):
    """Polygon answers (the default): supervision fills each polygon as sent (vertices rounded, outline
    included). For the trained model's solid shapes that fill is the detection's mask: IoU >= 0.9 with the RLE
    answer. (The random-weight fixture's masks have holes and pieces that one outline cannot follow.)"""
    sv = _sv()
    cv2 = pytest.importorskip("cv2")
    _need_fixture(model_id)
    picture = _picture(pictures, model_id)
    answer = _direct(served, model_id, picture)
    height, width = answer["image"]["height"], answer["image"]["width"]
    assert all(len(p["points"]) >= 3 for p in answer["predictions"])
    detections = sv.Detections.from_inference(answer)
    _check_detections(detections, answer)
    assert detections.mask is not None and detections.mask.shape == (len(detections), height, width)
    for mask, prediction in zip(detections.mask, answer["predictions"]):
        vertices = np.round([[point["x"], point["y"]] for point in prediction["points"]]).astype(np.int32)
        assert np.array_equal(mask, cv2.fillPoly(np.zeros((height, width), np.uint8), [vertices], 1).astype(bool))
    if model_id in BUNDLED:
        rle = _direct(served, model_id, picture, response_mask_format="rle")["predictions"]
        ious = [np.logical_and(mask, expected).sum() / np.logical_or(mask, expected).sum()
                for mask, expected in ((m, ref.rle_decode(p["rle"])) for m, p in zip(detections.mask, rle))]
        assert min(ious) >= 0.9, ious


@pytest.mark.parametrize(("model_id", "names"), [("yolov8-pose/1", [f"tip{i}" for i in range(5)]),
                                                 ("yolo26-pose/1", [str(i) for i in range(17)])])
def test_supervision_reads_keypoints(served, pictures, model_id, names):
    """Each keypoint lands in the slot of its class_id (left-out ones stay (0, 0), confidence 0), so the
    skeleton stays on the right joints; object classes and confidences come along."""
    sv = _sv()
    _need_fixture(model_id)
    answer = _direct(served, model_id, pictures["photo"])
    predictions = answer["predictions"]
    points = sv.KeyPoints.from_inference(answer)
    count = max(point["class_id"] for p in predictions for point in p["keypoints"]) + 1
    assert count <= len(names)
    assert points.xy.shape == (len(predictions), count, 2) and points.keypoint_confidence.shape == (len(predictions),
                                                                                                    count)
    assert points.class_id.tolist() == [p["class_id"] for p in predictions]
    assert points["class_name"].tolist() == [p["class"] for p in predictions]
    for index, prediction in enumerate(predictions):
        present = {point["class_id"]: point for point in prediction["keypoints"]}
        assert all(point["class"] == names[point["class_id"]] for point in prediction["keypoints"])
        for slot in range(count):
            point = present.get(slot)
            xy = (point["x"], point["y"]) if point else (0.0, 0.0)
            assert tuple(points.xy[index, slot]) == pytest.approx(xy, abs=1e-3)
            assert points.keypoint_confidence[index, slot] == pytest.approx(point["confidence"] if point else 0.0,
                                                                             abs=1e-6)
