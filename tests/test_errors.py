"""Bad input gets a clear JSON 4xx; an unexpected failure is a 500 and the server keeps serving."""

from __future__ import annotations

import base64
import io
import os
import pickle

import numpy as np
import pytest
import requests


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(("body", "headers", "status", "words"), [
    (b'{"image": {"type": "base64", "value": ', {"Content-Type": "application/json"}, 400, "not valid JSON"),
    (b'{"image": {"type": "webcam", "value": "x"}}', {"Content-Type": "application/json"}, 400, "not recognised"),
    (b'{"confidence": 0.5}', {"Content-Type": "application/json"}, 422, "image"),
    (b'{"image": {"type": "base64", "value": "aGVsbG8gd29ybGQ="}}', {"Content-Type": "application/json"}, 400,
     "could not decode"),
    (b"definitely not base64 !!!", {"Content-Type": "text/plain"}, 400, "base64"),
    (b"", {"Content-Type": "image/jpeg"}, 400, "no image"),
    (b'{"image": {"type": "base64", "value": "eA=="}, "confidence": false}', {"Content-Type": "application/json"},
     422, "confidence"),
    (b'{"image": {"type": "base64", "value": "eA=="}, "max_detections": "many"}',
     {"Content-Type": "application/json"}, 422, "max_detections"),
    (b"[1, 2]", {"Content-Type": "application/json"}, 400, "object"),
])
def test_bad_requests_get_clear_messages(daemon, body, headers, status, words):
    response = requests.post(daemon.url + "/colour/1", data=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert words in response.json()["message"]


def test_query_parameters_are_validated(daemon, colour_jpeg):
    response = requests.post(daemon.url + "/colour/1?confidence=abc", data=colour_jpeg)
    assert response.status_code == 422
    assert "confidence" in response.json()["message"]
    response = requests.post(daemon.url + "/colour/1?confidence=250", data=colour_jpeg)
    assert response.status_code == 422


def test_unknown_model_and_route(daemon, colour_jpeg, make_settings):
    response = requests.post(daemon.url + "/no-such-model/1", data=colour_jpeg)
    assert response.status_code in (503, 404)  # registry unreachable in this fixture
    assert "message" in response.json()
    response = requests.get(daemon.url + "/a/b/c")
    assert response.status_code == 404
    assert "no route" in response.json()["message"]


@pytest.mark.parametrize("model_id", ["..%2F..%2Fetc/1", "ok/..", "a%00b/1", "x" * 200 + "/1"])
def test_hostile_model_ids_are_refused_before_any_lookup(daemon, colour_jpeg, model_id):
    response = requests.post(f"{daemon.url}/{model_id}", data=colour_jpeg)
    # requests collapses "ok/.." to "/", where only the console's GET lives: a POST there is a 405.
    assert response.status_code in (400, 404) or (model_id == "ok/.." and response.status_code == 405)
    assert "message" in response.json()


def test_model_with_wrong_class_count_is_a_clear_422(daemon, colour_jpeg):
    response = requests.post(daemon.url + "/wrong-classes/1", data=colour_jpeg)
    assert response.status_code == 422
    assert "do not fit 2 classes" in response.json()["message"]


def test_unexpected_engine_failure_is_500_and_server_keeps_serving(daemon, colour_jpeg):
    for _ in range(3):
        response = requests.post(daemon.url + "/faulty/1", data=colour_jpeg)
        assert response.status_code == 500
        assert "internal server error" in response.json()["message"]
        assert "Traceback" not in response.text
    assert requests.post(daemon.url + "/colour/1", data=colour_jpeg).status_code == 200


class _WritesAFile:
    """Unpickling this would create a file: the payload an attacker would send."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_pickle_that_would_run_code_is_rejected_and_runs_nothing(daemon, tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        pickle.dumps(_WritesAFile(str(marker))),
        pickle.dumps({"image": _WritesAFile(str(marker))}),
        pickle.dumps(np.array([_WritesAFile(str(marker))], dtype=object)),
    ]
    for payload in payloads:
        for request in (
            {"json": {"image": {"type": "numpy", "value": _b64(payload)}}},
            {"data": payload, "params": {"image_type": "numpy"}, "headers": {"Content-Type": "application/x-pickle"}},
        ):
            response = requests.post(daemon.url + "/colour/1", **request)
            assert response.status_code == 400, response.text
            assert "numpy image payload" in response.json()["message"]
    assert not marker.exists(), "the pickle payload ran code"


def test_numpy_arrays_with_wrong_dtype_or_shape_are_400(daemon):
    for array, words in ((np.zeros((4, 4, 3), np.float32), "dtype uint8"),
                         (np.zeros((4, 4, 4), np.uint8), "shape"),
                         (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
                         (np.array([object()], dtype=object), "")):
        buffer = io.BytesIO()
        try:
            np.save(buffer, array, allow_pickle=array.dtype == object)
        except ValueError:
            continue
        response = requests.post(daemon.url + "/colour/1",
                                 json={"image": {"type": "numpy", "value": _b64(buffer.getvalue())}})
        assert response.status_code == 400, response.text
        assert words in response.json()["message"]


def test_numpy_input_is_off_by_default(make_settings):
    from tests.support.daemon import ThreadedDaemon

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((8, 8, 3), np.uint8))
    with ThreadedDaemon(make_settings()) as server:
        response = requests.post(server.url + "/colour/1",
                                 json={"image": {"type": "numpy", "value": _b64(buffer.getvalue())}})
    assert response.status_code == 400
    assert "disabled" in response.json()["message"]


def test_oversized_body_is_413(make_settings, colour_jpeg):
    from tests.support.daemon import ThreadedDaemon

    with ThreadedDaemon(make_settings(max_body_bytes=1000)) as server:
        response = requests.post(server.url + "/colour/1", data=b"\xff\xd8\xff" + b"0" * 5000)
    assert response.status_code == 413
    assert "1000-byte limit" in response.json()["message"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.jpg", "http://169.254.169.254/latest"])
def test_url_input_refuses_other_schemes_and_metadata_addresses(daemon, url):
    response = requests.post(daemon.url + "/colour/1", json={"image": {"type": "url", "value": url}})
    assert response.status_code == 400
    assert "message" in response.json()
