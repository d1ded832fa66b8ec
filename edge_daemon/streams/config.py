"""What a stream is: its camera, model, rate, region of interest, zones and sinks, validated strictly.

The same model validates `POST /streams` bodies, the `--streams-file` TOML and the persisted state, so a field
means the same everywhere and every error names the field it is about.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_daemon.errors import ApiError, Unprocessable
from edge_daemon.streams.masking import mask_url

STREAM_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$"
NETWORK_SCHEMES = {"rtsp", "rtsps", "http", "https"}
SourceType = Literal["auto", "rtsp", "mjpeg", "snapshot", "file", "v4l2"]
Publish = Literal["every", "change"]


class _Strict(BaseModel):
    # strict: a "true" string or a 1 is not a boolean here (the schema says boolean, and the server agrees)
    model_config = ConfigDict(extra="forbid", strict=True)


class MqttSinkConfig(_Strict):
    """Publish to an MQTT broker: `<prefix>/<stream>/detections|state|events`, availability via Last Will."""

    type: Literal["mqtt"]
    url: str = Field(description="mqtt://[user:password@]host[:port] (mqtts:// for TLS)", max_length=2048)
    topic_prefix: str = Field("edge-daemon", pattern=r"^[^#+\s]{1,128}$")
    publish: Publish = Field("every", description="every inference, or only when the detected classes change")
    qos: int = Field(0, ge=0, le=2)
    home_assistant: bool = Field(False, description="publish Home Assistant discovery for per-class counts")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+\s]{1,128}$")

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must be mqtt://host[:port] or mqtts://host[:port]")
        _ = parts.port  # raises on a bad port
        return value


class WebhookSinkConfig(_Strict):
    """POST each result as JSON; retried with back-off from a bounded queue, HMAC-signed when a secret is set."""

    type: Literal["webhook"]
    url: str = Field(max_length=2048)
    secret: str | None = Field(None, max_length=512, description="HMAC-SHA256 key for X-Edge-Daemon-Signature")
    publish: Publish = "every"
    queue_size: int = Field(16, ge=1, le=1000)
    timeout: float = Field(5.0, gt=0, le=60)
    retries: int = Field(3, ge=0, le=10)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        _ = parts.port
        return value


SinkConfig = Annotated[MqttSinkConfig | WebhookSinkConfig, Field(discriminator="type")]


class Zone(_Strict):
    """A polygon in fractions of the frame (0..1): objects whose centre is inside are in the zone."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    points: list[Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=2, max_length=2)]] = Field(
        min_length=3, max_length=64)


class StreamConfig(_Strict):
    id: str = Field(pattern=STREAM_ID, description="letters, digits, '_', '.', '-' (used in topics and labels)")
    source: str = Field(min_length=1, max_length=2048, pattern=r"^((rtsps?|https?)://[^\s/]|(file://)?/)",
                        description="rtsp(s)://, http(s):// (MJPEG or snapshot), /dev/videoN, or a video file "
                                    "(absolute path)")
    source_type: SourceType = Field("auto", description="auto: from the URL (http is MJPEG unless snapshot)")
    model_id: str = Field(pattern=MODEL_ID)
    max_fps: float = Field(2.0, gt=0, le=60)
    confidence: float = Field(0.4, ge=0, le=1)
    iou_threshold: float = Field(0.3, ge=0, le=1)
    max_detections: int = Field(300, ge=1, le=1000)
    classes: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(None, max_length=256)
    roi: list[Annotated[float, Field(ge=0, le=1)]] | None = Field(
        None, min_length=4, max_length=4, description="crop [x1, y1, x2, y2] in fractions of the frame")
    zones: list[Zone] = Field(default_factory=list, max_length=32)
    tracking: bool = Field(False, description="stable tracker_id per object and enter/exit events")
    sinks: list[SinkConfig] = Field(default_factory=list, max_length=8)
    stall_timeout: float = Field(5.0, ge=0.5, le=300, description="seconds without a frame before reconnecting")
    open_timeout: float = Field(10.0, ge=0.5, le=300)
    backoff_cap: float = Field(30.0, ge=0.5, le=3600, description="longest wait between reconnect attempts")
    snapshot_interval: float = Field(1.0, ge=0.05, le=3600)
    decoder_threads: int = Field(1, ge=0, le=16, description="video decoder threads (0: one per core, OpenCV's "
                                                             "default); raise it for 4K cameras")
    loop: bool = Field(True, description="video files: start again at the end")
    paused: bool = False

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value != value.strip() or any(ord(c) < 32 for c in value):
            raise ValueError("must not contain spaces at the ends or control characters")
        parts = urlsplit(value)
        if parts.scheme in NETWORK_SCHEMES:
            if not parts.hostname:
                raise ValueError("URL has no host")
            _ = parts.port
        elif parts.scheme not in ("", "file"):
            raise ValueError(f"unsupported scheme {parts.scheme!r}: use rtsp, rtsps, http, https or a file path")
        elif not value.removeprefix("file://").startswith("/"):
            raise ValueError("a file or device must be an absolute path")
        return value

    @field_validator("roi")
    @classmethod
    def _roi(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (value[2] <= value[0] or value[3] <= value[1]):
            raise ValueError("must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
        return value

    @model_validator(mode="after")
    def _kind_fits(self) -> StreamConfig:
        scheme = urlsplit(self.source).scheme
        allowed = {"rtsp": {"rtsp", "rtsps"}, "mjpeg": {"http", "https"}, "snapshot": {"http", "https"},
                   "file": {"", "file"}, "v4l2": {""}}
        if self.source_type != "auto" and scheme not in allowed[self.source_type]:
            raise ValueError(f"source_type {self.source_type} does not fit a {scheme or 'path'} source")
        return self

    @property
    def kind(self) -> str:
        """rtsp, mjpeg, snapshot, file or v4l2."""
        if self.source_type != "auto":
            return self.source_type
        scheme = urlsplit(self.source).scheme
        if scheme in ("rtsp", "rtsps"):
            return "rtsp"
        if scheme in ("http", "https"):
            return "mjpeg"
        return "v4l2" if self.source.startswith("/dev/video") else "file"

    @property
    def is_local(self) -> bool:
        return self.kind in ("file", "v4l2")

    def secrets(self) -> list[str]:
        """Credential strings this config holds (to scrub from any error text)."""
        found = []
        for url in [self.source, *(sink.url for sink in self.sinks)]:
            parts = urlsplit(url)
            found += [parts.password or "", parts.username or ""]
        found += [sink.secret or "" for sink in self.sinks if isinstance(sink, WebhookSinkConfig)]
        return [s for s in found if len(s) >= 3]

    def public(self) -> dict[str, Any]:
        """The config as listings show it: URLs masked, webhook secrets hidden."""
        data = self.model_dump(mode="json")
        data["source"] = mask_url(self.source)
        for sink in data["sinks"]:
            sink["url"] = mask_url(sink["url"])
            if sink.get("secret"):
                sink["secret"] = "***"
        return data


class StreamReplacement(StreamConfig):
    """PUT /streams/{id}'s body: a whole stream config, whose id may be left out (the path names it)."""

    id: str | None = Field(None, pattern=STREAM_ID, description="if given, the path's id")  # type: ignore[assignment]


def _field_path(location: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item not in ("mqtt", "webhook", "function-after"):  # discriminator tags pydantic adds
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "body"


def describe_errors(error: ValidationError, prefix: str = "") -> str:
    """One line naming each bad field, e.g. `sinks[0].url: must be mqtt://...`."""
    messages = []
    for item in error.errors()[:5]:
        text = str(item["msg"]).removeprefix("Value error, ")
        messages.append(f"{prefix}{_field_path(tuple(item['loc']))}: {text}")
    return "; ".join(messages)


def parse_stream(data: Any, prefix: str = "") -> StreamConfig:
    """Validate one stream; a bad field is a 422 naming it."""
    if not isinstance(data, dict):
        raise Unprocessable(f"{prefix or 'body'}: a stream must be a JSON object")
    try:
        return StreamConfig.model_validate(data)
    except ValidationError as error:
        raise Unprocessable("invalid stream: " + describe_errors(error, prefix)) from None


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # the same parser, backported (a conditional dependency on 3.10)

    return tomli


def load_streams_file(path: Path) -> list[StreamConfig]:
    """`[[streams]]` tables from a TOML file; errors name the file and the field (`streams[1].max_fps`)."""
    toml = _toml()
    try:
        document = toml.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ApiError(f"streams file {path}: {error.strerror}") from None
    except toml.TOMLDecodeError as error:
        raise ApiError(f"streams file {path}: not valid TOML: {error}") from None
    unknown = set(document) - {"streams"}
    if unknown:
        raise ApiError(f"streams file {path}: unknown top-level key(s) {sorted(unknown)}; use [[streams]] tables")
    streams = document.get("streams", [])
    if not isinstance(streams, list):
        raise ApiError(f"streams file {path}: streams must be an array of tables ([[streams]])")
    configs: list[StreamConfig] = []
    for index, item in enumerate(streams):
        try:
            config = parse_stream(item, prefix=f"streams[{index}].")
        except ApiError as error:
            raise ApiError(f"streams file {path}: {error.message}") from None
        if any(existing.id == config.id for existing in configs):
            raise ApiError(f"streams file {path}: streams[{index}].id: duplicate id {config.id!r}")
        configs.append(config)
    return configs
