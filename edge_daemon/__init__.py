"""edge-daemon: a Roboflow-Inference-compatible computer-vision server for edge boxes."""

import os

# ONNX Runtime wheels carry telemetry; switch it off before anything imports onnxruntime.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
