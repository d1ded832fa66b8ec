"""Jetson facts that are not in any file on the box: L4T release → JetPack, SoC → CUDA compute capability.

The tables follow jetson-stats (`NVIDIA_JETPACK`, `CUDA_TABLE`), which tracks NVIDIA's release notes. An L4T
release missing from the table still yields its JetPack family ("6.x") so a newer box is described, not
mislabelled.
"""

from __future__ import annotations

import re

# L4T release → JetPack release. Several L4T point releases map to one JetPack.
L4T_TO_JETPACK: dict[str, str] = {
    "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "35.6.1": "5.1.5", "35.6.2": "5.1.5", "35.6.3": "5.1.5", "35.6.4": "5.1.6",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.2": "6.1 (rev1)", "36.4.3": "6.2",
    "36.4.4": "6.2.1", "36.4.7": "6.2.1", "36.5.0": "6.2.2",
    "38.2.0": "7.0", "38.2.1": "7.0", "38.2.2": "7.0", "38.4.0": "7.1",
    "39.0.0": "7.2 EA", "39.2.0": "7.2",
}

# L4T major release → JetPack major, for releases newer than the table.
L4T_FAMILY: dict[int, str] = {32: "4", 34: "5", 35: "5", 36: "6", 38: "7", 39: "7"}

# Tegra SoC (device-tree compatible suffix) → CUDA compute capability of its integrated GPU.
SOC_COMPUTE_CAPABILITY: dict[str, str] = {
    "tegra264": "11.0",  # Thor
    "tegra234": "8.7",   # Orin
    "tegra194": "7.2",   # Xavier
    "tegra186": "6.2",   # TX2
    "tegra210": "5.3",   # Nano, TX1
}

_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?")


def parse_l4t_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, GCID: …' → '36.4.3'; None when the text is not an L4T release line."""
    match = _RELEASE.search(text)
    if match is None:
        return None
    major, minor, patch = match.group(1), match.group(2), match.group(3) or "0"
    return f"{int(major)}.{int(minor)}.{int(patch)}"


def jetpack_for_l4t(release: str | None) -> str | None:
    """The JetPack release for an L4T release ('36.4.3' → '6.2'); unknown point releases give '6.x'."""
    if not release:
        return None
    if release in L4T_TO_JETPACK:
        return L4T_TO_JETPACK[release]
    try:
        major = int(release.split(".")[0])
    except ValueError:
        return None
    family = L4T_FAMILY.get(major)
    return f"{family}.x" if family else None
