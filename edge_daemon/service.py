"""The inference service: model resolution + image decoding + engine run, shared by every API surface.

HTTP routes (and the CLI) only translate their request format into `ImageSource`s and `InferenceParams`,
and call `InferenceService.infer`.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge_daemon.backpressure import EngineGate
from edge_daemon.config import Settings
from edge_daemon.errors import BadRequest
from edge_daemon.images.decode import DecodedImage, DecodeOptions, ImageSource, decode_source
from edge_daemon.images.url_fetch import UrlPolicy
from edge_daemon.inference import InferenceParams, LoadedModel, PreparedImage, StageTimes
from edge_daemon.metrics import Metrics
from edge_daemon.models.manager import ModelManager
from edge_daemon.models.store import ModelId
from edge_daemon.processing import visualise
from edge_daemon.processing.visualise import encode_jpeg


@dataclass(frozen=True)
class Visualisation:
    """What the client asked to see: JSON only, a drawn JPEG, or both."""

    output: str = "json"  # "json" | "image" | "image_and_json"
    labels: bool = False
    stroke: int = 1


@dataclass
class InferenceResult:
    model: LoadedModel
    responses: list[dict[str, Any]]
    times: StageTimes
    decode_seconds: float
    pictures: list[bytes] = field(default_factory=list)  # JPEGs with predictions drawn, when asked for

    def stage_ms(self) -> dict[str, float]:
        """Milliseconds per stage, for the access log."""
        return {"decode": self.decode_seconds * 1000, "preprocess": self.times.preprocess * 1000,
                "inference": self.times.inference * 1000, "postprocess": self.times.postprocess * 1000}


def _full_size(image: DecodedImage) -> np.ndarray:
    """Pixels at the size the client sent (a reduced decode is scaled back up for drawing)."""
    if image.pixels.shape[:2] == (image.original_height, image.original_width):
        return image.pixels
    return cv2.resize(image.pixels, (image.original_width, image.original_height), interpolation=cv2.INTER_LINEAR)


def engine_slots(settings: Settings) -> int:
    """Concurrent engine runs: as many as the cores hold ONNX Runtime's threads, and at least two.

    With one slot the engine idles while a batch's callers pre- and postprocess and the next batch gathers;
    a second run fills those gaps. Eight cameras at saturation on 2 cores (`bench/streams.py --daemon-args
    --engine-slots N`, alternating runs): 166-179 inferences/s with two slots, 148-159 with one, for about
    10 MB more RSS. ONNX Runtime's threads do not spin by default, so two runs sharing the cores cost little."""
    if settings.engine_slots > 0:
        return settings.engine_slots
    cpus = os.cpu_count() or 1
    return max(2, cpus // (settings.ort_threads or cpus))


class InferenceService:
    def __init__(self, settings: Settings, manager: ModelManager | None = None, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics
        self.gate = EngineGate(engine_slots(settings), settings.max_queue, settings.request_timeout)
        self.manager = manager or ModelManager(settings, events=metrics, gate=self.gate)
        self.started_at = time.time()
        self.decode_options = DecodeOptions(
            allow_numpy=settings.allow_numpy_input,
            allow_url=settings.allow_url_input,
            url_policy=UrlPolicy(allow_private=settings.url_allow_private,
                                 allow_loopback=settings.url_allow_loopback,
                                 max_bytes=settings.url_max_bytes, timeout=settings.url_timeout,
                                 allow=tuple(settings.url_allow_hosts), deny=tuple(settings.url_deny_hosts)),
            max_pixels=settings.max_image_pixels,
        )

    def infer(self, model_id: ModelId, sources: list[ImageSource], params: InferenceParams,
              api_key: str | None = None, started: float | None = None, task: str | None = None,
              draw: Visualisation | None = None, inference_id: str | None = None) -> InferenceResult:
        """Resolve the model, decode every image, run them as one batch and stamp ids and timings.

        `task`, when given, must match the model's task (the /infer/{task} routes); `draw` adds pictures.
        """
        started = time.perf_counter() if started is None else started
        model = self.manager.get(model_id, api_key)
        if task is not None and model.task != task:
            raise BadRequest(f"model {model_id} is a {model.task} model, not {task}; use its own route")
        auto_orient = model.preprocessor.auto_orient(params.switches)
        arrival = model.expect()  # a batch gathering for this model waits for this request while it decodes
        try:
            decode_started = time.perf_counter()
            target = model.preprocessor.decode_target(params.switches) if self.settings.fast_decode else None
            images = [decode_source(source, self.decode_options, auto_orient, target) for source in sources]
            decode_seconds = time.perf_counter() - decode_started
            times = StageTimes()
            responses = model.infer(images, params, times, arrival)
        finally:
            if arrival is not None:
                arrival.close()
        if self.metrics is not None:
            self.metrics.observe_inference(str(model_id), len(images), decode_seconds, times.preprocess,
                                           times.inference, times.postprocess)
        pictures = []
        if draw is not None and draw.output != "json":
            colours = model.metadata.colors
            pictures = [encode_jpeg(visualise.draw(_full_size(image), response, colours, draw.labels, draw.stroke))
                        for image, response in zip(images, responses)]
            if draw.output == "image_and_json":
                for response, picture in zip(responses, pictures):
                    response["visualization"] = base64.b64encode(picture).decode("ascii")
        elapsed = time.perf_counter() - started
        for response in responses:
            response["inference_id"] = inference_id or str(uuid.uuid4())
            response["time"] = elapsed
        return InferenceResult(model, responses, times, decode_seconds, pictures)

    def infer_pixels(self, model_id: ModelId, frames: list[np.ndarray] | list[PreparedImage],
                     params: InferenceParams) -> InferenceResult:
        """Frames already decoded (camera streams), as BGR arrays or already prepared by this model: the same
        engines, dynamic batching, engine gate and metrics as HTTP requests, minus the image decode."""
        started = time.perf_counter()
        model = self.manager.get(model_id, None)
        times = StageTimes()
        images = [frame if isinstance(frame, PreparedImage) else DecodedImage.full(frame) for frame in frames]
        responses = model.infer(images, params, times)
        if self.metrics is not None:
            self.metrics.observe_inference(str(model_id), len(frames), 0.0, times.preprocess, times.inference,
                                           times.postprocess)
        elapsed = time.perf_counter() - started
        for response in responses:
            response["inference_id"] = str(uuid.uuid4())
            response["time"] = elapsed
        return InferenceResult(model, responses, times, 0.0)
