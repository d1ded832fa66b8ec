"""Run the real daemon: in a thread (waitress on a loopback port) or as a subprocess (for restarts)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from waitress.server import create_server

from edge_daemon.app import create_app
from edge_daemon.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


class ThreadedDaemon:
    """The WSGI app built by `create_app`, served by waitress in a background thread."""

    def __init__(self, settings: Settings, threads: int = 8):
        self.settings = settings
        self.app = create_app(settings)
        self.server = create_server(self.app, host="127.0.0.1", port=0, threads=threads)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        # waitress's own run() never returns; polling in short slices lets __exit__ stop it cleanly.
        while not self._stopping.is_set():
            self.server.asyncore.loop(timeout=0.05, map=self.server._map, count=1)

    @property
    def service(self):
        return self.app.service

    def __enter__(self) -> ThreadedDaemon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.app.close()  # camera streams
        self._thread.join(5)
        self.server.close()
        self.server.task_dispatcher.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DaemonProcess:
    """`python -m edge_daemon serve` as a real child process."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log_path: Path | None = None,
                 preexec_fn: Callable[[], None] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "edge_daemon", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   *args]
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (lives with the child)
        self.process = subprocess.Popen(command, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=REPO_ROOT, preexec_fn=preexec_fn)  # noqa: PLW1509

    def wait_ready(self, timeout: float = 30.0) -> DaemonProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}: {self.log()}")
            try:
                requests.get(self.url + "/openapi.json", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError(f"daemon not ready after {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
