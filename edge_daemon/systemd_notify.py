"""systemd's notify protocol (sd_notify(3)) spoken directly: one datagram of `KEY=value` lines to $NOTIFY_SOCKET.

No library: the protocol is a few lines, `sdnotify` is unmaintained and `systemd-python` needs libsystemd.
Everything here is a no-op when NOTIFY_SOCKET is unset (a shell, Docker, the tests that don't ask for it).

Two threads use it while `edge-daemon serve` runs:

- `StartupReporter` sends `STATUS=` lines ("downloading remote/3: 4 s, 1.2 MB") and `EXTEND_TIMEOUT_USEC=`
  while `--preload` models are still settling, then `READY=1` once each is ready or failed (a failed
  preload still reports READY: the daemon serves its other models and `/healthz` says what failed; a
  restart loop would not fix a missing model).
- `Watchdog` sends `WATCHDOG=1` at half of `WATCHDOG_USEC`, but only after a real loopback HTTP request to
  the daemon's own `/healthz` got an answer. That request crosses everything a hang could stop: the
  accept loop, a waitress worker thread and the falcon app. Any HTTP status counts as an answer (an
  unhealthy 503 is a reason to look, not to restart). When probes keep failing the pings stop and systemd
  restarts the daemon `WatchdogSec=` after the last good one. Probes carry a per-process token header and
  are left out of the access log (`QuietProbes`), so the journal is not one line every few seconds.
"""

from __future__ import annotations

import http.client
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
PROBE_HEADER = "X-Edge-Daemon-Probe"
EXTEND_BY_SECONDS = 30.0  # each EXTEND_TIMEOUT_USEC asks for this much more start-up time
SETTLED_STATES = ("ready", "failed")


def _address(value: str) -> str | None:
    """The socket address from $NOTIFY_SOCKET: a path, or `@name` for the abstract namespace."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None  # e.g. vsock:... addresses, which this daemon never runs under


def notify(**fields: object) -> bool:
    """Send `KEY=value` lines (keys upper-cased); False when not under systemd or the send failed.

    Never raises: a lost notification must not take the daemon down.
    """
    value = os.environ.get(NOTIFY_SOCKET, "")
    address = _address(value)
    if address is None:
        if value:
            log.debug("unsupported NOTIFY_SOCKET %r: notifications off", value)
        return False
    lines = [f"{key.upper()}={str(item).replace(chr(10), ' ')}" for key, item in fields.items()]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as error:
        log.debug("sd_notify to %s failed: %s", value, error)
        return False
    return True


def ready(status: str | None = None) -> bool:
    return notify(ready=1, **({"status": status} if status else {}))


def status(text: str) -> bool:
    return notify(status=text)


def watchdog_ping() -> bool:
    return notify(watchdog=1)


def stopping(status: str | None = None) -> bool:
    return notify(stopping=1, **({"status": status} if status else {}))


def watchdog_seconds(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog interval systemd set for this process (WATCHDOG_USEC, honouring WATCHDOG_PID), or None."""
    environ = os.environ if environ is None else environ
    if not environ.get(NOTIFY_SOCKET):
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were started by a wrapper)
    try:
        usec = int(environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


# ----- watchdog ---------------------------------------------------------------------------------------
class QuietProbes:
    """Marks the watchdog's own requests so the access log can leave them out (they still count in metrics)."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self._local = threading.local()

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """A WSGI app that flags probe requests for the duration of the call on the worker thread."""
        header = "HTTP_" + PROBE_HEADER.upper().replace("-", "_")

        def quiet_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            self._local.probe = secrets.compare_digest(environ.get(header, ""), self.token)
            try:
                return app(environ, start_response)
            finally:
                self._local.probe = False

        return quiet_app

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self._local, "probe", False)

    def install(self, logger_name: str = "edge_daemon.access") -> None:
        logging.getLogger(logger_name).addFilter(self.filter)


class HttpProbe:
    """One GET of `path` on the daemon's own listening address; True when any HTTP response came back."""

    def __init__(self, host: str, port: int, path: str = "/healthz", token: str = ""):
        self.host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        self.port = port
        self.path = path
        self.headers = {PROBE_HEADER: token} if token else {}

    def __call__(self, timeout: float) -> bool:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=max(timeout, 0.05))
        try:
            connection.request("GET", self.path, headers=self.headers)
            connection.getresponse().read()
            return True
        except (OSError, http.client.HTTPException) as error:
            log.debug("watchdog probe of %s failed: %s", self.path, error)
            return False
        finally:
            connection.close()


class Watchdog:
    """Pings `WATCHDOG=1` every `interval / 2` s, each ping earned by a successful `probe(timeout)`.

    A failed probe is retried every `interval / 10` s, so the daemon is restarted only when nothing has
    answered for a whole interval, not after one slow request.
    """

    def __init__(self, probe: Callable[[float], bool], interval: float,
                 send: Callable[[], bool] = watchdog_ping):
        self.probe = probe
        self.interval = interval
        self.send = send
        self.pings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="systemd watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(min(self.interval, 1.0))  # a probe stuck on a hung server must not hold up exit

    def _run(self) -> None:
        period, retry = self.interval / 2, self.interval / 10
        last_ping = time.monotonic()
        while not self._stop.is_set():
            remaining = last_ping + self.interval - time.monotonic()
            if self.probe(min(period, max(remaining, retry))) and not self._stop.is_set():
                self.send()
                self.pings += 1
                last_ping = time.monotonic()
                self._stop.wait(period)
            else:
                self._stop.wait(retry)


# ----- start-up ---------------------------------------------------------------------------------------
class _Status(Protocol):
    state: str
    since: float
    error: str | None
    bytes_downloaded: int


class _Manager(Protocol):
    def statuses(self) -> Mapping[str, _Status]: ...


def describe(model_id: str, status: _Status, now: float) -> str:
    """One model's start-up progress, e.g. `downloading remote/3: 4 s, 1.2 MB`."""
    text = f"{status.state} {model_id}: {now - status.since:.0f} s"
    if status.state == "downloading" and status.bytes_downloaded:
        text += f", {status.bytes_downloaded / 1e6:.1f} MB"
    return text


class StartupReporter:
    """Reports preload progress to systemd, then READY=1 once every preload has settled (ready or failed)."""

    def __init__(self, manager: _Manager, preload: Iterable[str], serving: str, tick: float = 1.0,
                 send: Callable[..., bool] = notify):
        self.manager = manager
        self.preload = list(preload)
        self.serving = serving  # e.g. "serving on 0.0.0.0:9001"
        self.tick = tick
        self.send = send
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="systemd start-up", daemon=True)

    def start(self) -> StartupReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.tick * 2)

    def pending(self) -> list[str]:
        """Progress lines of preloads still downloading/loading/building (an unknown id counts as settled)."""
        statuses, now = self.manager.statuses(), time.time()
        return [describe(model_id, statuses[model_id], now) for model_id in self.preload
                if model_id in statuses and statuses[model_id].state not in SETTLED_STATES]

    def summary(self) -> str:
        statuses = self.manager.statuses()
        failed = [f"{model_id} ({statuses[model_id].error})" for model_id in self.preload
                  if model_id in statuses and statuses[model_id].state == "failed"]
        loaded = [model_id for model_id in self.preload
                  if model_id in statuses and statuses[model_id].state == "ready"]
        text = self.serving
        if loaded:
            text += "; preloaded " + ", ".join(loaded)
        if failed:
            text += "; preload failed: " + ", ".join(failed)
        return text

    def _run(self) -> None:
        while not self._stop.is_set():
            waiting = self.pending()
            if not waiting:
                self.send(ready=1, status=self.summary())
                self.ready.set()
                log.info("ready: %s", self.summary())
                return
            self.send(status="; ".join(waiting), extend_timeout_usec=int(EXTEND_BY_SECONDS * 1_000_000))
            self._stop.wait(self.tick)
