"""What the board says about itself: device tree (model, compatible), /proc/cpuinfo and the NVIDIA driver.

All paths are read relative to an injectable root so tests replay files recorded on real devices. Missing or
unreadable files mean "not this kind of board", never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_daemon.platform.jetson import jetpack_for_l4t, parse_l4t_release

DEVICE_TREE_DIRS = ("proc/device-tree", "sys/firmware/devicetree/base")

# Arm cores by (CPU implementer, CPU part) from /proc/cpuinfo, which names no model on Arm.
ARM_CORES: dict[tuple[str, str], str] = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd04"): "Cortex-A35", ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57", ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75", ("0x41", "0xd0b"): "Cortex-A76", ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd0d"): "Cortex-A77", ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd42"): "Cortex-A78AE", ("0x41", "0xd44"): "Cortex-X1", ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x4e", "0x004"): "NVIDIA Carmel",
}


@dataclass(frozen=True)
class BoardFacts:
    model: str | None
    compatible: tuple[str, ...]
    l4t_release: str | None
    jetpack: str | None
    cpu_model: str | None
    cpu_cores: int
    cpu_features: tuple[str, ...]
    nvidia_driver: str | None

    @property
    def tegra_soc(self) -> str | None:
        """'tegra234' from 'nvidia,tegra234' in the compatible list (the SoC, whatever the carrier board)."""
        for entry in self.compatible:
            vendor, _, name = entry.partition(",")
            if vendor == "nvidia" and name.startswith("tegra") and name[5:].isdigit():
                return name
        return None

    @property
    def broadcom_soc(self) -> str | None:
        for entry in self.compatible:
            vendor, _, name = entry.partition(",")
            if vendor == "brcm" and name.startswith("bcm"):
                return name
        return None

    @property
    def is_jetson(self) -> bool:
        return bool(self.l4t_release or self.tegra_soc or (self.model and "Jetson" in self.model))

    @property
    def is_raspberry_pi(self) -> bool:
        return any(entry.startswith("raspberrypi,") for entry in self.compatible) or bool(
            self.model and self.model.startswith("Raspberry Pi"))


def _read_text(root: Path, relative: str) -> str | None:
    try:
        return (root / relative).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def _device_tree(root: Path, name: str) -> str | None:
    for folder in DEVICE_TREE_DIRS:
        text = _read_text(root, f"{folder}/{name}")
        if text is not None:
            return text
    return None


def parse_compatible(raw: str | None) -> tuple[str, ...]:
    """The kernel exposes `compatible` as NUL-separated strings, most specific first."""
    if not raw:
        return ()
    return tuple(entry.strip() for entry in raw.split("\0") if entry.strip())


def parse_cpuinfo(text: str | None) -> tuple[str | None, int, tuple[str, ...]]:
    """(CPU model, logical CPU count, feature flags) from /proc/cpuinfo on x86 ('flags') or Arm ('Features')."""
    if not text:
        return None, 0, ()
    model: str | None = None
    implementer = part = ""
    cores = 0
    features: tuple[str, ...] = ()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            cores += 1
        elif key == "model name" and model is None:
            model = value
        elif key in ("flags", "Features") and not features:
            features = tuple(value.split())
        elif key == "CPU implementer" and not implementer:
            implementer = value.lower()
        elif key == "CPU part" and not part:
            part = value.lower()
    if (model is None or model.startswith("ARMv")) and implementer:
        model = ARM_CORES.get((implementer, part), f"Arm core {implementer}/{part}")
    return model, cores, features


def read_board(root: Path) -> BoardFacts:
    model_raw = _device_tree(root, "model")
    model = model_raw.replace("\0", "").strip() if model_raw else None
    release_text = _read_text(root, "etc/nv_tegra_release")
    l4t = parse_l4t_release(release_text) if release_text else None
    cpu_model, cores, features = parse_cpuinfo(_read_text(root, "proc/cpuinfo"))
    driver_text = _read_text(root, "proc/driver/nvidia/version")
    driver = driver_text.splitlines()[0].strip() if driver_text and driver_text.strip() else None
    return BoardFacts(model=model or None, compatible=parse_compatible(_device_tree(root, "compatible")),
                      l4t_release=l4t, jetpack=jetpack_for_l4t(l4t), cpu_model=cpu_model, cpu_cores=cores,
                      cpu_features=features, nvidia_driver=driver)
