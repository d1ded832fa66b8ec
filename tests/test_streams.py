"""Camera streams against real servers on loopback: a GStreamer RTSP camera, a mosquitto broker, MJPEG and
snapshot cameras and a webhook receiver, with the real daemon and the bundled shapes/1 model."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from edge_daemon.scenes import encode_jpeg, generate_scene
from tests.support.cameras import HttpCamera, Mosquitto, RtspCamera, WebhookReceiver, rtsp_unavailable
from tests.support.daemon import DaemonProcess, ThreadedDaemon

SCENE_SEED = 9  # 640x360: three circles, a square, a star and a triangle


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, list[str]]:
    generated = generate_scene(SCENE_SEED, 640, 360)
    return generated.image, sorted(obj.class_name for obj in generated.objects)


@pytest.fixture
def picture(tmp_path: Path, scene) -> Path:
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), scene[0])
    return path


@pytest.fixture
def streams_daemon(make_settings) -> Iterator[ThreadedDaemon]:
    with ThreadedDaemon(make_settings(url_allow_loopback=True)) as running:
        yield running


def wait_for(condition: Callable[[], object], timeout: float, step: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def stream_state(url: str, stream_id: str) -> dict:
    return requests.get(f"{url}/streams/{stream_id}", timeout=5).json()


class Subscriber:
    """A paho-mqtt 2.x client collecting messages under `edge-daemon/#`."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([("edge-daemon/#", 1), ("homeassistant/#", 1)])
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, message.retain))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_stream_config_is_validated_and_credentials_are_masked(streams_daemon):
    url = streams_daemon.url
    base = {"id": "cam1", "source": "rtsp://admin:hunter22@127.0.0.1:9/live", "model_id": "shapes/1"}
    bad = requests.post(url + "/streams", json={**base, "max_fps": -1})
    assert bad.status_code == 422 and "max_fps" in bad.json()["message"]
    bad_sink = requests.post(url + "/streams", json={**base, "sinks": [{"type": "mqtt", "url": "http://x"}]})
    assert bad_sink.status_code == 422 and "sinks[0].url" in bad_sink.json()["message"]
    unknown = requests.post(url + "/streams", json={**base, "fps": 3})
    assert unknown.status_code == 422 and "fps" in unknown.json()["message"]
    local = requests.post(url + "/streams", json={**base, "source": "/etc/passwd"})
    assert local.status_code == 422 and "source" in local.json()["message"]
    assert requests.post(url + "/streams", data=b"{nope").status_code == 400
    created = requests.post(url + "/streams", json={**base, "stall_timeout": 1, "open_timeout": 1,
                                                    "sinks": [{"type": "webhook", "url": "http://127.0.0.1:9/h",
                                                               "secret": "sesame-secret"}]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert {"id", "source", "model_id", "state", "last_error", "last_frame_at", "frames", "reconnects"} <= set(body)
    assert set(body["frames"]) == {"read", "inferred", "dropped"}
    assert requests.post(url + "/streams", json=base).status_code == 409
    assert requests.get(url + "/streams/nope").status_code == 404
    # The camera is down (port 9): the stream keeps retrying and says why.
    state = wait_for(lambda: (s := stream_state(url, "cam1"))["reconnects"] >= 1 and s, 10)
    assert state["state"] in ("reconnecting", "starting") and state["last_error"]
    everything = requests.get(url + "/streams").text + requests.get(url + "/metrics").text + \
        requests.get(url + "/readiness").text
    assert "hunter22" not in everything and "admin" not in everything and "sesame-secret" not in everything
    assert "rtsp://***@127.0.0.1:9/live" in requests.get(url + "/streams").text
    assert requests.get(url + "/readiness").json()["streams"]["cam1"]["state"] in ("reconnecting", "starting")
    replaced = requests.put(url + "/streams/cam1", json={**base, "max_fps": 7, "open_timeout": 1})
    assert replaced.status_code == 200 and replaced.json()["config"]["max_fps"] == 7
    assert replaced.json()["config"]["sinks"] == []
    renamed = requests.put(url + "/streams/cam1", json={**base, "id": "cam2"})
    assert renamed.status_code == 422 and "id" in renamed.json()["message"]
    assert requests.delete(url + "/streams/cam1").json() == {"id": "cam1", "deleted": True}
    assert requests.get(url + "/streams").json() == {"streams": []}


def test_rtsp_stream_publishes_detections_over_mqtt_and_survives_faults(streams_daemon, picture, scene, tmp_path):
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)
    camera = RtspCamera(picture).start()
    broker = Mosquitto(tmp_path).start()
    subscriber = Subscriber(broker.port)
    url = streams_daemon.url
    try:
        config = {"id": "door", "source": camera.url.replace("rtsp://", "rtsp://viewer:cam-pass@"),
                  "model_id": "shapes/1", "max_fps": 4, "confidence": 0.4, "stall_timeout": 2, "open_timeout": 3,
                  "backoff_cap": 2,
                  "sinks": [{"type": "mqtt", "url": f"mqtt://127.0.0.1:{broker.port}", "topic_prefix": "edge-daemon",
                             "home_assistant": True}]}
        assert requests.post(url + "/streams", json=config).status_code == 201
        wait_for(lambda: len(subscriber.on("edge-daemon/door/detections")) >= 3, 20)
        payload = json.loads(subscriber.on("edge-daemon/door/detections")[-1])
        assert payload["stream_id"] == "door" and payload["frame_timestamp"] and payload["inference_id"]
        assert payload["image"] == {"width": 640, "height": 360}
        assert sorted(p["class"] for p in payload["predictions"]) == scene[1]
        assert subscriber.on("edge-daemon/door/availability")[-1] == b"online"
        assert subscriber.on("homeassistant/sensor/edge_daemon_door/circle_count/config")
        state = stream_state(url, "door")
        assert state["state"] == "running" and state["frames"]["inferred"] >= 3
        assert state["frames"]["read"] > state["frames"]["inferred"]  # the camera sends 10 fps, we infer at 4
        latest = requests.get(url + "/streams/door/latest").json()
        assert sorted(p["class"] for p in latest["predictions"]) == scene[1]
        picture_reply = requests.get(url + "/streams/door/latest.jpg")
        assert picture_reply.headers["Content-Type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(picture_reply.content, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)

        # A frozen camera (TCP open, no data) is noticed within stall_timeout + 1 s, and a healthy camera
        # beside it keeps its pace meanwhile.
        other = HttpCamera(encode_jpeg(scene[0], 85))
        assert requests.post(url + "/streams", json={"id": "other", "source": other.url + "/mjpeg",
                                                     "model_id": "shapes/1", "max_fps": 4}).status_code == 201
        wait_for(lambda: stream_state(url, "other")["frames"]["inferred"] >= 1, 10)
        other_before = stream_state(url, "other")["frames"]["inferred"]
        camera.freeze()
        frozen_at = time.monotonic()
        wait_for(lambda: stream_state(url, "door")["state"] == "reconnecting", 3 + 1, step=0.05)
        assert time.monotonic() - frozen_at <= 2 + 1
        time.sleep(max(0.0, 2.5 - (time.monotonic() - frozen_at)))
        assert stream_state(url, "other")["frames"]["inferred"] - other_before >= 6  # 4 fps for 2.5 s, minus slack
        requests.delete(url + "/streams/other")
        other.close()
        camera.thaw()
        wait_for(lambda: stream_state(url, "door")["state"] == "running", 15)
        before = len(subscriber.on("edge-daemon/door/detections"))
        wait_for(lambda: len(subscriber.on("edge-daemon/door/detections")) >= before + 2, 10)
        assert stream_state(url, "door")["reconnects"] >= 1

        # The broker dies: inference goes on; when it is back, MQTT resumes.
        broker.stop()
        inferred = stream_state(url, "door")["frames"]["inferred"]
        wait_for(lambda: stream_state(url, "door")["frames"]["inferred"] >= inferred + 4, 10)
        broker.start()
        before = len(subscriber.on("edge-daemon/door/detections"))
        wait_for(lambda: len(subscriber.on("edge-daemon/door/detections")) >= before + 2, 20)
        sinks = requests.get(url + "/streams/door").json()["sinks"]
        assert sinks[0]["dropped"] > 0 and sinks[0]["connected"] is True

        metrics = requests.get(url + "/metrics").text
        assert 'edge_daemon_stream_frames_total{kind="inferred",stream="door"}' in metrics
        assert 'edge_daemon_stream_frame_age_seconds_bucket{le="0.4",stream="door"}' in metrics
        assert 'edge_daemon_stream_reconnects_total{stream="door"}' in metrics
        assert "cam-pass" not in metrics and "cam-pass" not in requests.get(url + "/streams").text
    finally:
        subscriber.close()
        camera.stop()
        broker.stop()


def test_a_hung_camera_does_not_hold_up_other_cameras_opening(streams_daemon, picture):
    """OpenCV's FFmpeg backend opens one capture at a time per process. A camera that accepts the connection and
    then says nothing (hung; here a SIGSTOPped RTSP server, an rtsps port that never starts TLS and an MJPEG
    port that never answers HTTP) held that turn
    for its whole open timeout, and FFmpeg's probe held it
    5.2 s for each 5 fps camera, so three such cameras took 16 s to start behind it instead of about 3."""
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)
    hung = RtspCamera(picture).start()
    slow = RtspCamera(picture, fps=5).start()
    silent_tls = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever answers, not even TLS
    silent_http = socket.create_server(("127.0.0.1", 0))  # a wedged camera web server: accepts, never answers
    url = streams_daemon.url
    try:
        hung.freeze()
        assert requests.post(url + "/streams", json={"id": "hung", "source": hung.url, "model_id": "shapes/1",
                                                     "open_timeout": 10, "max_fps": 1}).status_code == 201
        tls_source = f"rtsps://127.0.0.1:{silent_tls.getsockname()[1]}/live"
        assert requests.post(url + "/streams", json={"id": "hung-tls", "source": tls_source, "model_id": "shapes/1",
                                                     "open_timeout": 10, "max_fps": 1}).status_code == 201
        mjpeg_source = f"http://127.0.0.1:{silent_http.getsockname()[1]}/video.mjpg"
        assert requests.post(url + "/streams", json={"id": "hung-http", "source": mjpeg_source, "model_id": "shapes/1",
                                                     "open_timeout": 10, "max_fps": 1}).status_code == 201
        time.sleep(0.5)  # their opens are under way
        added = time.monotonic()
        for index in range(3):
            assert requests.post(url + "/streams", json={"id": f"slow{index}", "source": slow.url,
                                                         "model_id": "shapes/1", "max_fps": 1}).status_code == 201
        wait_for(lambda: all(stream_state(url, f"slow{i}")["state"] == "running" for i in range(3)), 8)
        print(f"three 5 fps cameras running {time.monotonic() - added:.1f} s after they were added")
        for stream_id in ("hung", "hung-tls", "hung-http"):
            hung_state = wait_for(lambda i=stream_id: (s := stream_state(url, i))["last_error"] and s, 12)
            assert hung_state["state"] == "reconnecting" and "did not answer within 10 s" in hung_state["last_error"]
    finally:
        hung.stop()
        slow.stop()
        silent_tls.close()
        silent_http.close()


def _loopback_camera(handle: Callable[[socket.socket], None]) -> socket.socket:
    """A listener on a loopback port that hands each connection it accepts to `handle`, until it is closed."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            handle(connection)

    threading.Thread(target=serve, daemon=True).start()
    return listener


def _recording_camera(reply: bytes) -> tuple[socket.socket, list[bytes]]:
    """A listener that records each request it is sent, answers `reply` and hangs up."""
    received: list[bytes] = []

    def record(connection: socket.socket) -> None:
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
            received.append(data)
            connection.sendall(reply)

    return _loopback_camera(record), received


def test_the_pre_open_check_sends_no_credentials_and_takes_any_reply():
    """Before its open turn a camera must answer an RTSP OPTIONS or HTTP HEAD. That request carries neither
    the URL's user info nor its query string (cheap cameras put the password there), and a 401 is an answer."""
    from edge_daemon.streams.sources import SourceError, _camera_answers

    http_camera, http_seen = _recording_camera(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
    rtsp_camera, rtsp_seen = _recording_camera(b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n\r\n")
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        http_port, rtsp_port = http_camera.getsockname()[1], rtsp_camera.getsockname()[1]
        _camera_answers(f"http://admin:s3cret@127.0.0.1:{http_port}/video.mjpg?user=admin&pwd=s3cret",
                        "127.0.0.1", http_port, 5)
        _camera_answers(f"rtsp://admin:s3cret@127.0.0.1:{rtsp_port}/live?token=s3cret", "127.0.0.1", rtsp_port, 5)
        assert http_seen[0].startswith(b"HEAD /video.mjpg HTTP/1.1\r\n")
        assert rtsp_seen[0].startswith(f"OPTIONS rtsp://127.0.0.1:{rtsp_port}/live RTSP/1.0\r\n".encode())
        for request in http_seen + rtsp_seen:
            assert b"s3cret" not in request and b"admin" not in request and b"Authorization" not in request
        started = time.monotonic()
        with pytest.raises(SourceError, match="did not answer within 1 s"):
            _camera_answers(f"http://127.0.0.1:{silent.getsockname()[1]}/video.mjpg", "127.0.0.1",
                            silent.getsockname()[1], 1)
        assert time.monotonic() - started < 2
    finally:
        http_camera.close()
        rtsp_camera.close()
        silent.close()


def _camera_wedged_after_its_check() -> tuple[socket.socket, list[socket.socket]]:
    """A camera web server that answers HEAD at once but, asked for the video, accepts and never answers."""
    held: list[socket.socket] = []

    def answer_only_head(connection: socket.socket) -> None:
        if connection.recv(4096).startswith(b"HEAD "):
            with connection:
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        else:
            held.append(connection)  # the GET of the video: wedged

    return _loopback_camera(answer_only_head), held


def test_a_stream_queued_behind_another_cameras_open_says_so(streams_daemon, scene):
    """OpenCV opens one camera at a time per process. A camera that passes the pre-open check and then wedges
    inside FFmpeg's open holds that turn for its open timeout, so a healthy camera added meanwhile stays
    `starting`; GET /streams/{id} says it waits for its turn, so nobody goes looking for a fault in its camera."""
    wedged, held = _camera_wedged_after_its_check()
    healthy = HttpCamera(encode_jpeg(scene[0]), fps=10)
    url = streams_daemon.url
    try:
        wedged_source = f"http://127.0.0.1:{wedged.getsockname()[1]}/video.mjpg"
        assert requests.post(url + "/streams", json={"id": "wedged", "source": wedged_source, "model_id": "shapes/1",
                                                     "open_timeout": 4, "max_fps": 1}).status_code == 201
        wait_for(lambda: held, 5)  # its open has begun and holds the turn
        assert requests.post(url + "/streams", json={"id": "healthy", "source": healthy.url + "/mjpeg",
                                                     "model_id": "shapes/1", "max_fps": 1}).status_code == 201
        queued = wait_for(lambda: (s := stream_state(url, "healthy"))["waiting_to_open"] and s, 2)
        assert queued["state"] == "starting" and queued["last_error"] is None
        assert stream_state(url, "wedged")["waiting_to_open"] is False  # it has the turn: its own open is slow
        running = wait_for(lambda: (s := stream_state(url, "healthy"))["state"] == "running" and s, 15)
        assert running["waiting_to_open"] is False
        listed = requests.get(url + "/streams", timeout=5).json()["streams"]
        assert all(stream["waiting_to_open"] is False for stream in listed if stream["id"] == "healthy")
    finally:
        wedged.close()
        for connection in held:
            connection.close()
        healthy.close()


def test_quick_probe_options_keep_what_the_operator_set():
    from edge_daemon.streams.sources import FFMPEG_OPTIONS_VARIABLE, add_quick_probe_options

    environ = {FFMPEG_OPTIONS_VARIABLE: "rtsp_transport;udp|analyzeduration;2000000"}
    add_quick_probe_options(environ)
    assert environ[FFMPEG_OPTIONS_VARIABLE] == "rtsp_transport;udp|analyzeduration;2000000|fpsprobesize;0"
    environ = {}
    add_quick_probe_options(environ)
    assert environ[FFMPEG_OPTIONS_VARIABLE] == "fpsprobesize;0|analyzeduration;500000"


def test_mjpeg_stream_webhook_signature_sse_and_a_dead_webhook_stays_bounded(streams_daemon, scene):
    camera = HttpCamera(encode_jpeg(scene[0], 85), fps=10)
    hook = WebhookReceiver()
    url = streams_daemon.url
    try:
        config = {"id": "yard", "source": camera.url + "/mjpeg", "model_id": "shapes/1", "max_fps": 5,
                  "sinks": [{"type": "webhook", "url": hook.url + "/hook", "secret": "s3cret-key", "queue_size": 4,
                             "timeout": 1, "retries": 1}]}
        assert requests.post(url + "/streams", json=config).status_code == 201
        events = requests.get(url + "/streams/yard/events", stream=True, timeout=10)
        assert events.headers["Content-Type"].startswith("text/event-stream")
        lines = events.iter_lines()
        seen: list[str] = []
        for line in lines:
            seen.append(line.decode())
            if line.startswith(b"data: ") and '"predictions"' in line.decode():
                break
        events.close()
        sse_result = json.loads(seen[-1].removeprefix("data: "))
        assert "event: detections" in seen and sorted(p["class"] for p in sse_result["predictions"]) == scene[1]

        def detections() -> list[tuple[dict[str, str], bytes]]:
            with hook.lock:
                return [item for item in hook.received if item[0].get("X-Edge-Daemon-Topic") == "detections"]

        wait_for(lambda: len(detections()) >= 2, 10)
        headers, body = detections()[0]
        signature = hmac.new(b"s3cret-key", body, hashlib.sha256).hexdigest()
        assert headers["X-Edge-Daemon-Signature"] == f"sha256={signature}"
        posted = json.loads(body)
        assert posted["stream_id"] == "yard" and sorted(p["class"] for p in posted["predictions"]) == scene[1]

        # The webhook starts failing, then hangs: its queue stays at most 4, the drop count rises, and
        # inference keeps its pace.
        hook.mode = "fail"
        wait_for(lambda: requests.get(url + "/streams/yard").json()["sinks"][0]["failed"] >= 1, 10)
        hook.mode = "hang"
        inferred = stream_state(url, "yard")["frames"]["inferred"]
        time.sleep(3)
        state = requests.get(url + "/streams/yard").json()
        sink = state["sinks"][0]
        assert sink["queued"] <= 4 and sink["dropped"] >= 5
        assert state["frames"]["inferred"] - inferred >= 10  # ~5 fps for 3 s, webhook or not
        assert state["state"] == "running"
    finally:
        hook.close()
        camera.close()


def test_snapshot_stream_pause_resume_and_restart_persistence(make_settings, scene, tmp_path):
    camera = HttpCamera(encode_jpeg(scene[0], 85))
    state_dir = tmp_path / "state"
    args = ["--models-dir", "", "--cache-dir", str(tmp_path / "cache"), "--state-dir", str(state_dir),
            "--url-allow-loopback", "true", "--ort-threads", "1"]
    config = {"id": "porch", "source": camera.url + "/snapshot.jpg", "source_type": "snapshot",
              "snapshot_interval": 0.2, "model_id": "shapes/1", "max_fps": 5}
    first = DaemonProcess(args, log_path=tmp_path / "first.log").wait_ready()
    try:
        assert requests.post(first.url + "/streams", json=config).status_code == 201
        wait_for(lambda: stream_state(first.url, "porch")["frames"]["inferred"] >= 2, 20)
        assert requests.post(first.url + "/streams/porch/pause").json()["id"] == "porch"
        wait_for(lambda: stream_state(first.url, "porch")["state"] == "paused", 5)
        # Nobody asked for a picture while it ran, so only the model's 384 px view of each frame was kept:
        # a paused stream's picture is that view drawn back at the camera's size, at once.
        asked = time.monotonic()
        reply = requests.get(first.url + "/streams/porch/latest.jpg", timeout=10)
        assert reply.status_code == 200 and time.monotonic() - asked < 2
        shown = cv2.imdecode(np.frombuffer(reply.content, np.uint8), cv2.IMREAD_COLOR)
        assert shown.shape == scene[0].shape
        assert np.median(np.abs(shown.astype(int) - scene[0].astype(int))) <= 6, "the camera's picture, not grey"
        polled = camera.snapshots
        time.sleep(0.6)
        assert camera.snapshots - polled <= 1  # paused: the camera is left alone
        assert requests.post(first.url + "/streams/porch/resume").status_code == 200
        wait_for(lambda: stream_state(first.url, "porch")["state"] == "running", 10)
    finally:
        first.stop()
    assert json.loads((state_dir / "streams.json").read_text())["streams"][0]["id"] == "porch"
    second = DaemonProcess(args, log_path=tmp_path / "second.log").wait_ready()
    try:
        wait_for(lambda: stream_state(second.url, "porch")["frames"]["inferred"] >= 1, 20)
        latest = requests.get(second.url + "/streams/porch/latest").json()
        assert sorted(p["class"] for p in latest["predictions"]) == scene[1]
        assert requests.delete(second.url + "/streams/porch").status_code == 200
    finally:
        second.stop()
        camera.close()
    assert json.loads((state_dir / "streams.json").read_text()) == {"streams": []}


def test_streams_file_starts_streams_and_a_bad_field_stops_start_up(tmp_path, scene):
    camera = HttpCamera(encode_jpeg(scene[0], 85))
    clip = tmp_path / "replay.avi"  # a video file source, replayed in a loop
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 360))
    for _ in range(10):
        writer.write(scene[0])
    writer.release()
    good = tmp_path / "streams.toml"
    good.write_text(f'''
[[streams]]
id = "gate"
source = "{camera.url.replace("http://", "http://watcher:file-secret@")}/mjpeg"
model_id = "shapes/1"
max_fps = 2
tracking = true
zones = [{{name = "left", points = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}}]

[[streams]]
id = "replay"
source = "{clip}"
model_id = "shapes/1"
max_fps = 4
''')
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("max_fps = 2", "max_fps = 0"))
    args = ["--cache-dir", str(tmp_path / "cache"), "--state-dir", str(tmp_path / "state"),
            "--url-allow-loopback", "true", "--ort-threads", "1"]
    failing = DaemonProcess([*args, "--streams-file", str(bad)], log_path=tmp_path / "bad.log")
    assert failing.process.wait(30) != 0
    assert "streams[0].max_fps" in failing.log()
    failing.stop()
    daemon = DaemonProcess([*args, "--streams-file", str(good)], log_path=tmp_path / "good.log").wait_ready()
    try:
        wait_for(lambda: stream_state(daemon.url, "gate")["frames"]["inferred"] >= 2, 20)
        latest = requests.get(daemon.url + "/streams/gate/latest").json()
        assert all("tracker_id" in p for p in latest["predictions"])
        assert set(latest["zones"]) == {"left"}
        assert requests.delete(daemon.url + "/streams/gate").status_code == 409  # edit the file instead
        wait_for(lambda: stream_state(daemon.url, "replay")["frames"]["read"] > 15, 20)  # a 10-frame file, looped
        replay = requests.get(daemon.url + "/streams/replay/latest").json()
        assert sorted(p["class"] for p in replay["predictions"]) == scene[1]
        assert stream_state(daemon.url, "replay")["state"] == "running"
    finally:
        daemon.stop()
        camera.close()
    assert "stream gate: mjpeg http://***@127.0.0.1" in daemon.log() and "file-secret" not in daemon.log()


def _workflow(step_type: str = "roboflow_core/roboflow_object_detection_model@v2", extra_steps: list | None = None):
    return {"version": "1.0",
            "inputs": [{"type": "WorkflowImage", "name": "image"},
                       {"type": "WorkflowParameter", "name": "model", "default_value": "shapes/1"}],
            "steps": [{"type": step_type, "name": "detector", "image": "$inputs.image", "model_id": "$inputs.model",
                       "confidence": 0.4}, *(extra_steps or [])],
            "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.detector.predictions"}]}


def test_roboflow_inference_pipelines_initialise_consume_terminate(streams_daemon, scene):
    camera = HttpCamera(encode_jpeg(scene[0], 85))
    url = streams_daemon.url
    body = {"type": "init", "video_configuration": {"type": "VideoConfiguration",
                                                    "video_reference": camera.url + "/mjpeg", "max_fps": 5,
                                                    "source_buffer_filling_strategy": "DROP_OLDEST"},
            "processing_configuration": {"type": "WorkflowConfiguration", "workflow_specification": _workflow(),
                                         "image_input_name": "image"},
            "sink_configuration": {"type": "MemorySinkConfiguration", "results_buffer_size": 3}}
    try:
        counter = {"type": "roboflow_core/line_counter@v1", "name": "counter"}
        refused = requests.post(url + "/inference_pipelines/initialise",
                                json={**body, "processing_configuration": {
                                    "type": "WorkflowConfiguration",
                                    "workflow_specification": _workflow(extra_steps=[counter])}})
        assert refused.status_code == 422 and "roboflow_core/line_counter@v1" in refused.json()["message"]
        stored = requests.post(url + "/inference_pipelines/initialise", json={
            **body, "processing_configuration": {"type": "WorkflowConfiguration", "workspace_name": "w",
                                                 "workflow_id": "f"}})
        assert stored.status_code == 422 and "workflow_id" in stored.json()["message"]

        started = requests.post(url + "/inference_pipelines/initialise", json=body)
        assert started.status_code == 200, started.text
        pipeline_id = started.json()["context"]["pipeline_id"]
        assert started.json()["status"] == "success"
        assert requests.get(url + "/inference_pipelines/list").json()["pipelines"] == [pipeline_id]
        time.sleep(1.5)  # ~7 results at 5 fps into a buffer of 3: the oldest are dropped
        first = requests.get(f"{url}/inference_pipelines/{pipeline_id}/consume").json()
        assert len(first["outputs"]) == 1 and first["frames_metadata"][0]["source_id"] == 0
        output = first["outputs"][0]["predictions"]
        assert sorted(p["class"] for p in output["predictions"]) == scene[1]
        frame_ids = [first["frames_metadata"][0]["frame_id"]]
        for _ in range(2):
            frame_ids.append(requests.get(f"{url}/inference_pipelines/{pipeline_id}/consume").json()
                             ["frames_metadata"][0]["frame_id"])
        assert frame_ids == sorted(frame_ids)  # FIFO
        report = requests.get(f"{url}/inference_pipelines/{pipeline_id}/status").json()["report"]
        assert report["sources_metadata"][0]["source_properties"]["width"] == 640
        assert report["inference_throughput"] > 0
        assert requests.post(f"{url}/inference_pipelines/{pipeline_id}/terminate").json()["status"] == "success"
        assert requests.get(f"{url}/inference_pipelines/{pipeline_id}/consume").status_code == 404
        assert requests.get(url + "/inference_pipelines/list").json()["pipelines"] == []
        assert requests.get(url + "/streams").json() == {"streams": []}
    finally:
        camera.close()


def test_cli_streams_add_list_rm_and_test(streams_daemon, scene, tmp_path):
    import subprocess
    import sys

    from tests.support.daemon import REPO_ROOT

    camera = HttpCamera(encode_jpeg(scene[0], 85))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge_daemon", "streams", *args], capture_output=True,
                              text=True, timeout=60, cwd=REPO_ROOT)

    try:
        daemon = ["--url", streams_daemon.url]
        added = cli("add", "shed", camera.url.replace("http://", "http://user:pw-secret@") + "/mjpeg", *daemon)
        assert added.returncode == 0, added.stderr
        assert "pw-secret" not in added.stdout
        wait_for(lambda: stream_state(streams_daemon.url, "shed")["frames"]["read"] >= 20, 15)
        info = stream_state(streams_daemon.url, "shed")["source_info"]
        assert 0.7 * camera.fps <= info["measured_fps"] <= 1.3 * camera.fps, info
        listing = cli("list", *daemon)
        assert listing.returncode == 0 and "shed" in listing.stdout and "running" in listing.stdout
        assert "pw-secret" not in listing.stdout
        duplicate = cli("add", "shed", camera.url + "/mjpeg", *daemon)
        assert duplicate.returncode == 1 and "409" in duplicate.stderr
        assert cli("rm", "shed", *daemon).returncode == 0
        assert requests.get(streams_daemon.url + "/streams").json() == {"streams": []}
        tested = cli("test", camera.url + "/mjpeg", "--cache-dir", str(tmp_path / "cache"), "--ort-threads", "1")
        assert tested.returncode == 0, tested.stderr
        assert "640x360" in tested.stderr and "mjpeg" in tested.stderr.lower()
        measured = float(re.search(r"([0-9.]+) fps measured", tested.stderr).group(1))
        assert 0.7 * camera.fps <= measured <= 1.3 * camera.fps, tested.stderr
        assert sorted(p["class"] for p in json.loads(tested.stdout)["predictions"]) == scene[1]
        missing = cli("test", "rtsp://127.0.0.1:9/none", "--timeout", "2")
        assert missing.returncode == 1 and "could not open" in missing.stderr
    finally:
        camera.close()


def test_iou_tracker_keeps_ids_and_reports_zone_and_frame_events():
    from edge_daemon.streams.tracking import IouTracker, Zones, zone_events

    tracker, zones = IouTracker(max_missed=1), Zones([("right", [[0.5, 0], [1, 0], [1, 1], [0.5, 1]])])

    def frame(*xs: float) -> tuple[list[dict], list[dict]]:
        predictions = [{"x": x, "y": 50.0, "width": 20.0, "height": 20.0, "class": "square"} for x in xs]
        started, ended = tracker.update(predictions)
        return predictions, zone_events(tracker, zones, predictions, started, ended, 200, 100)

    first, events = frame(40)
    assert [(e["event"], e["zone"]) for e in events] == [("enter", "frame")]
    moved, events = frame(45)
    assert moved[0]["tracker_id"] == first[0]["tracker_id"] and events == []
    crossed, events = frame(45, 150)  # a second square appears on the right
    assert crossed[0]["tracker_id"] == first[0]["tracker_id"] and crossed[1]["tracker_id"] != first[0]["tracker_id"]
    assert sorted((e["event"], e["zone"]) for e in events) == [("enter", "frame"), ("enter", "right")]
    frame(150)
    _, events = frame(150)  # the first square is gone for more than max_missed frames
    assert [(e["event"], e["zone"], e["tracker_id"]) for e in events] == [("exit", "frame", first[0]["tracker_id"])]


def test_camera_and_webhook_credentials_in_urls_are_sent_as_basic_auth_and_never_listed(streams_daemon, scene):
    camera = HttpCamera(encode_jpeg(scene[0], 85), credentials=("viewer", "p@ss:w0rd"))
    hook = WebhookReceiver()
    url = streams_daemon.url
    host = camera.url.removeprefix("http://")
    try:
        config = {"id": "gate", "source": f"http://viewer:p%40ss%3Aw0rd@{host}/snapshot.jpg",
                  "source_type": "snapshot", "snapshot_interval": 0.2, "model_id": "shapes/1", "max_fps": 5,
                  "sinks": [{"type": "webhook", "url": hook.url.replace("http://", "http://hook:t0ken@") + "/in"}]}
        assert requests.post(url + "/streams", json=config).status_code == 201
        wait_for(lambda: stream_state(url, "gate")["frames"]["inferred"] >= 2, 20)
        assert camera.snapshots >= 2 and camera.refused == 0
        wait_for(lambda: hook.received, 10)
        with hook.lock:
            headers = hook.received[0][0]
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"hook:t0ken").decode()
        listing = requests.get(url + "/streams").text
        assert "p%40ss" not in listing and "w0rd" not in listing and "t0ken" not in listing

        # The wrong password: the camera's 401 shows as the stream's error, with the password masked.
        wrong = {**config, "id": "gate2", "source": f"http://viewer:nope@{host}/snapshot.jpg", "sinks": []}
        assert requests.post(url + "/streams", json=wrong).status_code == 201
        state = wait_for(lambda: (s := stream_state(url, "gate2"))["last_error"] and s, 15)
        assert "401" in state["last_error"] and "nope" not in json.dumps(state)
        # No picture yet: the live preview says so at once instead of holding the connection open.
        assert requests.get(url + "/streams/gate2/preview.mjpeg", timeout=5).status_code == 404
    finally:
        hook.close()
        camera.close()


def test_live_preview_is_an_mjpeg_stream_of_annotated_frames(streams_daemon, scene):
    camera = HttpCamera(encode_jpeg(scene[0], 85), fps=10)
    url = streams_daemon.url
    try:
        config = {"id": "drive", "source": camera.url + "/mjpeg", "model_id": "shapes/1", "max_fps": 5}
        assert requests.post(url + "/streams", json=config).status_code == 201
        wait_for(lambda: stream_state(url, "drive")["frames"]["inferred"] >= 1, 15)
        refused = requests.get(url + "/streams/drive/preview.mjpeg", params={"fps": 50})
        assert refused.status_code == 400 and "fps" in refused.json()["message"]
        started = time.monotonic()
        # OpenCV's own MJPEG reader (as an NVR or VLC would open it) reads the preview as a video.
        capture = cv2.VideoCapture(url + "/streams/drive/preview.mjpeg?fps=4", cv2.CAP_FFMPEG)
        pictures = []
        while len(pictures) < 3 and time.monotonic() - started < 20:
            ok, picture = capture.read()
            if ok:
                pictures.append(picture)
        capture.release()
        elapsed = time.monotonic() - started
        assert len(pictures) == 3 and pictures[0].shape == scene[0].shape
        assert elapsed >= 0.4, "at most 4 pictures a second: the 3rd comes at least 0.5 s after the 1st"
        # Annotated: the predictions are drawn over the camera's picture (far more changed than by JPEG alone).
        changed = (np.abs(pictures[-1].astype(int) - scene[0].astype(int)).max(axis=2) > 60).mean()
        assert changed > 0.01
    finally:
        camera.close()
