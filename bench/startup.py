"""Restart to first answer with a cached engine, and resident memory with one model loaded.

    python bench/startup.py [--model shapes/1] [--runs 5]

The first run fills the engine cache; the following runs are restarts: the time from starting the
process to the first successful inference response, and the daemon's RSS after it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from bench.process import rss_bytes
from bench.serving_overhead import make_jpeg
from tests.support.daemon import DaemonProcess


def first_answer(args: list[str], url_path: str, jpeg: bytes) -> tuple[float, int]:
    started = time.perf_counter()
    daemon = DaemonProcess(args)
    try:
        deadline = started + 120
        while time.perf_counter() < deadline:
            try:
                response = requests.post(daemon.url + url_path, data=jpeg, timeout=30)
                if response.status_code == 200:
                    return time.perf_counter() - started, rss_bytes(daemon.process.pid)
            except requests.ConnectionError:
                pass
            time.sleep(0.02)
        raise TimeoutError("no answer within 120 s")
    finally:
        daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes/1")
    parser.add_argument("--models-dir", default="")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    jpeg = make_jpeg(640, 480, seed=1)
    cache = tempfile.mkdtemp(prefix="edge-startup-")
    daemon_args = ["--cache-dir", cache, "--api-url", ""] + (["--models-dir", args.models_dir] if args.models_dir
                                                             else [])
    cold, cold_rss = first_answer(daemon_args, f"/{args.model}", jpeg)
    warm = [first_answer(daemon_args, f"/{args.model}", jpeg) for _ in range(args.runs)]
    help_times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edge_daemon", "--help"], capture_output=True, check=True)
        help_times.append(time.perf_counter() - started)
    report = {"bench": "startup", "model": args.model,
              "first_start_s": round(cold, 2), "first_start_rss_mb": round(cold_rss / 2**20, 1),
              "restart_to_first_answer_s_median": round(statistics.median(t for t, _ in warm), 2),
              "restart_to_first_answer_s_max": round(max(t for t, _ in warm), 2),
              "rss_one_model_mb_median": round(statistics.median(r for _, r in warm) / 2**20, 1),
              "help_s_median": round(statistics.median(help_times), 3)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
