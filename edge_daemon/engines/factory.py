"""Turn a model's ONNX weights into a ready engine: pick the backend, compile once, reuse from the cache.

TensorRT plans and ONNX Runtime optimised graphs both go through the engine cache (`cache.py`). A TensorRT
failure at any step (import, CUDA, parse, build, deserialise) falls back to ONNX Runtime with the reason
logged and kept in `engine.build.fallback_reason`; a model that ONNX Runtime cannot load either still
fails with `ModelArtifactError`. A failed TensorRT build is remembered in the cache and not retried for
`trt_retry_hours`: on a Jetson a doomed build can take minutes, and a restart should not repeat it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_daemon import __version__
from edge_daemon.engines.base import Engine, EngineBuild
from edge_daemon.engines.cache import EngineCache, KeyInputs, Outcome
from edge_daemon.engines.cuda_binding import ImportModule, load_cuda_binding
from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine, ort
from edge_daemon.engines.remote_engine import RemoteConfig, RemoteEngine, parse_model_map
from edge_daemon.engines.selection import BackendChoice, choose_backend
from edge_daemon.engines.tensorrt_engine import (
    DEFAULT_WORKSPACE_BYTES,
    BuildOptions,
    TensorRTEngine,
    build_plan,
    make_logger,
)
from edge_daemon.errors import ApiError
from edge_daemon.failures import retry_at, retry_due, utc_text
from edge_daemon.files import write_atomic
from edge_daemon.hashing import sha256_bytes
from edge_daemon.platform.probe import PlatformInfo, current_platform

log = logging.getLogger(__name__)

ORT_ARTIFACT = "optimized.onnx"
TRT_ARTIFACT = "model.plan"
# CPU features ONNX Runtime's kernels dispatch on (x86 and Arm); they key graphs saved at level "all".
_ISA_FLAGS = frozenset({"sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq",
                        "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
                        "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2"})


@dataclass(frozen=True)
class EngineOptions:
    """Daemon-wide engine settings (from `Settings`); `cache_dir=None` means a plain uncached ORT session."""

    cache_dir: Path | None = None
    backend: str = "auto"                  # auto | tensorrt | onnxruntime | remote
    precision: str = "auto"                # auto | fp16 | fp32 (fp16 only where the GPU has fast FP16)
    intra_op_threads: int = 0
    trt_workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    trt_max_batch: int = 4
    trt_builder_optimization_level: int | None = None
    trt_retry_hours: float = 24.0          # after a failed build; 0 retries at every load
    ort_optimization: str = "extended"     # level baked into the cached graph; "all" adds x86 layout passes
    ort_spinning: bool = True              # idle ORT threads spin (ORT's default); off suits tiny models
    arena_trim_seconds: float = 0.0        # shrink ORT's arena a period after a burst (engines/arena_trim.py)
    input_hw: tuple[int, int] | None = None
    remote: RemoteConfig | None = None     # backend "remote": the KServe v2 server
    remote_fallback: bool = False          # backend "remote": a local engine serves while the server is down
    import_module: ImportModule = field(default=importlib.import_module, compare=False, repr=False)


def engine_options(settings: Any, **overrides: Any) -> EngineOptions:
    """EngineOptions from the daemon's `Settings`; settings it does not have yet keep their defaults.

    Reads `cache_path`, `backend`, `precision`, `ort_threads`, `trt_workspace_mib`, `trt_max_batch`,
    `trt_retry_hours`, `ort_optimization`, `ort_spinning` and `memory_trim_seconds`.
    """
    defaults = EngineOptions()
    workspace_mib = getattr(settings, "trt_workspace_mib", None)
    values: dict[str, Any] = {
        "cache_dir": getattr(settings, "cache_path", None),
        "backend": getattr(settings, "backend", defaults.backend),
        "precision": getattr(settings, "precision", defaults.precision),
        "intra_op_threads": getattr(settings, "ort_threads", defaults.intra_op_threads),
        "trt_workspace_bytes": int(workspace_mib) << 20 if workspace_mib else defaults.trt_workspace_bytes,
        "trt_max_batch": getattr(settings, "trt_max_batch", defaults.trt_max_batch),
        "trt_retry_hours": getattr(settings, "trt_retry_hours", defaults.trt_retry_hours),
        "ort_optimization": getattr(settings, "ort_optimization", defaults.ort_optimization),
        "ort_spinning": getattr(settings, "ort_spinning", defaults.ort_spinning),
        "arena_trim_seconds": getattr(settings, "memory_trim_seconds", defaults.arena_trim_seconds),
    }
    if values["backend"] == "remote":
        try:
            values["remote"] = RemoteConfig(
                url=getattr(settings, "remote_url", ""),
                model_map=parse_model_map(getattr(settings, "remote_model_map", [])),
                timeout=getattr(settings, "remote_timeout", 5.0), retries=getattr(settings, "remote_retries", 2),
                breaker_seconds=getattr(settings, "remote_breaker_seconds", 5.0))
        except ValueError as error:
            raise ApiError(str(error), 500) from None
        values["remote_fallback"] = getattr(settings, "remote_fallback", False)
    values.update(overrides)
    return EngineOptions(**values)


def compile_engine(weights: Path, model_id: str, options: EngineOptions, platform: PlatformInfo | None = None,
                   choice: BackendChoice | None = None) -> Engine:
    """The engine for `weights`, built or loaded from `options.cache_dir`, on the backend this box supports."""
    if options.cache_dir is None:
        return OnnxRuntimeEngine(weights, intra_op_threads=options.intra_op_threads, spinning=options.ort_spinning,
                                 arena_trim_seconds=options.arena_trim_seconds)
    cache = EngineCache(options.cache_dir)
    info = platform or current_platform()
    if choice is None:
        choice = choose_backend(info, options.backend, options.precision)
    uncached = _UNCACHED_BACKENDS.get(choice.backend)
    if uncached is not None:
        return uncached(Path(weights), model_id, options, info)
    fingerprint = info.fingerprint()
    onnx_bytes = Path(weights).read_bytes()
    fallback: str | None = choice.reason if choice.fell_back else None
    if choice.backend == "tensorrt":
        try:
            return _tensorrt(onnx_bytes, model_id, options, choice, cache, fingerprint)
        except RecentBuildFailure as skipped:
            fallback = str(skipped)
            log.warning("%s; serving it on ONNX Runtime (%s)", fallback, ", ".join(choice.providers))
        except Exception as error:  # noqa: BLE001 (TensorRT/CUDA raise assorted types)
            fallback = f"TensorRT failed for {model_id} ({str(error)[:300]})"
            log.warning("%s; falling back to ONNX Runtime on %s", fallback, ", ".join(choice.providers))
    engine = _onnxruntime(weights, onnx_bytes, model_id, options, choice, cache, fingerprint, info)
    engine.build.fallback_reason = fallback
    return engine


def _remote(weights: Path, model_id: str, options: EngineOptions, info: PlatformInfo) -> Engine:
    """A KServe v2 server runs the model; with `remote_fallback`, this box's own best engine stands by."""
    if options.remote is None or not options.remote.url:
        raise ApiError("backend remote needs remote_url (e.g. grpc://triton.lan:8001)", 500)
    fallback = None
    if options.remote_fallback:
        fallback = compile_engine(weights, model_id, replace(options, backend="auto", remote=None), info)
    return RemoteEngine(weights, model_id, options.remote, fallback=fallback)


# Backends that compile nothing into the engine cache, by BackendChoice.backend.
_UNCACHED_BACKENDS = {"remote": _remote}


class RecentBuildFailure(Exception):
    """TensorRT is not tried for a model whose build failed within `trt_retry_hours`."""


def _check_recent_failure(cache: EngineCache, model_id: str, inputs: KeyInputs, retry_hours: float) -> None:
    failure = cache.last_failure(model_id, inputs)
    if failure is None or retry_due(failure, retry_hours * 3600):
        if failure is not None:
            log.info("retrying the TensorRT build of %s, which failed at %s", model_id, failure.get("failed"))
        return
    raise RecentBuildFailure(
        f"TensorRT skipped for {model_id}: its build failed at {failure.get('failed')} "
        f"({str(failure.get('reason'))[:300]}); next try after {utc_text(retry_at(failure, retry_hours * 3600))} "
        f"(EDGE_DAEMON_TRT_RETRY_HOURS), or now with `edge-daemon models build {model_id}`")


def _versions(**extra: str) -> dict[str, Any]:
    return {"versions": {"edge_daemon": __version__, "onnxruntime": ort.__version__, **extra}}


def _record(engine: Any, outcome: Outcome[Any], backend: str, version: str, precision: str) -> None:
    engine.build = EngineBuild(backend, version, precision, cache_hit=outcome.cache_hit,
                               build_seconds=outcome.build_seconds, load_seconds=outcome.load_seconds,
                               cache_key=outcome.key,
                               cache_path=str(outcome.entry.path) if outcome.entry else None)


def _onnxruntime(weights: Path, onnx_bytes: bytes, model_id: str, options: EngineOptions, choice: BackendChoice,
                 cache: EngineCache, fingerprint: dict[str, str], info: PlatformInfo) -> OnnxRuntimeEngine:
    """Optimise once and save the graph; later loads skip optimisation (level "none").

    "extended" graphs are portable across CPUs of one architecture. "all" adds layout transforms (NCHWc on
    x86) that ONNX Runtime warns are tied to the saving CPU, so the key then also holds the CPU's ISA flags.
    """
    level = options.ort_optimization
    if level not in ("extended", "all"):
        raise ValueError(f"ort_optimization must be extended or all, not {level!r}")
    providers = list(choice.providers)
    key_options: dict[str, Any] = {"providers": providers, "optimization": level, "artifact": "onnx"}
    if level == "all":
        key_options["cpu_isa"] = sorted(flag for flag in info.cpu_features if flag in _ISA_FLAGS)
    inputs = KeyInputs(model_sha256=sha256_bytes(onnx_bytes), backend="onnxruntime",
                       backend_version=ort.__version__, device=fingerprint, precision="fp32",
                       input_profile="as exported", options=key_options)
    threads = options.intra_op_threads
    outcome = cache.get_or_build(
        model_id, inputs, ORT_ARTIFACT,
        build=lambda path: OnnxRuntimeEngine(weights, threads, providers, optimization=level,
                                             save_optimized_to=path, spinning=options.ort_spinning,
                                             arena_trim_seconds=options.arena_trim_seconds),
        load=lambda path: OnnxRuntimeEngine(path, threads, providers, optimization="none",
                                            spinning=options.ort_spinning,
                                            arena_trim_seconds=options.arena_trim_seconds),
        extra_metadata=_versions())
    engine = outcome.value
    _record(engine, outcome, "onnxruntime", ort.__version__, "fp32")
    return engine


def _tensorrt(onnx_bytes: bytes, model_id: str, options: EngineOptions, choice: BackendChoice,
              cache: EngineCache, fingerprint: dict[str, str]) -> TensorRTEngine:
    trt = options.import_module("tensorrt")
    cuda = load_cuda_binding(choice.cuda_binding, options.import_module)
    logger = make_logger(trt)
    build_options = BuildOptions(precision=choice.precision, workspace_bytes=options.trt_workspace_bytes,
                                 max_batch=max(1, options.trt_max_batch), input_hw=options.input_hw,
                                 builder_optimization_level=options.trt_builder_optimization_level)
    version = str(trt.__version__)
    inputs = KeyInputs(model_sha256=sha256_bytes(onnx_bytes), backend="tensorrt", backend_version=version,
                       device=fingerprint, precision=choice.precision, input_profile=build_options.to_key())
    timing_path = cache.blob_path(f"timing-{sha256_bytes((version + repr(sorted(fingerprint.items()))).encode())[:16]}"
                                  ".cache")
    built: dict[str, Any] = {}

    def build(path: Path) -> TensorRTEngine:
        previous = timing_path.read_bytes() if timing_path.is_file() else None
        with cuda.activate():
            result = build_plan(trt, onnx_bytes, build_options, previous, logger)
        path.write_bytes(result.plan)
        if result.timing_cache:
            try:
                write_atomic(timing_path, result.timing_cache)
            except OSError as error:
                log.warning("could not save the TensorRT timing cache (%s); later builds start cold", error)
        built.update(fp16=result.fp16, profiles=result.profiles)
        return TensorRTEngine(result.plan, trt, cuda, logger)

    def load(path: Path) -> TensorRTEngine:
        return TensorRTEngine(path.read_bytes(), trt, cuda, logger)

    _check_recent_failure(cache, model_id, inputs, options.trt_retry_hours)
    try:
        outcome = cache.get_or_build(model_id, inputs, TRT_ARTIFACT, build, load,
                                     extra_metadata={**_versions(tensorrt=version, cuda_binding=cuda.name),
                                                     "build": built})
    except Exception as error:
        cache.record_failure(model_id, inputs, f"{type(error).__name__}: {error}")
        raise
    cache.clear_failure(model_id, inputs)
    engine = outcome.value
    recorded = outcome.entry.metadata.get("build", {}) if outcome.entry else built
    fp16 = bool(recorded.get("fp16"))
    _record(engine, outcome, "tensorrt", version, "fp16" if fp16 else "fp32")
    return engine
