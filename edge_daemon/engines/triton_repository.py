"""A Triton model repository entry for a model this box serves, so Triton can serve it unchanged.

`DIR/<name>/config.pbtxt` (platform onnxruntime_onnx; inputs and outputs with the ONNX file's names, data
types and dims; max_batch_size and dynamic batching when the batch dimension is dynamic) and
`DIR/<name>/1/model.onnx`. The entry is staged beside its final place and renamed in, so a reader never sees
half an entry. `<name>` is what the remote engine asks the server for (`server_model_name`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from edge_daemon.engines.base import TensorSpec
from edge_daemon.errors import ApiError, ModelArtifactError

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "uint8": "TYPE_UINT8",
                "int8": "TYPE_INT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}


def _tensor_block(kind: str, specs: Sequence[TensorSpec], batched: bool) -> list[str]:
    lines = [f"{kind} ["]
    for index, spec in enumerate(specs):
        if spec.dtype not in TRITON_TYPES:
            raise ModelArtifactError(f"{kind} {spec.name!r} has a type Triton export does not handle: {spec.dtype}")
        dims = spec.shape[1:] if batched else spec.shape
        rendered = ", ".join(str(-1 if dim is None else dim) for dim in dims)
        separator = "," if index < len(specs) - 1 else ""
        lines += ["  {", f'    name: "{spec.name}"', f"    data_type: {TRITON_TYPES[spec.dtype]}",
                  f"    dims: [ {rendered} ]", "  }" + separator]
    return [*lines, "]"]


def config_pbtxt(name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], max_batch: int,
                 queue_delay_us: int) -> str:
    """Triton's model configuration (protobuf text format) for an ONNX model with these tensors."""
    batched = all(spec.shape and spec.shape[0] is None for spec in [*inputs, *outputs])
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch if batched else 0}"]
    lines += _tensor_block("input", inputs, batched)
    lines += _tensor_block("output", outputs, batched)
    if batched:  # Triton gathers concurrent requests from many boxes into one batch, as the daemon does
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    return "\n".join(lines) + "\n"


def write_entry(directory: Path, name: str, weights: Path, config: str, replace: bool = False) -> Path:
    """Write `directory/name/{config.pbtxt,1/model.onnx}` atomically; an existing entry needs `replace`."""
    if not name or "/" in name or name.startswith("."):
        raise ApiError(f"invalid Triton model name {name!r}", 400)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    if final.exists() and not replace:
        raise ApiError(f"{final} exists; pass --force to replace it", 409)
    staged = directory / f".{name}.staging-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        (staged / "1").mkdir(parents=True)
        shutil.copyfile(weights, staged / "1" / "model.onnx")
        (staged / "config.pbtxt").write_text(config, encoding="utf-8")
        if final.exists():
            retired = directory / f".{name}.replaced-{os.getpid()}"
            final.rename(retired)
            staged.rename(final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staged.rename(final)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return final
