"""systemd's notify protocol end to end: the real daemon as a child process, NOTIFY_SOCKET pointing at a
datagram socket this test owns, a loopback registry slow enough that start-up has progress to report."""

from __future__ import annotations

import http.client
import logging
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_daemon import systemd_notify
from tests.support.daemon import DaemonProcess, ThreadedDaemon
from tests.support.images import solid_png
from tests.support.notify_socket import NotifySocket
from tests.support.onnx_models import COLOUR_CLASSES, colour_detector, colour_environment, write_model
from tests.support.registry import RegistryServer

WATCHDOG_USEC = 1_000_000


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    source = write_model(tmp_path / "registry-files", "remote/3", colour_detector("yolov8"), colour_environment())
    with RegistryServer() as server:
        server.add_model("remote/3", source, COLOUR_CLASSES)
        yield server




def _start(tmp_path: Path, registry: RegistryServer, notify: NotifySocket, *extra: str) -> DaemonProcess:
    args = ["--cache-dir", str(tmp_path / "cache"), "--models-dir", "", "--api-url", registry.url,
            "--threads", "4", "--ort-threads", "1", *extra]
    env = {**notify.env, "WATCHDOG_USEC": str(WATCHDOG_USEC), "EDGE_DAEMON_API_KEY": "good-key"}
    return DaemonProcess(args, env=env, log_path=tmp_path / "daemon.log")


def _has(key: str, prefix: str = ""):
    return lambda message: key in message and message.fields[key].startswith(prefix)


def test_ready_status_watchdog_stopping_and_in_flight_request_finishes(tmp_path, registry):
    registry.state.stall_after_half = 2.0  # the preload's download takes a while: STATUS lines meanwhile
    with NotifySocket() as notify:
        daemon = _start(tmp_path, registry, notify, "--preload", "remote/3")
        try:
            first_status = notify.wait_for(_has("STATUS", "downloading remote/3"), timeout=30)
            assert "EXTEND_TIMEOUT_USEC" in first_status, "start-up work asks systemd for more time"
            ready = notify.wait_for(_has("READY", "1"), timeout=30)
            assert ready.at - first_status.at >= 1.0, "READY waits for the preload, not just the bind"
            assert "preloaded remote/3" in ready.fields["STATUS"]
            readiness = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=5)
            readiness.request("GET", "/readiness")
            assert readiness.getresponse().status == 200, "READY=1 means /readiness answers 200"
            readiness.close()

            time.sleep(2.5)  # watchdog pings at half of WATCHDOG_USEC, earned by answered /healthz probes
            pings = [m.at for m in notify.messages if "WATCHDOG" in m and m.at > ready.at]
            assert len(pings) >= 3, notify.snapshot()
            gaps = np.diff([ready.at, *pings])
            assert gaps.max() < WATCHDOG_USEC / 1e6, f"a ping every interval at least; gaps {gaps}"

            # A request half-sent when SIGTERM arrives still gets its answer.
            body = solid_png()
            client = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
            client.sendall(f"POST /remote/3?confidence=0.5 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
            time.sleep(0.3)
            daemon.process.send_signal(signal.SIGTERM)
            stopping = notify.wait_for(_has("STOPPING", "1"), timeout=10)
            time.sleep(0.2)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", daemon.port), timeout=2)
            client.sendall(body[len(body) // 2:])
            response = http.client.HTTPResponse(client)
            response.begin()
            payload = response.read()
            client.close()
            assert response.status == 200, payload
            assert b'"class": "red"' in payload or b'"class":"red"' in payload
            assert daemon.process.wait(15) == 0, daemon.log()
        finally:
            daemon.stop()
    order = [next(i for i, m in enumerate(notify.messages) if key in m) for key in ("STATUS", "READY", "STOPPING")]
    assert order == sorted(order), notify.snapshot()
    after_stop = [m for m in notify.messages if "WATCHDOG" in m and m.at > stopping.at]
    assert not after_stop, "no watchdog pings once stopping"
    log = daemon.log()
    assert "GET /healthz" not in log, "watchdog probes stay out of the access log"
    assert "POST /remote/3 200" in log


def test_sigterm_during_preload_stops_cleanly_without_ready(tmp_path, registry):
    registry.state.stall_after_half = 60.0  # the preload never finishes while the test runs
    with NotifySocket() as notify:
        daemon = _start(tmp_path, registry, notify, "--preload", "remote/3")
        try:
            notify.wait_for(_has("STATUS", "downloading remote/3"), timeout=30)
            daemon.process.send_signal(signal.SIGTERM)
            notify.wait_for(_has("STOPPING", "1"), timeout=10)
            assert daemon.process.wait(15) == 0, daemon.log()
        finally:
            daemon.stop()
    assert not [m for m in notify.messages if "READY" in m]


def test_no_preload_is_ready_at_once_and_sigint_exits_zero(tmp_path, registry):
    with NotifySocket(tmp_path / "notify.sock") as notify:  # a filesystem path this time
        started = time.monotonic()
        daemon = _start(tmp_path, registry, notify)
        try:
            ready = notify.wait_for(_has("READY", "1"), timeout=30)
            assert ready.fields["STATUS"].startswith("serving on 127.0.0.1:")
            assert ready.at - started < 30
            daemon.process.send_signal(signal.SIGINT)
            assert daemon.process.wait(15) == 0, daemon.log()
        finally:
            daemon.stop()


# ----- the protocol pieces in-process -------------------------------------------------------------------
def test_notify_is_a_no_op_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd_notify.ready() is False
    assert systemd_notify.watchdog_seconds({"WATCHDOG_USEC": "1000000"}) is None


def test_notify_sends_one_datagram_of_lines(monkeypatch):
    with NotifySocket() as notify:
        monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
        assert systemd_notify.notify(status="two\nlines", extend_timeout_usec=5)
        message = notify.wait_for(lambda m: True, timeout=5)
    assert message.fields == {"STATUS": "two lines", "EXTEND_TIMEOUT_USEC": "5"}


def test_watchdog_interval_honours_watchdog_pid():
    base = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "3000000"}
    assert systemd_notify.watchdog_seconds(base) == 3.0
    assert systemd_notify.watchdog_seconds({**base, "WATCHDOG_PID": "1"}) is None
    assert systemd_notify.watchdog_seconds({**base, "WATCHDOG_USEC": "0"}) is None


def test_watchdog_pings_only_while_the_server_answers(make_settings, caplog):
    hung = socket.socket()  # listens but never accepts: connections queue and nothing is ever answered
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    sent: list[float] = []
    probe = systemd_notify.HttpProbe("127.0.0.1", hung.getsockname()[1])
    silent = systemd_notify.Watchdog(probe, 0.6, send=lambda: bool(sent.append(time.monotonic()))).start()
    time.sleep(1.5)
    silent.stop()
    hung.close()
    assert sent == [], "no pings while the server does not answer"

    quiet = systemd_notify.QuietProbes()
    with ThreadedDaemon(make_settings()) as daemon:
        daemon.server.application = quiet.wrap(daemon.app)
        quiet.install()
        try:
            port = int(daemon.url.rsplit(":", 1)[1])
            probe = systemd_notify.HttpProbe("0.0.0.0", port, token=quiet.token)
            with caplog.at_level(logging.INFO, logger="edge_daemon.access"):
                alive = systemd_notify.Watchdog(probe, 0.6, send=lambda: bool(sent.append(time.monotonic()))).start()
                time.sleep(1.5)
                alive.stop()
        finally:
            logging.getLogger("edge_daemon.access").removeFilter(quiet.filter)
    assert len(sent) >= 3
    assert not [r for r in caplog.records if r.name == "edge_daemon.access"], "probes are not access-logged"
