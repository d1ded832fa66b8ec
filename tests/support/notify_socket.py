"""A stand-in for systemd's end of NOTIFY_SOCKET: a unix datagram socket that records every notification."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic() on arrival
    fields: dict[str, str]

    def __contains__(self, key: str) -> bool:
        return key in self.fields


def parse(datagram: bytes) -> dict[str, str]:
    fields = {}
    for line in datagram.decode().split("\n"):
        key, _, value = line.partition("=")
        fields[key] = value
    return fields


class NotifySocket:
    """Bound at `path` (a file) or, by default, at a random abstract name (`@...`, as systemd may use)."""

    def __init__(self, path: Path | None = None):
        self.address = str(path) if path else f"@edge-daemon-test-{secrets.token_hex(6)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:] if self.address.startswith("@") else self.address)
        self.sock.settimeout(0.1)
        self.messages: list[Notification] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address}

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self.sock.recv(65536)
            except TimeoutError:
                continue
            with self._changed:
                self.messages.append(Notification(time.monotonic(), parse(datagram)))
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Notification], bool], timeout: float = 30.0) -> Notification:
        """The first notification (already received or arriving within `timeout`) matching `predicate`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching notification in {timeout} s; got {self.snapshot()}")
                self._changed.wait(left)

    def snapshot(self) -> list[dict[str, str]]:
        return [message.fields for message in list(self.messages)]

    def __enter__(self) -> NotifySocket:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        if not self.address.startswith("@"):
            os.unlink(self.address)
