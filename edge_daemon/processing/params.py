"""What a request asks of post-processing: thresholds, filters and mask/keypoint options, for every family."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_daemon.processing.detection import DetectionParams
from edge_daemon.processing.preprocess import PreprocSwitches
from edge_daemon.processing.segmentation import MaskDecodeMode


@dataclass(frozen=True)
class InferenceParams:
    detection: DetectionParams = field(default_factory=DetectionParams)
    switches: PreprocSwitches = field(default_factory=PreprocSwitches)
    mask_decode_mode: MaskDecodeMode = "accurate"
    tradeoff_factor: float = 0.0
    mask_format: str = "polygon"  # or "rle"
    keypoint_confidence: float = 0.0  # keypoints below it are left out (Roboflow's default: keep all)
