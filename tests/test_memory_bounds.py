"""Memory that follows the load: ONNX Runtime's arena gives a burst back, glibc's heap is capped and trimmed,
and camera frames nobody will infer on are never converted to pixels. Real sessions, a real RTSP camera."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from bench.process import minor_faults
from edge_daemon.engines.arena_trim import ArenaTrimPolicy
from edge_daemon.errors import ServiceUnavailable
from edge_daemon.heap import HeapKeeper
from edge_daemon.images.url_fetch import UrlPolicy
from edge_daemon.inference import InferenceParams, LoadedModel, PreparedImage
from edge_daemon.scenes import generate_scene
from edge_daemon.streams.config import parse_stream
from edge_daemon.streams.grabber import FrameBuffers, FrameSlot, Grabber, Status
from edge_daemon.streams.sources import OpenContext
from tests.support.cameras import RtspCamera, rtsp_unavailable

SHAPES = Path(__file__).resolve().parents[1] / "edge_daemon" / "default_models" / "shapes" / "1" / "weights.onnx"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_arena_shrinks_once_a_period_after_a_burst_and_never_under_a_steady_load():
    clock = FakeClock()
    policy = ArenaTrimPolicy(30.0, clock)
    steady = []
    for second in range(120):  # batches of 1-4 all the time: every period has the same largest batch
        clock.now = second
        steady.append(policy.should_shrink(1 + second % 4))
    assert not any(steady)
    clock.now = 121
    assert not policy.should_shrink(16)  # the burst itself
    shrinks = []
    for second in range(122, 240):
        clock.now = second
        shrinks.append(policy.should_shrink(2))
    assert sum(shrinks) == 1, "one shrink after the burst's period, then the smaller load holds"
    assert shrinks.index(True) + 122 >= 150, "not before a whole period has passed"
    assert not ArenaTrimPolicy(0.0, clock).should_shrink(16), "0 turns it off"


BURST_SCRIPT = """
import json, os, sys, time
import numpy as np
from bench.process import rss_bytes
from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine
engine = OnnxRuntimeEngine(sys.argv[1], intra_op_threads=1, arena_trim_seconds=0.5)
small = np.random.default_rng(0).random((1, 3, 384, 384), dtype=np.float32)
engine.run(small)
settled = rss_bytes(os.getpid())
engine.run(np.repeat(small, 16, axis=0))
after_burst = rss_bytes(os.getpid())
time.sleep(0.6)
engine.run(small)  # the burst's period ends; a period whose largest batch is 1 begins
time.sleep(0.6)
engine.run(small)  # ... and ends: this run shrinks the arena
print(json.dumps({"settled": settled, "after_burst": after_burst, "after_shrink": rss_bytes(os.getpid()),
                  "shrinks": engine.arena_trim.shrinks}))
"""


def test_a_burst_of_large_batches_is_given_back_to_the_os():
    """In a fresh process, as a daemon is: in this long-lived test process, earlier tests' freed heap can
    absorb the burst without RSS moving, and the test would prove nothing."""
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", BURST_SCRIPT, str(SHAPES)], capture_output=True, text=True,
                          timeout=120, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo),
                                                      "ORT_DISABLE_TELEMETRY": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    assert rss["after_burst"] - rss["settled"] > 60 * 2**20, "a batch of 16 grows the arena (else this proves nothing)"
    assert rss["shrinks"] == 1
    assert rss["after_shrink"] < rss["after_burst"] - 50 * 2**20, rss


KEEPER_SCRIPT = """
import json, sys, time
from edge_daemon.heap import HeapKeeper
keeper = HeapKeeper(arenas=2, trim_seconds=0.05).start()
deadline = time.monotonic() + 5
while keeper.available and keeper.trims < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
keeper.stop()
print(json.dumps({"available": keeper.available, "trims": keeper.trims}))
"""


def test_heap_keeper_caps_arenas_and_trims_on_glibc():
    """In a child process: the keeper sets process-wide malloc parameters that must not leak into this one."""
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", KEEPER_SCRIPT], capture_output=True, text=True, timeout=60,
                          cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["available"]:
        pytest.skip("not glibc: malloc arenas cannot be capped or trimmed here")
    assert result["trims"] >= 2


def test_a_request_does_not_page_fault_its_buffers_in_anew(tmp_path):
    """The daemon's heap keeper trims free memory every period, so free() must not: with glibc's own thresholds
    the capped arenas gave each request's buffers back at its end and faulted them in again at the next (about
    470 page faults, 1-2 ms of CPU, per shapes/1 request on a 512x600 photo)."""
    if not Path("/proc/self/stat").exists() or not HeapKeeper(0, 0).available:
        pytest.skip("needs glibc and /proc")
    from edge_daemon.scenes import encode_jpeg
    from tests.support.daemon import DaemonProcess

    photos = [encode_jpeg(generate_scene(seed, width, height).image, 90)  # as cameras and apps of several sizes
              for seed, (width, height) in enumerate([(600, 512), (1280, 720), (640, 480)])]
    daemon = DaemonProcess(["--cache-dir", str(tmp_path / "cache"), "--api-url", "", "--log-level", "warning"],
                           log_path=tmp_path / "daemon.log").wait_ready(60)
    try:
        with requests.Session() as session:
            def post(index: int) -> None:
                reply = session.post(daemon.url + "/shapes/1", data=photos[index % len(photos)],
                                     headers={"Content-Type": "image/jpeg"})
                assert reply.status_code == 200 and reply.json()["predictions"], reply.text

            for index in range(30):  # warm: model loaded, arenas and pools at their working size
                post(index)
            before = minor_faults(daemon.process.pid)
            for index in range(60):
                post(index)
            per_request = (minor_faults(daemon.process.pid) - before) / 60
    finally:
        daemon.stop()
    assert per_request < 60, f"{per_request:.0f} page faults per request"


@pytest.fixture
def camera(tmp_path: Path):
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)
    picture = tmp_path / "scene.png"
    cv2.imwrite(str(picture), generate_scene(9, 640, 360).image)
    running = RtspCamera(picture, fps=30)
    running.start()
    yield running
    running.stop()


def test_only_the_frame_inference_waits_for_is_converted_and_it_is_fresh(camera):
    config = parse_stream({"id": "cam", "source": camera.url, "model_id": "shapes/1"})
    context = OpenContext(10.0, 5.0, UrlPolicy(allow_private=True, allow_loopback=True, timeout=5.0))
    slot, status = FrameSlot(), Status()
    grabber = Grabber(config, context, slot, status).start()
    try:
        deadline = time.monotonic() + 20
        while status.frames_read < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status.frames_read >= 30, f"camera frames never arrived: {status.last_error}"
        assert slot.peek() is None, "no consumer asked, so no frame was converted"
        assert status.frames_dropped == status.frames_read
        for _ in range(3):
            asked = time.time()
            frame = slot.take(2.0)
            assert frame is not None and frame.pixels.shape == (360, 640, 3)
            assert frame.captured_at >= asked, "the frame handed over was read after inference asked for it"
            time.sleep(0.2)
        assert status.frames_read - status.frames_dropped == 3

        # Inference says when it comes next: about one camera frame before then the reader starts converting,
        # so the frame is ready at once and fresh, and the ~15 frames grabbed meanwhile are not converted.
        converted = status.frames_read - status.frames_dropped
        slot.want_by(time.monotonic() + 0.5)
        time.sleep(0.5)
        asked = time.monotonic()
        frame = slot.take(0.0)
        assert frame is not None, "the frame was converted before inference came for it"
        assert asked - frame.monotonic < 0.1, "and it is the newest, not one from when want_by was called"
        assert 1 <= status.frames_read - status.frames_dropped - converted <= 4
    finally:
        grabber.stop()


class PreparingConverter:
    """What a stream does in the reader thread: the frame's network-size image for a real loaded model."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.buffers: set[int] = set()
        self.wholes: dict[int, np.ndarray] = {}  # id of each prepared image: a copy of the whole frame
        self.watching = False

    def prepare(self, pixels: np.ndarray) -> PreparedImage:
        self.buffers.add(pixels.__array_interface__["data"][0])
        prepared = self.model.prepare(pixels, InferenceParams())
        self.wholes[id(prepared)] = pixels.copy()
        return prepared

    def keeps_pixels(self) -> bool:
        return self.watching


def test_frames_wait_for_inference_at_network_size_and_answer_as_whole_frames_do(camera):
    """Eight 720p cameras held ~20 whole 2.7 MB frames between them; now readers convert into shared buffers and
    only the model's 384 px image waits, with the very same answer as inferring on the whole frame."""
    model = LoadedModel("shapes/1", SHAPES.parent)
    converter = PreparingConverter(model)
    config = parse_stream({"id": "cam", "source": camera.url, "model_id": "shapes/1"})
    context = OpenContext(10.0, 5.0, UrlPolicy(allow_private=True, allow_loopback=True, timeout=5.0))
    slot, status = FrameSlot(), Status()
    grabber = Grabber(config, context, slot, status, converter=converter).start()
    try:
        frames = [slot.take(10.0) for _ in range(5)]
        assert all(frame is not None for frame in frames), f"camera frames never arrived: {status.last_error}"
        # The reader's first frame goes on whole (it tells the size buffers must have); it may be overtaken.
        frames = frames[1:] if frames[0].pixels is not None else frames[:4]
        for frame in frames:
            assert frame.pixels is None and (frame.width, frame.height) == (640, 360)
            assert frame.prepared.pixels.shape == (384, 384, 3)
        assert len(converter.buffers) == 1, "every frame was converted into the same buffer"

        first = frames[0].prepared
        whole = model.infer([converter.wholes[id(first)]], InferenceParams())[0]
        prepared = model.infer([first], InferenceParams())[0]
        assert whole["predictions"], "the scene's shapes are found (else the comparison proves little)"
        def answer(response: dict) -> list[dict]:
            return [{k: v for k, v in p.items() if k != "detection_id"} for p in response["predictions"]]  # random ids

        assert answer(prepared) == answer(whole) and prepared["image"] == whole["image"]

        converter.watching = True  # someone asks for pictures: whole frames come too, each its own array
        kept = [slot.take(10.0) for _ in range(4)][2:]  # the first two may have been converted before
        assert all(frame is not None and frame.pixels.shape == (360, 640, 3) for frame in kept)
        assert kept[0].pixels is not kept[1].pixels and not np.shares_memory(kept[0].pixels, kept[1].pixels)
    finally:
        grabber.stop()

    reloaded = LoadedModel("shapes/1", SHAPES.parent)
    with pytest.raises(ServiceUnavailable, match="reloaded"):
        reloaded.infer([first], InferenceParams())


def test_frame_buffers_are_reused_and_at_most_keep_stay():
    buffers = FrameBuffers(keep=2, wait=0.05)
    taken = [buffers.take((360, 640, 3)) for _ in range(3)]  # a third reader waited 50 ms, then got its own
    assert len({id(buffer) for buffer in taken}) == 3
    for buffer in taken:
        buffers.give(buffer)
    assert buffers.held == 2, "the third is freed, not kept"
    again = buffers.take((360, 640, 3))
    assert any(again is buffer for buffer in taken[:2])
    other = buffers.take((720, 1280, 3))
    assert other.shape == (720, 1280, 3), "a camera of another size gets its own"
    assert buffers.held == 0, "and the spare of the other size made room for it: never more than keep buffers"


def test_a_reader_waits_for_a_buffer_rather_than_allocating_another():
    """Eight cameras converting at once must not mean eight 2.7 MB arrays: the ninth conversion waits its turn."""
    buffers = FrameBuffers(keep=2, wait=10.0)
    first, second = buffers.take((360, 640, 3)), buffers.take((360, 640, 3))
    got: list[np.ndarray] = []
    waiter = threading.Thread(target=lambda: got.append(buffers.take((360, 640, 3))))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got, "a third buffer was handed out while two were in use"
    buffers.give(first)
    waiter.join(5)
    assert got and got[0] is first, "the waiting reader got the buffer given back"
    buffers.give(second)
    buffers.give(got[0])
    assert buffers.held == 2