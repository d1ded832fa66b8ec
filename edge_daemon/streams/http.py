"""REST routes for streams: /streams CRUD, pause/resume, latest result (JSON and drawn JPEG), and SSE events."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import falcon
import orjson

from edge_daemon.api.openapi import OpenApiRegistry, Operation, error_responses, json_content, path_parameter, ref
from edge_daemon.errors import BadRequest, NotFound, PayloadTooLarge
from edge_daemon.processing import visualise
from edge_daemon.processing.visualise import encode_jpeg
from edge_daemon.streams.config import MqttSinkConfig, StreamConfig, StreamReplacement, WebhookSinkConfig, Zone
from edge_daemon.streams.manager import StreamManager
from edge_daemon.streams.schemas import StreamDeleted, StreamFrames, StreamList, StreamResult, StreamStatus
from edge_daemon.streams.sinks.sse import Subscription
from edge_daemon.streams.stream import Stream

BODY_LIMIT = 256 * 1024


def read_json(req: falcon.Request, limit: int = BODY_LIMIT) -> Any:
    """The body as JSON (any type; the config model says what it must be), bounded in size."""
    if req.content_length is not None and req.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    body = req.bounded_stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    try:
        return orjson.loads(body)
    except RecursionError:
        raise BadRequest("request body JSON is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None


class _Base:
    def __init__(self, manager: StreamManager):
        self.manager = manager


class StreamsResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"streams": [stream.describe() for stream in self.manager.streams()]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        stream = self.manager.create(read_json(req))
        resp.status = 201
        resp.media = stream.describe()


class StreamResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, stream_id: str) -> None:
        resp.media = self.manager.get(stream_id).describe()

    def on_put(self, req: falcon.Request, resp: falcon.Response, stream_id: str) -> None:
        self.manager.get(stream_id)  # 404 before validating the body
        resp.media = self.manager.replace(stream_id, read_json(req)).describe()

    def on_delete(self, req: falcon.Request, resp: falcon.Response, stream_id: str) -> None:
        self.manager.delete(stream_id)
        resp.media = {"id": stream_id, "deleted": True}


class PauseResource(_Base):
    paused = True

    def on_post(self, req: falcon.Request, resp: falcon.Response, stream_id: str) -> None:
        resp.media = self.manager.set_paused(stream_id, self.paused).describe()


class ResumeResource(PauseResource):
    paused = False


class LatestResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, stream_id: str) -> None:
        stream = self.manager.get(stream_id)
        if stream.latest is None:
            raise NotFound(f"stream {stream_id!r} has no result yet")
        resp.media = stream.latest


class LatestPictureResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, stream_id: str) -> None:
        stream = self.manager.get(stream_id)
        shown = stream.picture()
        if shown is None:
            raise NotFound(f"stream {stream_id!r} has no result yet")
        latest, pixels = shown
        resp.content_type = "image/jpeg"
        resp.data = encode_jpeg(visualise.draw(pixels, latest, stream.colours, True, 2))


class EventsResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, stream_id: str) -> None:
        subscription = self.manager.get(stream_id).hub.subscribe()
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = subscription.frames()


PREVIEW_BOUNDARY = "edge-daemon-frame"


class PreviewResource(_Base):
    """A live annotated preview as multipart MJPEG (what browsers, VLC and NVRs show for an IP camera), at
    most `fps` pictures a second; it counts against the same connection cap as SSE."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, stream_id: str) -> None:
        stream = self.manager.get(stream_id)
        fps = req.get_param_as_float("fps", min_value=0.1, max_value=10.0, default=2.0)
        if stream.picture() is None:  # nothing to show yet: no open-ended wait
            raise NotFound(f"stream {stream_id!r} has no result yet")
        subscription = stream.hub.subscribe()
        resp.content_type = f"multipart/x-mixed-replace; boundary={PREVIEW_BOUNDARY}"
        resp.set_header("Cache-Control", "no-cache")
        resp.stream = _preview_parts(stream, subscription, 1.0 / fps)


def _preview_parts(stream: Stream, subscription: Subscription, interval: float) -> Iterator[bytes]:
    """The newest picture at once, then one JPEG part per inference, skipping those that come sooner than
    `interval` after the last part sent; the last picture again after a quiet spell (a keep-alive), until the
    stream stops or the viewer leaves."""
    sent_at = 0.0
    try:
        for messages in itertools.chain([[]], subscription.batches()):
            now = time.monotonic()
            if messages and now - sent_at < interval:
                continue
            shown = stream.picture(0.0)  # also keeps whole frames coming while the viewer stays
            if shown is None:
                continue
            latest, pixels = shown
            picture = encode_jpeg(visualise.draw(pixels, latest, stream.colours, True, 2))
            sent_at = now
            yield (f"--{PREVIEW_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(picture)}\r\n\r\n"
                   .encode() + picture + b"\r\n")
    finally:
        subscription.end()  # also when the viewer left after the first picture


def _status_responses(description: str, schema: Any, *errors: int) -> dict[str, Any]:
    return {"200": {"description": description, "content": json_content(ref(schema))}, **error_responses(*errors)}


def register(app: falcon.App, registry: OpenApiRegistry, manager: StreamManager) -> None:
    registry.add_schemas(StreamConfig, StreamReplacement, MqttSinkConfig, WebhookSinkConfig, Zone, StreamStatus, StreamFrames,
                         StreamList, StreamDeleted, StreamResult)
    stream_id = path_parameter("stream_id", "The stream's id")
    body = {"required": True, "content": json_content(ref(StreamConfig))}
    app.add_route("/streams", StreamsResource(manager))
    app.add_route("/streams/{stream_id}", StreamResource(manager))
    app.add_route("/streams/{stream_id}/pause", PauseResource(manager))
    app.add_route("/streams/{stream_id}/resume", ResumeResource(manager))
    app.add_route("/streams/{stream_id}/latest", LatestResource(manager))
    app.add_route("/streams/{stream_id}/latest.jpg", LatestPictureResource(manager))
    app.add_route("/streams/{stream_id}/events", EventsResource(manager))
    app.add_route("/streams/{stream_id}/preview.mjpeg", PreviewResource(manager))
    created = {"201": {"description": "The stream, starting", "content": json_content(ref(StreamStatus))}}
    operations = (
        Operation("/streams", "get", "List camera streams", operation_id="list_streams",
                  responses=_status_responses("Every stream", StreamList)),
        Operation("/streams", "post", "Add a camera stream (starts at once; persisted in the state dir)",
                  operation_id="create_stream", request_body=body,
                  responses={**_status_responses("The stream", StreamStatus, 400, 409, 413, 422), **created}),
        Operation("/streams/{stream_id}", "get", "A stream's state, counters and config (credentials masked)",
                  operation_id="get_stream", parameters=[stream_id],
                  responses=_status_responses("The stream", StreamStatus, 404)),
        Operation("/streams/{stream_id}", "put", "Replace a stream's config (the stream restarts)",
                  operation_id="replace_stream", parameters=[stream_id],
                  request_body={"required": True, "content": json_content(ref(StreamReplacement))},
                  responses=_status_responses("The stream", StreamStatus, 400, 404, 409, 413, 422)),
        Operation("/streams/{stream_id}", "delete", "Stop and remove a stream", operation_id="delete_stream",
                  parameters=[stream_id], responses=_status_responses("Removed", StreamDeleted, 404, 409)),
        Operation("/streams/{stream_id}/pause", "post", "Pause a stream (the camera is closed)",
                  operation_id="pause_stream", parameters=[stream_id],
                  responses=_status_responses("The stream", StreamStatus, 404)),
        Operation("/streams/{stream_id}/resume", "post", "Resume a paused stream", operation_id="resume_stream",
                  parameters=[stream_id], responses=_status_responses("The stream", StreamStatus, 404)),
        Operation("/streams/{stream_id}/latest", "get", "The newest inference result of a stream",
                  operation_id="latest_stream_result", parameters=[stream_id],
                  responses=_status_responses("Roboflow's response plus stream_id and frame_timestamp",
                                              StreamResult, 404)),
        Operation("/streams/{stream_id}/latest.jpg", "get", "The newest inferred frame with predictions drawn",
                  operation_id="latest_stream_picture", parameters=[stream_id],
                  responses={"200": {"description": "JPEG", "content": {"image/jpeg": {}}},
                             **error_responses(404)}),
        Operation("/streams/{stream_id}/events", "get", "Server-Sent Events: detections, counts, events, state",
                  operation_id="stream_events", parameters=[stream_id],
                  responses={"200": {"description": "text/event-stream; one `event:` per topic",
                                     "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                             **error_responses(404, 503)}),
        Operation("/streams/{stream_id}/preview.mjpeg", "get",
                  "Live annotated preview (multipart MJPEG, at most `fps` pictures a second)",
                  operation_id="stream_preview", parameters=[stream_id, {
                      "name": "fps", "in": "query", "required": False, "description": "pictures a second",
                      "schema": {"type": "number", "minimum": 0.1, "maximum": 10, "default": 2}}],
                  responses={"200": {"description": "multipart/x-mixed-replace of JPEG pictures",
                                     "content": {"multipart/x-mixed-replace": {"schema": {"type": "string"}}}},
                             **error_responses(400, 404, 503)}),
    )
    for operation in operations:
        operation.tags = ["streams"]
        registry.add(operation)
