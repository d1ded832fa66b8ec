"""A model registry on loopback speaking Roboflow's artifact protocol, counting what it serves."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


@dataclass
class RegistryModel:
    weights: bytes
    environment: dict
    classes: list[str]
    task: str = "object-detection"
    model_type: str = "yolov8n"


@dataclass
class RegistryState:
    models: dict[str, RegistryModel] = field(default_factory=dict)
    valid_keys: set[str] = field(default_factory=lambda: {"good-key"})
    weight_downloads: dict[str, int] = field(default_factory=dict)
    artifact_requests: list[str] = field(default_factory=list)
    delay: float = 0.0
    truncate_weights: bool = False  # announce the full length, send half, close: a cut connection
    stall_after_half: float = 0.0  # send half the weights, then stall this long before the rest
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    state: RegistryState

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_in_halves(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if self.state.truncate_weights:
            self.close_connection = True
            return
        time.sleep(self.state.stall_after_half)
        self.wfile.write(body[len(body) // 2:])

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        segments = parts.path.strip("/").split("/")
        query = parse_qs(parts.query)
        state = self.state
        if len(segments) == 3 and segments[0] == "ort":
            model_id = f"{segments[1]}/{segments[2]}"
            with state.lock:
                state.artifact_requests.append(parts.query)
            if query.get("api_key", [""])[0] not in state.valid_keys:
                return self._send(401, b'{"error": "unauthorized"}')
            model = state.models.get(model_id)
            if model is None:
                return self._send(404, b'{"error": "not found"}')
            base = f"http://{self.headers['Host']}/files/{model_id}"
            body = {"ort": {"name": segments[1], "type": model.task, "modelType": model.model_type,
                            "classes": model.classes, "colors": {}, "model": f"{base}/weights.onnx?sig=x",
                            "environment": f"{base}/environment.json"}}
            return self._send(200, json.dumps(body).encode())
        if len(segments) == 4 and segments[0] == "files":
            model_id = f"{segments[1]}/{segments[2]}"
            model = state.models.get(model_id)
            if model is None:
                return self._send(404, b"{}")
            if segments[3] == "weights.onnx":
                with state.lock:
                    state.weight_downloads[model_id] = state.weight_downloads.get(model_id, 0) + 1
                time.sleep(state.delay)
                if state.truncate_weights or state.stall_after_half:
                    return self._send_in_halves(model.weights)
                return self._send(200, model.weights, "application/octet-stream")
            if segments[3] == "environment.json":
                return self._send(200, json.dumps(model.environment).encode())
        self._send(404, b"{}")


class RegistryServer:
    def __init__(self) -> None:
        self.state = RegistryState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_model(self, model_id: str, folder: Path, classes: list[str], task: str = "object-detection") -> None:
        environment = json.loads((folder / "environment.json").read_text())
        self.state.models[model_id] = RegistryModel((folder / "weights.onnx").read_bytes(), environment, classes,
                                                    task)

    def __enter__(self) -> RegistryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
