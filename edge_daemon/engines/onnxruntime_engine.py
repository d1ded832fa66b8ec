"""ONNX Runtime backend: one session per model, tuned for a small CPU box."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge_daemon.engines.base import TensorSpec
from edge_daemon.errors import ModelArtifactError

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _spec(arg: ort.NodeArg) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) and dim > 0 else None for dim in arg.shape)
    return TensorSpec(arg.name, shape, _DTYPES.get(arg.type, arg.type))


class OnnxRuntimeEngine:
    backend = "onnxruntime"

    def __init__(self, weights: Path, intra_op_threads: int = 0, providers: list[str] | None = None):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(weights), sess_options=options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 (ORT raises its own exception types)
            raise ModelArtifactError(f"ONNX Runtime cannot load the model: {str(error)[:300]}") from None
        self.providers = self.session.get_providers()
        self.inputs = [_spec(arg) for arg in self.session.get_inputs()]
        self.outputs = [_spec(arg) for arg in self.session.get_outputs()]
        if len(self.inputs) != 1:
            raise ModelArtifactError(f"models must have one image input, this one has {len(self.inputs)}")
        self._input_name = self.inputs[0].name
        self._input_dtype = np.float16 if self.inputs[0].dtype == "float16" else np.float32

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if batch.dtype != self._input_dtype:
            batch = batch.astype(self._input_dtype)
        outputs = self.session.run(None, {self._input_name: batch})
        return [np.asarray(out, dtype=np.float32) if out.dtype == np.float16 else out for out in outputs]
