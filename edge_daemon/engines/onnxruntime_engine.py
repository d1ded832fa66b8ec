"""ONNX Runtime backend: one session per model, tuned for a small CPU box.

`optimization` picks the graph-optimisation level: "all" for a plain load, "extended" when the optimised
graph is being written to the engine cache (`save_optimized_to`; layout optimisations of "all" can be tied
to the CPU that saved them), and "none" when loading such a cached graph, which is already optimised.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from edge_daemon.engines.arena_trim import ArenaTrimPolicy
from edge_daemon.engines.base import EngineBuild, TensorSpec
from edge_daemon.errors import ModelArtifactError

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort

# Warnings only: ORT's notice on saving "all"-level graphs is handled by keying those to the CPU's ISA.
ort.set_default_logger_severity(3)

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}
OPTIMIZATION_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def _spec(arg: ort.NodeArg) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) and dim > 0 else None for dim in arg.shape)
    return TensorSpec(arg.name, shape, _DTYPES.get(arg.type, arg.type))


class OnnxRuntimeEngine:
    backend = "onnxruntime"

    def __init__(self, weights: Path, intra_op_threads: int = 0, providers: list[str] | None = None, *,
                 optimization: str = "all", save_optimized_to: Path | None = None, spinning: bool = True,
                 arena_trim_seconds: float = 0.0):
        options = ort.SessionOptions()
        if not spinning:
            # Idle intra-op threads sleep instead of spinning, leaving the cores to other requests' decoding
            # (+30 % throughput for a 4 ms model at 8 clients; -14 % for a 145 ms one: bench/serving_overhead.py).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
        options.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if save_optimized_to is not None:
            options.optimized_model_filepath = str(save_optimized_to)
        started = time.perf_counter()
        try:
            self.session = ort.InferenceSession(str(weights), sess_options=options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 (ORT raises its own exception types)
            raise ModelArtifactError(f"ONNX Runtime cannot load the model: {str(error)[:300]}") from None
        self.optimization = optimization
        self.providers = self.session.get_providers()
        self.inputs = [_spec(arg) for arg in self.session.get_inputs()]
        self.outputs = [_spec(arg) for arg in self.session.get_outputs()]
        if len(self.inputs) != 1:
            raise ModelArtifactError(f"models must have one image input, this one has {len(self.inputs)}")
        self._input_name = self.inputs[0].name
        self._input_dtype = np.float16 if self.inputs[0].dtype == "float16" else np.float32
        self.build = EngineBuild(self.backend, ort.__version__, "fp32",
                                 load_seconds=time.perf_counter() - started)
        self.arena_trim = ArenaTrimPolicy(arena_trim_seconds)
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if batch.dtype != self._input_dtype:
            batch = batch.astype(self._input_dtype)
        options = self._shrink if self.arena_trim.should_shrink(len(batch)) else None
        outputs = self.session.run(None, {self._input_name: batch}, options)
        return [np.asarray(out, dtype=np.float32) if out.dtype == np.float16 else out for out in outputs]

    def close(self) -> None:
        """Release the session (weights, memory arena) now: an unloaded or refused model must not keep its
        memory until the garbage collector reaches whatever still refers to this engine."""
        self.session = None  # type: ignore[assignment]
