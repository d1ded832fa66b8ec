"""edge-daemon: a Roboflow-Inference-compatible computer-vision server for edge boxes."""

import os

# ONNX Runtime wheels carry telemetry; switch it off before anything imports onnxruntime.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# Backstop for formats whose header edge_daemon does not parse itself (see images/header.py).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 28))

__version__ = "0.1.0"
