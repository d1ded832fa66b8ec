"""TensorRT builder and runtime on the one API path that TensorRT 8.5 through 10.x share.

Build: parse the ONNX bytes, configure (workspace pool limit, FP16 where the GPU has fast FP16, one
optimisation profile for dynamic batch/shape, a persisted timing cache) and `build_serialized_network`.
Run: deserialise the plan, bind every I/O tensor by name with `set_tensor_address`, `execute_async_v3` on a
stream, copy back, synchronise. Removed-in-10 calls (`build_engine`, `max_workspace_size`, binding indices,
`execute_async_v2`) are never used. `tensorrt` is imported lazily; the module object is passed in so tests
can hand over a fake that enforces the real API.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from edge_daemon.engines.base import EngineBuild, TensorSpec
from edge_daemon.engines.cuda_binding import CudaBinding

log = logging.getLogger(__name__)
trt_log = logging.getLogger("edge_daemon.tensorrt")

DEFAULT_WORKSPACE_BYTES = 1 << 30


class TensorRTError(RuntimeError):
    """TensorRT could not parse, build or run the model; the message says which and why."""


class PlanLoadError(TensorRTError):
    """A serialized plan does not deserialise here (other TensorRT version or device, or a corrupt file)."""


def tensorrt_major(trt: ModuleType) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0


def make_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that forwards to Python logging and keeps recent errors for exception messages."""

    severity = trt.ILogger.Severity

    class _Logger(trt.ILogger):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level: Any, message: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors = [*self.errors[-9:], str(message)]
                trt_log.error("%s", message)
            elif level == severity.WARNING:
                trt_log.warning("%s", message)
            elif level == severity.INFO:
                trt_log.debug("%s", message)

    return _Logger()


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings; all of them are part of the engine-cache key."""

    precision: str = "fp16"                 # "fp16" (when the GPU has fast FP16) or "fp32"
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 4                       # wide profiles make builds much slower on Jetson
    input_hw: tuple[int, int] | None = None  # (height, width) for models with dynamic spatial dims
    builder_optimization_level: int | None = None  # TensorRT ≥ 8.6; None keeps TensorRT's default (3)

    def to_key(self) -> dict[str, Any]:
        return {"workspace_bytes": self.workspace_bytes, "batch": [self.min_batch, self.opt_batch, self.max_batch],
                "input_hw": list(self.input_hw) if self.input_hw else None,
                "builder_optimization_level": self.builder_optimization_level}


@dataclass(frozen=True)
class BuiltPlan:
    plan: bytes
    timing_cache: bytes | None
    fp16: bool
    profiles: dict[str, list[list[int]]]


def _network_flags(trt: ModuleType) -> int:
    """EXPLICIT_BATCH is required by the ONNX parser on 8.x and deprecated (ignored) from 10.0 on."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if tensorrt_major(trt) < 10 and flag is not None:
        return 1 << int(flag)
    return 0


def _profile_shapes(shape: tuple[int, ...], options: BuildOptions) -> list[list[int]]:
    """(min, opt, max) for one input: dynamic batch from the options, dynamic H/W from `input_hw`."""
    rows: list[list[int]] = [[], [], []]
    for axis, dim in enumerate(shape):
        if dim >= 0:
            values = [dim, dim, dim]
        elif axis == 0:
            values = [options.min_batch, options.opt_batch, options.max_batch]
        elif len(shape) == 4 and axis in (2, 3) and options.input_hw:
            size = options.input_hw[axis - 2]
            values = [size, size, size]
        else:
            raise TensorRTError(f"input dimension {axis} of shape {list(shape)} is dynamic and no size is "
                                "configured for it")
        for row, value in zip(rows, values):
            row.append(int(value))
    return rows


def build_plan(trt: ModuleType, onnx_bytes: bytes, options: BuildOptions, timing_cache: bytes | None = None,
               logger: Any = None) -> BuiltPlan:
    """Compile ONNX bytes to a serialized TensorRT plan (slow: seconds to many minutes on a Jetson)."""
    logger = logger or make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(index)) for index in range(parser.num_errors)]
        raise TensorRTError("TensorRT cannot parse the ONNX model: " + ("; ".join(errors) or "no details"))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    fp16 = options.precision == "fp16" and _fast_fp16(builder)
    if options.precision == "fp16" and not fp16:
        log.warning("this GPU has no fast FP16 (builder.platform_has_fast_fp16 is false); building fp32")
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.builder_optimization_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(options.builder_optimization_level)
    profiles = _add_profile(builder, network, config, options)
    _use_timing_cache(config, timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(getattr(logger, "errors", [])[-3:]) or "see the TensorRT log"
        raise TensorRTError(f"TensorRT failed to build the engine ({detail})")
    new_cache = config.get_timing_cache()
    timing = bytes(new_cache.serialize()) if new_cache is not None else None
    return BuiltPlan(bytes(serialized), timing, fp16, profiles)


def _use_timing_cache(config: Any, stored: bytes | None) -> None:
    """Reuse tactic timings from earlier builds on this device (minutes saved per build); a stored cache
    TensorRT rejects (other device or version, damaged file) only costs the saving."""
    try:
        cache = config.create_timing_cache(stored or b"")
        if cache is not None and config.set_timing_cache(cache, False):
            return
    except Exception as error:  # noqa: BLE001 (TensorRT raises RuntimeError/TypeError variants)
        log.warning("TensorRT rejected the stored timing cache (%s)", str(error)[:200])
    if stored:
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _fast_fp16(builder: Any) -> bool:
    return bool(getattr(builder, "platform_has_fast_fp16", False))


def _add_profile(builder: Any, network: Any, config: Any, options: BuildOptions) -> dict[str, list[list[int]]]:
    shapes: dict[str, list[list[int]]] = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shapes[tensor.name] = _profile_shapes(tuple(int(dim) for dim in tensor.shape), options)
    if any(-1 in (int(dim) for dim in network.get_input(i).shape) for i in range(network.num_inputs)):
        profile = builder.create_optimization_profile()
        for name, (low, best, high) in shapes.items():
            profile.set_shape(name, tuple(low), tuple(best), tuple(high))
        config.add_optimization_profile(profile)
    return shapes


@dataclass
class _Binding:
    name: str
    dtype: np.dtype
    is_input: bool
    pointer: int = 0
    host: np.ndarray | None = None
    capacity: int = 0


class TensorRTEngine:
    """A deserialised plan ready to run; satisfies the `Engine` protocol (runs are serialised by a lock:
    one execution context, one stream)."""

    backend = "tensorrt"

    def __init__(self, plan: bytes, trt: ModuleType, cuda: CudaBinding, logger: Any = None):
        self._trt, self._cuda = trt, cuda
        self._logger = logger or make_logger(trt)
        self._lock = threading.Lock()
        with cuda.activate():
            if hasattr(trt, "init_libnvinfer_plugins"):
                trt.init_libnvinfer_plugins(self._logger, "")
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                detail = "; ".join(getattr(self._logger, "errors", [])[-2:]) or "no details"
                raise PlanLoadError(f"TensorRT could not deserialise the plan ({detail})")
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise TensorRTError("TensorRT could not create an execution context (out of GPU memory?)")
            self._stream = cuda.stream()
        self._bindings = self._describe()
        self.inputs = [spec for spec, binding in self._specs if binding.is_input]
        self.outputs = [spec for spec, binding in self._specs if not binding.is_input]
        if len(self.inputs) != 1:
            raise TensorRTError(f"models must have one image input, this one has {len(self.inputs)}")
        self._input = next(binding for binding in self._bindings if binding.is_input)
        self.max_batch = self._max_batch()
        self.build = EngineBuild(self.backend, str(trt.__version__), "fp32")

    def _describe(self) -> list[_Binding]:
        trt, engine = self._trt, self._engine
        bindings: list[_Binding] = []
        self._specs: list[tuple[TensorSpec, _Binding]] = []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(int(dim) for dim in engine.get_tensor_shape(name))
            binding = _Binding(name, dtype, is_input)
            spec_dtype = "float32" if dtype == np.float16 and not is_input else str(dtype)
            self._specs.append((TensorSpec(name, tuple(dim if dim >= 0 else None for dim in shape), spec_dtype),
                                binding))
            bindings.append(binding)
        return bindings

    def _max_batch(self) -> int | None:
        """Largest batch the optimisation profile accepts; None when the batch dimension is fixed."""
        if self.inputs[0].shape and self.inputs[0].shape[0] is not None:
            return None
        shapes = self._engine.get_tensor_profile_shape(self._input.name, 0)
        return int(next(iter(shapes[2])))

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Same output layout as ONNX Runtime (float32, model's shapes); batches above the profile are split."""
        limit = self.max_batch
        if limit is None or len(batch) <= limit:
            return self._run_chunk(batch)
        parts = [self._run_chunk(batch[start:start + limit]) for start in range(0, len(batch), limit)]
        return [np.concatenate([part[index] for part in parts]) for index in range(len(parts[0]))]

    def _run_chunk(self, batch: np.ndarray) -> list[np.ndarray]:
        data = np.ascontiguousarray(batch, dtype=self._input.dtype)
        with self._lock, self._cuda.activate():
            sizes = self._bind(data.shape)
            host_in = self._input.host
            assert host_in is not None
            host_in[:data.nbytes] = data.reshape(-1).view(np.uint8)
            self._cuda.copy_to_device(self._input.pointer, host_in[:data.nbytes], self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                detail = "; ".join(getattr(self._logger, "errors", [])[-2:]) or "no details"
                raise TensorRTError(f"TensorRT execution failed ({detail})")
            outputs = [binding for binding in self._bindings if not binding.is_input]
            for binding in outputs:
                assert binding.host is not None
                self._cuda.copy_to_host(binding.host[:sizes[binding.name][1]], binding.pointer, self._stream)
            self._stream.synchronize()
            return [self._host_result(binding, *sizes[binding.name]) for binding in outputs]

    def _bind(self, input_shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], int]]:
        """Set the input shape, size the buffers and give TensorRT every tensor's address: name → (shape, bytes)."""
        context = self._context
        dynamic = self.inputs[0].shape != tuple(input_shape)
        if dynamic and not context.set_input_shape(self._input.name, tuple(int(dim) for dim in input_shape)):
            raise TensorRTError(f"input shape {list(input_shape)} is outside the engine's profile")
        sizes: dict[str, tuple[tuple[int, ...], int]] = {}
        for binding in self._bindings:
            shape = tuple(int(dim) for dim in context.get_tensor_shape(binding.name))
            nbytes = int(np.prod(shape, dtype=np.int64)) * binding.dtype.itemsize
            self._ensure_capacity(binding, nbytes)
            if not context.set_tensor_address(binding.name, binding.pointer):
                raise TensorRTError(f"TensorRT refused the address of tensor {binding.name}")
            sizes[binding.name] = (shape, nbytes)
        return sizes

    @staticmethod
    def _host_result(binding: _Binding, shape: tuple[int, ...], nbytes: int) -> np.ndarray:
        assert binding.host is not None
        array = binding.host[:nbytes].view(binding.dtype).reshape(shape)
        return array.astype(np.float32) if binding.dtype == np.float16 else array.copy()

    def _ensure_capacity(self, binding: _Binding, nbytes: int) -> None:
        """Grow the device and pinned host buffers when a larger batch arrives (allocated once per size)."""
        if nbytes <= binding.capacity:
            return
        self._free(binding)
        binding.pointer = self._cuda.device_alloc(nbytes)
        binding.host = self._cuda.host_alloc(nbytes)
        binding.capacity = nbytes

    def _free(self, binding: _Binding) -> None:
        if binding.pointer:
            self._cuda.device_free(binding.pointer)
        if binding.host is not None:
            self._cuda.host_free(binding.host)
        binding.pointer, binding.host, binding.capacity = 0, None, 0

    def close(self) -> None:
        """Free GPU and pinned memory now rather than when the garbage collector gets to it."""
        with self._lock, self._cuda.activate():
            for binding in self._bindings:
                self._free(binding)
            close_stream = getattr(self._stream, "close", None)
            if close_stream is not None:
                close_stream()
            self._context = None
            self._engine = None
