"""Every request form a Roboflow client uses gives the same predictions for the same image."""

from __future__ import annotations

import base64
import io

import numpy as np
import requests

from edge_daemon.images.decode import decode_image_bytes

RESPONSE_KEYS = {"inference_id", "time", "image", "predictions"}
PREDICTION_KEYS = {"x", "y", "width", "height", "confidence", "class", "class_id", "detection_id"}


def _boxes(response: dict) -> list[tuple]:
    return sorted((p["class"], p["x"], p["y"], p["width"], p["height"], round(p["confidence"], 5))
                  for p in response["predictions"])


def test_four_forms_return_identical_predictions(daemon, colour_jpeg):
    url = daemon.url + "/colour/1"
    b64 = base64.b64encode(colour_jpeg).decode()
    answers = {
        "json": requests.post(url, json={"image": {"type": "base64", "value": b64}, "confidence": 0.1}),
        "hosted-base64-as-json": requests.post(url + "?confidence=10&api_key=x", data=b64,
                                               headers={"Content-Type": "application/json"}),
        "hosted-base64-form": requests.post(url + "?confidence=0.1", data=f"data:image/jpeg;base64,{b64}",
                                            headers={"Content-Type": "application/x-www-form-urlencoded"}),
        "multipart": requests.post(url + "?confidence=0.1", files={"file": ("x.jpg", colour_jpeg, "image/jpeg")}),
        "raw-jpeg": requests.post(url + "?confidence=0.1", data=colour_jpeg, headers={"Content-Type": "image/jpeg"}),
        "raw-octets": requests.post(url + "?confidence=0.1", data=colour_jpeg,
                                    headers={"Content-Type": "application/octet-stream"}),
    }
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text)
        assert response.headers["X-Model-Id"] == "colour/1"
        assert float(response.headers["X-Processing-Time"]) > 0
    reference = answers["json"].json()
    assert set(reference) == RESPONSE_KEYS
    assert reference["image"] == {"width": 200, "height": 120}
    assert reference["predictions"], "the colour model must find the red and blue boxes"
    for prediction in reference["predictions"]:
        assert set(prediction) == PREDICTION_KEYS
    for name, response in answers.items():
        assert _boxes(response.json()) == _boxes(reference), name


def test_predictions_follow_the_image_content(daemon, colour_image):
    """Mean colour drives the colour model's scores: a red image gives 'red' boxes at the known places."""
    red = np.zeros((80, 100, 3), np.uint8)
    red[:] = (0, 0, 255)
    import cv2

    _, png = cv2.imencode(".png", red)
    response = requests.post(daemon.url + "/colour/1?confidence=0.5", data=png.tobytes(),
                             headers={"Content-Type": "image/png"})
    predictions = response.json()["predictions"]
    # Weights for red: 0.9 (box 0) and 0.6 (box 3); stretch 64x64 -> 100x80.
    assert [(p["class"], round(p["confidence"], 3)) for p in predictions] == [("red", 0.9), ("red", 0.6)]
    box0 = predictions[0]
    assert (box0["x"] - box0["width"] / 2, box0["x"] + box0["width"] / 2) == (9.0, 41.0)  # 6*100/64, 26*100/64
    assert (box0["y"] - box0["height"] / 2, box0["y"] + box0["height"] / 2) == (8.0, 32.0)


def test_image_url_in_query_and_json(daemon, colour_jpeg, make_settings):
    from tests.support.daemon import ThreadedDaemon
    from tests.support.registry import RegistryServer

    with RegistryServer() as files, ThreadedDaemon(make_settings(url_allow_loopback=True)) as server:
        files.state.models["img/1"] = type("M", (), {"weights": colour_jpeg})()
        image_url = f"{files.url}/files/img/1/weights.onnx"
        by_query = requests.post(server.url + "/colour/1", params={"image": image_url, "confidence": "0.1"})
        by_json = requests.post(server.url + "/colour/1",
                                json={"image": {"type": "url", "value": image_url}, "confidence": 0.1})
        direct = requests.post(server.url + "/colour/1?confidence=0.1", data=colour_jpeg)
        assert by_query.status_code == 200, by_query.text
        assert _boxes(by_query.json()) == _boxes(by_json.json()) == _boxes(direct.json())
    # The default policy refuses loopback URLs (no SSRF into the box itself).
    refused = requests.post(daemon.url + "/colour/1", params={"image": image_url})
    assert refused.status_code == 400
    assert "loopback" in refused.json()["message"]


def test_batch_of_images_gives_a_list(daemon, colour_jpeg):
    b64 = base64.b64encode(colour_jpeg).decode()
    red = base64.b64encode(_solid_png((0, 0, 255))).decode()
    body = {"image": [{"type": "base64", "value": b64}, {"type": "base64", "value": red}], "confidence": 0.1}
    for model in ("colour/1", "colour-v5/1"):  # dynamic batch, and fixed batch 1 run image by image
        response = requests.post(f"{daemon.url}/{model}", json=body)
        assert response.status_code == 200, response.text
        batch = response.json()
        assert isinstance(batch, list) and len(batch) == 2
        singles = [requests.post(f"{daemon.url}/{model}", json={"image": ref, "confidence": 0.1}).json()
                   for ref in body["image"]]
        assert [_boxes(item) for item in batch] == [_boxes(item) for item in singles]
        assert batch[0]["inference_id"] != batch[1]["inference_id"]


def test_yolov5_layout_uses_objectness(daemon):
    response = requests.post(daemon.url + "/colour-v5/1?confidence=0.5", data=_solid_png((0, 0, 255)))
    assert response.status_code == 200, response.text
    assert [(p["class"], round(p["confidence"], 3)) for p in response.json()["predictions"]] == [
        ("red", 0.9), ("red", 0.6)]


def test_numpy_npy_and_pickle_inputs_match_jpeg(daemon, colour_jpeg):
    import pickle

    decoded = decode_image_bytes(colour_jpeg).pixels
    buffer = io.BytesIO()
    np.save(buffer, decoded, allow_pickle=False)
    npy = base64.b64encode(buffer.getvalue()).decode()
    pickled = base64.b64encode(pickle.dumps(decoded)).decode()
    expected = _boxes(requests.post(daemon.url + "/colour/1?confidence=0.1", data=colour_jpeg).json())
    for value in (npy, pickled):
        response = requests.post(daemon.url + "/colour/1",
                                 json={"image": {"type": "numpy", "value": value}, "confidence": 0.1})
        assert response.status_code == 200, response.text
        assert _boxes(response.json()) == expected
    raw = requests.post(daemon.url + "/colour/1?image_type=numpy&confidence=0.1", data=pickle.dumps(decoded),
                        headers={"Content-Type": "application/octet-stream"})
    assert raw.status_code == 200, raw.text
    assert _boxes(raw.json()) == expected


def test_class_filter_and_agnostic_nms(daemon, colour_jpeg):
    both = requests.post(daemon.url + "/colour/1", json={"image": {"type": "base64",
                                                                   "value": base64.b64encode(colour_jpeg).decode()},
                                                         "confidence": 0.05}).json()
    assert {p["class"] for p in both["predictions"]} >= {"red", "blue"}
    only_blue = requests.post(daemon.url + "/colour/1?confidence=0.05&classes=blue", data=colour_jpeg).json()
    assert only_blue["predictions"] and {p["class"] for p in only_blue["predictions"]} == {"blue"}
    capped = requests.post(daemon.url + "/colour/1?confidence=0.05&max_detections=1", data=colour_jpeg).json()
    assert len(capped["predictions"]) == 1
    assert capped["predictions"][0]["confidence"] == max(p["confidence"] for p in both["predictions"])


def _solid_png(bgr: tuple[int, int, int]) -> bytes:
    import cv2

    image = np.zeros((80, 100, 3), np.uint8)
    image[:] = bgr
    return cv2.imencode(".png", image)[1].tobytes()
