"""Small real ONNX models built with onnx.helper, stored in the daemon's model-store format.

`colour_detector`: fixed candidate boxes whose class scores are the image's mean R, G, B times per-box
weights, so the output depends on the image in a known way. It can be written in the YOLOv8 layout
`[B, 4+nc, N]` or the YOLOv5 layout `[B, N, 5+nc]`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_daemon.models.store import ModelId, write_manifest

COLOUR_CLASSES = ["red", "green", "blue"]
INPUT_SIZE = 64
# Boxes in network pixels (cx, cy, w, h) and per-box class weights (rows: R, G, B).
BOXES = np.array([[16, 16, 20, 20], [48, 16, 20, 20], [16, 48, 20, 20], [48, 48, 24, 24]], np.float32).T
WEIGHTS = np.array([[0.9, 0.2, 0.0, 0.6], [0.1, 0.8, 0.3, 0.0], [0.0, 0.1, 0.7, 0.5]], np.float32)


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def colour_detector(layout: str = "yolov8", dynamic_batch: bool = True, fail_on_nonzero: bool = False) -> bytes:
    """Serialized ONNX model. With `fail_on_nonzero`, any non-black image makes ONNX Runtime raise."""
    batch = "batch" if dynamic_batch else 1
    nodes = [
        _const("boxes", BOXES[None]),                        # [1, 4, N]
        _const("weights", WEIGHTS[None]),                    # [1, 3, N]
        _const("axes1", np.array([1], np.int64)),
        _const("zero", np.array(0.0, np.float32)),
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),                    # [B, 3, 1, 1]
        helper.make_node("Squeeze", ["pooled", "axes_sq"], ["means"]),                    # [B, 3]
        helper.make_node("Unsqueeze", ["means", "axes_last"], ["means3"]),                # [B, 3, 1]
        helper.make_node("Mul", ["means3", "weights"], ["scores"]),                       # [B, 3, N]
        helper.make_node("ReduceSum", ["scores", "axes1"], ["score_sum"], keepdims=1),  # [B, 1, N]
        helper.make_node("Mul", ["score_sum", "zero"], ["zeros"]),
        helper.make_node("Add", ["boxes", "zeros"], ["boxes_b"]),                         # [B, 4, N]
        _const("axes_sq", np.array([2, 3], np.int64)),
        _const("axes_last", np.array([2], np.int64)),
    ]
    if fail_on_nonzero:
        # Reshape 6 values into [6 + round(max(image))]: fine for a black image, an ORT error otherwise.
        nodes += [
            _const("six_values", np.zeros(6, np.float32)),
            _const("six", np.array([6], np.int64)),
            helper.make_node("ReduceMax", ["images"], ["image_max"], keepdims=0),
            helper.make_node("Round", ["image_max"], ["image_max_r"]),
            helper.make_node("Cast", ["image_max_r"], ["image_max_i"], to=TensorProto.INT64),
            helper.make_node("Unsqueeze", ["image_max_i", "axes0"], ["image_max_1"]),
            _const("axes0", np.array([0], np.int64)),
            helper.make_node("Add", ["six", "image_max_1"], ["target_shape"]),
            helper.make_node("Reshape", ["six_values", "target_shape"], ["reshaped"]),
            helper.make_node("ReduceSum", ["reshaped"], ["poison"], keepdims=0),
            helper.make_node("Add", ["scores", "poison"], ["scores_checked"]),
        ]
        scores = "scores_checked"
    else:
        scores = "scores"
    if layout == "yolov8":
        nodes.append(helper.make_node("Concat", ["boxes_b", scores], ["output0"], axis=1))
        output_shape = [batch, 4 + len(COLOUR_CLASSES), BOXES.shape[1]]
    else:
        nodes += [
            helper.make_node("ReduceMax", [scores], ["objectness"], axes=[1], keepdims=1),
            helper.make_node("Concat", ["boxes_b", "objectness", scores], ["raw"], axis=1),
            helper.make_node("Transpose", ["raw"], ["output0"], perm=[0, 2, 1]),
        ]
        output_shape = [batch, BOXES.shape[1], 5 + len(COLOUR_CLASSES)]
    # Constants must precede their users in a valid graph.
    nodes.sort(key=lambda node: node.op_type != "Constant")
    graph = helper.make_graph(
        nodes, "colour_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, output_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def colour_environment(resize_format: str = "Stretch to") -> dict:
    return {
        "CLASS_MAP": {str(index): name for index, name in enumerate(COLOUR_CLASSES)},
        "PREPROCESSING": json.dumps({"auto-orient": {"enabled": True},
                                     "resize": {"enabled": True, "width": str(INPUT_SIZE),
                                                "height": str(INPUT_SIZE), "format": resize_format}}),
        "MULTICLASS": False,
    }


def write_model(store_root: Path, model_id: str, weights: bytes, environment: dict,
                task: str = "object-detection", model_type: str = "yolov8n") -> Path:
    """Write a model folder (with manifest) into a store root; returns the folder."""
    parsed = ModelId.parse(model_id)
    folder = store_root / parsed.project / parsed.version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.onnx").write_bytes(weights)
    (folder / "environment.json").write_text(json.dumps(environment))
    (folder / "model_type.json").write_text(json.dumps({"project_task_type": task, "model_type": model_type,
                                                        "model_id": model_id}))
    write_manifest(folder, parsed)
    return folder


SEG_INPUT = 128
SEG_PROTO = 32
# Two candidates in network pixels: a disk of radius 16 around (32, 32) and a square 84..108 around (96, 96).
SEG_BOXES = np.array([[32, 32, 40, 40], [96, 96, 30, 30]], np.float32).T


def seg_prototypes() -> np.ndarray:
    """Prototype logits (2, 32, 32): channel 0 a disk, channel 1 a square, at proto pixel centres."""
    centres = (np.arange(SEG_PROTO) + 0.5) * (SEG_INPUT / SEG_PROTO)
    xx, yy = np.meshgrid(centres, centres)
    disk = (xx - 32) ** 2 + (yy - 32) ** 2 <= 16 ** 2
    square = (np.abs(xx - 96) <= 12) & (np.abs(yy - 96) <= 12)
    return np.where(np.stack([disk, square]), 12.0, -12.0).astype(np.float32)


def shape_segmenter() -> bytes:
    """Segmentation model: both candidates score the image's mean red (class 0) and mean green (class 1);
    candidate i's mask coefficients select prototype i."""
    candidates = SEG_BOXES.shape[1]
    coefficients = np.eye(2, candidates, dtype=np.float32)  # (nm=2, N)
    nodes = [
        _const("boxes", SEG_BOXES[None]),
        _const("coefficients", coefficients[None]),
        _const("protos", seg_prototypes()[None]),
        _const("ones", np.ones((1, 2, candidates), np.float32)),
        _const("axes_sq", np.array([3], np.int64)),
        _const("starts", np.array([0], np.int64)),
        _const("ends", np.array([2], np.int64)),
        _const("axis1", np.array([1], np.int64)),
        _const("zero", np.array(0.0, np.float32)),
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),            # [B, 3, 1, 1]
        helper.make_node("Squeeze", ["pooled", "axes_sq"], ["means3"]),           # [B, 3, 1]
        helper.make_node("Slice", ["means3", "starts", "ends", "axis1"], ["means"]),  # [B, 2, 1] (R, G)
        helper.make_node("Mul", ["means", "ones"], ["scores"]),                   # [B, 2, N]
        helper.make_node("Mul", ["scores", "zero"], ["zeros2"]),
        helper.make_node("ReduceSum", ["zeros2", "axis1"], ["zeros1"], keepdims=1),  # [B, 1, N]
        helper.make_node("Add", ["boxes", "zeros1"], ["boxes_b"]),
        helper.make_node("Add", ["coefficients", "zeros1"], ["coefficients_b"]),
        helper.make_node("Concat", ["boxes_b", "scores", "coefficients_b"], ["output0"], axis=1),
        helper.make_node("Shape", ["images"], ["image_shape"]),
        helper.make_node("Slice", ["image_shape", "starts", "first_end"], ["batch_dim"]),
        _const("first_end", np.array([1], np.int64)),
        _const("proto_tail", np.array([2, SEG_PROTO, SEG_PROTO], np.int64)),
        helper.make_node("Concat", ["batch_dim", "proto_tail"], ["proto_shape"], axis=0),
        helper.make_node("Expand", ["protos", "proto_shape"], ["output1"]),
    ]
    nodes.sort(key=lambda node: node.op_type != "Constant")
    graph = helper.make_graph(
        nodes, "shape_segmenter",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, SEG_INPUT, SEG_INPUT])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + 2 + 2, candidates]),
         helper.make_tensor_value_info("output1", TensorProto.FLOAT, ["batch", 2, SEG_PROTO, SEG_PROTO])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def seg_environment() -> dict:
    return {"CLASS_MAP": {"0": "disk", "1": "square"},
            "PREPROCESSING": {"auto-orient": {"enabled": True},
                              "resize": {"enabled": True, "width": SEG_INPUT, "height": SEG_INPUT,
                                         "format": "Fit (black edges) in"}}}


def colour_classifier() -> bytes:
    """Classification model: logits = 5 x the image's mean R, G, B (after /127.5 - 1 normalisation)."""
    nodes = [
        _const("scale", np.array(5.0, np.float32)),
        _const("axes", np.array([2, 3], np.int64)),
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Squeeze", ["pooled", "axes"], ["means"]),
        helper.make_node("Mul", ["means", "scale"], ["output0"]),
    ]
    nodes.sort(key=lambda node: node.op_type != "Constant")
    graph = helper.make_graph(
        nodes, "colour_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def classifier_environment(multiclass: bool = False) -> dict:
    return {"CLASS_MAP": {str(i): name for i, name in enumerate(COLOUR_CLASSES)},
            "PREPROCESSING": {"resize": {"enabled": True, "width": 32, "height": 32, "format": "Stretch to"}},
            "MULTICLASS": multiclass}


def slow_detector(matmuls: int = 8, size: int = 1024) -> bytes:
    """The colour detector plus a chain of large matrix products whose result is multiplied by zero: the
    same predictions, but each run takes tens of milliseconds of real CPU work (for backpressure tests)."""
    base = onnx.load_from_string(colour_detector("yolov8"))
    graph = base.graph
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    first = (rng.standard_normal((INPUT_SIZE, size)) / 8).astype(np.float32)
    nodes = [_const("busy_w", weight), _const("busy_first", first), _const("busy_zero", np.array(0.0, np.float32)),
             _const("busy_shape", np.array([-1, INPUT_SIZE], np.int64)),
             # Rows come from the image, so ONNX Runtime cannot fold the work away at load time.
             helper.make_node("Reshape", ["images", "busy_shape"], ["busy_rows"]),
             helper.make_node("MatMul", ["busy_rows", "busy_first"], ["busy_x"])]
    previous = "busy_x"
    for index in range(matmuls):
        nodes.append(helper.make_node("MatMul", [previous, "busy_w"], [f"busy_{index}"]))
        previous = f"busy_{index}"
    nodes += [helper.make_node("ReduceSum", [previous], ["busy_sum"], keepdims=0),
              helper.make_node("Mul", ["busy_sum", "busy_zero"], ["busy_nothing"])]
    output = graph.node[-1]  # the Concat producing output0
    output.output[0] = "output0_raw"
    nodes.append(helper.make_node("Add", ["output0_raw", "busy_nothing"], ["output0"]))
    for node in nodes:
        graph.node.append(node)
    sorted_nodes = sorted(graph.node, key=lambda node: node.op_type != "Constant")
    del graph.node[:]
    graph.node.extend(sorted_nodes)
    onnx.checker.check_model(base)
    return base.SerializeToString()
