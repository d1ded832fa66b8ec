"""One end-to-end request against a freshly started edge-daemon (a container, an emulated arm64 rootfs).

Waits for /readiness, checks /healthz, posts a generated scene of shapes to shapes/1 and checks that the
predictions name shapes. Prints one JSON line with what it saw; exits 1 on any failure. Needs only the
repository on PYTHONPATH (for the scene generator) and OpenCV to encode it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_daemon.scenes import encode_jpeg, generate_scene

SHAPES = {"circle", "square", "triangle", "star"}


def get(url: str, timeout: float) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_ready(base: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if get(base + "/readiness", 5)[0] == 200:
                return time.monotonic() - started
        except (OSError, ValueError):
            pass
        time.sleep(1)
    raise SystemExit(f"not ready after {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_url")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /readiness")
    parser.add_argument("--request-timeout", type=float, default=120.0)
    args = parser.parse_args()
    base = args.base_url.rstrip("/")
    waited = wait_ready(base, args.timeout)
    health = get(base + "/healthz", 10)
    scene = generate_scene(7, 640, 480)
    body = encode_jpeg(scene.image, 92)
    request = urllib.request.Request(base + "/shapes/1?confidence=0.5", data=body,
                                     headers={"Content-Type": "image/jpeg"}, method="POST")
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=args.request_timeout) as response:
        result = json.loads(response.read())
    seconds = time.monotonic() - started
    classes = sorted(p["class"] for p in result["predictions"])
    info = get(base + "/info", 10)[1]
    report = {"ready_after_s": round(waited, 1), "healthz": health, "request_s": round(seconds, 3),
              "predictions": classes, "expected": sorted(obj.class_name for obj in scene.objects),
              "backend": info.get("backend"), "version": info.get("version")}
    print(json.dumps(report))
    ok = health[0] == 200 and classes and set(classes) <= SHAPES
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
