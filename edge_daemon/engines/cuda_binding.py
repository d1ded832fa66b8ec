"""The CUDA calls the TensorRT runtime needs, behind one small interface with one adapter per binding.

pycuda is what JetPack ships; NVIDIA's cuda-python (`cuda.bindings.runtime`) has wheels everywhere else.
Both are imported lazily through an injectable `import_module`, so tests hand in fakes at this boundary.
Pointers cross the interface as plain ints, which is what TensorRT's `set_tensor_address` and
`execute_async_v3` take.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Protocol

import numpy as np

ImportModule = Callable[[str], ModuleType]


class CudaError(RuntimeError):
    """A CUDA call failed; the message names the call and CUDA's own error text."""


class Stream(Protocol):
    handle: int

    def synchronize(self) -> None: ...


class CudaBinding(Protocol):
    name: str

    def activate(self) -> contextlib.AbstractContextManager[None]:
        """Make the device's context current on this thread for the duration (pycuda needs it per thread)."""
        ...

    def device_alloc(self, nbytes: int) -> int: ...

    def device_free(self, pointer: int) -> None: ...

    def host_alloc(self, nbytes: int) -> np.ndarray:
        """Page-locked host memory as a flat uint8 array (fast, truly asynchronous copies)."""
        ...

    def host_free(self, array: np.ndarray) -> None: ...

    def stream(self) -> Stream: ...

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: Stream) -> None: ...

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: Stream) -> None: ...


class PyCudaBinding:
    """pycuda, with the device's primary context pushed around every call instead of `pycuda.autoinit`
    (which binds one context to the importing thread, wrong for a threaded server)."""

    name = "pycuda"

    def __init__(self, driver: ModuleType, device_index: int = 0):
        self._driver = driver
        driver.init()
        self._context = driver.Device(device_index).retain_primary_context()
        self._allocations: dict[int, object] = {}

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self._driver.Context.pop()

    def device_alloc(self, nbytes: int) -> int:
        allocation = self._driver.mem_alloc(max(1, nbytes))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def device_free(self, pointer: int) -> None:
        allocation = self._allocations.pop(pointer, None)
        if allocation is not None:
            allocation.free()

    def host_alloc(self, nbytes: int) -> np.ndarray:
        return self._driver.pagelocked_empty((max(1, nbytes),), np.uint8)

    def host_free(self, array: np.ndarray) -> None:
        base = getattr(array, "base", None)
        if base is not None and hasattr(base, "free"):
            base.free()

    def stream(self) -> Stream:
        return self._driver.Stream()

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: Stream) -> None:
        self._driver.memcpy_htod_async(pointer, host, stream)

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: Stream) -> None:
        self._driver.memcpy_dtoh_async(host, pointer, stream)


class _RuntimeStream:
    def __init__(self, binding: CudaBindingsRuntime, raw: object):
        self._binding, self.raw = binding, raw
        self.handle = int(raw)  # type: ignore[call-overload]

    def synchronize(self) -> None:
        self._binding.check("cudaStreamSynchronize", self._binding.runtime.cudaStreamSynchronize(self.raw))

    def close(self) -> None:
        self._binding.check("cudaStreamDestroy", self._binding.runtime.cudaStreamDestroy(self.raw))


class CudaBindingsRuntime:
    """NVIDIA cuda-python's runtime API (`cuda.bindings.runtime`): every call returns (error, *values)."""

    name = "cuda.bindings"

    def __init__(self, runtime: ModuleType, device_index: int = 0):
        self.runtime = runtime
        self.device_index = device_index
        self.check("cudaSetDevice", runtime.cudaSetDevice(device_index))
        self._host: dict[int, int] = {}

    def check(self, call: str, result: object) -> object:
        values = result if isinstance(result, tuple) else (result,)
        error = values[0]
        if error != self.runtime.cudaError_t.cudaSuccess:
            try:
                text = self.runtime.cudaGetErrorString(error)[1]
                text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            except Exception:  # noqa: BLE001
                text = str(error)
            raise CudaError(f"{call} failed: {text}")
        return values[1] if len(values) == 2 else values[1:]

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        # The runtime API keeps a current device per thread; waitress threads start on device 0.
        self.check("cudaSetDevice", self.runtime.cudaSetDevice(self.device_index))
        yield

    def device_alloc(self, nbytes: int) -> int:
        return int(self.check("cudaMalloc", self.runtime.cudaMalloc(max(1, nbytes))))  # type: ignore[call-overload]

    def device_free(self, pointer: int) -> None:
        self.check("cudaFree", self.runtime.cudaFree(pointer))

    def host_alloc(self, nbytes: int) -> np.ndarray:
        size = max(1, nbytes)
        pointer = int(self.check("cudaMallocHost", self.runtime.cudaMallocHost(size)))  # type: ignore[call-overload]
        array = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(pointer))
        self._host[array.ctypes.data] = pointer
        return array

    def host_free(self, array: np.ndarray) -> None:
        pointer = self._host.pop(array.ctypes.data, None)
        if pointer is not None:
            self.check("cudaFreeHost", self.runtime.cudaFreeHost(pointer))

    def stream(self) -> Stream:
        return _RuntimeStream(self, self.check("cudaStreamCreate", self.runtime.cudaStreamCreate()))

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: Stream) -> None:
        kind = self.runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check("cudaMemcpyAsync", self.runtime.cudaMemcpyAsync(
            pointer, host.ctypes.data, host.nbytes, kind, _raw(stream)))

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: Stream) -> None:
        kind = self.runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check("cudaMemcpyAsync", self.runtime.cudaMemcpyAsync(
            host.ctypes.data, pointer, host.nbytes, kind, _raw(stream)))


def _raw(stream: Stream) -> object:
    return getattr(stream, "raw", stream.handle)


def load_cuda_binding(preferred: str | None = None,
                      import_module: ImportModule = importlib.import_module) -> CudaBinding:
    """The first binding that imports and reaches a device: `preferred` first, then pycuda, then cuda.bindings."""
    order = [preferred] if preferred else []
    order += [name for name in ("pycuda", "cuda.bindings") if name not in order]
    problems: list[str] = []
    for name in order:
        try:
            if name == "pycuda":
                return PyCudaBinding(import_module("pycuda.driver"))
            if name == "cuda.bindings":
                return CudaBindingsRuntime(import_module("cuda.bindings.runtime"))
            problems.append(f"{name}: unknown binding")
        except Exception as error:  # noqa: BLE001 (import errors, driver errors, no device)
            problems.append(f"{name}: {type(error).__name__}: {str(error)[:160]}")
    raise CudaError("no usable CUDA binding (" + "; ".join(problems) + ")")
