"""Segmentation post-processing time per image with 20 and 100 instances (masks, polygons, RLE).

    python bench/segmentation_postprocess.py [--repeats 30]

Synthetic raw outputs of a 640x640 YOLOv8-seg model (8400 candidates, 32x160x160 prototypes) for a
1920x1080 original; times NMS + mask decode + polygon/RLE shaping per image, per mode, in one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_daemon.inference import InferenceParams
from edge_daemon.processing import detection, segmentation
from edge_daemon.processing.detection import DetectionParams
from edge_daemon.processing.preprocess import Geometry
from edge_daemon.responses import segmentation_predictions

INPUT, PROTO, CLASSES, MASKS, CANDIDATES = 640, 160, 4, 32, 8400


def synthetic_outputs(instances: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw `[4+nc+32, N]` predictions with `instances` well-separated confident objects, plus prototypes."""
    rng = np.random.default_rng(seed)
    raw = np.zeros((4 + CLASSES + MASKS, CANDIDATES), np.float32)
    raw[0:2] = rng.uniform(0, INPUT, (2, CANDIDATES))
    raw[2:4] = rng.uniform(4, 40, (2, CANDIDATES))
    raw[4:4 + CLASSES] = rng.uniform(0, 0.2, (CLASSES, CANDIDATES))
    grid = int(np.ceil(np.sqrt(instances)))
    cell = (INPUT - 140) / grid  # letterbox rows 140..500 hold the 16:9 image
    for index in range(instances):
        row, col = divmod(index, grid)
        raw[0, index] = (col + 0.5) * INPUT / grid
        raw[1, index] = 140 + (row + 0.5) * cell * (360 / (INPUT - 140))
        raw[2, index], raw[3, index] = INPUT / grid * 0.8, 360 / grid * 0.8
        raw[4 + index % CLASSES, index] = 0.9
    raw[4 + CLASSES:] = rng.normal(0, 1, (MASKS, CANDIDATES))
    prototypes = rng.normal(0, 1, (MASKS, PROTO, PROTO)).astype(np.float32)
    return raw, prototypes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    geometry = Geometry(1920, 1080, 0, 0, 1920, 1080, 640 / 1920, 360 / 1080, 0, 140)
    names = tuple(f"class{i}" for i in range(CLASSES))
    print("| instances | mode | mask format | p50 ms | mean ms |")
    print("|---|---|---|---|---|")
    for instances in (20, 100):
        raw, prototypes = synthetic_outputs(instances, seed=instances)
        for mode, mask_format in (("accurate", "polygon"), ("fast", "polygon"), ("accurate", "rle")):
            params = InferenceParams(detection=DetectionParams(confidence=0.5, iou_threshold=0.5),
                                     mask_decode_mode=mode, mask_format=mask_format)
            timings = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                found = detection.decode(raw, "yolov8", CLASSES, MASKS, params.detection, names)
                patches = segmentation.yolo_masks(found, prototypes, geometry, (INPUT, INPUT), mode, 0.0)
                predictions = segmentation_predictions(found, patches, geometry, names, mask_format)
                timings.append(time.perf_counter() - started)
            assert len(predictions) == instances, len(predictions)
            p50, mean = statistics.median(timings) * 1000, statistics.fmean(timings) * 1000
            print(f"| {instances} | {mode} | {mask_format} | {p50:.1f} | {mean:.1f} |")
            print(json.dumps({"bench": "segmentation_postprocess", "instances": instances, "mode": mode,
                              "mask_format": mask_format, "p50_ms": round(p50, 2), "mean_ms": round(mean, 2)}),
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
