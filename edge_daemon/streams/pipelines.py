"""Roboflow's `/inference_pipelines/*` routes on top of streams, with Roboflow's request and response shapes.

`initialise` takes Roboflow's InitialisePipelinePayload: a VideoConfiguration, a WorkflowConfiguration with an
inline one-model workflow (see workflow.py), and a MemorySinkConfiguration. Each video reference becomes a
stream (origin "pipeline"), whose results go into a bounded FIFO (`results_buffer_size`; the oldest entry is
dropped when full, as Roboflow's deque does) that `consume` pops one entry at a time. A pipeline nobody
consumes from for `consumption_timeout` seconds terminates itself.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import Any

import falcon
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_daemon.api.openapi import OpenApiRegistry, Operation, error_responses, json_content, path_parameter
from edge_daemon.errors import ApiError, NotFound, Unprocessable
from edge_daemon.models.store import ModelId
from edge_daemon.streams.config import describe_errors
from edge_daemon.streams.http import read_json
from edge_daemon.streams.manager import StreamManager
from edge_daemon.streams.masking import mask_url
from edge_daemon.streams.sinks import Message, SinkStats
from edge_daemon.streams.stream import Stream
from edge_daemon.streams.workflow import OneModelWorkflow, parse_workflow

MAX_PIPELINES = 16
STATUS_UPDATES = 50


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")  # Roboflow's payload carries tuning fields edge-daemon ignores


class VideoConfiguration(_Lenient):
    type: str = "VideoConfiguration"
    video_reference: str | int | list[str | int] = Field(description="camera URL, file, device index, or a list")
    max_fps: float | None = Field(None, gt=0, le=60)


class WorkflowConfiguration(_Lenient):
    type: str = "WorkflowConfiguration"
    workflow_specification: dict[str, Any] | None = None
    workspace_name: str | None = None
    workflow_id: str | None = None
    image_input_name: str = "image"
    workflows_parameters: dict[str, Any] | None = None


class MemorySinkConfiguration(_Lenient):
    type: str = "MemorySinkConfiguration"
    results_buffer_size: int = Field(64, ge=1, le=4096)


class InitialisePipelinePayload(_Lenient):
    """Roboflow's initialise body (inference 1.8)."""

    video_configuration: VideoConfiguration
    processing_configuration: WorkflowConfiguration
    sink_configuration: MemorySinkConfiguration = Field(default_factory=MemorySinkConfiguration)
    consumption_timeout: float | None = Field(None, gt=0)
    api_key: str | None = None


class MemorySink:
    """A stream's results, rendered as the workflow's outputs, into its pipeline's bounded FIFO."""

    def __init__(self, pipeline: Pipeline, source_index: int):
        self.label = "memory:0"
        self.pipeline = pipeline
        self.source_index = source_index
        self._stats = SinkStats()

    def send(self, message: Message) -> None:
        if message.topic == "state":
            self.pipeline.status_update(self.source_index, orjson.loads(message.body))
            return
        if message.topic != "detections":
            return
        result = orjson.loads(message.body)
        dropped = self.pipeline.push(self.source_index, self.pipeline.workflow.render(result), {
            "frame_timestamp": result["frame_timestamp"], "frame_id": result["frame_id"],
            "source_id": self.source_index})
        self._stats.sent += 1
        self._stats.dropped += dropped

    def describe_classes(self, class_names: list[str]) -> None:
        pass

    def stats(self) -> SinkStats:
        return SinkStats(self._stats.sent, self._stats.dropped, 0, {"buffered": len(self.pipeline.buffer)})

    def close(self) -> None:
        pass


class Pipeline:
    def __init__(self, pipeline_id: str, workflow: OneModelWorkflow, sources: list[str | int], buffer_size: int,
                 consumption_timeout: float | None):
        self.id = pipeline_id
        self.workflow = workflow
        self.sources = sources
        self.streams: list[Stream] = []
        self.buffer: collections.deque[tuple[int, dict[str, Any], dict[str, Any]]] = collections.deque(
            maxlen=buffer_size)
        self.updates: collections.deque[dict[str, Any]] = collections.deque(maxlen=STATUS_UPDATES)
        self.consumption_timeout = consumption_timeout
        self.last_consumed = time.monotonic()
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def push(self, source: int, output: dict[str, Any], metadata: dict[str, Any]) -> int:
        with self.lock:
            full = len(self.buffer) == self.buffer.maxlen
            self.buffer.append((source, output, metadata))
            return int(full)

    def pop(self) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        with self.lock:
            self.last_consumed = time.monotonic()
            return self.buffer.popleft() if self.buffer else None

    def status_update(self, source: int, state: dict[str, Any]) -> None:
        severity = "WARNING" if state.get("state") in ("reconnecting", "failed") else "INFO"
        with self.lock:
            self.updates.append({"timestamp": state.get("at"), "severity": severity,
                                 "event_type": "SOURCE_STATE_UPDATE",
                                 "payload": {"state": state.get("state"), "last_error": state.get("last_error"),
                                             "source_id": source},
                                 "context": "video_source"})

    def expired(self) -> bool:
        return (self.consumption_timeout is not None
                and time.monotonic() - self.last_consumed > self.consumption_timeout)


def _context(pipeline_id: str | None) -> dict[str, Any]:
    return {"request_id": str(uuid.uuid4()), "pipeline_id": pipeline_id}


def _source(reference: str | int) -> str:
    return f"/dev/video{reference}" if isinstance(reference, int) else reference


class PipelineRegistry:
    def __init__(self, manager: StreamManager):
        self.manager = manager
        self.pipelines: dict[str, Pipeline] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def initialise(self, payload: InitialisePipelinePayload) -> Pipeline:
        processing = payload.processing_configuration
        if processing.workflow_specification is None:
            if processing.workflow_id or processing.workspace_name:
                raise Unprocessable("processing_configuration.workflow_id: workflows stored on Roboflow's platform "
                                    "cannot be fetched here; send an inline workflow_specification")
            raise Unprocessable("processing_configuration.workflow_specification: required")
        workflow = parse_workflow(processing.workflow_specification, processing.workflows_parameters,
                                  processing.image_input_name)
        model = self.manager.service.manager.get(ModelId.parse(workflow.model_id), payload.api_key)
        if model.task != workflow.task:
            raise Unprocessable(f"processing_configuration.workflow_specification.steps[0].model_id: "
                                f"{workflow.model_id} is a {model.task} model, not {workflow.task}")
        references = payload.video_configuration.video_reference
        sources = references if isinstance(references, list) else [references]
        if not sources or len(sources) > 8:
            raise Unprocessable("video_configuration.video_reference: give 1 to 8 sources")
        with self.lock:
            if len(self.pipelines) >= MAX_PIPELINES:
                raise ApiError(f"at most {MAX_PIPELINES} pipelines run at once; terminate one first", 503)
        pipeline_id = str(uuid.uuid4())
        pipeline = Pipeline(pipeline_id, workflow, sources, payload.sink_configuration.results_buffer_size,
                            payload.consumption_timeout)
        max_fps = payload.video_configuration.max_fps or 30.0
        try:
            for index, reference in enumerate(sources):
                config: dict[str, Any] = {"id": f"pipeline-{pipeline_id[:8]}-{index}", "source": _source(reference),
                                          "model_id": workflow.model_id, "max_fps": max_fps}
                for key in ("confidence", "iou_threshold", "max_detections"):
                    if getattr(workflow, key) is not None:
                        config[key] = getattr(workflow, key)
                if workflow.classes:
                    config["classes"] = workflow.classes
                try:
                    stream = self.manager.create(config, origin="pipeline",
                                                 extra_sinks=[MemorySink(pipeline, index)])
                except ApiError as error:
                    raise Unprocessable(error.message.replace("invalid stream: source",
                                                              "video_configuration.video_reference")) from None
                pipeline.streams.append(stream)
        except BaseException:
            for stream in pipeline.streams:
                self.manager.delete(stream.config.id, origin="pipeline")
            raise
        with self.lock:
            self.pipelines[pipeline_id] = pipeline
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="pipeline reaper", daemon=True)
                self._reaper.start()
        return pipeline

    def get(self, pipeline_id: str) -> Pipeline:
        with self.lock:
            pipeline = self.pipelines.get(pipeline_id)
        if pipeline is None:
            raise NotFound(f"no inference pipeline {pipeline_id!r}")
        return pipeline

    def terminate(self, pipeline_id: str) -> None:
        with self.lock:
            pipeline = self.pipelines.pop(pipeline_id, None)
        if pipeline is None:
            raise NotFound(f"no inference pipeline {pipeline_id!r}")
        for stream in pipeline.streams:
            try:
                self.manager.delete(stream.config.id, origin="pipeline")
            except NotFound:
                pass

    def close(self) -> None:
        self._stop.set()
        for pipeline_id in list(self.pipelines):
            self.terminate(pipeline_id)

    def _reap(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                expired = [p.id for p in self.pipelines.values() if p.expired()]
            for pipeline_id in expired:
                try:
                    self.terminate(pipeline_id)
                except NotFound:
                    pass

    def report(self, pipeline: Pipeline) -> dict[str, Any]:
        """Roboflow's watchdog report, from the streams' own counters."""
        latency, metadata, inferred = [], [], 0
        for index, stream in enumerate(pipeline.streams):
            snapshot = stream.snapshot()
            inferred += snapshot["frames"]["inferred"]
            info = snapshot["source_info"]
            latest = stream.latest
            latency.append({"source_id": index, "frame_decoding_latency": None,
                            "inference_latency": latest.get("time") if latest else None,
                            "e2e_latency": None})
            metadata.append({"source_properties": {"width": info.get("width"), "height": info.get("height"),
                                                   "total_frames": None, "is_file": stream.config.is_local
                                                   and stream.config.kind == "file", "fps": info.get("fps"),
                                                   "is_reconnectable": stream.config.kind != "file"},
                             "source_reference": mask_url(stream.config.source), "source_id": index,
                             "state": snapshot["state"], "last_error": snapshot["last_error"]})
        with pipeline.lock:
            updates = list(pipeline.updates)
        elapsed = max(1e-6, time.monotonic() - pipeline.started)
        return {"video_source_status_updates": updates, "latency_reports": latency,
                "inference_throughput": round(inferred / elapsed, 3), "sources_metadata": metadata}


def _ok(pipeline_id: str | None, **extra: Any) -> dict[str, Any]:
    return {"status": "success", "context": _context(pipeline_id), **extra}


class _Base:
    def __init__(self, registry: PipelineRegistry):
        self.registry = registry


class ListResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self.registry.lock:
            ids = list(self.registry.pipelines)
        resp.media = _ok(None, pipelines=ids)


class InitialiseResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req)
        if not isinstance(body, dict):
            raise Unprocessable("body: must be a JSON object")
        try:
            payload = InitialisePipelinePayload.model_validate(body)
        except ValidationError as error:
            raise Unprocessable("invalid pipeline: " + describe_errors(error)) from None
        resp.media = _ok(self.registry.initialise(payload).id)


class StatusResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, pipeline_id: str) -> None:
        resp.media = _ok(pipeline_id, report=self.registry.report(self.registry.get(pipeline_id)))


class PauseResource(_Base):
    paused = True

    def on_post(self, req: falcon.Request, resp: falcon.Response, pipeline_id: str) -> None:
        for stream in self.registry.get(pipeline_id).streams:
            self.registry.manager.set_paused(stream.config.id, self.paused)
        resp.media = _ok(pipeline_id)


class ResumeResource(PauseResource):
    paused = False


class TerminateResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response, pipeline_id: str) -> None:
        self.registry.terminate(pipeline_id)
        resp.media = _ok(pipeline_id)


class ConsumeResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, pipeline_id: str) -> None:
        pipeline = self.registry.get(pipeline_id)
        excluded: set[str] = set()
        if req.content_length:
            body = read_json(req)
            fields = body.get("excluded_fields") if isinstance(body, dict) else None
            if fields is not None and not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
                raise Unprocessable("excluded_fields: must be a list of output names")
            excluded = set(fields or [])
        entry = pipeline.pop()
        if entry is None:
            resp.media = _ok(pipeline_id, outputs=[], frames_metadata=[])
            return
        source, output, metadata = entry
        outputs: list[Any] = [None] * len(pipeline.sources)
        frames: list[Any] = [None] * len(pipeline.sources)
        outputs[source] = {name: value for name, value in output.items() if name not in excluded}
        frames[source] = metadata
        resp.media = _ok(pipeline_id, outputs=outputs, frames_metadata=frames)

    on_post = on_get


_ENVELOPE = {"type": "object", "required": ["status", "context"],
             "properties": {"status": {"type": "string"}, "context": {"type": "object"}}}


def register(app: falcon.App, openapi: OpenApiRegistry, manager: StreamManager) -> PipelineRegistry:
    registry = PipelineRegistry(manager)
    openapi.add_schemas(InitialisePipelinePayload, VideoConfiguration, WorkflowConfiguration,
                        MemorySinkConfiguration)
    pipeline_id = path_parameter("pipeline_id", "The pipeline's id (from initialise)")
    routes = (
        ("/inference_pipelines/list", ListResource, [("get", "List running inference pipelines", [])]),
        ("/inference_pipelines/initialise", InitialiseResource,
         [("post", "Start a pipeline: video sources + a one-model workflow + a memory sink", [])]),
        ("/inference_pipelines/{pipeline_id}/status", StatusResource, [("get", "A pipeline's report", [404])]),
        ("/inference_pipelines/{pipeline_id}/pause", PauseResource, [("post", "Pause a pipeline", [404])]),
        ("/inference_pipelines/{pipeline_id}/resume", ResumeResource, [("post", "Resume a pipeline", [404])]),
        ("/inference_pipelines/{pipeline_id}/terminate", TerminateResource,
         [("post", "Stop and remove a pipeline", [404])]),
        ("/inference_pipelines/{pipeline_id}/consume", ConsumeResource,
         [("get", "Pop the oldest buffered result (empty lists when none)", [400, 404, 413, 422]),
          ("post", "Pop the oldest buffered result (as GET, for clients that cannot send a GET body)",
           [400, 404, 413, 422])]),
    )
    for path, resource, methods in routes:
        app.add_route(path, resource(registry))
        for method, summary, errors in methods:
            operation = Operation(path, method, summary, tags=["inference pipelines"],
                                  operation_id=f"{method}_{path.strip('/').replace('/', '_').replace('{', '')}"
                                  .replace("}", ""),
                                  parameters=[pipeline_id] if "{pipeline_id}" in path else [],
                                  responses={"200": {"description": "Roboflow's envelope",
                                                     "content": json_content(_ENVELOPE)},
                                             **error_responses(*errors)})
            if path.endswith("initialise"):
                operation.request_body = {"required": True, "content": json_content(
                    {"$ref": "#/components/schemas/InitialisePipelinePayload"})}
                operation.responses.update(error_responses(400, 404, 413, 422, 503))
            openapi.add(operation)
    return registry
