"""Inference backends behind one small interface (see `base.Engine`).

`create_engine` is the single place that decides which backend runs a model. Without a cache directory it
opens a plain ONNX Runtime session (as before); with `EngineOptions(cache_dir=...)` it consults the
platform probe, picks TensorRT or ONNX Runtime (`selection.py`) and compiles once per device into the
engine cache (`cache.py`, `factory.py`); `cache_admin.py` lists and prunes that cache. `--backend remote` runs
models on a KServe v2 server such as Triton instead (`remote_engine.py`, `kserve_v2.py`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edge_daemon.engines.base import Engine, EngineBuild, TensorSpec
from edge_daemon.engines.cache import COUNTERS as CACHE_COUNTERS
from edge_daemon.engines.factory import EngineOptions, compile_engine, engine_options
from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine
from edge_daemon.engines.selection import BackendChoice, choose_backend
from edge_daemon.platform.probe import PlatformInfo

__all__ = ["CACHE_COUNTERS", "BackendChoice", "Engine", "EngineBuild", "EngineOptions", "OnnxRuntimeEngine",
           "TensorSpec", "choose_backend", "create_engine", "engine_options"]


def create_engine(weights: Path, intra_op_threads: int = 0, *, model_id: str | None = None,
                  options: EngineOptions | None = None, platform: PlatformInfo | None = None,
                  choice: BackendChoice | None = None) -> Engine:
    """An engine for `weights`. `options.cache_dir` turns on backend selection and the engine cache."""
    if options is None or options.cache_dir is None:
        return OnnxRuntimeEngine(weights, intra_op_threads=intra_op_threads)
    if intra_op_threads and not options.intra_op_threads:
        options = replace(options, intra_op_threads=intra_op_threads)
    return compile_engine(Path(weights), model_id or Path(weights).parent.name, options, platform, choice)
