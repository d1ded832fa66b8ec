"""Response shapes of the stream routes, for /openapi.json (requests are validated by config.StreamConfig)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StreamFrames(BaseModel):
    read: int = Field(description="frames decoded from the camera")
    inferred: int = Field(description="frames the model ran on")
    dropped: int = Field(description="frames replaced by a newer one before inference, or skipped while busy")


class StreamStatus(BaseModel):
    """The minimum contract of a stream as GET /streams/{id} shows it (more fields may follow)."""

    model_config = ConfigDict(extra="allow")
    id: str
    source: str = Field(description="camera URL with credentials masked")
    model_id: str
    state: Literal["starting", "running", "reconnecting", "paused", "failed"]
    last_error: str | None
    last_frame_at: str | None = Field(description="ISO 8601 time of the newest frame")
    frames: StreamFrames
    reconnects: int
    waiting_to_open: bool = Field(False, description="queued behind other cameras' opens (one at a time)")


class StreamList(BaseModel):
    streams: list[StreamStatus]


class StreamDeleted(BaseModel):
    id: str
    deleted: bool


class StreamResult(BaseModel):
    """The newest inference: Roboflow's response JSON plus where it came from."""

    model_config = ConfigDict(extra="allow")
    stream_id: str
    frame_timestamp: str
    frame_id: int
    predictions: Any = None
