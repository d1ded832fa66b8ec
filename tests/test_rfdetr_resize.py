"""RF-DETR's resize modes and `dataset_version_resize_dimensions`, served from Roboflow packages over real HTTP,
against the independent NumPy/Pillow reference (tests/support/family_reference.py `rfdetr_prepare`).

Roboflow's default stack resizes RF-DETR in two steps when a package declares a non-stretch `resize_mode` and a
`dataset_version_resize_dimensions`: the mode is made at the version's (often non-square) size, on uint8
pixels with the padding value, then that frame is stretched with Pillow to the square network input. Boxes and
masks are 0..1 of that frame. Without a version size (or for fit-longer-edge) every mode is one Pillow stretch.

The models are the real RF-DETR exports of tests/fixtures/families (rfdetr-mini-det is committed; the Nano and
segmentation ones are built by .ci/run and skipped when absent). Tolerances as tests/test_families.py: boxes
within 1 px, confidences within 1e-4, masks IoU >= 0.98.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from edge_daemon.config import Settings
from tests.support import family_reference as ref
from tests.support.daemon import ThreadedDaemon

NAMES = ["circle", "square", "triangle"]
SIZES = ((451, 300), (512, 600))  # non-square photos, wider and taller than they are high
DET_CONFIDENCE, SEG_CONFIDENCE = 0.05, 0.04
# The Nano detector's seeded weights score 0.026-0.045 on these photos (its export.json photo_check).
CONFIDENCE = {"rfdetr-nano-det": 0.025}

# model id -> (fixture, task, input (w, h), resize_mode, padding_value, dataset_version_resize_dimensions (w, h))
MODELS: dict[str, tuple] = {
    "det-letterbox/1": ("rfdetr-mini-det", "object-detection", (384, 384), "letterbox", 114, None),
    "det-letterbox-v/1": ("rfdetr-mini-det", "object-detection", (384, 384), "letterbox", 114, (448, 320)),
    "det-square-v/1": ("rfdetr-mini-det", "object-detection", (384, 384), "letterbox", 0, (384, 384)),
    "det-crop-v/1": ("rfdetr-mini-det", "object-detection", (384, 384), "center-crop", 114, (448, 320)),
    "det-reflect-v/1": ("rfdetr-mini-det", "object-detection", (384, 384), "letterbox-reflect-edges", 114,
                        (320, 448)),
    "det-fle-v/1": ("rfdetr-mini-det", "object-detection", (384, 384), "fit-longer-edge", 114, (448, 320)),
    "nano-letterbox-v/1": ("rfdetr-nano-det", "object-detection", (384, 384), "letterbox", 114, (448, 320)),
    "seg-letterbox-v/1": ("rfdetr-mini-seg", "instance-segmentation", (312, 312), "letterbox", 114, (416, 288)),
    "seg-crop-v/1": ("rfdetr-mini-seg", "instance-segmentation", (312, 312), "center-crop", 0, (288, 400)),
    "seg-nano-letterbox-v/1": ("rfdetr-seg-nano", "instance-segmentation", (312, 312), "letterbox", 0,
                               (416, 288)),
    # Roboflow's classic format: PREPROCESSING's non-square resize is the version's size (grey edges: 114).
    "det-classic-v/1": ("rfdetr-mini-det", "object-detection", (384, 384), "letterbox", 114, (448, 320)),
}
CLASSIC = {"det-classic-v/1": "Fit (grey edges) in"}
ROUTES = {"object-detection": "object_detection", "instance-segmentation": "instance_segmentation"}


@pytest.fixture(scope="module")
def images() -> list[tuple[bytes, np.ndarray]]:
    """(JPEG bytes, the pixels the daemon decodes from them) for each size."""
    return ref.photo_jpegs(SIZES)


def _network_input(size: tuple[int, int], mode: str, pad: int, version: tuple[int, int] | None) -> dict:
    network: dict[str, object] = {
        "training_input_size": {"width": size[0], "height": size[1]}, "dynamic_spatial_size_supported": False,
        "color_mode": "rgb", "resize_mode": mode, "padding_value": pad, "input_channels": 3, "scaling_factor": 255,
        "normalization": [list(ref.IMAGENET[0]), list(ref.IMAGENET[1])]}
    if version is not None:
        network["dataset_version_resize_dimensions"] = {"width": version[0], "height": version[1]}
    return network


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedDaemon]:
    root = tmp_path_factory.mktemp("rfdetr-resize")
    for model_id, (name, task, size, mode, pad, version) in MODELS.items():
        weights = ref.fixture(name)
        if weights is not None and model_id in CLASSIC:
            ref.install(root, model_id, weights, task, "rfdetr-nano", NAMES, version, CLASSIC[model_id])
        elif weights is not None:
            ref.install_package(root, model_id, weights, task, "rfdetr-nano", NAMES,
                                _network_input(size, mode, pad, version))
    settings = Settings(host="127.0.0.1", port=0, threads=4, models_dir=str(root),
                        cache_dir=str(tmp_path_factory.mktemp("cache")), api_url="", ort_threads=1,
                        max_active_models=len(MODELS))
    with ThreadedDaemon(settings) as daemon:
        yield daemon


def _weights(model_id: str):
    weights = ref.fixture(MODELS[model_id][0])
    if weights is None:
        pytest.skip(f"fixture {MODELS[model_id][0]} is not built here (tools/fixtures/README.md)")
    return weights


def _ask(daemon: ThreadedDaemon, model_id: str, jpeg: bytes, **params: object) -> list[dict]:
    body = {"model_id": model_id, "image": {"type": "base64", "value": base64.b64encode(jpeg).decode()}, **params}
    answer = requests.post(f"{daemon.url}/infer/{ROUTES[MODELS[model_id][1]]}", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def _expected(model_id: str, image: np.ndarray, mode: str | None = None, version: object = "declared"):
    """The reference decode of the model on `image`: (detections, query ids, placement, frame size, outputs).
    `mode`/`version` override the declared ones (to show what another resize would have given)."""
    _, _, size, declared_mode, pad, declared_version = MODELS[model_id]
    network, box, frame = ref.rfdetr_prepare(image, size, mode or declared_mode,
                                             declared_version if version == "declared" else version, pad)
    outputs = ref.run(_weights(model_id), ref.tensor(network, ref.IMAGENET))
    found, queries = ref.rfdetr(outputs[0], outputs[1], len(NAMES), _confidence(model_id), frame)
    return found, queries, box, frame, outputs


def _confidence(model_id: str) -> float:
    name, task = MODELS[model_id][:2]
    return CONFIDENCE.get(name, SEG_CONFIDENCE if task == "instance-segmentation" else DET_CONFIDENCE)


def _corners(found: ref.Found, box: ref.Letterbox) -> np.ndarray:
    return np.concatenate([ref.to_original(found.boxes[:, :2], box), ref.to_original(found.boxes[:, 2:], box)],
                          axis=1)


def _compare_boxes(predictions: list[dict], found: ref.Found, box: ref.Letterbox) -> None:
    assert len(predictions) == len(found.scores) > 0, (len(predictions), len(found.scores))
    for prediction, corner, score, klass in zip(predictions, _corners(found, box), found.scores, found.classes):
        x1, y1 = prediction["x"] - prediction["width"] / 2, prediction["y"] - prediction["height"] / 2
        x2, y2 = prediction["x"] + prediction["width"] / 2, prediction["y"] + prediction["height"] / 2
        assert np.abs(np.array([x1, y1, x2, y2]) - corner).max() <= 1.0, (prediction, corner)
        assert prediction["confidence"] == pytest.approx(float(score), abs=1e-4)
        assert prediction["class"] == NAMES[int(klass)] and prediction["class_id"] == int(klass)


def _differs(first: tuple, second: tuple) -> bool:
    """Two reference answers differ by more than the tolerance (so a daemon serving one fails the other)."""
    (a, _, box_a, *_), (b, _, box_b, *_) = first, second
    if len(a.scores) != len(b.scores):
        return True
    return bool(np.abs(_corners(a, box_a) - _corners(b, box_b)).max() > 1.0
                or np.abs(a.scores - b.scores).max() > 1e-4)


@pytest.mark.parametrize("size_index", [0, 1])
def test_a_letterbox_without_a_version_size_is_a_pillow_stretch(served, images, size_index):
    """Roboflow's default stack does not letterbox RF-DETR unless the package names the version's size."""
    jpeg, image = images[size_index]
    expected = _expected("det-letterbox/1", image)
    assert expected[3] == (384, 384) and expected[2].pad_x == expected[2].pad_y == 0
    letterboxed = _expected("det-letterbox/1", image, version=(384, 384))
    assert _differs(expected, letterboxed)  # the photo is not square: a letterbox would answer otherwise
    _compare_boxes(_ask(served, "det-letterbox/1", jpeg, confidence=DET_CONFIDENCE), expected[0], expected[2])


@pytest.mark.parametrize("model_id", ["det-letterbox-v/1", "det-square-v/1", "det-crop-v/1", "det-reflect-v/1",
                                      "nano-letterbox-v/1", "det-classic-v/1"])
@pytest.mark.parametrize("size_index", [0, 1])
def test_detection_at_the_dataset_version_size(served, images, model_id, size_index):
    """The mode made at the version's size (padding value in pixel space), stretched to the input; boxes
    mapped back through that frame."""
    jpeg, image = images[size_index]
    expected = _expected(model_id, image)
    assert expected[3] == MODELS[model_id][5]
    assert _differs(expected, _expected(model_id, image, mode="stretch"))  # the version size matters here
    _compare_boxes(_ask(served, model_id, jpeg, confidence=_confidence(model_id)), expected[0], expected[2])


def test_reflect_edges_pads_with_the_padding_value_and_fit_longer_edge_stretches(images):
    """What the default stack substitutes (checked on the reference itself, so the two tests above and below
    mean what they say): reflect-edges is a letterbox with the padding value, fit-longer-edge a plain stretch."""
    _, image = images[0]
    network, box, _ = ref.rfdetr_prepare(image, (384, 384), "letterbox-reflect-edges", (320, 448), 114)
    frame, _ = ref.prepare(image, (320, 448), "letterbox", 114)
    assert box.pad_y > 0 and (frame[:box.pad_y] == 114).all()
    stretched, _ = ref.prepare(image, (384, 384), "stretch", pillow=True)
    assert (ref.rfdetr_prepare(image, (384, 384), "fit-longer-edge", (448, 320), 114)[0] == stretched).all()
    assert not (network == stretched).all()


@pytest.mark.parametrize("size_index", [0, 1])
def test_fit_longer_edge_is_served_as_a_pillow_stretch(served, images, size_index):
    jpeg, image = images[size_index]
    expected = _expected("det-fle-v/1", image)
    assert expected[3] == (384, 384)
    _compare_boxes(_ask(served, "det-fle-v/1", jpeg, confidence=DET_CONFIDENCE), expected[0], expected[2])


def _mask_ious(predictions: list[dict], masks: list[np.ndarray]) -> list[float]:
    ious = []
    for prediction, expected in zip(predictions, masks):
        got = ref.rle_decode(prediction["rle"])
        assert got.shape == expected.shape
        if expected.sum() >= 32 * 32:
            ious.append(float(np.logical_and(got, expected).sum() / np.logical_or(got, expected).sum()))
    return ious


@pytest.mark.parametrize("model_id", ["seg-letterbox-v/1", "seg-crop-v/1", "seg-nano-letterbox-v/1"])
@pytest.mark.parametrize("size_index", [0, 1])
def test_instance_segmentation_at_the_dataset_version_size(served, images, model_id, size_index):
    """Masks: the frame's padding cut off the mask grid (a centre crop of a larger image: the grid padded with
    zeros out to the whole image), resized to the image, > 0."""
    if model_id == "seg-nano-letterbox-v/1" and size_index == 1:
        pytest.skip("one photo is enough for the heavier Nano export")
    jpeg, image = images[size_index]
    found, queries, box, frame, outputs = _expected(model_id, image)
    assert frame == MODELS[model_id][5]
    predictions = _ask(served, model_id, jpeg, confidence=SEG_CONFIDENCE, response_mask_format="rle")
    _compare_boxes(predictions, found, box)
    masks = [ref.aligned(outputs[2][query], box, frame, 0.0) for query in queries]
    ious = _mask_ious(predictions, masks)
    assert ious and min(ious) >= 0.98, ious
