"""The platform probe: what box this is and which inference backends really work on it.

`probe()` reads the board's own files (relative to an injectable root, so tests replay files recorded on
real Jetsons, Raspberry Pis and x86 boxes) and asks the installed runtimes what they can do. The result is
a frozen `PlatformInfo`: backend selection, the engine-cache fingerprint, `edge-daemon probe` and `/info`
all read the same facts.
"""

from __future__ import annotations

import importlib
import os
import platform as std_platform  # the standard library's module (imports are absolute)
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_daemon.platform.board import BoardFacts, read_board
from edge_daemon.platform.jetson import SOC_COMPUTE_CAPABILITY
from edge_daemon.platform.runtimes import GpuInfo, ImportModule, RuntimeFacts, probe_runtimes

DEVICE_KINDS = ("jetson", "raspberry-pi", "x86-nvidia", "x86", "arm64")
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class PlatformInfo:
    device_kind: str
    arch: str
    board_model: str | None
    compatible: tuple[str, ...]
    soc: str | None
    l4t_release: str | None
    jetpack: str | None
    cpu_model: str | None
    cpu_cores: int
    cpu_features: tuple[str, ...]
    nvidia_driver: str | None
    onnxruntime_version: str | None
    ort_providers: tuple[str, ...]
    ort_providers_listed: tuple[str, ...]
    tensorrt_version: str | None
    cuda_bindings: tuple[str, ...]
    gpu: GpuInfo | None
    problems: tuple[str, ...] = ()

    @property
    def is_jetson(self) -> bool:
        return self.device_kind == "jetson"

    @property
    def has_nvidia_gpu(self) -> bool:
        """A Jetson's integrated GPU, a CUDA device that answered, or an NVIDIA kernel driver."""
        return self.is_jetson or self.gpu is not None or self.nvidia_driver is not None

    @property
    def compute_capability(self) -> str | None:
        """From the live device when a CUDA binding works; on a Jetson, else from its SoC."""
        if self.gpu is not None:
            return self.gpu.compute_capability
        return SOC_COMPUTE_CAPABILITY.get(self.soc or "") if self.is_jetson else None

    def fingerprint(self) -> dict[str, str]:
        """The device facts a compiled engine depends on (part of every engine-cache key).

        The board and GPU memory are in it because every Orin module reports the GPU as "Orin" with
        compute capability 8.7, while a plan tuned on an AGX Orin is not the one for an Orin Nano.
        """
        memory = self.gpu.total_memory_bytes if self.gpu else None
        return {
            "arch": self.arch,
            "board": self.board_model or "",
            "soc": self.soc or "",
            "gpu": self.gpu.name if self.gpu else "",
            "gpu_memory_gib": str(round(memory / 2**30)) if memory else "",
            "compute_capability": self.compute_capability or "",
            "l4t": self.l4t_release or "",
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_kind": self.device_kind, "arch": self.arch, "board_model": self.board_model,
            "compatible": list(self.compatible), "soc": self.soc, "l4t_release": self.l4t_release,
            "jetpack": self.jetpack, "cpu": {"model": self.cpu_model, "cores": self.cpu_cores,
                                              "features": list(self.cpu_features)},
            "nvidia_driver": self.nvidia_driver,
            "gpu": self.gpu.to_dict() if self.gpu else None, "compute_capability": self.compute_capability,
            "onnxruntime": {"version": self.onnxruntime_version, "providers": list(self.ort_providers),
                            "providers_listed": list(self.ort_providers_listed)},
            "tensorrt": {"version": self.tensorrt_version}, "cuda_bindings": list(self.cuda_bindings),
            "problems": list(self.problems),
        }

    def summary(self) -> str:
        """A few readable lines for `edge-daemon probe`."""
        board = self.board_model or self.cpu_model or "unknown board"
        lines = [f"device:       {self.device_kind} ({board}, {self.arch})"]
        if self.is_jetson:
            lines.append(f"jetson:       L4T {self.l4t_release or '?'} / JetPack {self.jetpack or '?'}, "
                         f"SoC {self.soc or '?'}")
        lines.append(f"cpu:          {self.cpu_model or '?'} x{self.cpu_cores}")
        if self.gpu:
            lines.append(f"gpu:          {self.gpu.name} (compute {self.gpu.compute_capability}, via {self.gpu.source})")
        elif self.has_nvidia_gpu:
            lines.append(f"gpu:          NVIDIA, not reachable from Python (compute {self.compute_capability or '?'})")
        lines.append(f"onnxruntime:  {self.onnxruntime_version or 'missing'}; providers that load: "
                     f"{', '.join(self.ort_providers) or 'none'}")
        lines.append(f"tensorrt:     {self.tensorrt_version or 'not importable'}; CUDA bindings: "
                     f"{', '.join(self.cuda_bindings) or 'none'}")
        lines.extend(f"note:         {problem}" for problem in self.problems)
        return "\n".join(lines)


def normalise_arch(machine: str) -> str:
    lowered = machine.strip().lower()
    return _ARCH_ALIASES.get(lowered, lowered)


def device_kind(board: BoardFacts, arch: str, gpu: GpuInfo | None) -> str:
    if board.is_jetson:
        return "jetson"
    if board.is_raspberry_pi:
        return "raspberry-pi"
    if arch in ("x86_64", "i686", "i386"):
        return "x86-nvidia" if gpu is not None or board.nvidia_driver else "x86"
    return "arm64"


def probe(root: Path = Path("/"), *, machine: str | None = None,
          import_module: ImportModule = importlib.import_module) -> PlatformInfo:
    """Probe the box. `root` and `machine` replay a recorded device; `import_module` swaps in fake runtimes."""
    board = read_board(Path(root))
    runtimes: RuntimeFacts = probe_runtimes(import_module)
    arch = normalise_arch(machine or std_platform.machine())
    kind = device_kind(board, arch, runtimes.gpu)
    soc = board.tegra_soc or board.broadcom_soc
    return PlatformInfo(
        device_kind=kind, arch=arch, board_model=board.model, compatible=board.compatible, soc=soc,
        l4t_release=board.l4t_release, jetpack=board.jetpack, cpu_model=board.cpu_model,
        cpu_cores=board.cpu_cores or (os.cpu_count() or 0), cpu_features=board.cpu_features,
        nvidia_driver=board.nvidia_driver, onnxruntime_version=runtimes.onnxruntime_version,
        ort_providers=runtimes.ort_providers, ort_providers_listed=runtimes.ort_providers_listed,
        tensorrt_version=runtimes.tensorrt_version, cuda_bindings=runtimes.cuda_bindings, gpu=runtimes.gpu,
        problems=tuple(runtimes.problems),
    )


_cached: PlatformInfo | None = None
_cache_lock = threading.Lock()


def current_platform(refresh: bool = False) -> PlatformInfo:
    """The probe of this process's box, run once (it imports runtimes and opens small sessions)."""
    global _cached
    with _cache_lock:
        if _cached is None or refresh:
            _cached = probe()
        return _cached
