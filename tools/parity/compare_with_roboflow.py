"""Dev-only: edge-daemon's answers against Roboflow's own default stack (`inference_models`), family by family.

Issue #14 asks that, with default settings, edge-daemon answers like a stock Roboflow Inference server, which
runs every model family through the `inference_models` package. This script builds one local model package
per family fixture (tests/fixtures/families), in the package format both sides read from disk
(weights.onnx + inference_config.json + model_config.json + class_names.txt [+ keypoints_metadata.json]),
runs `inference_models`' own loader, pre- and post-processing on real photos, serves the same folders with
`python -m edge_daemon serve --models-dir` on loopback, and compares the answers with the issue's tolerances.

It is never imported by the package or the tests. It needs a side virtualenv OUTSIDE the repository, because
`inference_models` pulls torch and a long dependency list that the daemon must never depend on:

    python3 -m venv /work/parity-venv
    # torch/torchvision/onnxruntime/opencv: either install them with the fixture pins,
    /work/parity-venv/bin/pip install -c tools/fixtures/constraints.txt torch torchvision onnxruntime \
        opencv-python-headless matplotlib
    # or reuse the exporter venv's copies without copying them (what the measured run did):
    echo /work/exporters-venv/lib/python3.11/site-packages \
        > /work/parity-venv/lib/python3.11/site-packages/zz_exporters_venv.pth
    # inference-models itself, without its ~50 heavy dependencies (VLMs, SAM, OCR...), plus the few that
    # the detection/segmentation/classification import path needs:
    /work/parity-venv/bin/pip install --no-deps inference-models==0.39.5 backoff python-dotenv pybase64 \
        pycocotools 'scikit-image<0.26' lazy_loader imageio tifffile

Run it with the side venv's python, pointing at the daemon's own venv (the worktree's .venv):

    /work/parity-venv/bin/python tools/parity/compare_with_roboflow.py --daemon-python .venv/bin/python

Nothing downloads weights: both sides load only the local package folders made here (a temporary folder).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("ONNXRUNTIME_EXECUTION_PROVIDERS", "[CPUExecutionProvider]")
os.environ.setdefault("OFFLINE_MODE", "True")  # inference_models: never reach a weights hub

import cv2
import numpy as np
import requests

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "families"
NAMES = ["circle", "square", "triangle"]
K5 = [{"object_class_id": c, "keypoints": {str(i): f"tip{i}" for i in range(5)},
       "edges": [{"from": i, "to": (i + 1) % 5} for i in range(5)]} for c in range(2)]
COCO17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
          "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
          "right_ankle"]
PERSON = [{"object_class_id": 0, "keypoints": {str(i): n for i, n in enumerate(COCO17)},
           "edges": [{"from": a, "to": b} for a, b in ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15),
                                                         (12, 14), (14, 16), (5, 6), (11, 12))]}]
IMAGENET = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
HALF = [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
# The HTTP defaults of Roboflow's server (request models): what a client gets without setting anything.
HTTP_DEFAULTS = {"confidence": 0.4, "iou_threshold": 0.3, "max_detections": 300, "class_agnostic_nms": False}
# The RF-DETR fixtures' seeded weights score below 0.4 everywhere (0 predictions on both sides at the default),
# so they are compared at the threshold tests/test_families.py uses.
RFDETR_CONFIDENCE = 0.05
# The seeded 3-class classifiers rarely put 0.4 on a class (both sides then list none, top ""): compared at
# 0.01, the lowest confidence Roboflow's server accepts, so every class is listed. DeepLab (4 classes): its
# pixel confidences lie between 0.26 and 0.28, so at 0.4 every pixel is background on both sides; compared at
# 0.275, which sends about half of them to background.
CLASSIFIER_CONFIDENCE = 0.01
TOLERANCE = {"box_px": 1.0, "confidence": 0.01, "mask_iou": 0.9, "keypoint_px": 1.0}


# RF-DETR packaged with every resize mode Roboflow's default stack takes for it, with and without a non-square
# dataset_version_resize_dimensions (the mode is then made at that size and stretched to the input). The Nano
# detector's seeded weights score 0.026-0.045, so it is compared at 0.025; the segmenters at 0.03, which leaves
# 7-46 masks an image to compare (0-3 at 0.05).
RFDETR_FIXTURES = [("rfdetr-mini-det", "object-detection", (384, 384), RFDETR_CONFIDENCE),
                   ("rfdetr-nano-det", "object-detection", (384, 384), 0.025),
                   ("rfdetr-mini-seg", "instance-segmentation", (312, 312), 0.03),
                   ("rfdetr-seg-nano", "instance-segmentation", (312, 312), 0.03)]
RFDETR_RESIZES = [("letterbox", "letterbox", 114, None),
                  ("letterbox-448x320", "letterbox", 114, (448, 320)),
                  ("letterbox-288x416", "letterbox", 0, (288, 416)),
                  ("center-crop-448x320", "center-crop", None, (448, 320)),
                  ("reflect-320x448", "letterbox-reflect-edges", 114, (320, 448)),
                  ("fit-longer-edge-448x320", "fit-longer-edge", None, (448, 320))]


@dataclass
class Spec:
    """One family fixture as a Roboflow model package."""

    name: str
    fixture: str
    task: str  # inference_models task_type
    architecture: str
    classes: list[str]
    size: tuple[int, int]  # (w, h)
    resize: str  # network_input.resize_mode
    padding: int | None = None
    normalization: list | None = None
    post: dict[str, Any] = field(default_factory=lambda: {"type": "nms", "fused": False})
    keypoints: list | None = None
    confidence: float | None = None  # sent to both sides when the HTTP default (0.4) would leave nothing
    note: str = ""
    version_size: tuple[int, int] | None = None  # network_input.dataset_version_resize_dimensions (w, h)


SPECS = [
    Spec("yolov8-det", "yolov8-det", "object-detection", "yolov8", NAMES, (320, 320), "letterbox", 114),
    Spec("yolov8-det-dynamic", "yolov8-det-dynamic", "object-detection", "yolov8", NAMES, (320, 320), "letterbox",
         114),
    Spec("yolo11-det", "yolo11-det", "object-detection", "yolov11", NAMES, (320, 320), "letterbox", 114),
    Spec("yolo26-det", "yolo26-det-e2e", "object-detection", "yolo26", NAMES, (320, 320), "letterbox", 114),
    Spec("yolo26-det-dynamic", "yolo26-det-e2e-dynamic", "object-detection", "yolo26", NAMES, (320, 320),
         "letterbox", 114),
    Spec("yolo26-det-raw", "yolo26-det-raw", "object-detection", "yolo26", NAMES, (320, 320), "letterbox", 114,
         note="raw [1,7,2100] head under a yolo26 architecture: Roboflow reads it as end-to-end rows"),
    Spec("yolov10-det", "yolov10-det-e2e", "object-detection", "yolov10", NAMES, (320, 320), "letterbox", 114),
    Spec("yolo-nas-s", "yolo-nas-s", "object-detection", "yolonas", NAMES, (320, 320), "letterbox", 114),
    Spec("yolo-nas-s-dynamic", "yolo-nas-s-dynamic", "object-detection", "yolonas", NAMES, (320, 320), "letterbox",
         114),
    Spec("yolov8-seg", "yolov8-seg", "instance-segmentation", "yolov8", NAMES, (320, 320), "letterbox", 114),
    Spec("yolo26-seg", "yolo26-seg-e2e", "instance-segmentation", "yolo26", NAMES, (320, 320), "letterbox", 114),
    Spec("yolov8-pose-k5", "yolov8-pose-k5", "keypoint-detection", "yolov8", ["star", "pentagon"], (320, 320),
         "letterbox", 114, keypoints=K5),
    Spec("yolov8-pose", "yolov8-pose", "keypoint-detection", "yolov8", ["person"], (320, 320), "letterbox", 114,
         keypoints=PERSON),
    Spec("yolo26-pose", "yolo26-pose-e2e", "keypoint-detection", "yolo26", ["person"], (320, 320), "letterbox", 114,
         keypoints=PERSON),
    Spec("rfdetr-mini-det", "rfdetr-mini-det", "object-detection", "rfdetr", NAMES, (384, 384), "stretch",
         normalization=IMAGENET, post={}, confidence=RFDETR_CONFIDENCE),
    Spec("rfdetr-nano-det", "rfdetr-nano-det", "object-detection", "rfdetr", NAMES, (384, 384), "stretch",
         normalization=IMAGENET, post={}, confidence=RFDETR_CONFIDENCE),
    Spec("rfdetr-mini-seg", "rfdetr-mini-seg", "instance-segmentation", "rfdetr", NAMES, (312, 312), "stretch",
         normalization=IMAGENET, post={}, confidence=RFDETR_CONFIDENCE),
    Spec("rfdetr-seg-nano", "rfdetr-seg-nano", "instance-segmentation", "rfdetr", NAMES, (312, 312), "stretch",
         normalization=IMAGENET, post={}, confidence=RFDETR_CONFIDENCE),
    *[Spec(f"{fixture}-{label}", fixture, task, "rfdetr", NAMES, size, mode, padding, normalization=IMAGENET,
           post={}, confidence=confidence, version_size=version)
      for fixture, task, size, confidence in RFDETR_FIXTURES for label, mode, padding, version in RFDETR_RESIZES],
    Spec("vit-cls", "vit-cls", "classification", "vit", NAMES, (224, 224), "stretch", normalization=HALF,
         post={"type": "softmax", "fused": False}, confidence=CLASSIFIER_CONFIDENCE),
    Spec("resnet18-cls", "resnet18-cls", "classification", "resnet", NAMES, (224, 224), "stretch",
         normalization=IMAGENET, post={"type": "softmax", "fused": False}, confidence=CLASSIFIER_CONFIDENCE),
    Spec("yolov8-cls", "yolov8-cls", "classification", "yolov8", NAMES, (224, 224), "stretch",
         post={"type": "softmax", "fused": True}, confidence=CLASSIFIER_CONFIDENCE),
    Spec("yolo11-cls", "yolo11-cls", "classification", "yolov11", NAMES, (224, 224), "stretch",
         post={"type": "softmax", "fused": True}, confidence=CLASSIFIER_CONFIDENCE),
    Spec("deeplabv3plus", "deeplabv3plus", "semantic-segmentation", "deep-lab-v3-plus", ["background", *NAMES],
         (320, 320), "letterbox", 0, normalization=IMAGENET, post={}, confidence=0.275),
]


# ----- packages ---------------------------------------------------------------------------------------------
def fixture_weights(name: str) -> Path | None:
    for folder in (FIXTURES / name, FIXTURES / "built" / name):
        if (folder / "weights.onnx").is_file():
            return folder / "weights.onnx"
    return None


def write_package(folder: Path, spec: Spec, weights: Path) -> None:
    """A package as Roboflow's registry ships it: inference_config.json drives both sides' preprocessing."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, folder / "weights.onnx")
    (folder / "class_names.txt").write_text("\n".join(spec.classes) + "\n")
    network = {"training_input_size": {"width": spec.size[0], "height": spec.size[1]},
               "dynamic_spatial_size_supported": False, "color_mode": "rgb", "resize_mode": spec.resize,
               "input_channels": 3, "scaling_factor": 255}
    if spec.padding is not None:
        network["padding_value"] = spec.padding
    if spec.normalization is not None:
        network["normalization"] = spec.normalization
    if spec.version_size is not None:
        network["dataset_version_resize_dimensions"] = {"width": spec.version_size[0],
                                                        "height": spec.version_size[1]}
    config: dict[str, Any] = {"network_input": network}
    if spec.post:
        config["post_processing"] = spec.post
    (folder / "inference_config.json").write_text(json.dumps(config, indent=2))
    (folder / "model_config.json").write_text(json.dumps({"model_architecture": spec.architecture,
                                                          "task_type": spec.task, "backend_type": "onnx"}))
    if spec.keypoints is not None:
        (folder / "keypoints_metadata.json").write_text(json.dumps(spec.keypoints))


# ----- images -----------------------------------------------------------------------------------------------
def photos() -> dict[str, np.ndarray]:
    """Real photos of several sizes, square and not (BGR)."""
    import matplotlib

    hopper = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    out = {"hopper-512x600": hopper,
           "hopper-451x300": cv2.resize(hopper, (451, 300), interpolation=cv2.INTER_AREA),
           "hopper-800x450": cv2.resize(hopper[100:388], (800, 450), interpolation=cv2.INTER_CUBIC),
           "hopper-200x234": cv2.resize(hopper, (200, 234), interpolation=cv2.INTER_AREA)}  # below the input size
    try:
        from skimage import data

        out["astronaut-512x512"] = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
        out["coffee-600x400"] = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
        out["chelsea-451x300"] = cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)
    except ImportError:
        pass
    return out


def as_jpeg(image: np.ndarray) -> tuple[bytes, np.ndarray]:
    """JPEG bytes for the daemon, and the pixels both servers decode from them (cv2, as Roboflow's server)."""
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    return jpeg, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


# ----- the two sides ----------------------------------------------------------------------------------------
@dataclass
class Answer:
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # xyxy, original pixels
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    masks: list[np.ndarray] | None = None
    keypoints: list[np.ndarray] | None = None  # per instance (K, 3): x, y, confidence
    class_scores: np.ndarray | None = None  # classification: one per class
    top: int | None = None
    semantic: tuple[np.ndarray, np.ndarray] | None = None  # (class map, confidence 0..1)


def _np(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def roboflow_answer(model: Any, spec: Spec, image: np.ndarray) -> Answer:
    """`inference_models`' own pre-processing, ONNX run and post-processing, with the HTTP defaults (and what
    Roboflow's HTTP adapter keeps of them: classification lists only classes >= confidence, keypoints only
    those with confidence > 0)."""
    threshold = spec.confidence or HTTP_DEFAULTS["confidence"]
    if spec.task == "classification":
        result = model(image)
        scores = _np(result.confidence)[0].astype(np.float64)
        listed = np.where(scores >= threshold, np.round(scores, 4), 0.0)
        return Answer(class_scores=listed, top=int(listed.argmax()) if listed.max() > 0 else None)
    if spec.task == "semantic-segmentation":
        result = model(image, confidence=threshold)[0]
        return Answer(semantic=(_np(result.segmentation_map), _np(result.confidence)))
    params = {**HTTP_DEFAULTS, "confidence": threshold}
    if spec.task == "keypoint-detection":
        params["key_points_threshold"] = 0.0
    result = model(image, **params)
    if spec.task == "keypoint-detection":
        points, detections = result[0][0], result[1][0]
        xy, conf = _np(points.xy), _np(points.confidence)
        answer = Answer(_np(detections.xyxy).astype(float), _np(detections.confidence), _np(detections.class_id))
        answer.keypoints = [np.concatenate([xy[i], conf[i][:, None]], axis=1) for i in range(len(xy))]
        return answer
    found = result[0]
    answer = Answer(_np(found.xyxy).astype(float), _np(found.confidence), _np(found.class_id).astype(int))
    if spec.task == "instance-segmentation":
        answer.masks = [m.astype(bool) for m in _np(found.mask)]
    return answer


def _rle_decode(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": rle["size"], "counts": counts}, *rle["size"])
    else:
        rle = {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def _png(value: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(value), np.uint8), cv2.IMREAD_UNCHANGED)


ROUTES = {"object-detection": "object_detection", "instance-segmentation": "instance_segmentation",
          "keypoint-detection": "keypoints_detection", "classification": "classification",
          "semantic-segmentation": "semantic_segmentation"}


def daemon_answer(url: str, spec: Spec, jpeg: bytes, timeout: float = 120) -> Answer:
    """edge-daemon over real HTTP, with nothing but the image (and RLE masks, to compare them exactly)."""
    body: dict[str, Any] = {"model_id": f"{spec.name}/1",
                            "image": {"type": "base64", "value": base64.b64encode(jpeg).decode()}}
    if spec.task == "instance-segmentation":
        body["response_mask_format"] = "rle"
    if spec.confidence is not None:
        body["confidence"] = spec.confidence
    response = requests.post(f"{url}/infer/{ROUTES[spec.task]}", json=body, timeout=timeout)
    if response.status_code != 200:
        raise RuntimeError(f"daemon {response.status_code}: {response.text[:300]}")
    data = response.json()
    predictions = data["predictions"]
    if spec.task == "classification":
        scores = np.zeros(len(spec.classes))
        for p in predictions:
            scores[int(p["class_id"])] = p["confidence"]
        top = spec.classes.index(data["top"]) if data.get("top") else None
        return Answer(class_scores=scores, top=top)
    if spec.task == "semantic-segmentation":
        classes = _png(predictions["segmentation_mask"])
        confidence = _png(predictions["confidence_mask"]).astype(np.float32) / 255.0
        return Answer(semantic=(classes, confidence))
    boxes = np.array([[p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["x"] + p["width"] / 2,
                       p["y"] + p["height"] / 2] for p in predictions]).reshape(-1, 4)
    answer = Answer(boxes, np.array([p["confidence"] for p in predictions]),
                    np.array([p["class_id"] for p in predictions], int))
    if spec.task == "instance-segmentation":
        answer.masks = [_rle_decode(p["rle"]) for p in predictions]
    if spec.task == "keypoint-detection":
        answer.keypoints = []
        for p in predictions:
            slots = np.zeros((len(spec.keypoints[0]["keypoints"]) if spec.keypoints else 0, 3))
            for k in p.get("keypoints", []):
                slots[int(k["class_id"])] = (k["x"], k["y"], k["confidence"])
            answer.keypoints.append(slots)
    return answer


# ----- comparison -------------------------------------------------------------------------------------------
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def compare(spec: Spec, rf: Answer, ed: Answer) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if spec.task == "classification":
        row.update(n_rf=int((rf.class_scores > 0).sum()), n_ed=int((ed.class_scores > 0).sum()),
                   conf=float(np.abs(rf.class_scores - ed.class_scores).max()), top_equal=rf.top == ed.top)
        row["ok"] = row["top_equal"] and row["n_rf"] == row["n_ed"] and row["conf"] <= TOLERANCE["confidence"]
        return row
    if spec.task == "semantic-segmentation":
        (rc, rconf), (ec, econf) = rf.semantic, ed.semantic
        same = ec.shape == rc.shape
        # Confidence masks are 8-bit (x 255, truncated): within 0.01 plus one step counts as equal. Pixels whose
        # confidence sits on the threshold may fall either side of it (float noise), so agreement is a share.
        differs = np.abs(rconf - econf) > TOLERANCE["confidence"] + 1 / 255 if same else None
        row.update(n_rf=len(np.unique(rc)), n_ed=len(np.unique(ec)) if same else -1,
                   pixels_equal=float((rc == ec).mean()) if same else 0.0,
                   conf=float(np.abs(rconf - econf).max()) if same else 1.0,
                   conf_pixels_off=float(differs.mean()) if same else 1.0)
        row["ok"] = same and row["pixels_equal"] >= 0.999 and row["conf_pixels_off"] <= 0.001
        return row
    used: set[int] = set()
    box_diff = conf_diff = kp_diff = 0.0
    mask_ious: list[float] = []
    small_mask_ious: list[float] = []  # instances under 32x32 px: outside the issue's tolerance, reported
    unmatched = 0
    for i in np.argsort(-rf.scores, kind="stable"):
        best, best_iou = None, 0.5
        for j in range(len(ed.scores)):
            if j not in used and ed.classes[j] == rf.classes[i]:
                # Equal within a pixel counts as a match even for a box of no area (clipped at the edge).
                same = np.abs(rf.boxes[i] - ed.boxes[j]).max() <= TOLERANCE["box_px"]
                overlap = 1.0 if same else _iou(rf.boxes[i], ed.boxes[j])
                if overlap > best_iou:
                    best, best_iou = j, overlap
        if best is None:
            unmatched += 1
            continue
        used.add(best)
        box_diff = max(box_diff, float(np.abs(rf.boxes[i] - ed.boxes[best]).max()))
        conf_diff = max(conf_diff, abs(float(rf.scores[i]) - float(ed.scores[best])))
        if rf.masks is not None and ed.masks is not None:
            a, b = rf.masks[i], ed.masks[best]
            x1, y1, x2, y2 = rf.boxes[i]
            union = np.logical_or(a, b).sum() if a.shape == b.shape else 0
            overlap = float(np.logical_and(a, b).sum() / union) if union else float(a.shape == b.shape)
            (mask_ious if x2 - x1 >= 32 and y2 - y1 >= 32 else small_mask_ious).append(overlap)
        if rf.keypoints is not None and ed.keypoints is not None:
            visible = rf.keypoints[i][:, 2] > 0  # Roboflow's response drops keypoints with confidence <= 0
            if visible.any():
                kp_diff = max(kp_diff, float(np.abs(rf.keypoints[i][visible, :2] - ed.keypoints[best][visible, :2])
                                             .max()))
    row.update(n_rf=len(rf.scores), n_ed=len(ed.scores), unmatched_rf=unmatched,
               unmatched_ed=len(ed.scores) - len(used), box=box_diff, conf=conf_diff,
               mask_iou=min(mask_ious) if mask_ious else None, masks_compared=len(mask_ious),
               small_mask_iou=min(small_mask_ious) if small_mask_ious else None,
               small_masks=len(small_mask_ious),
               keypoints=kp_diff if rf.keypoints is not None else None)
    row["ok"] = (row["n_rf"] == row["n_ed"] and unmatched == 0 and box_diff <= TOLERANCE["box_px"]
                 and conf_diff <= TOLERANCE["confidence"]
                 and (row["mask_iou"] is None or row["mask_iou"] >= TOLERANCE["mask_iou"])
                 and (row["keypoints"] is None or kp_diff <= TOLERANCE["keypoint_px"]))
    return row


# ----- running ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(python: str, models_dir: Path, cache_dir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [python, "-m", "edge_daemon", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--models-dir", str(models_dir), "--cache-dir", str(cache_dir), "--api-url", "http://127.0.0.1:9",
               "--max-active-models", str(len(SPECS) + 2), "--load-wait", "120"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):  # bounded: 60 s
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("daemon did not answer /healthz within 60 s")


def load_roboflow(folder: Path) -> Any:
    from inference_models import AutoModel

    return AutoModel.from_pretrained(str(folder), onnx_execution_providers=["CPUExecutionProvider"])


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| family | image | #pred RF / ED | unmatched RF / ED | max box diff px | max conf diff | min mask IoU "
            "(n) | min IoU < 32 px (n) | keypoint max diff px | top class / pixels equal | within tolerance |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['image']} | error: {r['error']} ||||||||| NO |")
            continue
        if "top_equal" in r:
            top = fmt(r["top_equal"])
        elif "pixels_equal" in r:
            top = (f"class {100 * r['pixels_equal']:.3f} % px, confidence off on "
                   f"{100 * r['conf_pixels_off']:.3f} % px")
        else:
            top = "-"
        mask = f"{fmt(r.get('mask_iou'))} ({r.get('masks_compared', 0)})" if r.get("masks_compared") else "-"
        small = f"{fmt(r.get('small_mask_iou'))} ({r.get('small_masks', 0)})" if r.get("small_masks") else "-"
        unmatched = f"{r['unmatched_rf']} / {r['unmatched_ed']}" if "unmatched_rf" in r else "-"
        lines.append(f"| {r['family']} | {r['image']} | {r['n_rf']} / {r['n_ed']} | {unmatched} | "
                     f"{fmt(r.get('box'), 1)} | {fmt(r.get('conf'), 4)} | {mask} | {small} | {fmt(r.get('keypoints'), 1)} | "
                     f"{top} | {fmt(bool(r['ok']))} |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": sys.version.split()[0]}
    for name in ("inference-models", "torch", "torchvision", "onnxruntime", "opencv-python", "numpy", "pillow",
                 "pycocotools", "scikit-image"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001 - a version we cannot read is reported as such
            out[name] = "?"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemon-python", default=str(REPO / ".venv" / "bin" / "python"))
    parser.add_argument("--only", nargs="*", help="family names to run (default: all)")
    parser.add_argument("--json", help="write the rows as JSON to this file")
    parser.add_argument("--keep", help="build the packages in this folder and keep them")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="parity-"))
    models = root / "models"
    specs = [s for s in SPECS if not args.only or s.name in args.only]
    built = []
    for spec in specs:
        weights = fixture_weights(spec.fixture)
        if weights is None:
            print(f"skip {spec.name}: fixture {spec.fixture} is not built here", file=sys.stderr)
            continue
        write_package(models / spec.name / "1", spec, weights)
        built.append(spec)
    images = {name: as_jpeg(image) for name, image in photos().items()}
    process, url = start_daemon(args.daemon_python, models, root / "cache")
    rows: list[dict[str, Any]] = []
    try:
        for spec in built:
            try:
                model = load_roboflow(models / spec.name / "1")
            except Exception as error:  # noqa: BLE001 - reported in the table
                rows.append({"family": spec.name, "image": "*", "error": f"inference_models load: {error!r}"[:200]})
                continue
            for image_name, (jpeg, pixels) in images.items():
                row: dict[str, Any] = {"family": spec.name, "image": image_name}
                try:
                    row.update(compare(spec, roboflow_answer(model, spec, pixels), daemon_answer(url, spec, jpeg)))
                except Exception as error:  # noqa: BLE001 - reported in the table
                    row["error"] = repr(error)[:200]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(table(rows))
    print()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "versions": versions()}, indent=1, default=str))
    return 0 if rows and all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
