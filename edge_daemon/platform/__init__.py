"""Platform probe: which board this is (Jetson, Raspberry Pi, x86) and which inference runtimes work here.

A subpackage of `edge_daemon`, never a top-level `platform`: that name belongs to the standard library.
"""

from edge_daemon.platform.probe import DEVICE_KINDS, PlatformInfo, current_platform, probe
from edge_daemon.platform.runtimes import GpuInfo

__all__ = ["DEVICE_KINDS", "GpuInfo", "PlatformInfo", "current_platform", "probe"]
