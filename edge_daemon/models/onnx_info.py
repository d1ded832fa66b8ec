"""What an ONNX file says about itself: its metadata properties and the last operation of each output.

Exporters write facts the daemon must check against what a model's metadata claims: Ultralytics files
carry `task`, `end2end`, `kpt_shape`, `imgsz` and `names`; a classifier whose graph already ends in a softmax
must not get a second one. The `onnx` package is not a runtime dependency, so the few protobuf fields needed
are read directly (the same wire format `platform/tiny_onnx.py` writes); weights are skipped, never parsed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

_MODEL_GRAPH, _MODEL_METADATA = 7, 14  # ModelProto.graph, ModelProto.metadata_props
_GRAPH_NODE, _GRAPH_OUTPUT = 1, 12  # GraphProto.node, GraphProto.output
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP = 1, 2, 4  # NodeProto.input, .output, .op_type
# Operations that only move or reshape values: looking through them finds the op that made the numbers.
_PASS_THROUGH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast",
                           "Gather"})


@dataclass(frozen=True)
class OnnxInfo:
    properties: dict[str, str] = field(default_factory=dict)
    final_ops: dict[str, str] = field(default_factory=dict)  # output name -> last computing op (Softmax, ...)

    def property(self, name: str) -> object:
        """A metadata property parsed as a Python literal where it is one (Ultralytics writes dict/list/bool
        reprs), else the text; None when absent."""
        text = self.properties.get(name)
        if text is None:
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text

    def ends_in(self, output: str, *ops: str) -> bool:
        return self.final_ops.get(output) in ops


def _varint(data: bytes | memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: memoryview) -> list[tuple[int, int, memoryview | int]]:
    """(field number, wire type, value) of one message; length-delimited values are views, not copies."""
    found: list[tuple[int, int, memoryview | int]] = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
            found.append((number, wire, value))
        elif wire == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ValueError("truncated field")
            found.append((number, wire, data[position:position + length]))
            position += length
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return found


def _text(value: memoryview | int) -> str:
    return bytes(value).decode("utf-8", "replace") if isinstance(value, memoryview) else ""


def parse(data: bytes) -> OnnxInfo:
    view = memoryview(data)
    properties: dict[str, str] = {}
    graph: memoryview | None = None
    for number, wire, value in _fields(view):
        if number == _MODEL_METADATA and wire == 2 and isinstance(value, memoryview):
            entry = {n: _text(v) for n, w, v in _fields(value) if w == 2}
            properties[entry.get(1, "")] = entry.get(2, "")
        elif number == _MODEL_GRAPH and wire == 2 and isinstance(value, memoryview):
            graph = value
    return OnnxInfo(properties, _final_ops(graph) if graph is not None else {})


def _final_ops(graph: memoryview) -> dict[str, str]:
    producers: dict[str, tuple[str, list[str]]] = {}
    outputs: list[str] = []
    for number, wire, value in _fields(graph):
        if wire != 2 or not isinstance(value, memoryview):
            continue
        if number == _GRAPH_NODE:
            node = _fields(value)
            op = next((_text(v) for n, _, v in node if n == _NODE_OP), "")
            inputs = [_text(v) for n, _, v in node if n == _NODE_INPUT]
            for n, _, v in node:
                if n == _NODE_OUTPUT:
                    producers[_text(v)] = (op, inputs)
        elif number == _GRAPH_OUTPUT:
            outputs.append(next((_text(v) for n, _, v in _fields(value) if n == 1), ""))
    final: dict[str, str] = {}
    for name in outputs:
        current, seen = name, 0
        while current in producers and seen < 32:
            op, inputs = producers[current]
            if op not in _PASS_THROUGH or not inputs:
                final[name] = op
                break
            current, seen = inputs[0], seen + 1
    return final


def read_onnx_info(path: Path) -> OnnxInfo:
    """Read a file's metadata and output ops; an unreadable or unparsable file says nothing (the engine load
    reports what is wrong with it)."""
    try:
        return parse(Path(path).read_bytes())
    except (OSError, ValueError):
        return OnnxInfo()
