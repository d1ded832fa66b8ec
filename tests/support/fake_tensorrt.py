"""Fake `tensorrt`, `pycuda.driver` and `cuda.bindings.runtime` modules for machines without a GPU.

They hold the daemon to the real APIs' contracts rather than to whatever the daemon happens to call:

* names exist only in the versions that have them: TensorRT 10.x has no `build_engine`, `execute_async_v2`,
  `max_workspace_size` or binding indices; 8.x's ONNX parser needs an EXPLICIT_BATCH network;
* signatures are the real ones (positional names as in the bindings) and pointer/stream arguments must be
  ints, as pybind11 would insist (`set_tensor_address(name, memory: int)`, `execute_async_v3(stream_handle)`);
* `build_serialized_network` returns None without an optimisation profile for dynamic inputs, like TensorRT;
* a plan made by another TensorRT version does not deserialise (None, plus the real log line);
* CUDA work is asynchronous: copies and kernels queue on a stream and happen at `synchronize`, so a runtime
  that reads results before synchronising gets stale bytes; pycuda calls need a pushed context.

"Kernels" run the ONNX model with ONNX Runtime on the CPU, so a TensorRT engine's outputs can be compared
with ONNX Runtime's. Only a dynamic batch dimension is supported by the fake's shape inference.
"""

from __future__ import annotations

import ctypes
import enum
import json
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

PLAN_MAGIC = b"FAKETRTPLAN1"
_ORT_TYPES = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int32)": "INT32",
              "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL", "tensor(int8)": "INT8"}


def _require_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: incompatible function arguments; expected an int, got {type(value).__name__}")
    return value


# ----- the GPU both fakes share -------------------------------------------------------------------------------
@dataclass
class FakeGpu:
    name: str = "Orin"
    capability: tuple[int, int] = (8, 7)
    total_memory: int = 7_990_000_000
    available: bool = True
    memory: dict[int, bytearray] = field(default_factory=dict)
    streams: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    executions: int = 0
    _next: int = 0x8000_0000_0000  # above user space: never a real host address
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _contexts: threading.local = field(default_factory=threading.local)

    def alloc(self, nbytes: int) -> int:
        with self._lock:
            pointer = self._next
            self._next += (nbytes + 0xFFF) & ~0xFFF or 0x1000
            self.memory[pointer] = bytearray(nbytes)
            return pointer

    def free(self, pointer: int) -> None:
        if self.memory.pop(pointer, None) is None:
            raise RuntimeError(f"free of unknown device pointer {pointer:#x}")

    def _locate(self, pointer: int, nbytes: int) -> tuple[bytearray, int]:
        for base, buffer in self.memory.items():
            if base <= pointer and pointer + nbytes <= base + len(buffer):
                return buffer, pointer - base
        raise RuntimeError(f"illegal address: {nbytes} bytes at {pointer:#x} are not device memory")

    def write(self, pointer: int, data: bytes) -> None:
        buffer, offset = self._locate(pointer, len(data))
        buffer[offset:offset + len(data)] = data

    def read(self, pointer: int, nbytes: int) -> bytes:
        buffer, offset = self._locate(pointer, nbytes)
        return bytes(buffer[offset:offset + nbytes])

    def is_device(self, pointer: int) -> bool:
        return any(base <= pointer < base + len(buffer) for base, buffer in self.memory.items())

    def new_stream(self) -> int:
        with self._lock:
            handle = 0x5000 + len(self.streams) + 1
            self.streams[handle] = []
            return handle

    def enqueue(self, handle: int, work: Callable[[], None]) -> None:
        if handle not in self.streams:
            raise RuntimeError(f"invalid resource handle: stream {handle:#x}")
        self.streams[handle].append(work)

    def synchronize(self, handle: int) -> None:
        queue = self.streams[handle]
        while queue:
            queue.pop(0)()

    # pycuda's per-thread context stack
    def push(self) -> None:
        self._contexts.depth = getattr(self._contexts, "depth", 0) + 1

    def pop(self) -> None:
        depth = getattr(self._contexts, "depth", 0)
        if depth < 1:
            raise RuntimeError("cuCtxPopCurrent failed: invalid context")
        self._contexts.depth = depth - 1

    def require_context(self) -> None:
        if getattr(self._contexts, "depth", 0) < 1:
            raise RuntimeError("invalid device context - no currently active context?")


# ----- pycuda.driver -------------------------------------------------------------------------------------------
def make_pycuda(gpu: FakeGpu) -> types.ModuleType:
    module = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    state = {"initialised": False}

    def init(flags: int = 0) -> None:
        gpu.calls.append("pycuda.init")
        if not gpu.available:
            raise Error("cuInit failed: no CUDA-capable device is detected")
        state["initialised"] = True

    def _needs_init() -> None:
        if not state["initialised"]:
            raise LogicError("cuDeviceGet failed: initialization error")

    class Context:
        def push(self) -> None:
            gpu.push()

        @staticmethod
        def pop() -> None:
            gpu.pop()

    class Device:
        def __init__(self, number: int):
            _needs_init()
            if number != 0:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")

        @staticmethod
        def count() -> int:
            _needs_init()
            return 1

        def name(self) -> str:
            return gpu.name

        def compute_capability(self) -> tuple[int, int]:
            return gpu.capability

        def total_memory(self) -> int:
            return gpu.total_memory

        def retain_primary_context(self) -> Context:
            return Context()

    class DeviceAllocation:
        def __init__(self, pointer: int):
            self.pointer = pointer

        def __int__(self) -> int:
            return self.pointer

        def free(self) -> None:
            gpu.free(self.pointer)

    class Stream:
        def __init__(self, flags: int = 0):
            gpu.require_context()
            self.handle = gpu.new_stream()

        def synchronize(self) -> None:
            gpu.require_context()
            gpu.calls.append("pycuda.Stream.synchronize")
            gpu.synchronize(self.handle)

    def mem_alloc(bytesize: int) -> DeviceAllocation:
        gpu.require_context()
        return DeviceAllocation(gpu.alloc(_require_int(bytesize, "mem_alloc")))

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        gpu.require_context()
        return np.empty(shape, dtype)

    def _pointer(value: Any) -> int:
        return int(value)

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Stream | None = None) -> None:
        gpu.require_context()
        pointer, source = _pointer(dest), src
        gpu.calls.append("pycuda.memcpy_htod_async")
        gpu.enqueue(stream.handle if stream else 0, lambda: gpu.write(pointer, np.asarray(source).tobytes()))

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Stream | None = None) -> None:
        gpu.require_context()
        pointer, target = _pointer(src), dest
        gpu.calls.append("pycuda.memcpy_dtoh_async")

        def copy() -> None:
            target.reshape(-1).view(np.uint8)[:] = np.frombuffer(gpu.read(pointer, target.nbytes), np.uint8)

        gpu.enqueue(stream.handle if stream else 0, copy)

    for name, value in list(locals().items()):
        if not name.startswith("_") and name not in ("module", "state", "gpu"):
            setattr(module, name, value)
    return module


# ----- cuda.bindings.runtime -----------------------------------------------------------------------------------
def make_cudart(gpu: FakeGpu) -> types.ModuleType:
    module = types.ModuleType("cuda.bindings.runtime")

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorMemoryAllocation = 2
        cudaErrorInsufficientDriver = 35
        cudaErrorNoDevice = 100
        cudaErrorInvalidResourceHandle = 400

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToHost = 0
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3
        cudaMemcpyDefault = 4

    class cudaStream_t:
        def __init__(self, handle: int = 0):
            self._handle = handle

        def __int__(self) -> int:
            return self._handle

        def getPtr(self) -> int:
            return self._handle

    @dataclass
    class cudaDeviceProp:
        name: bytes = b""
        major: int = 0
        minor: int = 0
        totalGlobalMem: int = 0

    ok = cudaError_t.cudaSuccess
    no_driver = cudaError_t.cudaErrorInsufficientDriver
    host_buffers: dict[int, Any] = {}

    def _gate() -> cudaError_t | None:
        return None if gpu.available else no_driver

    def cudaGetErrorString(error: Any) -> tuple[cudaError_t, bytes]:
        texts = {no_driver: b"CUDA driver version is insufficient for CUDA runtime version"}
        return ok, texts.get(error, f"fake CUDA error {int(error)}".encode())

    def cudaGetDeviceCount() -> tuple[cudaError_t, int]:
        return (no_driver, 0) if not gpu.available else (ok, 1)

    def cudaGetDeviceProperties(device: int) -> tuple[cudaError_t, Any]:
        if not gpu.available:
            return no_driver, None
        name = gpu.name.encode().ljust(256, b"\0")
        return ok, cudaDeviceProp(name, gpu.capability[0], gpu.capability[1], gpu.total_memory)

    def cudaSetDevice(device: int) -> tuple[cudaError_t]:
        return (_gate() or ok,)

    def cudaMalloc(size: int) -> tuple[cudaError_t, int]:
        if not gpu.available:
            return no_driver, 0
        return ok, gpu.alloc(_require_int(size, "cudaMalloc"))

    def cudaFree(devPtr: Any) -> tuple[cudaError_t]:
        gpu.free(int(devPtr))
        return (ok,)

    def cudaMallocHost(size: int) -> tuple[cudaError_t, int]:
        buffer = (ctypes.c_uint8 * _require_int(size, "cudaMallocHost"))()
        address = ctypes.addressof(buffer)
        host_buffers[address] = buffer
        return ok, address

    def cudaFreeHost(ptr: Any) -> tuple[cudaError_t]:
        host_buffers.pop(int(ptr))
        return (ok,)

    def cudaStreamCreate() -> tuple[cudaError_t, cudaStream_t]:
        return ok, cudaStream_t(gpu.new_stream())

    def cudaStreamSynchronize(stream: Any) -> tuple[cudaError_t]:
        gpu.calls.append("cudart.cudaStreamSynchronize")
        gpu.synchronize(int(stream))
        return (ok,)

    def cudaStreamDestroy(stream: Any) -> tuple[cudaError_t]:
        gpu.streams.pop(int(stream), None)
        return (ok,)

    def cudaMemcpyAsync(dst: Any, src: Any, count: int, kind: Any, stream: Any) -> tuple[cudaError_t]:
        dst_ptr, src_ptr = _require_int(dst, "cudaMemcpyAsync dst"), _require_int(src, "cudaMemcpyAsync src")
        count = _require_int(count, "cudaMemcpyAsync count")
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            if not gpu.is_device(dst_ptr) or gpu.is_device(src_ptr):
                return (cudaError_t.cudaErrorInvalidValue,)
            gpu.calls.append("cudart.cudaMemcpyAsync(HtoD)")
            gpu.enqueue(int(stream), lambda: gpu.write(dst_ptr, ctypes.string_at(src_ptr, count)))
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            if not gpu.is_device(src_ptr) or gpu.is_device(dst_ptr):
                return (cudaError_t.cudaErrorInvalidValue,)
            gpu.calls.append("cudart.cudaMemcpyAsync(DtoH)")
            gpu.enqueue(int(stream), lambda: ctypes.memmove(dst_ptr, gpu.read(src_ptr, count), count))
        else:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (ok,)

    for name, value in list(locals().items()):
        if name.startswith("cuda"):
            setattr(module, name, value)
    return module


# ----- tensorrt ------------------------------------------------------------------------------------------------
def make_tensorrt(gpu: FakeGpu, version: str = "10.3.0", fast_fp16: bool = True,
                  fail_build: bool = False) -> types.ModuleType:
    """A fake `tensorrt` module with the API surface of `version` (8.5/8.6 or 10.x)."""
    major = int(version.split(".")[0])
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    calls: list[str] = []
    module.calls = calls

    def record(name: str) -> None:
        calls.append(name)

    class ILogger:
        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            raise NotImplementedError

    class Logger(ILogger):
        INTERNAL_ERROR = ILogger.Severity.INTERNAL_ERROR
        ERROR = ILogger.Severity.ERROR
        WARNING = ILogger.Severity.WARNING
        INFO = ILogger.Severity.INFO
        VERBOSE = ILogger.Severity.VERBOSE

        def __init__(self, min_severity: Any = ILogger.Severity.WARNING):
            super().__init__()
            self.messages: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append(msg)

    def _check_logger(logger: Any) -> None:
        if not isinstance(logger, ILogger):
            raise TypeError("incompatible function arguments: logger must be a tensorrt.ILogger")

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        if major >= 10:
            STRONGLY_TYPED = 1

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0
        DLA_MANAGED_SRAM = 1
        DLA_LOCAL_DRAM = 2
        DLA_GLOBAL_DRAM = 3

    class BuilderFlag(enum.IntEnum):
        FP16 = 0
        INT8 = 1
        DEBUG = 2
        GPU_FALLBACK = 3

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1
        INT8 = 2
        INT32 = 3
        BOOL = 4
        UINT8 = 5
        INT64 = 8

    numpy_types = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                   DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8,
                   DataType.INT64: np.int64}

    def nptype(trt_type: Any) -> Any:
        if trt_type in numpy_types:
            return numpy_types[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        record("init_libnvinfer_plugins")
        return True

    class IHostMemory(bytes):
        @property
        def nbytes(self) -> int:
            return len(self)

    @dataclass
    class ITensor:
        name: str
        shape: tuple[int, ...]
        dtype: Any

    class INetworkDefinition:
        def __init__(self, explicit_batch: bool):
            self.has_explicit_batch = explicit_batch
            self.inputs: list[ITensor] = []
            self.outputs: list[ITensor] = []
            self.onnx: bytes | None = None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_input(self, index: int) -> ITensor:
            return self.inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self.outputs[index]

    class IParserError:
        def __init__(self, text: str):
            self.text = text

        def desc(self) -> str:
            return self.text

        def __str__(self) -> str:
            return f"In node -1 with name:  and operator:  (parseGraph): INVALID_GRAPH: {self.text}"

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Any):
            _check_logger(logger)
            self.network, self.logger = network, logger
            self.errors: list[IParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> IParserError:
            return self.errors[index]

        def parse(self, model: bytes, path: str | None = None) -> bool:
            record("OnnxParser.parse")
            if not isinstance(model, bytes | bytearray | memoryview):
                raise TypeError("parse(): model must be a buffer of serialized ONNX")
            if major < 10 and not self.network.has_explicit_batch:
                self.errors.append(IParserError("the ONNX parser only supports networks with an explicit "
                                                "batch dimension (create_network(1 << EXPLICIT_BATCH))"))
                return False
            try:
                session = ort.InferenceSession(bytes(model), providers=["CPUExecutionProvider"])
            except Exception as error:  # noqa: BLE001
                self.errors.append(IParserError(f"failed to parse ONNX: {str(error)[:200]}"))
                return False
            for arg in session.get_inputs():
                self.network.inputs.append(ITensor(arg.name, _dims(arg.shape), DataType[_ORT_TYPES[arg.type]]))
            for arg in session.get_outputs():
                self.network.outputs.append(ITensor(arg.name, _dims(arg.shape), DataType[_ORT_TYPES[arg.type]]))
            self.network.onnx = bytes(model)
            return True

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            record("IOptimizationProfile.set_shape")
            low, best, high = (tuple(_require_int(v, "set_shape dims") for v in dims) for dims in (min, opt, max))
            if not len(low) == len(best) == len(high):
                raise ValueError("Invalid shapes: min/opt/max must have the same rank")
            if any(a > b for a, b in zip(low, best)):
                raise ValueError("Invalid shape for OPT.")
            if any(a > b for a, b in zip(best, high)):
                raise ValueError("Invalid shape for MAX.")
            self.shapes[input] = (low, best, high)

        def get_shape(self, input: str) -> list[tuple[int, ...]]:
            return list(self.shapes.get(input, ()))

    class ITimingCache:
        def __init__(self, data: bytes):
            if data and not data.startswith(b"FAKETIMING"):
                raise RuntimeError("timing cache is corrupt")
            self.entries = int(data[10:] or b"0") if data else 0

        def serialize(self) -> IHostMemory:
            return IHostMemory(b"FAKETIMING" + str(self.entries).encode())

    class IBuilderConfig:
        def __init__(self) -> None:
            self.pools: dict[Any, int] = {}
            self.flags: set[Any] = set()
            self.profiles: list[IOptimizationProfile] = []
            self.timing_cache: ITimingCache | None = None
            if major >= 9 or version.startswith("8.6"):
                self.builder_optimization_level = 3

        if major < 10:
            @property
            def max_workspace_size(self) -> int:
                record("IBuilderConfig.max_workspace_size (deprecated)")
                return self.pools.get(MemoryPoolType.WORKSPACE, 0)

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            record("IBuilderConfig.set_memory_pool_limit")
            if not isinstance(pool, MemoryPoolType):
                raise TypeError("set_memory_pool_limit(): pool must be a tensorrt.MemoryPoolType")
            self.pools[pool] = _require_int(pool_size, "set_memory_pool_limit pool_size")

        def get_memory_pool_limit(self, pool: Any) -> int:
            return self.pools.get(pool, 0)

        def set_flag(self, flag: Any) -> None:
            record(f"IBuilderConfig.set_flag({flag.name})")
            self.flags.add(flag)

        def get_flag(self, flag: Any) -> bool:
            return flag in self.flags

        def clear_flag(self, flag: Any) -> None:
            self.flags.discard(flag)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            record("IBuilderConfig.add_optimization_profile")
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            record("IBuilderConfig.create_timing_cache")
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            record("IBuilderConfig.set_timing_cache")
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self.timing_cache

    class Builder:
        def __init__(self, logger: Any):
            _check_logger(logger)
            record("Builder")
            self.logger = logger

        @property
        def platform_has_fast_fp16(self) -> bool:
            return fast_fp16

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            record(f"Builder.create_network({flags})")
            explicit = bool(_require_int(flags, "create_network flags") & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
            return INetworkDefinition(explicit or major >= 10)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
            record("Builder.build_serialized_network")
            if fail_build or network.onnx is None:
                self.logger.log(ILogger.Severity.ERROR, "fake build failure: no kernels for this network")
                return None
            dynamic = [t.name for t in network.inputs if -1 in t.shape]
            covered = config.profiles[0].shapes if config.profiles else {}
            if any(name not in covered for name in dynamic):
                self.logger.log(ILogger.Severity.ERROR, "Network has dynamic or shape inputs, but no "
                                "optimization profile has been defined.")
                return None
            if config.timing_cache is not None:
                config.timing_cache.entries += 1
            header = {"version": version, "fp16": BuilderFlag.FP16 in config.flags,
                      "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network.inputs],
                      "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network.outputs],
                      "profile": {name: [list(s) for s in shapes] for name, shapes in covered.items()}}
            encoded = json.dumps(header).encode()
            return IHostMemory(PLAN_MAGIC + len(encoded).to_bytes(4, "little") + encoded + network.onnx)

        if major < 10:
            def build_engine(self, network: INetworkDefinition, config: IBuilderConfig) -> None:
                record("Builder.build_engine (deprecated, removed in 10)")
                raise AssertionError("build_engine is deprecated in 8.x and removed in 10.x; do not call it")

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine):
            self.engine = engine
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            record("IExecutionContext.set_input_shape")
            dims = tuple(_require_int(d, "set_input_shape dims") for d in shape)
            low, _, high = self.engine.profile.get(name, (self.engine.shape(name),) * 3)
            if len(dims) != len(low) or any(d < a or d > b for d, a, b in zip(dims, low, high)):
                return False
            self.shapes[name] = dims
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            declared = self.engine.shape(name)
            if name in self.engine.input_names:
                return self.shapes.get(name, declared)
            batch = next(iter(self.shapes.values()), (1,))[0] if self.shapes else -1
            return tuple(batch if d == -1 else d for d in declared)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            record("IExecutionContext.set_tensor_address")
            self.addresses[name] = _require_int(memory, "set_tensor_address memory")
            return name in self.engine.names

        def get_tensor_address(self, name: str) -> int:
            return self.addresses.get(name, 0)

        def execute_async_v3(self, stream_handle: int) -> bool:
            record("IExecutionContext.execute_async_v3")
            handle = _require_int(stream_handle, "execute_async_v3 stream_handle")
            if handle not in gpu.streams:
                return False
            if any(name not in self.addresses for name in self.engine.names):
                return False
            if any(-1 in self.get_tensor_shape(name) for name in self.engine.input_names):
                return False
            snapshot = {name: self.get_tensor_shape(name) for name in self.engine.names}
            addresses = dict(self.addresses)
            gpu.enqueue(handle, lambda: self.engine.kernel(snapshot, addresses))
            return True

        if major < 10:
            def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
                record("IExecutionContext.execute_async_v2 (removed in 10)")
                raise AssertionError("binding-index execution is removed in TensorRT 10; use execute_async_v3")

    class ICudaEngine:
        def __init__(self, header: dict[str, Any], onnx: bytes):
            self.header = header
            self.tensors = [(n, tuple(s), DataType[t], TensorIOMode.INPUT) for n, s, t in header["inputs"]]
            self.tensors += [(n, tuple(s), DataType[t], TensorIOMode.OUTPUT) for n, s, t in header["outputs"]]
            self.names = [t[0] for t in self.tensors]
            self.input_names = [n for n, _, _, mode in self.tensors if mode == TensorIOMode.INPUT]
            self.profile = {name: tuple(tuple(s) for s in shapes) for name, shapes in header["profile"].items()}
            self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])

        def _tensor(self, name: str) -> tuple[str, tuple[int, ...], Any, Any]:
            for tensor in self.tensors:
                if tensor[0] == name:
                    return tensor
            raise KeyError(name)

        @property
        def num_io_tensors(self) -> int:
            return len(self.tensors)

        if major < 10:
            @property
            def num_bindings(self) -> int:
                record("ICudaEngine.num_bindings (removed in 10)")
                return len(self.tensors)

        def get_tensor_name(self, index: int) -> str:
            return self.tensors[_require_int(index, "get_tensor_name index")][0]

        def get_tensor_mode(self, name: str) -> Any:
            return self._tensor(name)[3]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._tensor(name)[1]

        def shape(self, name: str) -> tuple[int, ...]:
            return self._tensor(name)[1]

        def get_tensor_dtype(self, name: str) -> Any:
            return self._tensor(name)[2]

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            return [tuple(s) for s in self.profile[name]] if name in self.profile else []

        def create_execution_context(self) -> IExecutionContext:
            record("ICudaEngine.create_execution_context")
            return IExecutionContext(self)

        def kernel(self, shapes: dict[str, tuple[int, ...]], addresses: dict[str, int]) -> None:
            """The 'GPU' work: read inputs from device memory, run the model, write outputs back."""
            gpu.executions += 1
            feeds = {}
            for name in self.input_names:
                dtype = np.dtype(nptype(self.get_tensor_dtype(name)))
                count = int(np.prod(shapes[name]))
                feeds[name] = np.frombuffer(gpu.read(addresses[name], count * dtype.itemsize), dtype).reshape(
                    shapes[name])
            results = self.session.run(None, feeds)
            for (name, _, dtype, mode), value in zip([t for t in self.tensors if t[3] == TensorIOMode.OUTPUT],
                                                     results):
                array = np.asarray(value)
                if self.header["fp16"]:
                    array = array.astype(np.float16).astype(array.dtype)  # FP16 kernels lose precision
                gpu.write(addresses[name], array.astype(nptype(dtype)).tobytes())

    class Runtime:
        def __init__(self, logger: Any):
            _check_logger(logger)
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
            record("Runtime.deserialize_cuda_engine")
            data = bytes(serialized_engine)
            if not data.startswith(PLAN_MAGIC):
                self.logger.log(ILogger.Severity.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error "
                                "Code 1: Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed."
                                "Magic tag does not match)")
                return None
            size = int.from_bytes(data[len(PLAN_MAGIC):len(PLAN_MAGIC) + 4], "little")
            start = len(PLAN_MAGIC) + 4
            try:
                header = json.loads(data[start:start + size])
            except ValueError:
                self.logger.log(ILogger.Severity.ERROR, "Serialization (Serialization assertion failed: "
                                "corrupt engine)")
                return None
            if header["version"] != version:
                self.logger.log(ILogger.Severity.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReader::40] Error "
                                "Code 1: Serialization (Serialization assertion stdVersionRead == "
                                "serializationVersion failed.Version tag does not match. Note: Current Version: "
                                f"{version}, Serialized Engine Version: {header['version']})")
                return None
            return ICudaEngine(header, data[start + size:])

    float32, float16, int32, int64 = DataType.FLOAT, DataType.HALF, DataType.INT32, DataType.INT64
    for name, value in list(locals().items()):
        if name[0].isupper() or name in ("nptype", "init_libnvinfer_plugins", "float32", "float16", "int32",
                                         "int64"):
            setattr(module, name, value)
    return module


def _dims(shape: list[Any]) -> tuple[int, ...]:
    return tuple(dim if isinstance(dim, int) and dim > 0 else -1 for dim in shape)


@dataclass
class FakeNvidiaStack:
    """A fake GPU with TensorRT and both CUDA bindings on it, and an importer that hands them out."""

    gpu: FakeGpu
    tensorrt: types.ModuleType
    pycuda: types.ModuleType | None
    cudart: types.ModuleType | None

    def import_module(self, name: str) -> types.ModuleType:
        modules = {"tensorrt": self.tensorrt, "pycuda.driver": self.pycuda, "cuda.bindings.runtime": self.cudart}
        if name in modules:
            module = modules[name]
            if module is None:
                raise ModuleNotFoundError(f"No module named {name!r}")
            return module
        import importlib

        return importlib.import_module(name)


def nvidia_stack(version: str = "10.3.0", bindings: tuple[str, ...] = ("pycuda", "cuda.bindings"),
                 gpu: FakeGpu | None = None, **tensorrt_options: Any) -> FakeNvidiaStack:
    gpu = gpu or FakeGpu()
    return FakeNvidiaStack(gpu, make_tensorrt(gpu, version, **tensorrt_options),
                           make_pycuda(gpu) if "pycuda" in bindings else None,
                           make_cudart(gpu) if "cuda.bindings" in bindings else None)


def no_nvidia_import(name: str) -> types.ModuleType:
    """An importer for a box without TensorRT or CUDA bindings (whatever this machine has installed)."""
    if name.split(".")[0] in ("tensorrt", "pycuda", "cuda"):
        raise ModuleNotFoundError(f"No module named {name!r}")
    import importlib

    return importlib.import_module(name)
