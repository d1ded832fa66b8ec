"""Daemon settings, declared once: each option yields its CLI flag, its EDGE_DAEMON_* variable and its default.

Precedence: command-line flag > environment variable > default. Keeping one table means the CLI, the
environment and the documentation cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "EDGE_DAEMON_"
DEFAULT_API_URL = "https://api.roboflow.com"


def _default_cache_dir() -> str:
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "edge-daemon")


def _default_models_dir() -> str:
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "edge-daemon", "models")


def _default_state_dir() -> str:
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(xdg, "edge-daemon")


def _default_threads() -> int:
    """Waitress threads: enough to overlap decoding with inference without oversubscribing a small box."""
    return max(4, min(16, 2 * (os.cpu_count() or 2)))


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@dataclass(frozen=True)
class Option:
    """One setting: its name doubles as the dataclass field, the --flag and the env variable suffix."""

    name: str
    parse: Callable[[str], Any]
    default: Callable[[], Any]
    help: str
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, lambda: "0.0.0.0", "address to listen on"),
    Option("port", int, lambda: 9001, "TCP port to listen on"),
    Option("threads", int, _default_threads, "waitress worker threads"),
    Option("models_dir", str, _default_models_dir,
           "your model store (imports land here), searched before the bundled models; empty: none"),
    Option("cache_dir", str, _default_cache_dir, "where downloaded models and compiled engines are kept"),
    Option("api_url", str, lambda: DEFAULT_API_URL, "model registry speaking Roboflow's artifact API"),
    Option("api_key", str, lambda: os.environ.get("ROBOFLOW_API_KEY", ""),
           "registry API key used when a request carries none (also read from ROBOFLOW_API_KEY)", secret=True),
    Option("preload", _parse_list, list, "comma-separated model ids loaded at start-up"),
    Option("allow_numpy_input", _parse_bool, lambda: False,
           "accept images of type numpy (.npy or pickled ndarray, decoded without running pickle)"),
    Option("allow_url_input", _parse_bool, lambda: True, "accept images given as http(s) URLs"),
    Option("url_allow_private", _parse_bool, lambda: True,
           "allow image URLs on private LAN addresses (cameras live there)"),
    Option("url_allow_loopback", _parse_bool, lambda: False, "allow image URLs that resolve to loopback"),
    Option("url_allow_hosts", _parse_list, list,
           "if set, image URLs only from these host names or CIDRs (they may also open loopback/private)"),
    Option("url_deny_hosts", _parse_list, list, "image URLs never from these host names or CIDRs"),
    Option("url_max_bytes", int, lambda: 20 * 1024 * 1024, "largest image fetched from a URL, in bytes"),
    Option("url_timeout", float, lambda: 10.0, "seconds allowed for fetching an image URL"),
    Option("max_body_bytes", int, lambda: 32 * 1024 * 1024, "largest accepted request body, in bytes"),
    Option("max_batch", int, lambda: 16, "most images in one request"),
    Option("fast_decode", _parse_bool, lambda: False,
           "decode large JPEGs at 1/2, 1/4 or 1/8 scale when the network input is that much smaller: faster, "
           "but the model sees other pixels than Roboflow's server gives it (answers differ slightly)"),
    Option("max_image_pixels", int, lambda: 64 * 1024 * 1024,
           "largest image accepted, in pixels (checked from the header before decoding)"),
    Option("load_wait", float, lambda: 30.0,
           "seconds a request waits for its model to download/load before a 503 with Retry-After"),
    Option("max_active_models", int, lambda: 8,
           "models kept loaded; the least recently used is unloaded (its files stay cached)"),
    Option("backend", str, lambda: "auto",
           "auto (TensorRT on Jetson/NVIDIA boxes where it works, else ONNX Runtime), tensorrt, onnxruntime, or "
           "remote (a KServe v2 server such as Triton at --remote-url)"),
    Option("precision", str, lambda: "auto", "auto, fp16 or fp32 (fp16 only where the GPU has fast FP16)"),
    Option("trt_workspace_mib", int, lambda: 1024, "TensorRT builder workspace limit, in MiB"),
    Option("trt_max_batch", int, lambda: 4, "largest batch a TensorRT engine is built for (larger ones split)"),
    Option("trt_retry_hours", float, lambda: 24.0,
           "after a failed TensorRT build, serve the model on ONNX Runtime and try the build again only after "
           "this many hours (0: at every load; `models build` always tries)"),
    Option("model_retry_seconds", float, lambda: 300.0,
           "after a model fails to load (refused outputs, broken files or metadata, engine failure), answer its "
           "error at once and load it again only after this many seconds, when its files change, or on "
           "POST /model/add or `models build` (registry trouble: at most 30 s; 0: at every request)"),
    Option("ort_optimization", str, lambda: "all",
           "ONNX Runtime graph optimisation saved in the engine cache: all (fastest, keyed to the CPU's "
           "instruction set) or extended (portable)"),
    Option("ort_spinning", _parse_bool, lambda: False,
           "let idle ONNX Runtime threads spin: more throughput for heavy models under many concurrent clients, "
           "but the spinning threads delay the HTTP and camera threads on small boxes (see README, Performance)"),
    Option("ort_threads", int, lambda: 0, "ONNX Runtime intra-op threads per session (0: the CPU count)"),
    Option("registry_timeout", float, lambda: 30.0, "seconds allowed for each registry request"),
    Option("access_keys", _parse_list, list,
           "comma-separated keys a request must carry (api_key or Authorization: Bearer); empty: open",
           secret=True),
    Option("access_keys_file", str, lambda: "", "file with one access key a line (added to access_keys)"),
    Option("auth_exempt", _parse_list, lambda: ["/healthz", "/readiness", "/metrics"],
           "paths answered without an access key"),
    Option("cors_origins", _parse_list, list, "origins allowed by CORS (e.g. http://nvr.lan); empty: none"),
    Option("engine_slots", int, lambda: 0,
           "engine runs at once (0: CPUs / ort-threads, at least 2, so one batch's pre- and postprocessing "
           "overlap another's run)"),
    Option("gil_switch_ms", float, lambda: 1.0,
           "longest a Python thread holds the GIL while others wait for it (Python's own: 5 ms); shorter hands "
           "the cores back sooner to camera readers and engine callers returning from C (0: Python's default)"),
    Option("malloc_arenas", int, lambda: 2,
           "glibc malloc arenas (0: glibc's 8 per core); few arenas keep many threads' freed buffers from "
           "each pinning its own memory"),
    Option("memory_trim_seconds", float, lambda: 10.0,
           "this long after a burst, unused memory (ONNX Runtime arena, free heap pages) goes back to the OS "
           "(0: never)"),
    Option("batch_window_ms", float, lambda: 5.0,
           "gather concurrent requests to one model for up to this long and run them as one batch (0: off); "
           "a batch waits only while requests for the model are still decoding or preprocessing, so a request "
           "alone never waits"),
    Option("max_queue", int, lambda: 32,
           "requests that may wait for an engine; beyond it a 503 with Retry-After comes at once"),
    Option("request_timeout", float, lambda: 30.0, "seconds a request may wait for an engine before a 503"),
    Option("deepstack_model", str, lambda: "shapes/1", "model served by DeepStack's /v1/vision/detection"),
    Option("log_level", str, lambda: "info", "debug, info, warning or error"),
    Option("log_format", str, lambda: "text", "text (human-readable) or json (one object a line)"),
    # --backend remote: a KServe v2 / Open Inference Protocol server (Triton, MLServer) runs the models.
    Option("remote_url", str, lambda: "",
           "KServe v2 server for --backend remote: grpc://host:8001 (preferred) or http://host:8000"),
    Option("remote_model_map", _parse_list, list,
           "server model names, e.g. shapes/1=detector; unmapped ids use the id with / as _ (shapes/1: shapes_1)"),
    Option("remote_timeout", float, lambda: 5.0, "seconds allowed for each remote inference call"),
    Option("remote_retries", int, lambda: 2,
           "retries of a remote call refused as UNAVAILABLE (server restarting, connection refused)"),
    Option("remote_breaker_seconds", float, lambda: 5.0,
           "after 3 failed remote calls in a row, calls fail fast (or fall back) this long before one is tried again"),
    Option("remote_fallback", _parse_bool, lambda: False,
           "serve models on this box's own engine while the remote server is down (shown in /info and /metrics)"),
    # Web console (edge_daemon/console/)
    Option("console", _parse_bool, lambda: True,
           "serve the web console at / (models, try a model on a picture, health); false: / is a 404"),
    # --- camera streams (edge_daemon/streams) ---
    Option("streams_file", str, lambda: "",
           "TOML file of camera streams started with the daemon (see README, Camera streams); empty: none"),
    Option("state_dir", str, _default_state_dir,
           "where streams created over HTTP are kept across restarts"),
    Option("stream_slots", int, lambda: 2,
           "stream inferences in flight at once, so also the largest batch streams make (the rest of the engine "
           "queue stays free for HTTP requests); 2 keeps 8 cameras at 5 fps near 255 MB, 4 gives a tenth to a fifth more "
           "throughput at saturation for 40-60 MB more"),
    Option("streams_allow_local", _parse_bool, lambda: False,
           "let POST /streams open video files and V4L2 devices (the streams file always may)"),
)


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one daemon process."""

    host: str = "0.0.0.0"
    port: int = 9001
    threads: int = field(default_factory=_default_threads)
    models_dir: str = field(default_factory=_default_models_dir)
    cache_dir: str = field(default_factory=_default_cache_dir)
    api_url: str = DEFAULT_API_URL
    api_key: str = field(default="", repr=False)
    preload: list[str] = field(default_factory=list)
    allow_numpy_input: bool = False
    allow_url_input: bool = True
    url_allow_private: bool = True
    url_allow_loopback: bool = False
    url_allow_hosts: list[str] = field(default_factory=list)
    url_deny_hosts: list[str] = field(default_factory=list)
    url_max_bytes: int = 20 * 1024 * 1024
    url_timeout: float = 10.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_batch: int = 16
    fast_decode: bool = False
    max_image_pixels: int = 64 * 1024 * 1024
    load_wait: float = 30.0
    max_active_models: int = 8
    backend: str = "auto"
    precision: str = "auto"
    trt_workspace_mib: int = 1024
    trt_max_batch: int = 4
    trt_retry_hours: float = 24.0
    model_retry_seconds: float = 300.0
    ort_optimization: str = "all"
    ort_spinning: bool = False
    ort_threads: int = 0
    registry_timeout: float = 30.0
    access_keys: list[str] = field(default_factory=list, repr=False)
    access_keys_file: str = ""
    auth_exempt: list[str] = field(default_factory=lambda: ["/healthz", "/readiness", "/metrics"])
    cors_origins: list[str] = field(default_factory=list)
    engine_slots: int = 0
    gil_switch_ms: float = 1.0
    malloc_arenas: int = 2
    memory_trim_seconds: float = 10.0
    batch_window_ms: float = 5.0
    max_queue: int = 32
    request_timeout: float = 30.0
    deepstack_model: str = "shapes/1"
    log_level: str = "info"
    log_format: str = "text"
    remote_url: str = ""
    remote_model_map: list[str] = field(default_factory=list)
    remote_timeout: float = 5.0
    remote_retries: int = 2
    remote_breaker_seconds: float = 5.0
    remote_fallback: bool = False
    console: bool = True
    # camera streams
    streams_file: str = ""
    state_dir: str = field(default_factory=_default_state_dir)
    stream_slots: int = 2
    streams_allow_local: bool = False

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def describe_default(option: Option) -> str:
    """The default as documentation shows it (secrets and machine-dependent values described, not shown)."""
    if option.secret:
        return "–"
    if option.name == "auth_exempt":
        return "`/healthz,/readiness,/metrics`"
    described = {"threads": "2×CPUs (4–16)", "cache_dir": "`~/.cache/edge-daemon`",
                 "models_dir": "`~/.local/share/edge-daemon/models`",
                 "state_dir": "`~/.local/state/edge-daemon`", "engine_slots": "0 (auto)", "preload": "–", "ort_threads": "0 (all CPUs)"}
    if option.name in described:
        return described[option.name]
    value = option.default()
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`" if value != "" else "–"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register every option as a flag; unset flags stay None so env/defaults can fill them."""
    for option in OPTIONS:
        default = describe_default(option).replace("`", "")
        parser.add_argument(option.flag, dest=option.name, type=option.parse, default=None,
                            help=f"{option.help} (default: {default}; env {option.env})")


def markdown_reference() -> str:
    """The configuration table for the README, generated from OPTIONS."""
    lines = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        lines.append(f"| `{option.flag}` | `{option.env}` | {describe_default(option)} | {option.help} |")
    return "\n".join(lines)


def load_settings(cli_values: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Merge flags, environment and defaults; a malformed env value is a start-up error naming the variable."""
    environ = os.environ if environ is None else environ
    cli_values = cli_values or {}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if cli_values.get(option.name) is not None:
            values[option.name] = cli_values[option.name]
        elif option.env in environ:
            try:
                values[option.name] = option.parse(environ[option.env])
            except ValueError as error:
                raise SystemExit(f"invalid {option.env}: {error}") from None
        else:
            values[option.name] = option.default()
    return Settings(**values)
