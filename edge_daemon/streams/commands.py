"""`edge-daemon streams list|add|rm|test`: the first three talk to a running daemon over HTTP; `test` opens a
camera right here, prints what it is and runs one inference, so a URL can be checked before it is added."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from edge_daemon.config import Settings
from edge_daemon.errors import ApiError
from edge_daemon.streams.masking import mask_url


def _call(url: str, method: str, path: str, key: str | None, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("message", "")
        except ValueError:
            message = ""
        raise ApiError(f"HTTP {error.code}: {message}") from None
    except urllib.error.URLError as error:
        raise ApiError(f"cannot reach the daemon at {url}: {error.reason}") from None


def list_streams(url: str, key: str | None) -> int:
    streams = _call(url, "GET", "/streams", key)["streams"]
    if not streams:
        print("no streams")
    for stream in streams:
        frames = stream["frames"]
        print(f"{stream['id']:<16} {stream['state']:<13} {stream['model_id']:<16} read={frames['read']} "
              f"inferred={frames['inferred']} dropped={frames['dropped']} reconnects={stream['reconnects']} "
              f"{stream['source']}" + (f"  ({stream['last_error']})" if stream["last_error"] else ""))
    return 0


def add_stream(url: str, key: str | None, config: dict[str, Any]) -> int:
    created = _call(url, "POST", "/streams", key, config)
    print(f"added {created['id']} ({created['source']}): {created['state']}")
    return 0


def remove_stream(url: str, key: str | None, stream_id: str) -> int:
    _call(url, "DELETE", f"/streams/{stream_id}", key)
    print(f"removed {stream_id}")
    return 0


def measure_fps(capture: Any, seconds: float = 2.0, most: int = 40) -> float | None:
    """Frames per second as they arrive, from the median gap between frames over up to `seconds`; None with fewer
    than three gaps. The container's figure is a guess for MJPEG over HTTP (FFmpeg says 25 whatever comes), and
    the median ignores the burst FFmpeg buffered while probing the stream."""
    gaps: list[float] = []
    last = time.monotonic()
    deadline = last + seconds
    while time.monotonic() < deadline and len(gaps) < most and capture.grab():
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    if len(gaps) < 3:
        return None
    median = sorted(gaps)[len(gaps) // 2]
    return 1.0 / median if median > 0 else None


def test_camera(settings: Settings, source: str, model_id: str, timeout: float) -> int:
    """Open `source`, print resolution/fps/codec, run one inference, print its JSON."""
    from edge_daemon.images.url_fetch import UrlPolicy
    from edge_daemon.inference import InferenceParams
    from edge_daemon.models.store import ModelId
    from edge_daemon.service import InferenceService
    from edge_daemon.streams.config import parse_stream
    from edge_daemon.streams.sources import OpenContext, SourceError, open_source, read_frame

    config = parse_stream({"id": "test", "source": source, "model_id": model_id})
    # The operator names the camera on their own box: loopback and private addresses are fine here.
    context = OpenContext(timeout, timeout, UrlPolicy(allow_private=True, allow_loopback=True, timeout=timeout))
    started = time.monotonic()
    try:
        capture = open_source(config, context)
        frame = read_frame(capture)
        opened = time.monotonic() - started
        measured = measure_fps(capture) if frame is not None and config.kind != "snapshot" else None
    except SourceError as error:
        print(f"edge-daemon: {mask_url(source)}: {error}", file=sys.stderr)
        return 1
    info = capture.info()
    capture.close()
    if frame is None:
        print(f"edge-daemon: {mask_url(source)}: opened but no frame arrived", file=sys.stderr)
        return 1
    rate = f"{info.get('fps') or '?'} fps declared, {f'{measured:.1f}' if measured else '?'} fps measured"
    print(f"{mask_url(source)}: {frame.shape[1]}x{frame.shape[0]}, {rate}, codec {info.get('codec') or '?'} "
          f"({info.get('backend')}), first frame after {opened:.2f} s", file=sys.stderr)
    result = InferenceService(settings).infer_pixels(ModelId.parse(model_id), [frame], InferenceParams())
    print(json.dumps(result.responses[0], indent=2))
    return 0
