"""Safe by default under bad input, hostile input and load: every bad request is a 4xx with a message, the
server keeps answering, access control and CORS work, a full box sheds load with 503 + Retry-After."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from tests.support.daemon import ThreadedDaemon
from tests.support.onnx_models import COLOUR_CLASSES, colour_detector, colour_environment, slow_detector, write_model
from tests.support.registry import RegistryServer


class _Payload:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _png_bomb(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00" * 64


def _jpeg_bomb(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, min(height, 65535), min(width, 65535), 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\x00" * 64


class _Hostile(BaseHTTPRequestHandler):
    """Loopback web server for URL attacks: redirect chains, redirects to metadata, slow bodies, HTML."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/loop/"):
            hops = int(self.path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", f"/loop/{hops + 1}")
            self.end_headers()
        elif self.path == "/to-metadata":
            self.send_response(301)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"\xff" * 10)
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/html":
            body = b"<html>not an image</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * 1024 * 1024))
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture(scope="module")
def hostile_web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _corpus(good_jpeg: bytes, good_png: bytes, web: str, marker: Path) -> list[tuple[str, str, dict]]:
    """(name, path, requests.post kwargs) for every hostile request; each must get a 4xx."""
    cases: list[tuple[str, str, dict]] = []
    raw = {"Content-Type": "application/octet-stream"}
    for fraction in np.linspace(0.02, 0.3, 12):
        cases.append((f"truncated jpeg {fraction:.2f}", "/colour/1", {"data": good_jpeg[: int(len(good_jpeg) * fraction)],
                                                                      "headers": raw}))
        cases.append((f"truncated png {fraction:.2f}", "/colour/1", {"data": good_png[: int(len(good_png) * fraction)],
                                                                     "headers": raw}))
    rng = np.random.default_rng(1)
    for index in range(16):
        corrupt = bytearray(good_jpeg[:200])
        corrupt[2:60] = rng.integers(0, 256, 58, dtype=np.uint8).tobytes()
        cases.append((f"corrupt jpeg header {index}", "/colour/1", {"data": bytes(corrupt), "headers": raw}))
        broken_png = bytearray(good_png[:300])
        broken_png[16:80] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        cases.append((f"corrupt png {index}", "/colour/1", {"data": bytes(broken_png), "headers": raw}))
    cases.append(("zero bytes", "/colour/1", {"data": b"", "headers": raw}))
    for width, height in ((100_000, 100_000), (65_000, 2), (0, 10), (30_000, 30_000)):
        cases.append((f"png bomb {width}x{height}", "/colour/1", {"data": _png_bomb(width, height), "headers": raw}))
        cases.append((f"jpeg bomb {width}x{height}", "/colour/1", {"data": _jpeg_bomb(width, height), "headers": raw}))
        cases.append((f"base64 png bomb {width}x{height}", "/colour/1",
                      {"json": {"image": {"type": "base64", "value": base64.b64encode(_png_bomb(width, height)).decode()}}}))
    for text in ("!!!", "abc$", "data:image/png;base64,###", "====", "\u00e9\u00e9\u00e9", "a" * 5, "%%%%"):
        cases.append((f"bad base64 {text[:8]!r}", "/colour/1", {"data": text.encode(), "headers": {"Content-Type": "text/plain"}}))
        cases.append((f"bad base64 in json {text[:8]!r}", "/colour/1", {"json": {"image": {"type": "base64", "value": text}}}))
    image_ref = {"type": "base64", "value": base64.b64encode(good_jpeg).decode()}
    wrong_types = {
        "confidence": ["high", [], {}, True, -1, 1000, None], "max_detections": ["ten", 1.5, -3, 0, True, 10**9],
        "iou_threshold": ["x", [], -0.5, 500], "class_agnostic_nms": ["yes", 2, []],
        "class_filter": ["circle", 3, [1, 2], [[]], ["x" * 1000]], "image": [5, "abc", [], {"type": 3}, {"value": "x"},
                                                                            [{"type": "base64"}], None, True],
        "mask_decode_mode": ["best", 3], "tradeoff_factor": [2, "x"], "response_mask_format": ["png"],
        "format": ["gif", 1], "stroke": [0, "thick", 1000], "api_key": [123, "k" * 600],
        "disable_preproc_auto_orient": ["maybe", 3],
    }
    for field, values in wrong_types.items():
        for value in values:
            body = {"image": image_ref, field: value}
            cases.append((f"wrong type {field}={str(value)[:20]}", "/colour/1", {"json": body}))
    cases.append(("deep json", "/colour/1", {"data": b'{"image": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                                            "headers": {"Content-Type": "application/json"}}))
    cases.append(("deep json list", "/colour/1", {"data": b"[" * 100_000, "headers": {"Content-Type": "application/json"}}))
    cases.append(("json not object", "/colour/1", {"data": b"42", "headers": {"Content-Type": "application/json"}}))
    cases.append(("json null", "/colour/1", {"data": b"null", "headers": {"Content-Type": "application/json"}}))
    cases.append(("batch too long", "/colour/1", {"json": {"image": [image_ref] * 40}}))
    for path in ("/..%2F..%2Fetc/passwd", "/%2e%2e/1", "/a%00b/1", "/" + "x" * 300 + "/1", "/ok/..%2F..",
                 "/-leading/1", "/.hidden/1", "/colour/1%0d%0aX-Injected:1", "/con%20sole/1", "/colour/%2e%2e"):
        cases.append((f"hostile id {path[:30]}", path, {"data": good_jpeg, "headers": raw}))
    for payload in (_Payload(f"touch {marker}"), {"x": _Payload(f"touch {marker}")},
                    [_Payload(f"touch {marker}")]):
        for protocol in (2, 4, 5):
            data = pickle.dumps(payload, protocol=protocol)
            cases.append((f"pickle rce p{protocol}", "/colour/1",
                          {"json": {"image": {"type": "numpy", "value": base64.b64encode(data).decode()}}}))
            cases.append((f"raw pickle rce p{protocol}", "/colour/1?image_type=numpy", {"data": data, "headers": raw}))
    for url in ("http://127.0.0.1:9/x.jpg", "http://localhost/x.jpg", "http://[::1]/x.jpg", "http://0.0.0.0/x.jpg",
                "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x", "http://224.0.0.1/x",
                "file:///etc/passwd", "gopher://example.com/", "ftp://example.com/a.jpg", "data:image/png;base64,AAAA",
                "http:///nohost", "http://no-such-host.invalid/x.jpg", f"{web}/loop/0", f"{web}/to-metadata",
                f"{web}/to-file", f"{web}/slow", f"{web}/html", f"{web}/huge", f"{web}/missing"):
        cases.append((f"url {url[:40]}", "/colour/1", {"json": {"image": {"type": "url", "value": url}}}))
        cases.append((f"query url {url[:40]}", "/colour/1", {"params": {"image": url}}))
    for body in ({"model_id": "../../etc", "image": image_ref}, {"model_id": "colour/1"},
                 {"model_id": 5, "image": image_ref}, {"model_id": "colour/1", "image": image_ref, "confidence": "x"}):
        cases.append((f"infer body {str(body)[:30]}", "/infer/object_detection", {"json": body}))
    cases.append(("multipart without file", "/colour/1", {"files": {"other": ("a.txt", b"hello")}}))
    cases.append(("multipart garbage", "/colour/1", {"data": b"--x\r\ngarbage", "headers": {
        "Content-Type": "multipart/form-data; boundary=x"}}))
    cases.append(("deepstack without image", "/v1/vision/detection", {"files": {"x": ("a", b"1")}}))
    cases.append(("deepstack bad confidence", "/v1/vision/detection", {"files": {"image": ("a.jpg", good_jpeg)},
                                                                        "data": {"min_confidence": "NaN"}}))
    return cases


def test_hostile_corpus_gets_4xx_only_and_the_server_survives(make_settings, colour_jpeg, colour_image, hostile_web,
                                                              tmp_path):
    marker = tmp_path / "pwned"
    good_png = cv2.imencode(".png", colour_image)[1].tobytes()
    cases = _corpus(colour_jpeg, good_png, hostile_web, marker)
    assert len(cases) >= 200
    settings = make_settings(allow_numpy_input=True, url_allow_loopback=True, url_timeout=1.5,
                             url_max_bytes=1024 * 1024, deepstack_model="colour/1")
    failures = []
    with ThreadedDaemon(settings) as server:
        for name, path, kwargs in cases:
            response = requests.post(server.url + path, timeout=30, **kwargs)
            body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
            if not 400 <= response.status_code < 500 or not (body.get("message") or body.get("error")):
                failures.append((name, response.status_code, response.text[:200]))
        good = requests.post(server.url + "/colour/1", data=colour_jpeg)
    assert failures == []
    assert good.status_code == 200 and good.json()["predictions"] is not None
    assert not marker.exists()


def test_access_keys_guard_everything_but_health(make_settings, colour_jpeg, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# one key a line\nfile-key\n")
    source = write_model(tmp_path / "files", "remote/3", colour_detector(), colour_environment())
    with RegistryServer() as registry:
        registry.add_model("remote/3", source, COLOUR_CLASSES)
        registry.state.valid_keys = {"registry-key"}
        settings = make_settings(access_keys=["door-key"], access_keys_file=str(keys_file), api_url=registry.url,
                                 api_key="registry-key")
        with ThreadedDaemon(settings) as server:
            refused = requests.post(server.url + "/colour/1", data=colour_jpeg)
            wrong = requests.post(server.url + "/colour/1?api_key=nope", data=colour_jpeg)
            by_query = requests.post(server.url + "/colour/1?api_key=door-key", data=colour_jpeg)
            by_bearer = requests.post(server.url + "/colour/1", data=colour_jpeg,
                                      headers={"Authorization": "Bearer file-key"})
            docs = requests.get(server.url + "/openapi.json")
            health = requests.get(server.url + "/healthz")
            metrics = requests.get(server.url + "/metrics")
            remote = requests.post(server.url + "/remote/3?api_key=door-key", data=colour_jpeg)
            # Roboflow's clients (inference-sdk v1) send the key in the JSON body of /infer/* and /model/add.
            image = {"type": "base64", "value": base64.b64encode(colour_jpeg).decode()}
            in_body = requests.post(server.url + "/infer/object_detection",
                                    json={"model_id": "remote/3", "image": image, "api_key": "door-key"})
            wrong_in_body = requests.post(server.url + "/infer/object_detection",
                                          json={"model_id": "colour/1", "image": image, "api_key": "nope"})
            too_big = requests.post(server.url + "/infer/object_detection", data=b"{" + b" " * (settings.max_body_bytes + 1),
                                    headers={"Content-Type": "application/json"})
    assert refused.status_code == 401 and "access key" in refused.json()["message"]
    assert in_body.status_code == 200, in_body.text
    assert wrong_in_body.status_code == 401 and too_big.status_code == 413
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert by_query.status_code == 200 and by_bearer.status_code == 200
    assert docs.status_code == 401
    assert health.status_code == 200 and metrics.status_code == 200
    assert remote.status_code == 200
    # The key that opened the door is not sent on to the registry; the configured registry key is.
    assert all("door-key" not in query for query in registry.state.artifact_requests)
    assert any("api_key=registry-key" in query for query in registry.state.artifact_requests)


def test_cors_is_closed_by_default_and_opens_for_configured_origins(make_settings, colour_jpeg):
    origin = {"Origin": "http://nvr.lan"}
    with ThreadedDaemon(make_settings()) as closed:
        assert "Access-Control-Allow-Origin" not in requests.get(closed.url + "/info", headers=origin).headers
    with ThreadedDaemon(make_settings(cors_origins=["http://nvr.lan"])) as opened:
        allowed = requests.get(opened.url + "/info", headers=origin)
        other = requests.get(opened.url + "/info", headers={"Origin": "http://evil.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://nvr.lan"
    assert "Access-Control-Allow-Origin" not in other.headers


def test_full_box_sheds_load_with_503_and_retry_after(make_settings, model_store, tmp_path, colour_jpeg):
    store = tmp_path / "slow-store"
    write_model(store, "slow/1", slow_detector(), colour_environment())
    settings = make_settings(models_dir=str(store), engine_slots=1, max_queue=1, request_timeout=10,
                             batch_window_ms=0)  # one engine call per request, so the queue fills
    with ThreadedDaemon(settings, threads=12) as server:
        assert requests.post(server.url + "/slow/1", data=colour_jpeg).status_code == 200  # loaded
        statuses: list[tuple[int, str | None]] = []
        barrier = threading.Barrier(10)

        def call() -> None:
            barrier.wait()
            response = requests.post(server.url + "/slow/1", data=colour_jpeg, timeout=60)
            statuses.append((response.status_code, response.headers.get("Retry-After")))

        threads = [threading.Thread(target=call) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after = requests.post(server.url + "/slow/1", data=colour_jpeg)
    codes = [code for code, _ in statuses]
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    assert all(retry == "1" for code, retry in statuses if code == 503)
    assert after.status_code == 200


def test_request_deadline_bounds_the_wait(make_settings, tmp_path, colour_jpeg):
    store = tmp_path / "slow-store"
    write_model(store, "slow/1", slow_detector(matmuls=40), colour_environment())
    settings = make_settings(models_dir=str(store), engine_slots=1, max_queue=8, request_timeout=0.05,
                             batch_window_ms=0)
    with ThreadedDaemon(settings, threads=6) as server:
        requests.post(server.url + "/slow/1", data=colour_jpeg)
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(
            requests.post(server.url + "/slow/1", data=colour_jpeg, timeout=60).status_code)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert 503 in results and 200 in results


def test_numpy_pixels_and_array_limits(make_settings):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((300, 300, 3), np.uint8))
    with ThreadedDaemon(make_settings(allow_numpy_input=True, max_image_pixels=10_000)) as server:
        response = requests.post(server.url + "/colour/1", json={"image": {
            "type": "numpy", "value": base64.b64encode(buffer.getvalue()).decode()}})
    assert response.status_code == 413 and "10000-pixel limit" in response.json()["message"]


def test_error_messages_never_echo_keys(make_settings, colour_jpeg):
    with ThreadedDaemon(make_settings(api_url="http://127.0.0.1:9")) as server:
        response = requests.post(server.url + "/unknown/1?api_key=leaky-key-42", data=colour_jpeg)
        metrics = requests.get(server.url + "/metrics").text
    assert "leaky-key-42" not in response.text and "leaky-key-42" not in metrics
    assert json.loads(response.text)["message"]


def test_url_allow_and_deny_lists(make_settings, colour_jpeg):
    """An allow list (host or CIDR) is the only way in; a deny list always wins."""
    from tests.support.registry import RegistryServer as FileServer

    with FileServer() as files:
        files.state.models["img/1"] = type("M", (), {"weights": colour_jpeg})()
        port = files.url.rsplit(":", 1)[1]

        def fetch(settings_kwargs: dict, host: str) -> requests.Response:
            with ThreadedDaemon(make_settings(**settings_kwargs)) as server:
                url = f"http://{host}:{port}/files/img/1/weights.onnx"
                return requests.post(server.url + "/colour/1", json={"image": {"type": "url", "value": url}})

        assert fetch({"url_allow_hosts": ["127.0.0.0/8"]}, "127.0.0.1").status_code == 200  # opens loopback
        refused = fetch({"url_allow_hosts": ["10.0.0.0/8", "camera.lan"]}, "127.0.0.1")
        assert refused.status_code == 400 and "allow list" in refused.json()["message"]
        denied = fetch({"url_allow_loopback": True, "url_deny_hosts": ["localhost"]}, "localhost")
        assert denied.status_code == 400 and "deny list" in denied.json()["message"]
        denied_cidr = fetch({"url_allow_hosts": ["127.0.0.0/8"], "url_deny_hosts": ["127.0.0.1/32"]}, "127.0.0.1")
        assert denied_cidr.status_code == 400 and "deny list" in denied_cidr.json()["message"]
