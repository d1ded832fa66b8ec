"""Progress for long operations (downloads, engine builds): a bar on a terminal, periodic plain lines
otherwise (journald, docker logs), so nobody stares at a silent box for minutes."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressReporter:
    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 5.0):
        self.label = label
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.interval = interval
        self.started = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self.interactive:
            if total:
                width = 30
                filled = int(width * done / total)
                text = f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done / total:5.1%} {_size(done)}"
            else:
                text = f"\r{self.label} {_size(done)}"
            self.stream.write(text)
            self.stream.flush()
        elif now - self._last >= self.interval:
            share = f" of {_size(total)} ({done / total:.0%})" if total else ""
            self.stream.write(f"{self.label}: {_size(done)}{share} after {now - self.started:.0f} s\n")
            self.stream.flush()
            self._last = now

    def finish(self, message: str) -> None:
        if self.interactive:
            self.stream.write("\r\033[K")
        self.stream.write(f"{self.label}: {message} in {time.monotonic() - self.started:.1f} s\n")
        self.stream.flush()


def _size(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GiB"
