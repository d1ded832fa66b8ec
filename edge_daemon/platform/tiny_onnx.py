"""A one-node ONNX model (Identity on a float vector) encoded by hand.

The probe needs a real model to find out which ONNX Runtime execution providers actually load, and the
`onnx` package is not a runtime dependency, so the few protobuf fields are written directly.
"""

from __future__ import annotations

_VARINT, _BYTES = 0, 2
FLOAT = 1  # onnx.TensorProto.FLOAT


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3 | _VARINT) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | _BYTES) + _varint(len(data)) + data


def _value_info(name: str, length: int) -> bytes:
    dimension = _field(1, length)                                  # Dimension.dim_value
    shape = _field(1, dimension)                                   # TensorShapeProto.dim
    tensor = _field(1, FLOAT) + _field(2, shape)                   # TypeProto.Tensor elem_type, shape
    return _field(1, name) + _field(2, _field(1, tensor))          # ValueInfoProto name, type.tensor_type


def identity_model(length: int = 4, opset: int = 13, ir_version: int = 7) -> bytes:
    """Serialized ModelProto: output 'y' = Identity(input 'x'), both float[length]."""
    node = _field(1, "x") + _field(2, "y") + _field(3, "probe") + _field(4, "Identity")
    graph = _field(1, node) + _field(2, "edge_daemon_probe") + _field(11, _value_info("x", length)) + _field(
        12, _value_info("y", length))
    opset_import = _field(1, "") + _field(2, opset)
    return _field(1, ir_version) + _field(2, "edge-daemon") + _field(7, graph) + _field(8, opset_import)
