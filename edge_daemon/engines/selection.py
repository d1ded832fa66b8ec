"""Which backend runs models on this box, decided once from the platform probe.

TensorRT needs every link of a chain: an NVIDIA GPU (Jetson or discrete), `tensorrt` importing, a CUDA
binding importing (pycuda as on JetPack, else NVIDIA's cuda-python `cuda.bindings`) and a CUDA device that
answers. Any missing link means ONNX Runtime, with the CUDA execution provider when it really loads and the
CPU otherwise. The reason is kept as a sentence for logs, `/info` and `edge-daemon probe`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edge_daemon.platform.probe import PlatformInfo

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "remote")  # remote: a KServe v2 server (remote_engine.py)
PRECISIONS = ("auto", "fp16", "fp32")
# Fast FP16 arrived with compute capability 5.3 on Tegra (Nano/TX1) and 7.0 on discrete GPUs (Volta);
# 6.0 (P100) also has it but is no edge part. TensorRT's `platform_has_fast_fp16` has the last word at build.
JETSON_FAST_FP16 = (5, 3)
DISCRETE_FAST_FP16 = (7, 0)


@dataclass(frozen=True)
class BackendChoice:
    backend: str                      # "tensorrt" | "onnxruntime" | "remote"
    providers: tuple[str, ...]        # ONNX Runtime providers (also the fallback when TensorRT fails later)
    precision: str                    # "fp16" | "fp32"
    cuda_binding: str | None          # "pycuda" | "cuda.bindings" when backend is tensorrt
    reason: str
    requested: str = "auto"

    @property
    def fell_back(self) -> bool:
        return self.requested == "tensorrt" and self.backend != "tensorrt"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "providers": list(self.providers), "precision": self.precision,
                "cuda_binding": self.cuda_binding, "reason": self.reason, "requested": self.requested}


def _version_tuple(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = (text or "").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def has_fast_fp16(info: PlatformInfo) -> bool:
    """Pre-check from the compute capability; TensorRT's builder confirms it when the plan is built."""
    capability = _version_tuple(info.compute_capability)
    if capability is None:
        return False
    return capability >= (JETSON_FAST_FP16 if info.is_jetson else DISCRETE_FAST_FP16)


def tensorrt_blocker(info: PlatformInfo) -> str | None:
    """Why TensorRT cannot run here, or None when every requirement holds."""
    if not info.has_nvidia_gpu:
        return f"no NVIDIA GPU on this {info.device_kind} box"
    if info.tensorrt_version is None:
        return "the tensorrt Python package does not import"
    if not info.cuda_bindings:
        return "no CUDA binding imports (install pycuda, or cuda-python for cuda.bindings)"
    if info.gpu is None:
        return "no CUDA device answered (driver, permissions on /dev/nvhost*/nvidia*, or the video group?)"
    return None


def preferred_binding(info: PlatformInfo) -> str | None:
    """pycuda when present (JetPack ships it), else cuda.bindings."""
    for binding in ("pycuda", "cuda.bindings"):
        if binding in info.cuda_bindings:
            return binding
    return None


def onnxruntime_providers(info: PlatformInfo) -> tuple[str, ...]:
    if "CUDAExecutionProvider" in info.ort_providers:
        return ("CUDAExecutionProvider", "CPUExecutionProvider")
    return ("CPUExecutionProvider",)


def _precision(info: PlatformInfo, requested: str) -> tuple[str, str]:
    fast = has_fast_fp16(info)
    if requested == "fp32":
        return "fp32", "fp32 as configured"
    if fast:
        return "fp16", f"fp16 (compute capability {info.compute_capability} has fast FP16)"
    why = f"compute capability {info.compute_capability or 'unknown'} lacks fast FP16"
    if requested == "fp16":
        log.warning("precision fp16 requested but %s; building fp32", why)
    return "fp32", f"fp32 ({why})"


def choose_backend(info: PlatformInfo, requested: str = "auto", precision: str = "auto") -> BackendChoice:
    """The backend, ONNX Runtime providers and precision for this box; `requested` in auto|tensorrt|onnxruntime|remote."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    providers = onnxruntime_providers(info)
    ort_device = "CUDA execution provider" if providers[0] == "CUDAExecutionProvider" else "CPU"
    if requested == "onnxruntime":
        return BackendChoice("onnxruntime", providers, "fp32", None,
                             f"ONNX Runtime on the {ort_device} as configured", requested)
    if requested == "remote":
        return BackendChoice("remote", providers, "fp32", None,
                             "a KServe v2 inference server (remote_url) as configured", requested)
    blocker = tensorrt_blocker(info)
    if blocker is None:
        chosen_precision, precision_reason = _precision(info, precision)
        binding = preferred_binding(info)
        gpu = info.gpu.name if info.gpu else "GPU"
        return BackendChoice("tensorrt", providers, chosen_precision, binding,
                             f"TensorRT {info.tensorrt_version} on {gpu} via {binding}, {precision_reason}",
                             requested)
    reason = f"ONNX Runtime on the {ort_device}: TensorRT unusable ({blocker})"
    if requested == "tensorrt":
        log.warning("backend tensorrt requested but %s; falling back to ONNX Runtime on the %s", blocker,
                    ort_device)
    return BackendChoice("onnxruntime", providers, "fp32", None, reason, requested)
