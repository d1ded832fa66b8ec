"""The remote engine's cost: the daemon over HTTP with shapes/1 run by local ONNX Runtime versus by a KServe v2
server on loopback over gRPC, side by side in one run: p50 at concurrency 1 (the per-request overhead) and
throughput at concurrency 8 (dynamic batching on both).

    python bench/remote_engine.py [--seconds 10] [--clients 8] [--threads 2] [--http]

Two servers: `bench/raw_v2_server.py` (ONNX Runtime behind raw gRPC tensor contents, as Triton handles them:
the cost of the protocol hop itself) and MLServer 1.7.1 with the tests' ONNX Runtime runtime (a real server,
which unpacks raw tensors into Python lists). All engines get the same ONNX Runtime thread count; on loopback
they share the same cores.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from bench.serving_overhead import make_jpeg, summarise, timed_loop
from edge_daemon.models.store import BUNDLED_ROOT
from tests.support.daemon import DaemonProcess, free_port
from tests.support.kserve_server import MLServer


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


def measure(name: str, daemon_args: list[str], jpeg: bytes, args: argparse.Namespace) -> list[dict]:
    daemon = DaemonProcess(["--cache-dir", tempfile.mkdtemp(prefix="edge-remote-"), "--api-url", "",
                            "--models-dir", "", "--threads", str(max(8, args.clients)),
                            "--ort-threads", str(args.threads), "--max-queue", str(args.clients * 4),
                            *daemon_args]).wait_ready(60)
    local = threading.local()
    url = f"{daemon.url}/shapes/1"

    def call() -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        session.post(url, data=jpeg, headers={"Content-Type": "image/jpeg"}, timeout=30).raise_for_status()

    rows = []
    try:
        for _ in range(5):  # load, warm up
            call()
        for clients in (1, args.clients):
            latencies, wall = timed_loop(call, args.seconds, clients * 20, clients)
            rows.append(summarise(name, clients, latencies, wall))
    finally:
        daemon.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads, local and on the server")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--http", action="store_true", help="also measure the remote engine over v2 HTTP/JSON")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    jpeg = make_jpeg(width, height, seed=9)
    server = MLServer(Path(tempfile.mkdtemp(prefix="edge-mlserver-")),
                      {"shapes_1": BUNDLED_ROOT / "shapes" / "1" / "weights.onnx"}, threads=args.threads)
    rows = measure("local ONNX Runtime", ["--backend", "onnxruntime"], jpeg, args)
    raw_port = free_port()
    raw = subprocess.Popen([sys.executable, str(Path(__file__).with_name("raw_v2_server.py")), "--port",
                            str(raw_port), "--threads", str(args.threads), "--model",
                            f"shapes_1={BUNDLED_ROOT / 'shapes' / '1' / 'weights.onnx'}"])
    try:
        _wait_for_port(raw_port)
        rows += measure("remote, gRPC (raw-tensor v2 server)", ["--backend", "remote", "--remote-url",
                                                                f"grpc://127.0.0.1:{raw_port}"], jpeg, args)
    finally:
        raw.terminate()
        raw.wait(10)
    server.start()
    try:
        rows += measure("remote, gRPC (MLServer)", ["--backend", "remote", "--remote-url", server.grpc_url],
                        jpeg, args)
        if args.http:
            rows += measure("remote, HTTP/JSON (MLServer)", ["--backend", "remote", "--remote-url",
                                                             server.http_url], jpeg, args)
    finally:
        server.stop()
    base = {row["concurrency"]: row for row in rows[:2]}
    print(f"\nshapes/1, {args.size} JPEG, ONNX Runtime {args.threads} threads, loopback\n")
    print("| engine | clients | p50 ms | p90 ms | req/s | p50 vs local | req/s vs local |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        local = base[row["concurrency"]]
        print(f"| {row['path']} | {row['concurrency']} | {row['p50_ms']} | {row['p90_ms']} | "
              f"{row['throughput_per_s']} | {row['p50_ms'] - local['p50_ms']:+.2f} ms | "
              f"{row['throughput_per_s'] / local['throughput_per_s']:.2f} |")
        print(json.dumps({"bench": "remote_engine", **row}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
