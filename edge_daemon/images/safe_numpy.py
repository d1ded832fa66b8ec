"""Decode numpy image payloads without ever executing pickle code.

Roboflow clients send `pickle.dumps(ndarray)`; unpickling untrusted bytes is code execution, so pickles go
through an unpickler that can only rebuild plain ndarrays and dtypes. `.npy` files load with
`allow_pickle=False`. Whatever arrives is then checked to be an image-shaped uint8 array.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from edge_daemon.errors import BadRequest

NPY_MAGIC = b"\x93NUMPY"

# The only callables a pickled ndarray needs, across numpy 1.x/2.x module names and pickle protocols 2-5.
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a numpy image payload")
        return super().find_class(module, name)

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("persistent references are not allowed")


def load_array(payload: bytes) -> np.ndarray:
    """Parse `.npy` bytes or a pickled ndarray; anything else is a 400."""
    try:
        if payload.startswith(NPY_MAGIC):
            array = np.load(io.BytesIO(payload), allow_pickle=False)
        else:
            array = _ArrayOnlyUnpickler(io.BytesIO(payload)).load()
    except (pickle.UnpicklingError, ValueError, EOFError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError) as error:
        raise BadRequest(f"numpy image payload rejected: {error}") from None
    if not isinstance(array, np.ndarray):
        raise BadRequest(f"numpy image payload must be an ndarray, got {type(array).__name__}")
    return array


def array_to_bgr(array: np.ndarray) -> np.ndarray:
    """Validate an image array (HxW, HxWx1, HxWx3 uint8) and return it as contiguous HxWx3 BGR."""
    if array.dtype != np.uint8:
        raise BadRequest(f"numpy image must have dtype uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise BadRequest(f"numpy image must have shape HxW, HxWx1 or HxWx3, got {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise BadRequest("numpy image is empty")
    return np.ascontiguousarray(array)
