"""Throughput at N concurrent HTTP clients with and without dynamic batching, side by side in one run.

    python bench/batching.py [--model shapes/1] [--clients 8] [--seconds 15] [--windows 0,2,5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from bench.serving_overhead import make_jpeg, summarise, timed_loop
from tests.support.daemon import DaemonProcess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes/1")
    parser.add_argument("--models-dir", default="")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--windows", default="0,2,5", help="batch windows in ms (0 = no batching)")
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    jpeg = make_jpeg(width, height, seed=9)
    rows = []
    for window in (float(w) for w in args.windows.split(",")):
        daemon_args = ["--cache-dir", tempfile.mkdtemp(prefix="edge-batch-"), "--api-url", "",
                       "--threads", str(max(8, args.clients)), "--batch-window-ms", str(window),
                       "--max-queue", str(args.clients * 4)]
        if args.models_dir:
            daemon_args += ["--models-dir", args.models_dir]
        daemon = DaemonProcess(daemon_args).wait_ready(60)
        local = threading.local()
        url = f"{daemon.url}/{args.model}"

        def call(url: str = url, local: threading.local = local) -> None:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            session.post(url, data=jpeg, headers={"Content-Type": "image/jpeg"}).raise_for_status()

        try:
            call()
            latencies, wall = timed_loop(call, args.seconds, args.clients * 4, args.clients)
        finally:
            daemon.stop()
        rows.append(summarise(f"batch window {window:g} ms", args.clients, latencies, wall))
    base = rows[0]["throughput_per_s"]
    print(f"\n{args.model}, {args.size} JPEG, {args.clients} concurrent clients\n")
    print("| configuration | req/s | vs no batching | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['throughput_per_s']} | {row['throughput_per_s'] / base:.2f} | "
              f"{row['p50_ms']} | {row['p99_ms']} |")
        print(json.dumps({"bench": "batching", "model": args.model, **row}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
