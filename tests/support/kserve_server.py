"""A real KServe v2 server for the remote-engine tests and bench: MLServer with the ONNX Runtime runtime in
`kserve_runtime.py`, on loopback ports, started as a subprocess (it lives in its own virtualenv, made by
.ci/run, because its dependencies are not the daemon's)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.daemon import REPO_ROOT, free_port

RUNTIME = Path(__file__).with_name("kserve_runtime.py")


def mlserver_binary() -> str | None:
    """MLServer from .ci/run's separate virtualenv, else from PATH."""
    bundled = REPO_ROOT / ".venv" / "mlserver" / "bin" / "mlserver"
    return str(bundled) if bundled.is_file() else shutil.which("mlserver")


class MLServer:
    """`mlserver start` over a model repository of ONNX files; `kill()` and `start()` again for fault tests."""

    def __init__(self, root: Path, models: dict[str, Path], declared: dict[str, dict[str, Any]] | None = None,
                 threads: int = 1):
        binary = mlserver_binary()
        if binary is None:
            raise FileNotFoundError("mlserver is not installed (.ci/run puts it in .venv/mlserver)")
        self.binary = binary
        self.root = root
        self.http_port, self.grpc_port, metrics_port = free_port(), free_port(), free_port()
        self.names = list(models)
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RUNTIME, root / "kserve_runtime.py")
        (root / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": self.http_port, "grpc_port": self.grpc_port,
            "metrics_port": metrics_port, "parallel_workers": 0, "load_models_at_startup": True,
            # MLServer refuses gRPC messages over 4 MiB by default: a batch of 6 shapes/1 images is 10.6 MB.
            "grpc_max_message_length": 64 * 1024 * 1024}))
        for name, onnx in models.items():
            folder = root / "models" / name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(onnx, folder / "model.onnx")
            settings: dict[str, Any] = {"name": name, "implementation": "kserve_runtime.OnnxRuntime",
                                        "parameters": {"uri": "./model.onnx", "version": "1"}}
            settings.update((declared or {}).get(name, {}))
            (folder / "model-settings.json").write_text(json.dumps(settings))
        self.env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(root),
                    "KSERVE_RUNTIME_THREADS": str(threads)}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "mlserver.log"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> MLServer:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.binary, "start", str(self.root)], cwd=self.root, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlserver exited with {self.process.returncode}: {self.log()[-2000:]}")
            if all(self._ready(name) for name in self.names):
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"mlserver not ready after {timeout} s: {self.log()[-2000:]}")

    def _ready(self, name: str) -> bool:
        try:
            return requests.get(f"{self.http_url}/v2/models/{name}/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would: no goodbye to connected clients."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
