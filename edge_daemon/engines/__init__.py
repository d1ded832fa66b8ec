"""Inference backends behind one small interface (see `base.Engine`).

`create_engine` is the single place that decides which backend runs a model; the platform probe and the
TensorRT builder plug in here.
"""

from __future__ import annotations

from pathlib import Path

from edge_daemon.engines.base import Engine, TensorSpec
from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine

__all__ = ["Engine", "TensorSpec", "create_engine"]


def create_engine(weights: Path, intra_op_threads: int = 0) -> Engine:
    return OnnxRuntimeEngine(weights, intra_op_threads=intra_op_threads)
