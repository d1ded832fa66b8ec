"""`edge-daemon models export-triton` writes a Triton model repository entry whose config.pbtxt describes
the ONNX file exactly (names, data types, dims, batching), so Triton can serve the model the box serves.

config.pbtxt is parsed with Triton's own protobuf definitions (tritonclient's model_config_pb2, through
google.protobuf's text_format, which refuses unknown fields) when tritonclient is installed, else with the
strict parser below; the ONNX file is read with the onnx package."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest

from edge_daemon.models.store import BUNDLED_ROOT
from tests.support.daemon import REPO_ROOT

ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
              onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.UINT8: "TYPE_UINT8"}
TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|(-?\d+)|([A-Za-z_][A-Za-z0-9_]*)|([{}\[\]:,]))')


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_daemon", "models", "export-triton", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"unexpected text at {position}: {text[position:position + 20]!r}")
        position = match.end()
        if not match.group(1):
            tokens.append(match.group(0).strip())
    return tokens


def parse_pbtxt(text: str) -> dict[str, Any]:
    """Protobuf text format, strictly: `key: scalar`, `key: [scalars]`, `key { ... }`, `key [ {..}, {..} ]`."""
    tokens = _tokens(text)

    def scalar(token: str) -> Any:
        if token.startswith('"'):
            return token[1:-1]
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        if re.fullmatch(r"[A-Za-z_]\w*", token):
            return token  # an enum value
        raise ValueError(f"not a value: {token!r}")

    def message(index: int, closing: str | None) -> tuple[dict[str, Any], int]:
        fields: dict[str, Any] = {}
        while index < len(tokens) and tokens[index] != closing:
            key = tokens[index]
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
                raise ValueError(f"not a field name: {key!r}")
            index += 1
            if tokens[index] == ":":
                index += 1
                if tokens[index] == "[":
                    values, index = [], index + 1
                    while tokens[index] != "]":
                        values.append(scalar(tokens[index]))
                        index += 1
                        if tokens[index] == ",":
                            index += 1
                    value, index = values, index + 1
                else:
                    value, index = scalar(tokens[index]), index + 1
            elif tokens[index] == "{":
                value, index = message(index + 1, "}")
                index += 1
            elif tokens[index] == "[":
                value, index = [], index + 1
                while tokens[index] != "]":
                    if tokens[index] != "{":
                        raise ValueError(f"expected a message in {key}, got {tokens[index]!r}")
                    item, index = message(index + 1, "}")
                    value.append(item)
                    index += 1
                    if tokens[index] == ",":
                        index += 1
                index += 1
            else:
                raise ValueError(f"expected ':', '{{' or '[' after {key}, got {tokens[index]!r}")
            if key in fields:
                raise ValueError(f"field {key} given twice")
            fields[key] = value
        return fields, index

    parsed, end = message(0, None)
    if end != len(tokens):
        raise ValueError("trailing tokens")
    return parsed


def read_config(path: Path) -> dict[str, Any]:
    """config.pbtxt as a dict with Triton's field names (via Triton's protobuf schema when available)."""
    text = path.read_text()
    strict = parse_pbtxt(text)
    if importlib.util.find_spec("tritonclient") is None:
        return strict
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    parsed = json_format.MessageToDict(config, preserving_proto_field_name=True)
    for tensor in parsed["input"] + parsed["output"]:
        tensor["dims"] = [int(dim) for dim in tensor["dims"]]
    parsed["dynamic_batching"]["max_queue_delay_microseconds"] = int(
        parsed["dynamic_batching"]["max_queue_delay_microseconds"])
    assert {key: parsed[key] for key in strict} == strict  # both parsers read the same thing
    return parsed


def onnx_tensors(model: onnx.ModelProto, kind: str) -> list[tuple[str, str, list[int]]]:
    values = model.graph.input if kind == "input" else model.graph.output
    initialisers = {init.name for init in model.graph.initializer}
    return [(value.name, ONNX_TYPES[value.type.tensor_type.elem_type],
             [dim.dim_value if dim.HasField("dim_value") else -1 for dim in value.type.tensor_type.shape.dim])
            for value in values if value.name not in initialisers]


def test_export_triton_writes_a_repository_entry_matching_the_onnx_file(tmp_path: Path) -> None:
    result = export("shapes/1", str(tmp_path / "repo"), "--models-dir", "", "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    entry = tmp_path / "repo" / "shapes_1"
    assert sorted(path.relative_to(entry).as_posix() for path in entry.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt"]
    weights = BUNDLED_ROOT / "shapes" / "1" / "weights.onnx"
    assert (entry / "1" / "model.onnx").read_bytes() == weights.read_bytes()

    config = read_config(entry / "config.pbtxt")
    model = onnx.load(str(entry / "1" / "model.onnx"))
    assert config["name"] == "shapes_1" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 16  # the daemon's max_batch default; the ONNX batch dimension is dynamic
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 5000
    for kind in ("input", "output"):
        described = [(tensor["name"], tensor["data_type"], [-1, *tensor["dims"]]) for tensor in config[kind]]
        assert described == onnx_tensors(model, kind)
    assert config["input"][0]["dims"] == [3, 384, 384]


def test_export_refuses_to_overwrite_unless_forced_and_follows_the_name_map(tmp_path: Path) -> None:
    repo, cache = tmp_path / "repo", ["--models-dir", "", "--cache-dir", str(tmp_path / "c")]
    assert export("shapes/1", str(repo), *cache).returncode == 0
    again = export("shapes/1", str(repo), *cache)
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    assert export("shapes/1", str(repo), "--force", *cache).returncode == 0
    mapped = export("shapes/1", str(repo), "--remote-model-map", "shapes/1=site_detector", *cache)
    assert mapped.returncode == 0, mapped.stderr
    assert sorted(path.name for path in repo.iterdir()) == ["shapes_1", "site_detector"]  # nothing staged left
    assert read_config(repo / "site_detector" / "config.pbtxt")["name"] == "site_detector"


def test_a_fixed_batch_model_is_exported_without_batching(tmp_path: Path, model_store: Path) -> None:
    result = export("colour-v5/1", str(tmp_path / "repo"), "--models-dir", str(model_store),
                    "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "repo" / "colour-v5_1" / "config.pbtxt").read_text()
    config = parse_pbtxt(text)
    model = onnx.load(str(tmp_path / "repo" / "colour-v5_1" / "1" / "model.onnx"))
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == onnx_tensors(model, "input")


@pytest.mark.parametrize("broken", ['name: "x"\nmax_batch_size: 1 extra', 'input [ name: "x" ]', "name: 'x'"])
def test_the_strict_parser_refuses_malformed_text(broken: str) -> None:
    with pytest.raises((ValueError, IndexError)):
        parse_pbtxt(broken)
