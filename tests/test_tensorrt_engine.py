"""TensorRT builder and runtime against a fake `tensorrt` and fake CUDA bindings that enforce the real APIs
of TensorRT 8.5, 8.6 and 10.x (tests/support/fake_tensorrt.py); the fake's "kernels" are ONNX Runtime, so
outputs are compared with the ONNX Runtime engine."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_daemon.engines import EngineOptions, create_engine
from edge_daemon.engines.cuda_binding import CudaError, load_cuda_binding
from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine
from edge_daemon.engines.tensorrt_engine import (
    BuildOptions,
    PlanLoadError,
    TensorRTEngine,
    TensorRTError,
    build_plan,
    make_logger,
)
from edge_daemon.inference import InferenceParams, LoadedModel
from edge_daemon.platform import probe
from tests.support.fake_tensorrt import FakeGpu, nvidia_stack
from tests.support.onnx_models import colour_detector, shape_segmenter

VERSIONS = ["8.5.2.2", "8.6.1", "10.3.0"]
BINDINGS = ["pycuda", "cuda.bindings"]
DEVICES = Path(__file__).parent / "fixtures" / "devices"


def compile_plan(stack, onnx: bytes, binding: str = "pycuda", **options):
    cuda = load_cuda_binding(binding, stack.import_module)
    with cuda.activate():
        built = build_plan(stack.tensorrt, onnx, BuildOptions(**options))
    return built, cuda


def ort_outputs(onnx: bytes, batch: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(onnx, providers=["CPUExecutionProvider"]).run(None, {"images": batch})


@pytest.mark.parametrize("version", VERSIONS)
def test_builder_uses_the_api_every_supported_version_has(version: str) -> None:
    stack = nvidia_stack(version)
    built, _ = compile_plan(stack, colour_detector(), precision="fp16", max_batch=8, workspace_bytes=256 << 20)
    calls = stack.tensorrt.calls
    explicit_batch = 1 if version.startswith("8.") else 0  # the flag is required on 8.x, deprecated on 10
    assert calls[:3] == ["Builder", f"Builder.create_network({explicit_batch})", "OnnxParser.parse"]
    assert "IBuilderConfig.set_memory_pool_limit" in calls and "IBuilderConfig.set_flag(FP16)" in calls
    assert calls.count("IOptimizationProfile.set_shape") == 1 and "IBuilderConfig.add_optimization_profile" in calls
    assert "IBuilderConfig.set_timing_cache" in calls and calls[-1] == "Builder.build_serialized_network"
    assert not any("deprecated" in call or "removed" in call for call in calls)
    assert built.fp16 and built.profiles == {"images": [[1, 3, 64, 64], [1, 3, 64, 64], [8, 3, 64, 64]]}
    assert built.timing_cache and built.timing_cache.startswith(b"FAKETIMING")


def test_fp16_only_where_the_gpu_has_fast_fp16(caplog: pytest.LogCaptureFixture) -> None:
    stack = nvidia_stack("10.3.0", fast_fp16=False)
    with caplog.at_level(logging.WARNING):
        built, _ = compile_plan(stack, colour_detector(), precision="fp16")
    assert not built.fp16 and "IBuilderConfig.set_flag(FP16)" not in stack.tensorrt.calls
    assert "no fast FP16" in caplog.text


def test_static_model_needs_no_profile_and_dynamic_spatial_dims_need_a_size() -> None:
    stack = nvidia_stack("10.3.0")
    built, _ = compile_plan(stack, colour_detector("yolov5", dynamic_batch=False))
    assert "IBuilderConfig.add_optimization_profile" not in stack.tensorrt.calls
    assert built.profiles == {"images": [[1, 3, 64, 64]] * 3}


def test_timing_cache_is_fed_back_into_the_next_build() -> None:
    stack = nvidia_stack("10.3.0")
    first, cuda = compile_plan(stack, colour_detector())
    with cuda.activate():
        second = build_plan(stack.tensorrt, shape_segmenter(), BuildOptions(), first.timing_cache)
    assert (first.timing_cache, second.timing_cache) == (b"FAKETIMING1", b"FAKETIMING2")


def test_damaged_timing_cache_only_costs_the_saving(caplog: pytest.LogCaptureFixture) -> None:
    stack = nvidia_stack("10.3.0")
    cuda = load_cuda_binding("pycuda", stack.import_module)
    with caplog.at_level(logging.WARNING), cuda.activate():
        built = build_plan(stack.tensorrt, colour_detector(), BuildOptions(), b"garbage from a full disk")
    assert built.plan and built.timing_cache == b"FAKETIMING1"
    assert "rejected the stored timing cache" in caplog.text


def test_every_orin_reports_the_same_gpu_but_gets_its_own_plan() -> None:
    stack = nvidia_stack("10.3.0", gpu=FakeGpu("Orin", (8, 7), 7_990_000_000))
    nano = probe(DEVICES / "jetson-orin-nano-jp62", machine="aarch64", import_module=stack.import_module)
    agx_stack = nvidia_stack("10.3.0", gpu=FakeGpu("Orin", (8, 7), 64_300_000_000))
    agx = probe(DEVICES / "jetson-agx-orin-jp61", machine="aarch64", import_module=agx_stack.import_module)
    assert nano.gpu.name == agx.gpu.name == "Orin"
    assert nano.fingerprint() != agx.fingerprint()
    assert nano.fingerprint()["gpu_memory_gib"] == "7" and agx.fingerprint()["board"].startswith("NVIDIA Jetson AGX")


def test_parse_and_build_failures_are_clear_errors() -> None:
    stack = nvidia_stack("10.3.0")
    with pytest.raises(TensorRTError, match="TensorRT cannot parse the ONNX model: .*failed to parse ONNX"):
        compile_plan(stack, b"\x08\x07 definitely not onnx")
    failing = nvidia_stack("8.6.1", fail_build=True)
    with pytest.raises(TensorRTError, match="TensorRT failed to build the engine \\(fake build failure"):
        compile_plan(failing, colour_detector())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("binding", BINDINGS)
def test_runtime_matches_onnxruntime_across_batches(version: str, binding: str) -> None:
    stack = nvidia_stack(version)
    onnx = colour_detector()
    built, cuda = compile_plan(stack, onnx, binding, precision="fp32", max_batch=4)
    engine = TensorRTEngine(built.plan, stack.tensorrt, cuda)
    assert [(spec.name, spec.shape, spec.dtype) for spec in engine.inputs] == [("images", (None, 3, 64, 64),
                                                                                 "float32")]
    assert [(spec.name, spec.shape) for spec in engine.outputs] == [("output0", (None, 7, 4))]
    assert engine.backend == "tensorrt" and engine.max_batch == 4
    rng = np.random.default_rng(1)
    for size in (1, 3, 6):  # 6 > the profile's max: split into 4 + 2
        batch = rng.random((size, 3, 64, 64), dtype=np.float32)
        (got,), (want,) = engine.run(batch), ort_outputs(onnx, batch)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    calls = stack.tensorrt.calls
    assert "IExecutionContext.execute_async_v3" in calls and "IExecutionContext.set_tensor_address" in calls
    assert not any("removed" in call for call in calls)
    assert stack.gpu.executions == 4  # 1 + 1 + 2 chunks
    engine.close()
    assert stack.gpu.memory == {}
    assert len(stack.gpu.streams) == (1 if binding == "pycuda" else 0)  # cuda.bindings streams are destroyed


def test_two_output_model_and_fp16_precision() -> None:
    stack = nvidia_stack("10.3.0")
    onnx = shape_segmenter()
    built, cuda = compile_plan(stack, onnx, "cuda.bindings", precision="fp16")
    engine = TensorRTEngine(built.plan, stack.tensorrt, cuda)
    batch = np.random.default_rng(2).random((2, 3, 128, 128), dtype=np.float32)
    got, want = engine.run(batch), ort_outputs(onnx, batch)
    assert [array.shape for array in got] == [array.shape for array in want] == [(2, 8, 2), (2, 2, 32, 32)]
    for mine, theirs in zip(got, want):
        np.testing.assert_allclose(mine, theirs, rtol=2e-3, atol=2e-3)  # FP16 kernels: close, not equal


def test_plan_from_another_tensorrt_does_not_deserialise() -> None:
    old = nvidia_stack("8.6.1")
    built, _ = compile_plan(old, colour_detector())
    new = nvidia_stack("10.3.0")
    cuda = load_cuda_binding("pycuda", new.import_module)
    with pytest.raises(PlanLoadError, match="Version tag does not match"):
        TensorRTEngine(built.plan, new.tensorrt, cuda, make_logger(new.tensorrt))


def test_the_fake_enforces_the_real_contracts() -> None:
    """Guards the guard: the mistakes the fake exists to catch do fail."""
    stack10, stack8 = nvidia_stack("10.3.0"), nvidia_stack("8.6.1")
    trt10, trt8 = stack10.tensorrt, stack8.tensorrt
    logger = make_logger(trt10)
    assert not hasattr(trt10.Builder(logger), "build_engine") and hasattr(trt8.Builder(make_logger(trt8)),
                                                                           "build_engine")
    assert not hasattr(trt10.IBuilderConfig(), "max_workspace_size")
    network8 = trt8.Builder(make_logger(trt8)).create_network(0)  # implicit batch on 8.x
    assert not trt8.OnnxParser(network8, make_logger(trt8)).parse(colour_detector())
    with pytest.raises(TypeError):
        trt10.Builder(object())
    built, cuda = compile_plan(stack10, colour_detector())
    engine = TensorRTEngine(built.plan, trt10, cuda)
    context = engine._context
    with pytest.raises(TypeError):
        context.execute_async_v3(engine._stream)  # the stream object, not its int handle
    with pytest.raises(TypeError):
        context.set_tensor_address("images", 1.5)
    assert not hasattr(context, "execute_async_v2")
    with pytest.raises(RuntimeError, match="no currently active context"):
        cuda.device_alloc(16)  # pycuda work outside a pushed context
    gpu = FakeGpu(available=False)
    with pytest.raises(CudaError, match="no usable CUDA binding"):
        load_cuda_binding(None, nvidia_stack(gpu=gpu).import_module)


# ----- through create_engine: selection, cache, fallback -------------------------------------------------------
def jetson(stack):
    return probe(DEVICES / "jetson-orin-nano-jp62", machine="aarch64", import_module=stack.import_module)


def trt_options(stack, cache: Path, **changes) -> EngineOptions:
    return EngineOptions(cache_dir=cache, import_module=stack.import_module, **changes)


def test_create_engine_builds_once_and_reuses_the_plan(tmp_path: Path) -> None:
    weights = tmp_path / "weights.onnx"
    weights.write_bytes(colour_detector())
    stack = nvidia_stack("10.3.0")
    info = jetson(stack)
    first = create_engine(weights, model_id="colour/1", options=trt_options(stack, tmp_path), platform=info)
    assert isinstance(first, TensorRTEngine)
    assert (first.build.backend, first.build.precision, first.build.cache_hit) == ("tensorrt", "fp16", False)
    entry = Path(first.build.cache_path)
    metadata = json.loads((entry / "metadata.json").read_text())
    assert (entry / "model.plan").is_file() and metadata["versions"]["tensorrt"] == "10.3.0"
    assert metadata["key_inputs"]["device"]["gpu"] == "Orin" and metadata["build"]["fp16"] is True
    assert list((tmp_path / "engines" / ".shared").glob("timing-*.cache"))

    builds = stack.tensorrt.calls.count("Builder.build_serialized_network")
    second = create_engine(weights, model_id="colour/1", options=trt_options(stack, tmp_path), platform=info)
    assert second.build.cache_hit and second.build.cache_key == first.build.cache_key
    assert stack.tensorrt.calls.count("Builder.build_serialized_network") == builds

    upgraded = nvidia_stack("10.4.0")  # a JetPack upgrade: another TensorRT, so another key, a fresh build
    third = create_engine(weights, model_id="colour/1", options=trt_options(upgraded, tmp_path),
                          platform=jetson(upgraded))
    assert not third.build.cache_hit and third.build.cache_key != first.build.cache_key


def test_plan_that_fails_to_deserialise_is_discarded_and_rebuilt(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    import hashlib

    weights = tmp_path / "weights.onnx"
    weights.write_bytes(colour_detector())
    stack = nvidia_stack("10.3.0")
    first = create_engine(weights, model_id="colour/1", options=trt_options(stack, tmp_path), platform=jetson(stack))
    entry = Path(first.build.cache_path)
    stale, _ = compile_plan(nvidia_stack("8.6.1"), colour_detector())  # a plan TensorRT 10.3 cannot read
    (entry / "model.plan").write_bytes(stale.plan)
    metadata = json.loads((entry / "metadata.json").read_text())
    metadata.update(artifact_bytes=len(stale.plan), artifact_sha256=hashlib.sha256(stale.plan).hexdigest())
    (entry / "metadata.json").write_text(json.dumps(metadata))
    with caplog.at_level(logging.WARNING):
        again = create_engine(weights, model_id="colour/1", options=trt_options(stack, tmp_path),
                              platform=jetson(stack))
    assert isinstance(again, TensorRTEngine) and not again.build.cache_hit
    assert "could not deserialise the plan" in caplog.text and "Version tag does not match" in caplog.text
    batch = np.ones((1, 3, 64, 64), np.float32)
    np.testing.assert_allclose(again.run(batch)[0], ort_outputs(colour_detector(), batch)[0], rtol=2e-3)


def test_tensorrt_failure_falls_back_to_onnxruntime(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    weights = tmp_path / "weights.onnx"
    weights.write_bytes(colour_detector())
    stack = nvidia_stack("10.3.0", fail_build=True)
    with caplog.at_level(logging.WARNING):
        engine = create_engine(weights, model_id="colour/1", options=trt_options(stack, tmp_path),
                               platform=jetson(stack))
    assert isinstance(engine, OnnxRuntimeEngine)
    assert "TensorRT failed for colour/1" in engine.build.fallback_reason
    assert "falling back to ONNX Runtime" in caplog.text
    assert not any(path.name == "model.plan" for path in tmp_path.rglob("*"))


def test_failed_build_is_not_repeated_at_every_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A restart after a failed TensorRT build serves on ONNX Runtime at once instead of building again; the
    build is retried after trt_retry_hours, on `models build` (retry 0), and a success clears the record."""
    from edge_daemon.engines import cache_admin

    weights = tmp_path / "weights.onnx"
    weights.write_bytes(colour_detector())
    failing = nvidia_stack("10.3.0", fail_build=True)
    first = create_engine(weights, model_id="colour/1", options=trt_options(failing, tmp_path),
                          platform=jetson(failing))
    assert isinstance(first, OnnxRuntimeEngine)
    assert failing.tensorrt.calls.count("Builder.build_serialized_network") == 1
    (record,) = cache_admin.list_failures(tmp_path)
    assert record["model_id"] == "colour/1" and record["attempts"] == 1 and "build" in record["reason"]

    with caplog.at_level(logging.WARNING):
        second = create_engine(weights, model_id="colour/1", options=trt_options(failing, tmp_path),
                               platform=jetson(failing))
    assert isinstance(second, OnnxRuntimeEngine)
    assert failing.tensorrt.calls.count("Builder.build_serialized_network") == 1  # not tried again
    assert "TensorRT skipped for colour/1: its build failed at" in second.build.fallback_reason
    assert "models build colour/1" in caplog.text

    retried = create_engine(weights, model_id="colour/1", options=trt_options(failing, tmp_path, trt_retry_hours=0),
                            platform=jetson(failing))
    assert isinstance(retried, OnnxRuntimeEngine)
    assert failing.tensorrt.calls.count("Builder.build_serialized_network") == 2
    assert cache_admin.list_failures(tmp_path)[0]["attempts"] == 2

    record_path = Path(cache_admin.list_failures(tmp_path)[0]["path"])
    stored = json.loads(record_path.read_text())
    stored["failed_unix"] -= 25 * 3600  # the default 24 h have passed
    record_path.write_text(json.dumps(stored))
    working = nvidia_stack("10.3.0")
    fixed = create_engine(weights, model_id="colour/1", options=trt_options(working, tmp_path),
                          platform=jetson(working))
    assert isinstance(fixed, TensorRTEngine)
    assert cache_admin.list_failures(tmp_path) == []

    create_engine(weights, model_id="colour/2", options=trt_options(failing, tmp_path), platform=jetson(failing))
    assert [record["model_id"] for record in cache_admin.list_failures(tmp_path)] == ["colour/2"]
    cache_admin.prune(tmp_path, remove_all=True)  # `cache prune --all` forgets failed builds too
    assert cache_admin.list_failures(tmp_path) == []


def test_loaded_model_serves_the_same_detections_on_tensorrt(model_store: Path, tmp_path: Path,
                                                              colour_image: np.ndarray) -> None:
    folder = model_store / "colour" / "1"
    stack = nvidia_stack("8.5.2.2", bindings=("cuda.bindings",))
    engine = create_engine(folder / "weights.onnx", model_id="colour/1",
                           options=trt_options(stack, tmp_path, precision="fp32"), platform=jetson(stack))
    assert engine.backend == "tensorrt"
    on_trt = LoadedModel("colour/1", folder, engine=engine).infer([colour_image], InferenceParams())
    on_ort = LoadedModel("colour/1", folder).infer([colour_image], InferenceParams())
    strip = [{key: value for key, value in p.items() if key != "detection_id"} for p in on_trt[0]["predictions"]]
    assert strip == [{key: value for key, value in p.items() if key != "detection_id"}
                     for p in on_ort[0]["predictions"]]
    assert strip  # the colour image does produce detections
