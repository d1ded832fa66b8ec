"""The interface every model family implements, and what it is told about a model to decide if it fits.

A family looks at a loaded model's facts (declared task and architecture, class names, the output tensors of
a real run, the ONNX file's own metadata) and either returns a `Decoder` for it or None when the outputs are
not its layout. The decoder turns one image's raw outputs into Roboflow's response fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge_daemon.models.metadata import ModelMetadata, Task
from edge_daemon.models.onnx_info import OnnxInfo
from edge_daemon.processing.params import InferenceParams
from edge_daemon.processing.preprocess import Geometry, InputSpec

UNIT = InputSpec()  # RGB, x/255: every YOLO family and YOLO-NAS
IMAGENET = InputSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # ResNet, DINOv3, DeepLab
# RF-DETR: ImageNet too, resized with Pillow's (antialiased) bilinear filter as it was trained and as Roboflow's
# default stack does (inference_models/models/rfdetr/pre_processing.py), a non-stretch mode at the dataset
# version's size first.
RFDETR_INPUT = InputSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize_filter="pillow",
                         via_version_size=True)
SYMMETRIC = InputSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # ViT: (x/255 - 0.5) / 0.5


@dataclass(frozen=True)
class ModelFacts:
    """What is known about a model once its engine ran one (blank) batch."""

    metadata: ModelMetadata
    outputs: list[np.ndarray]  # one image's slice of each output of the validation run
    output_names: list[str]
    input_size: tuple[int, int]  # network (width, height)
    onnx: OnnxInfo = field(default_factory=OnnxInfo)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(output.shape) for output in self.outputs]

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes answered to clients (a background placeholder removed)."""
        dropped = set(self.metadata.dropped_class_ids)
        return tuple(name for index, name in enumerate(self.metadata.class_names) if index not in dropped)

    @property
    def num_classes(self) -> int:
        """Classes in the raw output, placeholders included."""
        return len(self.metadata.class_names)

    def keypoint_slots(self) -> int | None:
        """K keypoints per detection: from keypoints_metadata.json, else the export's own `kpt_shape`."""
        counts = [len(names) for names in self.metadata.keypoint_names]
        if counts and max(counts):
            return max(counts)
        shape = self.onnx.property("kpt_shape")
        if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], int):
            return int(shape[0])
        return None


class Decoder(Protocol):
    """One family's decoding of one image's raw outputs into response fields (`predictions`, ...)."""

    family: str

    def decode(self, outputs: list[np.ndarray], geometry: Geometry, params: InferenceParams) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Family:
    """A row of the family table: what it serves, how its input is made, and how it recognises its outputs."""

    name: str
    tasks: tuple[Task, ...]
    model_types: tuple[str, ...]  # lower-case prefixes of the declared model_type ('yolov8', 'rfdetr', ...)
    input: InputSpec
    fit: Callable[[ModelFacts], Decoder | None]
    summary: str = ""

    def declared_by(self, model_type: str) -> int:
        """Length of the longest prefix of `model_type` this family claims (0: none), so `yolov10` beats `yolov1`."""
        text = model_type.lower().replace("_", "").replace("-", "")
        return max((len(prefix) for prefix in self.model_types if text.startswith(prefix)), default=0)
