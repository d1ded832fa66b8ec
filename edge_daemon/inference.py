"""Where the engine runs: a loaded model turns decoded images into task-shaped responses.

One `LoadedModel` per model id: its metadata, its engine, its family (`edge_daemon.families`: which decoder
and which input normalisation) and its preprocessor. `infer` preprocesses a batch, runs the engine once per
engine batch, and hands each image's raw outputs to the family's decoder.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_daemon import families
from edge_daemon.backpressure import EngineGate
from edge_daemon.batching import Arrival, DynamicBatcher
from edge_daemon.engines import Engine, create_engine
from edge_daemon.errors import ModelArtifactError, ServiceUnavailable, stage
from edge_daemon.families.base import ModelFacts
from edge_daemon.images.decode import DecodedImage
from edge_daemon.models.metadata import ModelMetadata, read_metadata
from edge_daemon.models.onnx_info import read_onnx_info
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry, Preprocessor
from edge_daemon.responses import image_response

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = 640


@dataclass
class StageTimes:
    """Seconds spent in each stage of one `infer` call (reported in logs and, later, metrics)."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0


def _input_size(engine: Engine, metadata: ModelMetadata) -> tuple[int, int]:
    """Network input (width, height): the ONNX shape, else the metadata's resize, else 640."""
    shape = engine.inputs[0].shape
    if len(shape) != 4:
        raise ModelArtifactError(f"model input must be NCHW, got shape {list(shape)}")
    height, width = shape[2], shape[3]
    resize = metadata.preprocessing.get("resize") or {}
    try:
        width = width or int(resize.get("width") or DEFAULT_INPUT_SIZE)
        height = height or int(resize.get("height") or DEFAULT_INPUT_SIZE)
    except (TypeError, ValueError):
        raise ModelArtifactError("PREPROCESSING.resize width/height must be integers") from None
    return width, height


@dataclass(frozen=True)
class PreparedImage:
    """An image already resized to the network input (uint8 BGR) by `model.prepare`, with its geometry.

    Camera readers prepare a frame as soon as it is converted, so what waits for inference is a network-size
    image (0.4 MB for a 384 px model) instead of the whole 720p frame (2.7 MB), and the frame's buffer is reused
    at once. Only the model instance that prepared it may infer on it: a reloaded model may resize otherwise.
    """

    model: LoadedModel
    pixels: np.ndarray
    geometry: Geometry
    seconds: float  # preprocessing time, reported with the inference that uses it


class LoadedModel:
    def __init__(self, model_id: str, folder: Path, engine: Engine | None = None, intra_op_threads: int = 0,
                 gate: EngineGate | None = None, batch_window: float = 0.0, max_batch: int = 16,
                 metadata: ModelMetadata | None = None):
        self.model_id = model_id
        self.folder = folder
        self.gate = gate
        self.metadata = metadata or read_metadata(folder, model_id)
        self.engine = engine or create_engine(folder / self.metadata.weights, intra_op_threads=intra_op_threads)
        self._active = 0
        self._retired = False
        self._closed = False
        self._lifecycle = threading.Lock()
        try:
            self._check_engine()
        except BaseException:
            # Refused: free the engine now, not when the garbage collector reaches the traceback's frames
            # (a refused 110 MB export otherwise held its memory per failed load).
            self._close_engine()
            raise
        self.batcher = (DynamicBatcher(self._run_engine, max_batch, batch_window, name=f"batcher {model_id}",
                                       workers=gate.slots if gate else 1)
                        if batch_window > 0 and self.batch_size is None else None)

    def _check_engine(self) -> None:
        """Input size, a warm-up run, the family whose layout the outputs fit, and the preprocessor."""
        self.input_width, self.input_height = _input_size(self.engine, self.metadata)
        batch_dim = self.engine.inputs[0].shape[0]
        self.batch_size: int | None = batch_dim  # None: any batch size
        outputs = self._warm_up()
        facts = ModelFacts(self.metadata, [output[0] for output in outputs],
                           [spec.name for spec in self.engine.outputs], (self.input_width, self.input_height),
                           read_onnx_info(self.folder / self.metadata.weights))
        with stage("layout"):
            self.family, self.decoder = families.resolve(facts)
        self.class_names = facts.class_names
        self.preprocessor = Preprocessor(self.metadata.preprocessing, self.input_width, self.input_height,
                                         families.input_spec(self.family, facts))

    def retire(self) -> None:
        """Unloaded: free the engine (GPU memory on TensorRT) once no request is still using it."""
        with self._lifecycle:
            self._retired = True
            idle = self._active == 0
        if idle:
            self._close_engine()

    def _close_engine(self) -> None:
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def _run_engine(self, batch: np.ndarray) -> list[np.ndarray]:
        """One engine call, inside the bounded queue in front of the engines when there is one."""
        if self.gate is None:
            return self.engine.run(batch)
        with self.gate.enter():
            return self.engine.run(batch)

    @property
    def task(self) -> str:
        return self.metadata.task

    def _warm_up(self) -> list[np.ndarray]:
        """Run one blank batch (the first run also allocates the engine's buffers)."""
        blank = np.zeros((self.batch_size or 1, 3, self.input_height, self.input_width), dtype=np.float32)
        try:
            return self.engine.run(blank)
        except ServiceUnavailable:
            raise  # a remote engine's server went away: the model is fine, the load is retried later
        except Exception as error:  # noqa: BLE001 (engines raise backend-specific types)
            failed = ModelArtifactError(f"model failed its validation run: {str(error)[:300]}")
            failed.failure_stage = "warmup"  # type: ignore[attr-defined]
            raise failed from None

    def expect(self) -> Arrival | None:
        """Tell the dynamic batcher a request is on its way (decoding), so a batch being gathered waits for it."""
        return self.batcher.expect() if self.batcher else None

    def _run_batches(self, tensor: np.ndarray, arrival: Arrival | None) -> list[list[np.ndarray]]:
        """Run the engine over the batch in chunks it accepts; returns per-image output lists."""
        per_image: list[list[np.ndarray]] = []
        step = self.batch_size or len(tensor)
        for start in range(0, len(tensor), step):
            chunk = tensor[start:start + step]
            real = len(chunk)
            if self.batch_size and real < self.batch_size:
                padding = np.zeros((self.batch_size - real, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            outputs = self.batcher.run(chunk, arrival) if self.batcher else self._run_engine(chunk)
            for index in range(real):
                per_image.append([output[index] for output in outputs])
        return per_image

    def prepare(self, image: DecodedImage | np.ndarray, params: InferenceParams) -> PreparedImage:
        """Preprocess one image now (resize, pad) for a later `infer`; see PreparedImage."""
        started = time.perf_counter()
        pixels, geometry = self.preprocessor.prepare(image, params.switches)
        return PreparedImage(self, pixels, geometry, time.perf_counter() - started)

    def infer(self, images: list[DecodedImage] | list[np.ndarray] | list[PreparedImage], params: InferenceParams,
              times: StageTimes | None = None, arrival: Arrival | None = None) -> list[dict[str, Any]]:
        """Preprocess, run and decode `images` (decoded BGR arrays, or prepared ones); one response dict per image.

        `arrival`: from `expect`, when the caller announced the request before decoding it."""
        arrival = arrival or self.expect()
        with self._lifecycle:
            if self._closed:
                raise ServiceUnavailable(f"model {self.model_id} was just unloaded; retry",
                                         headers={"Retry-After": "1"})
            self._active += 1
        try:
            return self._infer(images, params, times or StageTimes(), arrival)
        finally:
            if arrival is not None:
                arrival.close()  # failed before reaching the batcher
            with self._lifecycle:
                self._active -= 1
                close_now = self._retired and self._active == 0
            if close_now:
                self._close_engine()

    def _infer(self, images: list[DecodedImage] | list[np.ndarray] | list[PreparedImage], params: InferenceParams,
               times: StageTimes, arrival: Arrival | None) -> list[dict[str, Any]]:
        started = time.perf_counter()
        prepared: list[np.ndarray] = []
        geometries: list[Geometry] = []
        for image in images:
            if isinstance(image, PreparedImage):
                if image.model is not self:
                    raise ServiceUnavailable(f"model {self.model_id} was reloaded after this frame was prepared; "
                                             "the next frame is prepared by the new one", headers={"Retry-After": "0"})
                network_image, geometry = image.pixels, image.geometry
                times.preprocess += image.seconds
            else:
                network_image, geometry = self.preprocessor.prepare(image, params.switches)
            prepared.append(network_image)
            geometries.append(geometry)
        tensor = self.preprocessor.to_tensor(prepared)
        after_pre = time.perf_counter()
        outputs = self._run_batches(tensor, arrival)
        after_run = time.perf_counter()
        responses = [self._decode(output, geometry, params) for output, geometry in zip(outputs, geometries)]
        times.preprocess += after_pre - started
        times.inference += after_run - after_pre
        times.postprocess += time.perf_counter() - after_run
        return responses

    def _decode(self, outputs: list[np.ndarray], geometry: Geometry, params: InferenceParams) -> dict[str, Any]:
        return image_response(geometry, **self.decoder.decode(outputs, geometry, params))
