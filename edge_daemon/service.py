"""The inference service: model resolution + image decoding + engine run, shared by every API surface.

HTTP routes (and the CLI) only translate their request format into `ImageSource`s and `InferenceParams`,
and call `InferenceService.infer`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from edge_daemon.config import Settings
from edge_daemon.images.decode import DecodeOptions, ImageSource, decode_source
from edge_daemon.images.url_fetch import UrlPolicy
from edge_daemon.inference import InferenceParams, LoadedModel, StageTimes
from edge_daemon.models.manager import ModelManager
from edge_daemon.models.store import ModelId


@dataclass
class InferenceResult:
    model: LoadedModel
    responses: list[dict[str, Any]]
    times: StageTimes
    decode_seconds: float


class InferenceService:
    def __init__(self, settings: Settings, manager: ModelManager | None = None):
        self.settings = settings
        self.manager = manager or ModelManager(settings)
        self.decode_options = DecodeOptions(
            allow_numpy=settings.allow_numpy_input,
            allow_url=settings.allow_url_input,
            url_policy=UrlPolicy(allow_private=settings.url_allow_private,
                                 allow_loopback=settings.url_allow_loopback,
                                 max_bytes=settings.url_max_bytes, timeout=settings.url_timeout),
        )

    def infer(self, model_id: ModelId, sources: list[ImageSource], params: InferenceParams,
              api_key: str | None = None, started: float | None = None) -> InferenceResult:
        """Resolve the model, decode every image, run them as one batch and stamp ids and timings."""
        started = time.perf_counter() if started is None else started
        model = self.manager.get(model_id, api_key)
        auto_orient = model.preprocessor.auto_orient(params.switches)
        decode_started = time.perf_counter()
        images = [decode_source(source, self.decode_options, auto_orient) for source in sources]
        decode_seconds = time.perf_counter() - decode_started
        times = StageTimes()
        responses = model.infer(images, params, times)
        elapsed = time.perf_counter() - started
        for response in responses:
            response["inference_id"] = str(uuid.uuid4())
            response["time"] = elapsed
        return InferenceResult(model, responses, times, decode_seconds)
