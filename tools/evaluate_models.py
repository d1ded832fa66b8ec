"""Score the shipped ONNX models on held-out procedural scenes via onnxruntime.

The keypoint model is decoded here (decode_pose), from its YOLOv8-pose layout alone.

    python tools/evaluate_models.py [--images 500] [--seed0 1000000]

Held-out seeds start at 1,000,000 (training uses seeds below 70,000).  Each
scene is JPEG-encoded at quality 90 and decoded again, as a client upload
would be, then pre/post-processed by tools/inference.py.  Prints a Markdown
table of the metrics and gates.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge_daemon.scenes import (
    CLASS_NAMES,
    KEYPOINT_NAMES,
    MAX_KEYPOINTS,
    encode_jpeg,
    generate_classification_scene,
    generate_scene,
)
from tools.inference import Letterbox, OnnxModel, decode_yolo, instance_mask, letterbox, nms, to_cls_input, to_det_input
from tools.metrics import APAccumulator, box_iou, roi_mask_iou
from tools.shapes_layout import DET_SIZE

MODELS_DIR = REPO / "edge_daemon" / "default_models"
HELDOUT_SEED0 = 1_000_000
GATES = {"det_map50": 0.90, "det_map50_95": 0.60, "seg_mask_map50": 0.85, "cls_top1": 0.95, "pose_pck05": 0.90}
PCK_ALPHA = 0.05  # a keypoint is correct within 0.05 x the longer side of its object's GT box
PCK_MATCH_IOU = 0.5
SMALL_PX = 40  # PCK is also split at this longer GT box side, in pixels of a DET_SIZE letterbox (any model size)


def _upload(image: np.ndarray, jpeg_quality: int | None) -> np.ndarray:
    """What the server would decode from a client's JPEG upload."""
    if jpeg_quality is None:
        return image
    return cv2.imdecode(np.frombuffer(encode_jpeg(image, jpeg_quality), np.uint8), cv2.IMREAD_COLOR)


def evaluate_detection(
    model_path: Path,
    seeds: list[int],
    with_masks: bool = False,
    conf: float = 0.001,
    iou: float = 0.6,
    batch: int = 8,
    jpeg_quality: int | None = 90,
) -> dict[str, float]:
    """Box mAP (and mask mAP for segmentation) of one ONNX model over the given scene seeds."""
    model = OnnxModel(str(model_path))
    boxes_acc = APAccumulator(len(CLASS_NAMES))
    masks_acc = APAccumulator(len(CLASS_NAMES)) if with_masks else None
    for start in range(0, len(seeds), batch):
        scenes = [generate_scene(s) for s in seeds[start:start + batch]]
        lbs = [letterbox(_upload(sc.image, jpeg_quality), DET_SIZE) for sc in scenes]
        outs = model(to_det_input([lb[0] for lb in lbs]))
        for k, (scene, (_, geom)) in enumerate(zip(scenes, lbs, strict=True)):
            det = decode_yolo(outs[0][k], geom, nc=len(CLASS_NAMES), conf=conf, iou=iou)
            gt_boxes = np.array([o.box for o in scene.objects], dtype=np.float64).reshape(-1, 4)
            gt_cls = np.array([o.class_id for o in scene.objects], dtype=np.int64)
            boxes_acc.add(box_iou(det.boxes, gt_boxes), det.scores, det.classes, gt_cls)
            if masks_acc is not None:
                assert det.coeffs is not None
                rois = [instance_mask(c, outs[1][k], b, geom) for c, b in zip(det.coeffs, det.boxes, strict=True)]
                miou = roi_mask_iou(rois, [o.mask for o in scene.objects])
                masks_acc.add(miou, det.scores, det.classes, gt_cls)
    res = {f"box_{k}": v for k, v in boxes_acc.summary().items()}
    if masks_acc is not None:
        res |= {f"mask_{k}": v for k, v in masks_acc.summary().items()}
    return res


def decode_pose(
    pred: np.ndarray,
    geom: Letterbox,
    nc: int = 4,
    nk: int = MAX_KEYPOINTS,
    conf: float = 0.001,
    iou: float = 0.6,
    max_det: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's YOLOv8-pose output0 (4 + nc + 3K, N) -> boxes, scores, classes, keypoints (D, K, 3).

    Written from the layout, independently of the daemon: transpose; every (anchor, class) score above
    `conf` is a candidate; class-aware greedy IoU NMS; boxes and keypoint x, y mapped back through the
    letterbox to original pixels (boxes clipped to the image); the third keypoint value (visibility,
    already a probability in the graph) is kept as is.
    """
    p = pred.T  # (N, 4 + nc + 3K)
    assert p.shape[1] == 4 + nc + 3 * nk, p.shape
    a_idx, c_idx = np.nonzero(p[:, 4:4 + nc] > conf)
    scores = p[a_idx, 4 + c_idx]
    cx, cy, w, h = (p[a_idx, i] for i in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    keep = nms(boxes + c_idx[:, None].astype(np.float32) * 4096.0, scores, iou)[:max_det]
    boxes, scores, c_idx, a_idx = boxes[keep], scores[keep], c_idx[keep], a_idx[keep]
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - geom.pad_left) / geom.scale).clip(0, geom.orig_w)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - geom.pad_top) / geom.scale).clip(0, geom.orig_h)
    kpts = p[a_idx, 4 + nc:].reshape(-1, nk, 3).astype(np.float64)
    kpts[..., 0] = (kpts[..., 0] - geom.pad_left) / geom.scale
    kpts[..., 1] = (kpts[..., 1] - geom.pad_top) / geom.scale
    return boxes, scores, c_idx, kpts


def match_by_box(iou: np.ndarray, scores: np.ndarray, classes: np.ndarray, gt_classes: np.ndarray) -> np.ndarray:
    """For each GT, the detection index matched to it or -1.

    Detections are taken in descending score order; each takes the unmatched GT of its class with the
    highest box IoU, if that IoU is at least PCK_MATCH_IOU.
    """
    match = np.full(len(gt_classes), -1, dtype=np.int64)
    for d in np.argsort(-scores, kind="stable"):
        cand = np.where((gt_classes == classes[d]) & (match < 0), iou[d], -1.0)
        if len(cand) and cand.max() >= PCK_MATCH_IOU:
            match[int(np.argmax(cand))] = d
    return match


def model_input_size(model: OnnxModel) -> int:
    """The square input side a model's ONNX file declares (images [batch, 3, size, size])."""
    shape = model.session.get_inputs()[0].shape
    assert len(shape) == 4 and isinstance(shape[2], int) and shape[2] == shape[3], shape
    return int(shape[2])


def evaluate_pose(model_path: Path, seeds: list[int], conf: float = 0.001, iou: float = 0.6, batch: int = 8,
                  jpeg_quality: int | None = 90, threads: int = 2) -> dict[str, float]:
    """Box mAP and PCK@0.05 of the keypoint model over the given scene seeds.

    PCK counts every visible GT keypoint: correct when the detection matched to its object (box IoU >= 0.5,
    same class) has that keypoint within PCK_ALPHA x max(GT box width, height); an unmatched object's
    keypoints count as wrong. Scenes are letterboxed to the input size the ONNX file declares, so models of
    any size are measured alike. `pck05_small` / `pck05_large` split PCK at SMALL_PX (the GT box's longer
    side after a DET_SIZE letterbox, whatever the model's own size, so both sizes split the same objects).
    """
    model = OnnxModel(str(model_path), threads)
    size = model_input_size(model)
    boxes_acc = APAccumulator(len(CLASS_NAMES))
    correct = np.zeros(len(CLASS_NAMES), np.int64)
    total = np.zeros(len(CLASS_NAMES), np.int64)
    by_size = np.zeros((2, 2), np.int64)  # [small, large] x [correct, total]
    for start in range(0, len(seeds), batch):
        scenes = [generate_scene(s) for s in seeds[start:start + batch]]
        lbs = [letterbox(_upload(sc.image, jpeg_quality), size) for sc in scenes]
        outs = model(to_det_input([lb[0] for lb in lbs]))
        for k, (scene, (_, geom)) in enumerate(zip(scenes, lbs, strict=True)):
            boxes, scores, classes, kpts = decode_pose(outs[0][k], geom, nc=len(CLASS_NAMES), conf=conf, iou=iou)
            gt_boxes = np.array([o.box for o in scene.objects], dtype=np.float64).reshape(-1, 4)
            gt_cls = np.array([o.class_id for o in scene.objects], dtype=np.int64)
            ious = box_iou(boxes, gt_boxes)
            boxes_acc.add(ious, scores, classes, gt_cls)
            match = match_by_box(ious, scores, classes, gt_cls)
            ref_scale = DET_SIZE / max(geom.orig_w, geom.orig_h)  # a DET_SIZE letterbox's scale
            for obj, gt_box, d in zip(scene.objects, gt_boxes, match, strict=True):
                n = len(KEYPOINT_NAMES[obj.class_id])
                vis = obj.keypoints_visible[:n]
                side = max(gt_box[2] - gt_box[0], gt_box[3] - gt_box[1])
                split = 0 if side * ref_scale < SMALL_PX else 1
                total[obj.class_id] += int(vis.sum())
                by_size[split, 1] += int(vis.sum())
                if d < 0:
                    continue
                dist = np.hypot(*(kpts[d, :n, :2] - obj.keypoints[:n]).T)
                hits = int(((dist <= PCK_ALPHA * side) & vis).sum())
                correct[obj.class_id] += hits
                by_size[split, 0] += hits
    res = {f"box_{k}": v for k, v in boxes_acc.summary().items()}
    res["pck05"] = float(correct.sum() / max(total.sum(), 1))
    for c, name in enumerate(CLASS_NAMES):
        res[f"pck05_{name}"] = float(correct[c] / max(total[c], 1))
    res["pck05_small"], res["pck05_large"] = (float(c / max(t, 1)) for c, t in by_size)
    res["visible_keypoints"] = float(total.sum())
    res["visible_keypoints_small"] = float(by_size[0, 1])
    res["input_size"] = float(size)
    return res


def evaluate_classification(model_path: Path, seeds: list[int], batch: int = 16, jpeg_quality: int | None = 90) -> dict[str, float]:
    """Top-1 accuracy of the classifier over classification scenes."""
    model = OnnxModel(str(model_path))
    correct = 0
    for start in range(0, len(seeds), batch):
        scenes = [generate_classification_scene(s) for s in seeds[start:start + batch]]
        logits = model(to_cls_input([_upload(sc.image, jpeg_quality) for sc in scenes]))[0]
        correct += int((logits.argmax(1) == np.array([sc.label for sc in scenes])).sum())
    return {"top1": correct / len(seeds)}


def evaluate_all(models_dir: Path, n_images: int, seed0: int = HELDOUT_SEED0) -> dict[str, float]:
    """All gate metrics for the three bundled models."""
    seeds = list(range(seed0, seed0 + n_images))
    det = evaluate_detection(models_dir / "shapes" / "1" / "weights.onnx", seeds)
    seg = evaluate_detection(models_dir / "shapes-seg" / "1" / "weights.onnx", seeds, with_masks=True)
    cls = evaluate_classification(models_dir / "shapes-cls" / "1" / "weights.onnx", seeds)
    pose = evaluate_pose(models_dir / "shapes-pose" / "1" / "weights.onnx", seeds)
    return {
        "det_map50": det["box_map50"],
        "det_map50_95": det["box_map50_95"],
        "seg_box_map50": seg["box_map50"],
        "seg_box_map50_95": seg["box_map50_95"],
        "seg_mask_map50": seg["mask_map50"],
        "seg_mask_map50_95": seg["mask_map50_95"],
        "cls_top1": cls["top1"],
        "pose_map50": pose["box_map50"],
        "pose_map50_95": pose["box_map50_95"],
        "pose_pck05": pose["pck05"],
        **{f"pose_pck05_{name}": pose[f"pck05_{name}"] for name in CLASS_NAMES},
    }


def markdown_table(metrics: dict[str, float], n_images: int) -> str:
    """Render metrics with their gates as a Markdown table."""
    rows = [
        ("shapes/1", "box mAP@0.5", "det_map50"),
        ("shapes/1", "box mAP@0.5:0.95", "det_map50_95"),
        ("shapes-seg/1", "box mAP@0.5", "seg_box_map50"),
        ("shapes-seg/1", "box mAP@0.5:0.95", "seg_box_map50_95"),
        ("shapes-seg/1", "mask mAP@0.5", "seg_mask_map50"),
        ("shapes-seg/1", "mask mAP@0.5:0.95", "seg_mask_map50_95"),
        ("shapes-cls/1", "top-1 accuracy", "cls_top1"),
        ("shapes-pose/1", "box mAP@0.5", "pose_map50"),
        ("shapes-pose/1", "box mAP@0.5:0.95", "pose_map50_95"),
        ("shapes-pose/1", "keypoint PCK@0.05", "pose_pck05"),
        *(("shapes-pose/1", f"PCK@0.05, {name}", f"pose_pck05_{name}") for name in CLASS_NAMES),
    ]
    lines = [
        f"| model | metric ({n_images} held-out images) | value | gate |",
        "| --- | --- | --- | --- |",
    ]
    for model_id, name, key in rows:
        gate = GATES.get(key)
        verdict = "-" if gate is None else f"≥ {gate:.2f} {'pass' if metrics[key] >= gate else 'FAIL'}"
        lines.append(f"| `{model_id}` | {name} | {metrics[key]:.3f} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=MODELS_DIR)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--seed0", type=int, default=HELDOUT_SEED0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    metrics = evaluate_all(args.models, args.images, args.seed0)
    print(markdown_table(metrics, args.images))
    print(f"\n(evaluated in {time.perf_counter() - t0:.0f}s; conf 0.001, class-aware NMS IoU 0.6, max 100 detections, JPEG q90)")
    return 0 if all(metrics[k] >= v for k, v in GATES.items()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
