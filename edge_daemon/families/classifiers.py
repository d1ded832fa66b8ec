"""Classifiers: ViT, ResNet, DINOv3 and YOLOv8/v11/YOLO26-cls, one `[nc]` score vector per image.

Single-label answers get a softmax, multi-label (`MULTICLASS`) a sigmoid, unless the graph already ends in one
(read from the ONNX file: Ultralytics exports end in Softmax) or the metadata says the scores are final:
never twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_daemon.families.base import ModelFacts
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry
from edge_daemon.responses import classification_fields


@dataclass(frozen=True)
class ClassifierDecoder:
    family: str
    class_names: tuple[str, ...]
    multilabel: bool
    final: bool  # the scores are already probabilities

    def scores(self, output: np.ndarray) -> np.ndarray:
        values = np.asarray(output, dtype=np.float64).reshape(-1)
        if self.final:
            return values
        if self.multilabel:
            return 1.0 / (1.0 + np.exp(-values))
        shifted = np.exp(values - values.max())
        return shifted / shifted.sum()

    def decode(self, outputs: list[np.ndarray], geometry: Geometry, params: InferenceParams) -> dict[str, Any]:
        return classification_fields(self.scores(outputs[0]), self.class_names, self.multilabel,
                                     params.detection.confidence)


def family_name(model_type: str) -> str:
    text = model_type.lower()
    for name in ("vit", "resnet", "dinov3", "yolo26", "yolov11", "yolov8"):
        if text.startswith(name):
            return name
    return "classifier"


def fit(facts: ModelFacts) -> ClassifierDecoder | None:
    if facts.metadata.task != "classification" or len(facts.outputs) != 1:
        return None
    if int(np.prod(facts.shapes[0])) != facts.num_classes:
        return None
    declared = facts.metadata.output_is_probability
    in_graph = facts.onnx.ends_in(facts.output_names[0], "Sigmoid" if facts.metadata.multiclass else "Softmax")
    return ClassifierDecoder(family_name(facts.metadata.model_type), facts.class_names, facts.metadata.multiclass,
                             final=declared if declared is not None else in_graph)
