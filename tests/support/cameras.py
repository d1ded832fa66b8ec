"""Real servers for the stream tests, all on 127.0.0.1: a GStreamer RTSP camera (subprocess under the system
python3), a mosquitto broker (subprocess), MJPEG/snapshot cameras and a webhook receiver (stdlib HTTP threads).

A server this machine cannot run makes its test skip with the reason (.ci/run installs them from apt).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.daemon import free_port

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_camera.py")


def wait_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def rtsp_unavailable() -> str | None:
    """Why the RTSP camera cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (the RTSP camera runs under the system python with python3-gi)"
    check = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, text=True)
    if probe.returncode != 0:
        return ("GStreamer RTSP server unavailable (apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 "
                "python3-gi gstreamer1.0-plugins-{base,good,ugly,bad}): " + probe.stderr.strip()[-200:])
    return None


class RtspCamera:
    """`rtsp://127.0.0.1:<port>/live`: a still picture as live H.264; can be frozen (SIGSTOP) and restarted."""

    def __init__(self, picture: Path, fps: int = 10):
        self.picture = picture
        self.fps = fps
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RtspCamera:
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SCRIPT), str(self.port), str(self.picture),
                                         str(self.fps)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(self.port):
            self.stop()
            pytest.skip("the GStreamer RTSP camera did not start listening")
        return self

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(5)
        self.process = None


class Mosquitto:
    def __init__(self, folder: Path):
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)

    def start(self) -> Mosquitto:
        binary = self.binary()
        if binary is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
        self.process = subprocess.Popen([binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        if not wait_port(self.port):
            self.stop()
            pytest.skip("mosquitto did not start listening")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None


class _Server:
    """A ThreadingHTTPServer on a loopback port, in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.closing = threading.Event()
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _CameraHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        owner: HttpCamera = self.server.owner  # type: ignore[attr-defined]
        if owner.credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(owner.credentials).encode()).decode()
            if self.headers.get("Authorization") != expected:  # as IP cameras do
                owner.refused += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if self.path == "/snapshot.jpg":
            owner.snapshots += 1
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(owner.jpeg)))
            self.end_headers()
            self.wfile.write(owner.jpeg)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            while not owner.closing.is_set():
                part = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(owner.jpeg)).encode()
                        + b"\r\n\r\n" + owner.jpeg + b"\r\n")
                self.wfile.write(part)
                self.wfile.flush()
                time.sleep(1 / owner.fps)
        except OSError:
            pass


class HttpCamera(_Server):
    """`/mjpeg` (multipart/x-mixed-replace at `fps`) and `/snapshot.jpg`, both the same JPEG; with `credentials`
    (user, password), only for requests carrying them as HTTP Basic auth (others get a 401)."""

    def __init__(self, jpeg: bytes, fps: float = 10, credentials: tuple[str, str] | None = None):
        self.jpeg = jpeg
        self.fps = fps
        self.snapshots = 0
        self.credentials = credentials
        self.refused = 0
        super().__init__(_CameraHandler)


class _WebhookHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        owner: WebhookReceiver = self.server.owner  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if owner.mode == "hang":
            owner.closing.wait(30)
            return
        with owner.lock:
            owner.received.append((dict(self.headers), body))
        self.send_response(500 if owner.mode == "fail" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class WebhookReceiver(_Server):
    """Records POSTs; `mode` is "ok", "fail" (HTTP 500) or "hang" (never answers)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        super().__init__(_WebhookHandler)
