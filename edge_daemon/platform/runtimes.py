"""What the installed inference runtimes can really do on this box.

Every check is lazy and guarded: TensorRT, pycuda and cuda-python are optional, may be half-installed
(bindings without libraries), and CUDA calls fail on machines without a GPU or driver. A failure becomes a
line in `problems`, never an exception. `import_module` is injectable so tests can hand in fake modules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from edge_daemon.platform.tiny_onnx import identity_model

log = logging.getLogger(__name__)

ImportModule = Callable[[str], ModuleType]
# EPs that are listed by ORT but are not local accelerators worth probing.
_SKIP_PROVIDERS = {"CPUExecutionProvider", "AzureExecutionProvider"}
CUDA_BINDINGS = ("pycuda", "cuda.bindings")


@dataclass(frozen=True)
class GpuInfo:
    """The first CUDA device, as reported by a working CUDA binding."""

    name: str
    compute_capability: str
    total_memory_bytes: int | None
    source: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "compute_capability": self.compute_capability,
                "total_memory_bytes": self.total_memory_bytes, "source": self.source}


@dataclass
class RuntimeFacts:
    onnxruntime_version: str | None = None
    ort_providers_listed: tuple[str, ...] = ()
    ort_providers: tuple[str, ...] = ()
    tensorrt_version: str | None = None
    cuda_bindings: tuple[str, ...] = ()
    gpu: GpuInfo | None = None
    problems: list[str] = field(default_factory=list)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def probe_onnxruntime(facts: RuntimeFacts, import_module: ImportModule) -> None:
    """Record ORT's version and the providers that load AND run a tiny model (listed ≠ usable)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        ort = import_module("onnxruntime")
    except Exception as error:  # noqa: BLE001 (a broken install may raise anything at import)
        facts.problems.append(f"onnxruntime does not import: {_short(error)}")
        return
    facts.onnxruntime_version = getattr(ort, "__version__", None)
    try:
        listed = tuple(ort.get_available_providers())
    except Exception as error:  # noqa: BLE001
        facts.problems.append(f"onnxruntime lists no providers: {_short(error)}")
        return
    facts.ort_providers_listed = listed
    model = identity_model()
    usable = [provider for provider in listed
              if provider not in _SKIP_PROVIDERS and _provider_runs(ort, model, provider, facts)]
    if "CPUExecutionProvider" in listed:
        usable.append("CPUExecutionProvider")
    facts.ort_providers = tuple(usable)


def _provider_runs(ort: ModuleType, model: bytes, provider: str, facts: RuntimeFacts) -> bool:
    try:
        import numpy as np

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model, sess_options=options,
                                       providers=[provider, "CPUExecutionProvider"])
        if provider not in session.get_providers():
            facts.problems.append(f"{provider} is listed by onnxruntime but did not load (missing libraries?)")
            return False
        session.run(None, {"x": np.zeros(4, np.float32)})
        return True
    except Exception as error:  # noqa: BLE001 (EP failures surface as assorted ORT errors)
        facts.problems.append(f"{provider} failed: {_short(error)}")
        return False


def probe_tensorrt(facts: RuntimeFacts, import_module: ImportModule) -> None:
    try:
        trt = import_module("tensorrt")
        facts.tensorrt_version = str(trt.__version__)
    except Exception as error:  # noqa: BLE001 (stub wheels raise OSError/ImportError/RuntimeError)
        facts.problems.append(f"tensorrt does not import: {_short(error)}")


def probe_cuda(facts: RuntimeFacts, import_module: ImportModule) -> None:
    """Which CUDA bindings import, and the first GPU from the first binding that can talk to a device."""
    found: list[str] = []
    for binding, query in (("pycuda", _query_pycuda), ("cuda.bindings", _query_cuda_bindings)):
        try:
            module = import_module("pycuda.driver" if binding == "pycuda" else "cuda.bindings.runtime")
        except Exception as error:  # noqa: BLE001
            facts.problems.append(f"{binding} does not import: {_short(error)}")
            continue
        found.append(binding)
        if facts.gpu is None:
            try:
                facts.gpu = query(module)
            except Exception as error:  # noqa: BLE001 (no driver, no device, no permission on /dev/nvmap…)
                facts.problems.append(f"{binding} sees no usable CUDA device: {_short(error)}")
    facts.cuda_bindings = tuple(found)


def _query_pycuda(driver: ModuleType) -> GpuInfo:
    driver.init()
    if driver.Device.count() < 1:
        raise RuntimeError("no CUDA device")
    device = driver.Device(0)
    major, minor = device.compute_capability()
    return GpuInfo(str(device.name()), f"{major}.{minor}", int(device.total_memory()), "pycuda")


def _query_cuda_bindings(runtime: ModuleType) -> GpuInfo:
    success = runtime.cudaError_t.cudaSuccess
    error, count = runtime.cudaGetDeviceCount()
    if error != success:
        raise RuntimeError(_cuda_error_text(runtime, error))
    if count < 1:
        raise RuntimeError("no CUDA device")
    error, props = runtime.cudaGetDeviceProperties(0)
    if error != success:
        raise RuntimeError(_cuda_error_text(runtime, error))
    name = props.name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(props.name, bytes) else str(
        props.name)
    return GpuInfo(name, f"{props.major}.{props.minor}", int(props.totalGlobalMem), "cuda.bindings")


def _cuda_error_text(runtime: ModuleType, error: object) -> str:
    try:
        _, text = runtime.cudaGetErrorString(error)
        return text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    except Exception:  # noqa: BLE001
        return str(error)


def probe_runtimes(import_module: ImportModule) -> RuntimeFacts:
    facts = RuntimeFacts()
    probe_onnxruntime(facts, import_module)
    probe_tensorrt(facts, import_module)
    probe_cuda(facts, import_module)
    return facts
