"""Platform probe on files recorded from real devices, and the backend each device gets.

The recorded files live in tests/fixtures/devices/<device>/ at their real paths (etc/nv_tegra_release,
proc/device-tree/model|compatible with the kernel's NULs, proc/cpuinfo, proc/driver/nvidia/version).
TensorRT and the CUDA bindings are injected as fakes (tests/support/fake_tensorrt.py) where a device
should have them; ONNX Runtime is the real one installed here.
"""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_daemon.engines.selection import choose_backend, has_fast_fp16
from edge_daemon.platform import probe
from edge_daemon.platform.board import parse_compatible
from edge_daemon.platform.jetson import jetpack_for_l4t, parse_l4t_release
from edge_daemon.platform.runtimes import RuntimeFacts, probe_onnxruntime
from edge_daemon.platform.tiny_onnx import identity_model
from tests.support.fake_tensorrt import FakeGpu, no_nvidia_import, nvidia_stack

DEVICES = Path(__file__).parent / "fixtures" / "devices"

# device folder: (uname -m, kind, SoC, L4T, JetPack, board model, CPU, cores, compute capability)
RECORDED = {
    "jetson-orin-nano-jp62": ("aarch64", "jetson", "tegra234", "36.4.3", "6.2",
                              "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
                              "Cortex-A78AE", 6, "8.7"),
    "jetson-agx-orin-jp61": ("aarch64", "jetson", "tegra234", "36.4.0", "6.1",
                             "NVIDIA Jetson AGX Orin Developer Kit", "Cortex-A78AE", 12, "8.7"),
    "jetson-xavier-nx-jp51": ("aarch64", "jetson", "tegra194", "35.2.1", "5.1",
                              "NVIDIA Jetson Xavier NX Developer Kit", "NVIDIA Carmel", 6, "7.2"),
    "raspberry-pi-4": ("aarch64", "raspberry-pi", "bcm2711", None, None, "Raspberry Pi 4 Model B Rev 1.4",
                       "Cortex-A72", 4, None),
    "raspberry-pi-5": ("aarch64", "raspberry-pi", "bcm2712", None, None, "Raspberry Pi 5 Model B Rev 1.0",
                       "Cortex-A76", 4, None),
    "x86-n100": ("x86_64", "x86", None, None, None, None, "Intel(R) N100", 4, None),
    "x86-nvidia": ("x86_64", "x86-nvidia", None, None, None, None, None, None, None),
}


def recorded(device: str, import_module=no_nvidia_import):
    return probe(DEVICES / device, machine=RECORDED[device][0], import_module=import_module)


@pytest.mark.parametrize("device", sorted(RECORDED))
def test_recorded_devices_are_identified(device: str) -> None:
    arch, kind, soc, l4t, jetpack, model, cpu, cores, capability = RECORDED[device]
    info = recorded(device)
    assert (info.arch, info.device_kind, info.soc, info.l4t_release, info.jetpack) == (arch, kind, soc, l4t, jetpack)
    assert info.board_model == model
    if cpu is not None:
        assert (info.cpu_model, info.cpu_cores) == (cpu, cores)
    assert info.compute_capability == capability  # from the SoC table: no CUDA binding on these replays
    assert info.gpu is None and info.tensorrt_version is None
    json.dumps(info.to_dict())  # /info and `edge-daemon probe --json` serialise it as is


@pytest.mark.parametrize("device", sorted(RECORDED))
def test_without_tensorrt_every_device_runs_onnxruntime_on_the_cpu(device: str) -> None:
    choice = choose_backend(recorded(device))
    assert (choice.backend, choice.providers, choice.precision) == ("onnxruntime", ("CPUExecutionProvider",), "fp32")
    if RECORDED[device][1] == "jetson":
        assert "tensorrt" in choice.reason and "does not import" in choice.reason
    elif RECORDED[device][1] in ("raspberry-pi", "x86"):
        assert "no NVIDIA GPU" in choice.reason


def test_jetson_with_tensorrt_and_pycuda_chooses_tensorrt_fp16() -> None:
    stack = nvidia_stack("10.3.0", gpu=FakeGpu("Orin", (8, 7)))
    info = recorded("jetson-orin-nano-jp62", stack.import_module)
    assert info.gpu is not None and info.gpu.name == "Orin" and info.gpu.source == "pycuda"
    assert info.tensorrt_version == "10.3.0" and info.cuda_bindings == ("pycuda", "cuda.bindings")
    choice = choose_backend(info)
    assert (choice.backend, choice.precision, choice.cuda_binding) == ("tensorrt", "fp16", "pycuda")
    assert "TensorRT 10.3.0 on Orin via pycuda" in choice.reason
    assert choose_backend(info, precision="fp32").precision == "fp32"
    assert choose_backend(info, "onnxruntime").backend == "onnxruntime"


def test_xavier_with_cuda_python_only_uses_cuda_bindings() -> None:
    stack = nvidia_stack("8.5.2.2", bindings=("cuda.bindings",), gpu=FakeGpu("Xavier", (7, 2)))
    info = recorded("jetson-xavier-nx-jp51", stack.import_module)
    assert info.gpu is not None and info.gpu.source == "cuda.bindings" and info.gpu.compute_capability == "7.2"
    choice = choose_backend(info)
    assert (choice.backend, choice.cuda_binding, choice.precision) == ("tensorrt", "cuda.bindings", "fp16")


def test_jetson_whose_gpu_does_not_answer_falls_back_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    stack = nvidia_stack("10.3.0", gpu=FakeGpu(available=False))
    info = recorded("jetson-agx-orin-jp61", stack.import_module)
    assert info.gpu is None and info.tensorrt_version == "10.3.0"
    assert any("sees no usable CUDA device" in problem for problem in info.problems)
    with caplog.at_level(logging.WARNING):
        choice = choose_backend(info, "tensorrt")
    assert choice.backend == "onnxruntime" and choice.fell_back
    assert "no CUDA device answered" in choice.reason
    assert "backend tensorrt requested but no CUDA device answered" in caplog.text


def test_raspberry_pi_never_gets_tensorrt_even_if_it_imports(caplog: pytest.LogCaptureFixture) -> None:
    stack = nvidia_stack("10.3.0", gpu=FakeGpu(available=False))
    info = recorded("raspberry-pi-5", stack.import_module)
    with caplog.at_level(logging.WARNING):
        choice = choose_backend(info, "tensorrt")
    assert (choice.backend, choice.providers) == ("onnxruntime", ("CPUExecutionProvider",))
    assert "no NVIDIA GPU on this raspberry-pi box" in caplog.text


def test_x86_nvidia_gpu_precision_follows_compute_capability() -> None:
    turing = recorded("x86-nvidia", nvidia_stack(gpu=FakeGpu("NVIDIA GeForce RTX 2060", (7, 5))).import_module)
    assert turing.device_kind == "x86-nvidia" and turing.nvidia_driver.startswith("NVRM version: NVIDIA UNIX")
    assert choose_backend(turing).precision == "fp16"
    pascal = recorded("x86-nvidia", nvidia_stack(gpu=FakeGpu("NVIDIA GeForce GTX 1080", (6, 1))).import_module)
    assert not has_fast_fp16(pascal)
    choice = choose_backend(pascal, precision="fp16")
    assert (choice.backend, choice.precision) == ("tensorrt", "fp32") and "lacks fast FP16" in choice.reason


def test_invalid_requests_are_refused() -> None:
    info = recorded("x86-n100")
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend(info, "openvino")
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_backend(info, precision="int8")


@pytest.mark.parametrize(("line", "release", "jetpack"), [
    ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64", "36.4.0", "6.1"),
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic", "36.4.3", "6.2"),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", "35.4.1", "5.1.2"),
    ("# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64", "32.7.4", "4.6.4"),
    ("# R36 (release), REVISION: 9.1", "36.9.1", "6.x"),
    ("# R36 (release), REVISION: 3.0", "36.3.0", "6.0"),
])
def test_l4t_release_lines_map_to_jetpack(line: str, release: str, jetpack: str) -> None:
    assert parse_l4t_release(line) == release
    assert jetpack_for_l4t(release) == jetpack


def test_unreadable_or_foreign_files_are_not_errors(tmp_path: Path) -> None:
    assert parse_l4t_release("not a release line") is None and jetpack_for_l4t(None) is None
    assert parse_compatible("raspberrypi,5-model-b\0brcm,bcm2712\0") == ("raspberrypi,5-model-b", "brcm,bcm2712")
    info = probe(tmp_path, machine="riscv64", import_module=no_nvidia_import)
    assert (info.device_kind, info.board_model, info.soc) == ("arm64", None, None)
    assert info.cpu_cores >= 1


def test_summary_reads_well() -> None:
    text = recorded("jetson-orin-nano-jp62").summary()
    assert "device:       jetson (NVIDIA Jetson Orin Nano" in text
    assert "L4T 36.4.3 / JetPack 6.2, SoC tegra234" in text
    assert "providers that load: CPUExecutionProvider" in text


def test_tiny_probe_model_is_valid_onnx() -> None:
    model = onnx.load_from_string(identity_model())
    onnx.checker.check_model(model, full_check=True)
    assert [node.op_type for node in model.graph.node] == ["Identity"]


def test_providers_are_those_that_load_not_those_listed() -> None:
    """onnxruntime-gpu lists CUDAExecutionProvider even when libcudnn is missing; the session tells the truth."""

    class Session:
        def __init__(self, model: bytes, sess_options: object, providers: list[str]):
            self.providers = [p for p in providers if p != "CUDAExecutionProvider"]

        def get_providers(self) -> list[str]:
            return self.providers

        def run(self, outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [feeds["x"]]

    fake_ort = types.SimpleNamespace(
        __version__="1.22.0", SessionOptions=lambda: types.SimpleNamespace(log_severity_level=0),
        InferenceSession=Session,
        get_available_providers=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                         "CPUExecutionProvider"])
    facts = RuntimeFacts()
    probe_onnxruntime(facts, lambda name: fake_ort)
    assert facts.ort_providers_listed == ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                          "CPUExecutionProvider")
    assert facts.ort_providers == ("TensorrtExecutionProvider", "CPUExecutionProvider")
    assert any("CUDAExecutionProvider is listed by onnxruntime but did not load" in p for p in facts.problems)


def test_cuda_execution_provider_is_used_where_it_loads() -> None:
    from dataclasses import replace

    info = replace(recorded("x86-nvidia"), ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    choice = choose_backend(info)
    assert choice.backend == "onnxruntime"
    assert choice.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert "CUDA execution provider" in choice.reason
