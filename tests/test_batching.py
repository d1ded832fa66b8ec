"""Dynamic batching: concurrent requests to one model run as fewer, larger engine batches and each request
still gets exactly its own predictions."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import requests

from tests.support.daemon import ThreadedDaemon


def _image(bgr: tuple[int, int, int]) -> bytes:
    image = np.zeros((60, 80, 3), np.uint8)
    image[:] = bgr
    return cv2.imencode(".png", image)[1].tobytes()


def _summary(answer: dict) -> list[tuple]:
    return sorted((p["class"], p["x"], p["y"], round(p["confidence"], 4)) for p in answer["predictions"])


def test_concurrent_requests_share_batches_and_keep_their_own_answers(make_settings):
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 128, 255), (255, 0, 255), (40, 200, 90)] * 2
    with ThreadedDaemon(make_settings()) as plain:
        expected = [_summary(requests.post(plain.url + "/colour/1?confidence=0.05", data=_image(c)).json())
                    for c in colours]
    with ThreadedDaemon(make_settings(batch_window_ms=200, engine_slots=1), threads=len(colours)) as batched:
        requests.post(batched.url + "/colour/1", data=_image(colours[0]))  # load
        model = batched.service.manager.loaded()[0]
        before = model.batcher.batches
        answers: list[dict | None] = [None] * len(colours)
        barrier = threading.Barrier(len(colours))

        def call(index: int) -> None:
            barrier.wait()
            answers[index] = requests.post(batched.url + "/colour/1?confidence=0.05",
                                           data=_image(colours[index])).json()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(colours))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batches = model.batcher.batches - before
    assert [_summary(answer) for answer in answers] == expected
    assert batches < len(colours), f"{len(colours)} requests ran as {batches} batches"


def test_fixed_batch_models_are_never_batched(make_settings):
    with ThreadedDaemon(make_settings(batch_window_ms=50)) as server:
        assert requests.post(server.url + "/colour-v5/1", data=_image((0, 0, 255))).status_code == 200
        model = server.service.manager.loaded()[0]
        assert model.batch_size == 1 and model.batcher is None


def test_a_batch_holding_everyone_runs_without_waiting_out_the_window(make_settings):
    """Requests that arrive together are batched, and the batch runs as soon as nobody else is on the way: a
    long window only bounds how long a batch may wait for stragglers, it is not a delay every batch pays."""
    window_ms = 3000
    with ThreadedDaemon(make_settings(batch_window_ms=window_ms, engine_slots=1), threads=4) as server:
        requests.post(server.url + "/colour/1", data=_image((0, 0, 255))).raise_for_status()  # load
        model = server.service.manager.loaded()[0]
        before = model.batcher.batches
        barrier = threading.Barrier(3)
        elapsed: list[float] = []

        def call(colour: tuple[int, int, int]) -> None:
            barrier.wait()
            started = time.monotonic()
            requests.post(server.url + "/colour/1", data=_image(colour)).raise_for_status()
            elapsed.append(time.monotonic() - started)

        threads = [threading.Thread(target=call, args=(c,)) for c in [(0, 0, 255), (0, 255, 0), (255, 0, 0)]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batches = model.batcher.batches - before
    assert len(elapsed) == 3 and max(elapsed) < window_ms / 2000, f"answers took {elapsed} s"
    assert batches <= 3
