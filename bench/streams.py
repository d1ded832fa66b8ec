"""Camera streams, measured side by side in one run against a real GStreamer RTSP camera (720p H.264 of a
scene of shapes) and a daemon subprocess:

1. bare `session.run` throughput of the model (batch 1 and batch 8), the ceiling for any serving path;
2. capacity: N streams at --fps each: achieved inferences/s and frame age at inference (p95, from the daemon's
   own histogram), for growing N; the largest N that keeps up with p95 < 400 ms is the answer;
3. saturation: --saturation-streams streams asking the camera's whole rate (more than the CPU can do): stream
   throughput vs bare session.run, vs a minimal pipeline without a server (OpenCV readers + session.run on the
   freshest frames: the ceiling of any stream server on the box), and vs bare session.run while 8 streams only
   grab (what decoding, and the test camera, leave of the CPU). With `--camera-fps 5` (cameras set to 5 fps, as Frigate advises for
   detection) give enough streams to ask more than the CPU can do, e.g. `--counts 8,16,24,32 --saturation-streams 40`;
4. grabbing cost: daemon CPU per idle 720p30 stream (grabbing and decoding, no inference);
5. memory: daemon RSS with 8 streams, sampled over --soak seconds, starting right after the saturation burst
   (so the series shows the burst given back: ONNX Runtime's arena and the C heap are trimmed a
   --memory-trim-seconds period or two after it);
6. the ceiling by accounting: the CPU of each stage a stream inference cannot skip (decode, colour conversion,
   letterbox, tensor, `session.run` at its cheapest, postprocessing), measured one by one; the cores over their
   sum bound any stream server on this box, against bare `session.run` just after.

    python bench/streams.py [--counts 1,2,4,6,8] [--fps 5] [--camera-fps 30] [--saturation-streams 8]
                            [--seconds 15] [--soak 600] [--daemon-args --engine-slots 1 ...]

The CPU is shared and noisy; run it on a quiet box and compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.process import rss_bytes
from edge_daemon.scenes import generate_scene
from tests.support.cameras import RtspCamera, rtsp_unavailable
from tests.support.daemon import DaemonProcess

MODEL_ROOT = Path(__file__).resolve().parents[1] / "edge_daemon" / "default_models"


def bare_throughput(model_id: str, seconds: float, batch: int) -> float:
    """Images per second through a plain onnxruntime session, as fast as one caller can go."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(MODEL_ROOT / model_id / "weights.onnx"), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    tensor = np.random.default_rng(0).random((batch, 3, shape[2], shape[3]), dtype=np.float32)
    name = session.get_inputs()[0].name
    session.run(None, {name: tensor})
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {name: tensor})
        done += batch
    return done / (time.perf_counter() - started)


class MinimalPipeline:
    """The ceiling of any stream server on this box: `streams` OpenCV readers of the camera (every frame grabbed,
    only wanted ones converted, letterboxed and made a tensor by the daemon's own preprocessor) and `callers`
    threads of `session.run` on the freshest frames, round robin. No HTTP, no batching, no postprocessing, no
    metrics: the decoding, conversion and inference no server can skip. With the daemon's session options (all
    cores, no spinning) and its two engine slots, or with single-threaded runs side by side, which got 6-18 % more
    through here (no thread pool to wake for each operator)."""

    def __init__(self, camera_url: str, streams: int, model_id: str = "shapes/1", ort_threads: int = 0,
                 callers: int = 2):
        import onnxruntime as ort

        import edge_daemon.streams.sources  # noqa: F401 (sets the daemon's FFmpeg probe options, as it opens)
        from edge_daemon.inference import LoadedModel
        from edge_daemon.processing.preprocess import PreprocSwitches

        options = ort.SessionOptions()
        options.intra_op_num_threads = ort_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # the daemon's default
        self.session = ort.InferenceSession(str(MODEL_ROOT / model_id / "weights.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.preprocessor = LoadedModel(model_id, MODEL_ROOT / model_id).preprocessor
        self.switches = PreprocSwitches()
        self.stop = threading.Event()
        self.inferred = 0
        self._lock = threading.Lock()
        self._latest: list[np.ndarray | None] = [None] * streams
        self._captures = [cv2.VideoCapture(camera_url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
                          for _ in range(streams)]
        self._threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(streams)]
        self._threads += [threading.Thread(target=self._infer, args=(i,), daemon=True) for i in range(callers)]

    def _read(self, index: int) -> None:
        capture = self._captures[index]
        while not self.stop.is_set() and capture.grab():
            if self._latest[index] is None:  # wanted: the last one was taken (or none yet)
                ok, frame = capture.retrieve()
                if ok:
                    image, _ = self.preprocessor.prepare(frame, self.switches)
                    tensor = self.preprocessor.to_tensor([image])
                    with self._lock:
                        self._latest[index] = tensor
        capture.release()

    def _infer(self, start: int) -> None:
        index = start
        while not self.stop.is_set():
            index = (index + 1) % len(self._latest)
            with self._lock:
                tensor, self._latest[index] = self._latest[index], None
            if tensor is None:
                time.sleep(0.0005)
                continue
            self.session.run(None, {self.input_name: tensor})
            with self._lock:
                self.inferred += 1

    def measure(self, seconds: float) -> float:
        """Inferences per second over `seconds`, after a warm-up; then everything stops."""
        for thread in self._threads:
            thread.start()
        try:
            time.sleep(3)
            before, started = self.inferred, time.monotonic()
            time.sleep(seconds)
            return (self.inferred - before) / (time.monotonic() - started)
        finally:
            self.stop.set()
            for thread in self._threads:
                thread.join(timeout=10)


def stage_costs(camera: RtspCamera, seconds: float, model_id: str = "shapes/1") -> dict[str, float]:
    """CPU milliseconds of each stage one stream inference cannot skip, measured on this box one at a time:
    decoding a camera frame, converting it to BGR, the daemon's letterbox and tensor, `session.run` at its cheapest
    (single-threaded runs side by side, one per core: no thread pool to wake), and the daemon's postprocessing of
    the real outputs; plus the cores the test camera takes to serve one reader. Their sum bounds any stream server
    on this box, with no server cost at all: cores / sum inferences per second."""
    import onnxruntime as ort

    from edge_daemon.inference import LoadedModel
    from edge_daemon.processing.params import InferenceParams
    from edge_daemon.processing.preprocess import PreprocSwitches
    from edge_daemon.responses import image_response

    model = LoadedModel(model_id, MODEL_ROOT / model_id)
    switches, params = PreprocSwitches(), InferenceParams()
    capture = cv2.VideoCapture(camera.url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    capture.grab()
    spent = {"decode": 0.0, "colour": 0.0, "letterbox": 0.0, "tensor": 0.0}
    frames, samples = 0, []
    camera_before, started = cpu_seconds(camera.process.pid), time.monotonic()
    while time.monotonic() - started < seconds:
        marks = [time.thread_time()]
        capture.grab()
        marks.append(time.thread_time())
        _, pixels = capture.retrieve()
        marks.append(time.thread_time())
        image, geometry = model.preprocessor.prepare(pixels, switches)
        marks.append(time.thread_time())
        tensor = model.preprocessor.to_tensor([image])
        marks.append(time.thread_time())
        for stage, before, after in zip(spent, marks, marks[1:]):
            spent[stage] += after - before
        frames += 1
        if len(samples) < 10:
            samples.append((tensor, geometry))
    camera_cores = (cpu_seconds(camera.process.pid) - camera_before) / (time.monotonic() - started)
    capture.release()
    costs = {stage: 1000 * total / max(frames, 1) for stage, total in spent.items()}

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL_ROOT / model_id / "weights.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    name, tensor = session.get_inputs()[0].name, samples[0][0]
    session.run(None, {name: tensor})
    runs, stop = [0], time.perf_counter() + seconds / 2

    def run() -> None:
        while time.perf_counter() < stop:
            session.run(None, {name: tensor})
            runs[0] += 1

    cpu_before = time.process_time()
    threads = [threading.Thread(target=run) for _ in range(len(os.sched_getaffinity(0)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    costs["session.run"] = 1000 * (time.process_time() - cpu_before) / max(runs[0], 1)

    outputs = [model.engine.run(tensor) for tensor, _ in samples]
    cpu_before, decoded = time.thread_time(), 0
    for _ in range(20):
        for output, (_, geometry) in zip(outputs, samples):
            image_response(geometry, **model.decoder.decode([o[0] for o in output], geometry, params))
            decoded += 1
    costs["postprocess"] = 1000 * (time.thread_time() - cpu_before) / decoded
    costs["camera_cores"] = camera_cores
    return costs


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str) -> tuple[float, list[tuple[float, float]]]:
    """(inferred frames, [(bucket upper bound, cumulative count)]) summed over every stream."""
    inferred, buckets = 0.0, {}
    for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "edge_daemon_stream_frames_total" and sample.labels.get("kind") == "inferred":
                inferred += sample.value
            if sample.name == "edge_daemon_stream_frame_age_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return inferred, sorted(buckets.items())


def percentile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """q-quantile of the observations between two histogram scrapes (linear within a bucket)."""
    old = dict(before)
    counts = [(bound, value - old.get(bound, 0.0)) for bound, value in after]
    total = counts[-1][1] if counts else 0
    if total <= 0:
        return float("nan")
    target, lower, previous = q * total, 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= target:
            if bound == float("inf"):
                return lower
            share = (target - previous) / max(cumulative - previous, 1e-9)
            return lower + share * (bound - lower)
        lower, previous = bound, cumulative
    return lower


def add_streams(url: str, camera: str, count: int, fps: float, prefix: str) -> tuple[list[str], float]:
    """Add `count` streams of `camera` and wait until all run: (their ids, seconds until then, which is every
    camera opened; OpenCV opens one at a time per process)."""
    started = time.monotonic()
    ids = []
    for index in range(count):
        stream_id = f"{prefix}{index}"
        reply = requests.post(url + "/streams", json={"id": stream_id, "source": camera, "model_id": "shapes/1",
                                                      "max_fps": fps, "stall_timeout": 10}, timeout=30)
        reply.raise_for_status()
        ids.append(stream_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [requests.get(f"{url}/streams/{i}", timeout=10).json()["state"] for i in ids]
        if all(state == "running" for state in states):
            return ids, time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"streams did not all start: {states}")



def remove_streams(url: str, ids: list[str]) -> None:
    for stream_id in ids:
        requests.delete(f"{url}/streams/{stream_id}", timeout=30)


def measure(url: str, pid: int, seconds: float) -> dict[str, float]:
    time.sleep(3)  # warm-up: engines loaded, readers settled
    inferred0, buckets0 = scrape(url)
    cpu0, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    inferred1, buckets1 = scrape(url)
    elapsed = time.monotonic() - started
    return {"inferred_per_s": (inferred1 - inferred0) / elapsed,
            "age_p50_ms": 1000 * percentile(buckets0, buckets1, 0.5),
            "age_p95_ms": 1000 * percentile(buckets0, buckets1, 0.95),
            "cpu_cores": (cpu_seconds(pid) - cpu0) / elapsed, "rss_mb": rss_bytes(pid) / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1,2,4,6,8")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--soak", type=float, default=600.0, help="seconds of the 8-stream memory run (0: skip)")
    parser.add_argument("--camera-fps", type=int, default=30)
    parser.add_argument("--saturation-streams", type=int, default=8)
    parser.add_argument("--daemon-args", nargs=argparse.REMAINDER, default=[],
                        help="extra `edge-daemon serve` flags, to compare settings (last on the line)")
    args = parser.parse_args()
    reason = rtsp_unavailable()
    if reason:
        print(reason)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="edge-streams-bench-"))
    picture = workdir / "scene.png"
    cv2.imwrite(str(picture), generate_scene(9, 1280, 720).image)

    print("bare session.run, shapes/1:")
    bare1 = bare_throughput("shapes/1", 8, 1)
    bare8 = bare_throughput("shapes/1", 8, 8)
    print(f"  batch 1: {bare1:.1f} images/s   batch 8: {bare8:.1f} images/s")

    camera = RtspCamera(picture, fps=args.camera_fps)
    camera.start()
    daemon = DaemonProcess(["--cache-dir", str(workdir / "cache"), "--state-dir", str(workdir / "state"),
                            "--url-allow-loopback", "true", "--api-url", "", "--log-level", "warning",
                            *args.daemon_args],
                           log_path=workdir / "daemon.log").wait_ready(60)
    pid = daemon.process.pid
    try:
        baseline = cpu_seconds(pid)
        time.sleep(5)
        idle_cpu = (cpu_seconds(pid) - baseline) / 5
        ids, _ = add_streams(daemon.url, camera.url, 1, 0.01, "idle")
        time.sleep(3)
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(10)
        grabbing = (cpu_seconds(pid) - before) / (time.monotonic() - started) - idle_cpu
        remove_streams(daemon.url, ids)
        print(f"\ngrabbing one idle 720p{args.camera_fps} stream (no inference): "
              f"{100 * grabbing:.1f} % of one core (daemon idle: {100 * idle_cpu:.1f} %)")

        print(f"\ncapacity at {args.fps:g} fps per stream, 720p{args.camera_fps} H.264, shapes/1:\n")
        print("| streams | all running after s | inferences/s | target | age p50 ms | age p95 ms | daemon CPU cores "
              "| RSS MB |")
        print("|---|---|---|---|---|---|---|---|")
        best = 0
        for count in (int(c) for c in args.counts.split(",")):
            ids, start_s = add_streams(daemon.url, camera.url, count, args.fps, f"cap{count}-")
            row = measure(daemon.url, pid, args.seconds)
            remove_streams(daemon.url, ids)
            keeps_up = row["inferred_per_s"] >= 0.9 * count * args.fps and row["age_p95_ms"] < 400
            best = count if keeps_up else best
            print(f"| {count} | {start_s:.1f} | {row['inferred_per_s']:.1f} | {count * args.fps:g} | {row['age_p50_ms']:.0f} | "
                  f"{row['age_p95_ms']:.0f} | {row['cpu_cores']:.2f} | {row['rss_mb']:.0f} |", flush=True)
        print(f"\nmost streams at {args.fps:g} fps with p95 frame age < 400 ms: {best}")

        # Side by side: bare session.run again just before (the CPU is shared, so the start-up figure drifts).
        bare = {batch: bare_throughput("shapes/1", args.seconds / 3, batch) for batch in (1, 4, 8)}
        minimal = MinimalPipeline(camera.url, args.saturation_streams).measure(args.seconds)
        single = MinimalPipeline(camera.url, args.saturation_streams, ort_threads=1, callers=3).measure(args.seconds)
        ids, _ = add_streams(daemon.url, camera.url, args.saturation_streams, args.camera_fps, "sat")
        row = measure(daemon.url, pid, args.seconds)
        remove_streams(daemon.url, ids)
        burst_rss = rss_bytes(pid) / 2**20
        ratios = ", ".join(f"{100 * row['inferred_per_s'] / rate:.0f} % of batch {batch} ({rate:.1f}/s)"
                           for batch, rate in bare.items())
        print(f"\nsaturation ({args.saturation_streams} streams asking {args.camera_fps} fps): {row['inferred_per_s']:.1f} inferences/s = {ratios} of bare "
              f"session.run just before; age p95 {row['age_p95_ms']:.0f} ms; daemon CPU {row['cpu_cores']:.2f} "
              f"cores; RSS after the burst {burst_rss:.0f} MB")
        print(f"minimal pipeline, no server ({args.saturation_streams} OpenCV readers + 2 threads of session.run on "
              f"the freshest frames, the daemon's session options, same camera, just before): {minimal:.1f}/s = "
              f"{100 * minimal / bare[1]:.0f} % of bare batch 1; the daemon's saturation = "
              f"{100 * row['inferred_per_s'] / minimal:.0f} % of it. With 3 threads of single-threaded session.run: "
              f"{single:.1f}/s = {100 * single / bare[1]:.0f} % of bare batch 1 (the ceiling on this box)")

        if args.soak > 0:
            ids, _ = add_streams(daemon.url, camera.url, 8, args.fps, "soak")
            samples = []
            started = time.monotonic()
            while time.monotonic() - started < args.soak:
                time.sleep(min(10.0, args.soak / 6))
                samples.append((time.monotonic() - started, rss_bytes(pid) / 2**20))
            listed = requests.get(daemon.url + "/streams", timeout=10).json()["streams"]
            reconnects = sum(stream["reconnects"] for stream in listed if stream["id"] in ids)
            remove_streams(daemon.url, ids)
            print(f"\nRSS with 8 streams at {args.fps:g} fps over {args.soak:.0f} s: " +
                  ", ".join(f"{t:.0f}s {mb:.0f} MB" for t, mb in samples))
            warm = samples[min(1, len(samples) - 1)][1]
            print(f"growth after warm-up: {100 * (samples[-1][1] - warm) / warm:+.1f} %, peak {max(m for _, m in samples):.0f} MB; "
                  f"reconnects during the soak: {reconnects} (a reopened camera is a new decoder)")

        # What the CPU leaves for inference once the 8 cameras are decoded (and, here, encoded by the test camera on
        # the same box): bare session.run while the same streams grab and infer almost nothing. The saturation
        # figure over this one is what serving costs beyond the decoding no setting can skip. It runs after the
        # soak, so the soak starts right after the burst as before (a third set of 8 decoders first raises RSS).
        ids, _ = add_streams(daemon.url, camera.url, 8, 0.01, "decode")
        time.sleep(3)
        cam_before, decoding_started = cpu_seconds(camera.process.pid), time.monotonic()
        decoding = bare_throughput("shapes/1", args.seconds / 3, 1)
        camera_cores = (cpu_seconds(camera.process.pid) - cam_before) / (time.monotonic() - decoding_started)
        remove_streams(daemon.url, ids)
        print(f"\nbare session.run batch 1 while the 8 streams only grab: {decoding:.1f}/s (the test camera's encoder "
              f"took {camera_cores:.2f} cores); the saturation above = {100 * row['inferred_per_s'] / decoding:.0f} % of it")

        # The ceiling by accounting: every stage above at its cheapest and nothing else (no threads, HTTP,
        # publishing or scheduling), for cameras sending no more frames than are inferred (the capacity rows).
        costs = stage_costs(camera, args.seconds / 2)
        bare_now = bare_throughput("shapes/1", args.seconds / 3, 1)
        reader_camera_cores = costs.pop("camera_cores")
        per_inference = sum(costs.values())
        cores = len(os.sched_getaffinity(0))
        ceiling = (cores - reader_camera_cores) / (per_inference / 1000)
        print("\nCPU each inference cannot skip, ms: " + ", ".join(f"{stage} {ms:.2f}" for stage, ms in costs.items()) +
              f"; sum {per_inference:.2f}. Bare session.run batch 1 (all cores, one caller) just after: "
              f"{bare_now:.1f}/s = {1000 * cores / bare_now:.2f} ms of CPU each")
        print(f"ceiling of any stream server here ({cores} cores less the test camera's {reader_camera_cores:.2f} for one "
              f"reader, over that sum; no server cost at all): {ceiling:.0f}/s = {100 * ceiling / bare_now:.0f} % of "
              f"bare batch 1")
    finally:
        daemon.stop()
        camera.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
