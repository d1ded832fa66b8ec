"""Train and export the bundled default models on the procedural shapes.

    python tools/train_models.py            # full run, writes edge_daemon/default_models
    python tools/train_models.py --help

One multi-task network (boxes + instance masks) is trained once; ``shapes-seg/1``
is exported with its mask branch and ``shapes/1`` from the very same weights
without it.  ``shapes-cls/1`` is a separate small classifier.  Everything is
seeded and runs on the CPU so a retrain reproduces the published metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge_daemon.scenes import CLASS_NAMES, KEYPOINT_EDGES, KEYPOINT_NAMES, MAX_KEYPOINTS
from tools.shapes_data import build_cls_dataset, build_det_dataset
from tools.shapes_layout import CLS_SIZE, DET_SIZE, PROTO_STRIDE, STRIDES
from tools.shapes_nets import (
    ExportDetect,
    ShapesClassifier,
    ShapesDetector,
    decode_ltrb,
    flatten_levels,
    make_anchors,
)

DET_TRAIN_SEED0 = 0  # detection training seeds: [0, n)
POSE_TRAIN_SEED0 = 0  # the pose model trains on the detection scenes (their keypoints)
CLS_TRAIN_SEED0 = 0  # classification scenes use their own RNG stream
COLORS = {"circle": "#E53935", "square": "#1E88E5", "triangle": "#43A047", "star": "#FDD835"}
OPSET = 17


def setup_torch(threads: int = 2) -> None:
    """Pin threads and ask for deterministic kernels so retrains reproduce."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)


# --------------------------------------------------------------------------- losses


def box_iou_aligned(a: torch.Tensor, b: torch.Tensor, ciou: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """IoU (or CIoU) between broadcastable xyxy boxes."""
    ix1, iy1 = torch.maximum(a[..., 0], b[..., 0]), torch.maximum(a[..., 1], b[..., 1])
    ix2, iy2 = torch.minimum(a[..., 2], b[..., 2]), torch.minimum(a[..., 3], b[..., 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    wa, ha = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
    wb, hb = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    union = wa * ha + wb * hb - inter + eps
    iou = inter / union
    if not ciou:
        return iou
    cw = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    ch = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    c2 = cw**2 + ch**2 + eps
    rho2 = ((a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]) ** 2
            + (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(wb / (hb + eps)) - torch.atan(wa / (ha + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


@torch.no_grad()
def assign_targets(
    scores: torch.Tensor,
    pboxes: torch.Tensor,
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_cls: torch.Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aligned assignment: per GT, the top-k anchors (inside its box) by score^a * IoU^b.

    Returns fg (B,N) bool, target GT index (B,N), target boxes (B,N,4) and
    IoU-aware soft class targets (B,N,C).
    """
    b, n, c = scores.shape
    m = gt_boxes.shape[1]
    valid = gt_cls >= 0  # (B,M)
    ax, ay = anchors[:, 0], anchors[:, 1]
    x1, y1, x2, y2 = (t[..., None] for t in gt_boxes.unbind(-1))  # (B,M,1)
    inside = torch.stack([ax - x1, ay - y1, x2 - ax, y2 - ay], -1).amin(-1) > 1e-6  # (B,M,N)
    # Tiny boxes may contain no anchor centre: always allow the nearest anchor.
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    nearest = ((anchors[None, None] - centre[:, :, None]) ** 2).sum(-1).argmin(-1)  # (B,M)
    inside.scatter_(2, nearest[..., None], True)
    inside &= valid[..., None]
    iou = box_iou_aligned(gt_boxes[:, :, None, :], pboxes[:, None, :, :]).clamp(min=0)  # (B,M,N)
    cls_idx = gt_cls.clamp(min=0)[:, None, :].expand(b, n, m)
    sc = scores.gather(2, cls_idx).transpose(1, 2)  # (B,M,N)
    align = sc.pow(alpha) * iou.pow(beta) * inside
    top_idx = align.topk(min(topk, n), dim=-1).indices
    pos = torch.zeros_like(inside).scatter_(2, top_idx, True) & inside
    multi = pos.sum(1) > 1  # (B,N)
    if multi.any():
        best = F.one_hot((iou * pos).argmax(1), m).permute(0, 2, 1).bool()
        pos = torch.where(multi[:, None, :], best & pos, pos)
    fg = pos.any(1)
    tgt = pos.float().argmax(1)  # (B,N)
    t_boxes = gt_boxes.gather(1, tgt[..., None].expand(b, n, 4))
    t_cls = gt_cls.gather(1, tgt).clamp(min=0)
    align_pos = align * pos
    max_align = align_pos.amax(-1, keepdim=True)
    max_iou = (iou * pos).amax(-1, keepdim=True)
    norm = (align_pos * max_iou / (max_align + 1e-9)).amax(1)  # (B,N)
    t_scores = F.one_hot(t_cls, c).float() * (norm * fg)[..., None]
    return fg, tgt, t_boxes, t_scores


class DetLoss:
    """Soft-target BCE for classes, CIoU for boxes, cropped BCE for masks."""

    def __init__(self, w_cls: float = 1.0, w_box: float = 5.0, w_mask: float = 2.5) -> None:
        anchors, strides = make_anchors(DET_SIZE)
        self.anchors, self.strides = anchors, strides
        self.w_cls, self.w_box, self.w_mask = w_cls, w_box, w_mask

    def __call__(self, outs: list, protos: torch.Tensor | None, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cls, box, coef = flatten_levels(outs)
        pboxes = decode_ltrb(box, self.anchors, self.strides)
        gt_boxes, gt_cls = batch["boxes"], batch["classes"]
        fg, tgt, t_boxes, t_scores = assign_targets(cls.detach().sigmoid(), pboxes.detach(), self.anchors, gt_boxes, gt_cls)
        tss = t_scores.sum().clamp(min=1.0)
        l_cls = F.binary_cross_entropy_with_logits(cls, t_scores, reduction="sum") / tss
        weight = t_scores.sum(-1)[fg]
        l_box = ((1.0 - box_iou_aligned(pboxes[fg], t_boxes[fg], ciou=True)) * weight).sum() / tss
        loss = self.w_cls * l_cls + self.w_box * l_box
        parts = {"cls": float(l_cls.detach()), "box": float(l_box.detach())}
        if coef is not None and protos is not None:
            l_mask = self._mask_loss(coef, protos, fg, tgt, t_boxes, batch["masks"])
            loss = loss + self.w_mask * l_mask
            parts["mask"] = float(l_mask.detach())
        return loss, parts

    def _mask_loss(self, coef, protos, fg, tgt, t_boxes, gt_masks) -> torch.Tensor:
        """BCE of sigmoid(coef . protos) vs the soft GT mask, inside the GT box, per positive anchor.

        Only the prototype cells under each GT box are multiplied out: the positives of one GT share its
        box and target, so the work is a few small matmuls instead of a full-grid one per anchor.
        """
        total, count = coef.new_zeros(()), 0
        nm, proto_h, proto_w = protos.shape[1:]
        # unbind: each slice's backward then fills one image's gradient, not a whole-batch tensor.
        per_image = protos.contiguous().unbind(0)
        for i, protos_i in enumerate(per_image):
            sel = fg[i]
            if not sel.any():
                continue
            coef_i, gt_i, boxes_i = coef[i][sel], tgt[i][sel], t_boxes[i][sel]
            for g in gt_i.unique().tolist():
                rows = gt_i == g
                bx = (boxes_i[rows][0] / PROTO_STRIDE).tolist()
                # Cells whose centres (index + 0.5) lie inside the box, at least one.
                x0, y0 = max(0, math.ceil(bx[0] - 0.5)), max(0, math.ceil(bx[1] - 0.5))
                x1 = min(proto_w, max(x0 + 1, math.floor(bx[2] - 0.5) + 1))
                y1 = min(proto_h, max(y0 + 1, math.floor(bx[3] - 0.5) + 1))
                region = protos_i[:, y0:y1, x0:x1].reshape(nm, -1)
                logits = coef_i[rows] @ region  # (k, cells)
                target = (gt_masks[i, g, y0:y1, x0:x1].reshape(1, -1).float() / 255.0).expand_as(logits)
                area = max((bx[2] - bx[0]) * (bx[3] - bx[1]), 1.0)
                total = total + F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / area
                count += int(rows.sum())
        return total / max(count, 1)


# --------------------------------------------------------------------------- training


def train_step(opt: torch.optim.Optimizer, model: nn.Module, ema: Ema, loss: torch.Tensor,
               losses: list[float]) -> None:
    """One optimiser step with gradients clipped at norm 10, then the EMA update; records the loss."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    ema.update(model)
    losses.append(float(loss.detach()))


def log_progress(log: Callable[[str], None], every: int, name: str, it: int, iters: int, losses: list[float],
                 parts: dict[str, float], started: float) -> None:
    """The progress line every `every` iterations and at the last one (0: never)."""
    if every and (it % every == 0 or it == iters - 1):
        desc = " ".join(f"{k}={v:.3f}" for k, v in parts.items())
        log(f"{name} it {it}/{iters} loss={losses[-1]:.3f} {desc} {time.perf_counter() - started:.0f}s")


class Ema:
    """Exponential moving average of weights; smoother models from short runs."""

    def __init__(self, model: nn.Module, decay: float = 0.999, tau: float = 300.0) -> None:
        import copy

        self.model = copy.deepcopy(model).eval()
        self.decay, self.tau, self.updates = decay, tau, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


def make_optimizer(model: nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on conv/linear weights only (not BN or biases)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def lr_at(it: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 2 % of base."""
    if it < warmup:
        return base * (it + 1) / warmup
    t = (it - warmup) / max(1, total - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def _flip_det(batch: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Random horizontal/vertical flips in place (shapes are flip-invariant)."""
    size = DET_SIZE
    for i in range(len(batch["images"])):
        valid = batch["classes"][i] >= 0
        if rng.random() < 0.5:
            batch["images"][i] = batch["images"][i][:, ::-1]
            batch["masks"][i] = batch["masks"][i][:, :, ::-1]
            b = batch["boxes"][i]
            b[valid, 0], b[valid, 2] = size - b[valid, 2], size - b[valid, 0]
        if rng.random() < 0.5:
            batch["images"][i] = batch["images"][i][::-1]
            batch["masks"][i] = batch["masks"][i][:, ::-1]
            b = batch["boxes"][i]
            b[valid, 1], b[valid, 3] = size - b[valid, 3], size - b[valid, 1]


def _to_tensor_images(images: np.ndarray, normalise: bool) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    if normalise:
        x = (x - 0.5) / 0.5
    return x.contiguous(memory_format=torch.channels_last)


def _batch_indices(rng: np.random.Generator, n: int, batch_size: int, iters: int) -> Iterator[np.ndarray]:
    """Sorted sample indices per iteration: epochs of a fresh permutation, a new one when one runs out.

    The permutation is drawn lazily, between the caller's own uses of `rng`, exactly as an inline loop
    would, so training stays reproducible.
    """
    order, pos = rng.permutation(n), 0
    for _ in range(iters):
        if pos + batch_size > n:
            order, pos = rng.permutation(n), 0
        yield np.sort(order[pos:pos + batch_size])
        pos += batch_size


def train_detector(
    data: dict[str, np.ndarray],
    iters: int,
    batch_size: int = 16,
    lr: float = 2e-3,
    with_masks: bool = True,
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 100,
    init_state: dict[str, torch.Tensor] | None = None,
) -> tuple[ShapesDetector, list[float]]:
    """Train the multi-task detector on a prepared dataset; returns the EMA model and losses.

    `init_state` (a state_dict saved by `--save-state`) continues from earlier weights instead of from scratch.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ShapesDetector(nm=32 if with_masks else 0).to(memory_format=torch.channels_last)
    if init_state is not None:
        model.load_state_dict(init_state, strict=True)
    ema = Ema(model)
    opt = make_optimizer(model, lr, 5e-4)
    crit = DetLoss()
    n = len(data["images"])
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    for it, idx in enumerate(_batch_indices(rng, n, batch_size, iters)):
        nb = {k: v[idx].copy() for k, v in data.items()}
        _flip_det(nb, rng)
        batch = {
            "boxes": torch.from_numpy(nb["boxes"]),
            "classes": torch.from_numpy(nb["classes"]),
            "masks": torch.from_numpy(np.ascontiguousarray(nb["masks"])),
        }
        for g in opt.param_groups:
            g["lr"] = lr_at(it, iters, lr, min(300, iters // 5 + 1))
        outs, protos = model(_to_tensor_images(np.ascontiguousarray(nb["images"]), False))
        loss, parts = crit(outs, protos, batch)
        train_step(opt, model, ema, loss, losses)
        log_progress(log, log_every, "det", it, iters, losses, parts, t0)
    return ema.model, losses


def state_from_onnx(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict for `model` from an exported ONNX file of the same architecture (BatchNorm folded).

    The exporter names each Conv node after its module path and folds BatchNorm into the conv's weight and
    bias; each conv-BN pair is loaded as that conv plus an identity BatchNorm (mean 0, variance 1 - eps,
    scale 1) whose shift is the folded bias. Modules the file lacks (e.g. a new branch) are left out.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    modules = dict(model.named_modules())
    state: dict[str, torch.Tensor] = {}
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        parts = node.name.strip("/").split("/")[1:-1]  # drop the wrapper's "model" and the op name
        path_parts: list[str] = []
        for part in parts:  # "s8/s8.1/a" -> "s8.1.a": a child's name repeats its parent's
            if path_parts and part.startswith(path_parts[-1] + "."):
                path_parts[-1] = part
            else:
                path_parts.append(part)
        name = ".".join(path_parts)
        if name not in modules:  # a module called more than once (the shared keypoint branch): "mix_1" is "mix"
            name = re.sub(r"_\d+$", "", name)
            if f"{name}.weight" in state:
                continue
        conv = modules[name]
        weight = torch.from_numpy(inits[node.input[1]].copy())
        bias = torch.from_numpy(inits[node.input[2]].copy())
        assert weight.shape == conv.weight.shape, (name, weight.shape, conv.weight.shape)
        state[f"{name}.weight"] = weight
        if conv.bias is not None:
            state[f"{name}.bias"] = bias
            continue
        bn_name = name.rsplit(".", 1)[0] + ".bn"
        bn = modules[bn_name]
        assert isinstance(bn, nn.BatchNorm2d)
        state[f"{bn_name}.weight"] = torch.ones_like(bias)
        state[f"{bn_name}.bias"] = bias
        state[f"{bn_name}.running_mean"] = torch.zeros_like(bias)
        state[f"{bn_name}.running_var"] = torch.full_like(bias, 1.0 - bn.eps)
        state[f"{bn_name}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return state


def train_classifier(
    data: dict[str, np.ndarray],
    iters: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 100,
) -> tuple[ShapesClassifier, list[float]]:
    """Train the classifier with flips/rot90 augmentation; returns the EMA model and losses."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    model = ShapesClassifier().to(memory_format=torch.channels_last)
    ema = Ema(model, tau=100.0)
    opt = make_optimizer(model, lr, 5e-4)
    n = len(data["images"])
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    for it, idx in enumerate(_batch_indices(rng, n, batch_size, iters)):
        imgs = data["images"][idx].copy()
        for i in range(len(imgs)):
            k = int(rng.integers(4))
            imgs[i] = np.rot90(imgs[i], k) if rng.random() < 0.5 else imgs[i][:, ::-1]
        x = _to_tensor_images(np.ascontiguousarray(imgs), True)
        y = torch.from_numpy(data["labels"][idx])
        for g in opt.param_groups:
            g["lr"] = lr_at(it, iters, lr, min(100, iters // 5 + 1))
        loss = F.cross_entropy(model(x), y, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)
        losses.append(float(loss.detach()))
        if log_every and (it % log_every == 0 or it == iters - 1):
            log(f"cls it {it}/{iters} loss={losses[-1]:.3f} {time.perf_counter() - t0:.0f}s")
    return ema.model, losses


# --------------------------------------------------------------------------- export


def _onnx_export(module: nn.Module, example: torch.Tensor, path: Path, outputs: list[str]) -> None:
    """Export with a dynamic batch axis at opset 17, then run the ONNX checker."""
    import onnx

    module = module.eval().to(memory_format=torch.contiguous_format)
    dyn = {"images": {0: "batch"}} | {name: {0: "batch"} for name in outputs}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but still the one that gives plain opset-17 graphs.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, (example,), str(path), input_names=["images"], output_names=outputs,
            dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    with torch.no_grad():
        traced_out = module(example)
    model = onnx.load(str(path))
    # The tracer names transposed dims symbolically; pin every non-batch dim.
    shapes = {name: list(out.shape) for name, out in zip(outputs, _as_tuple(traced_out), strict=True)}
    for out in model.graph.output:
        for i, dim in enumerate(out.type.tensor_type.shape.dim):
            if i > 0:
                dim.Clear()
                dim.dim_value = int(shapes[out.name][i])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def export_detector(model: ShapesDetector, path: Path, with_masks: bool) -> None:
    """Write detection (output0) or segmentation (output0 + output1 protos) ONNX."""
    if with_masks:
        net = model
    else:  # the same trained weights, minus the mask branch
        net = ShapesDetector(nm=0)
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("proto.") and ".coef." not in k}
        net.load_state_dict(state, strict=True)
    wrapper = ExportDetect(net.float().eval(), with_masks)
    outputs = ["output0", "output1"] if with_masks else ["output0"]
    _onnx_export(wrapper, torch.zeros(1, 3, DET_SIZE, DET_SIZE), path, outputs)


def export_pose(model: ShapesDetector, path: Path, size: int = DET_SIZE) -> None:
    """Write the keypoint ONNX for a square `size` input: output0 (B, 4 + nc + 3K, N), YOLOv8-pose layout."""
    _onnx_export(ExportDetect(model.float().eval(), False, size), torch.zeros(1, 3, size, size), path, ["output0"])


def keypoints_metadata() -> list[dict[str, object]]:
    """Roboflow's keypoints_metadata.json: per class, its keypoint names by index and skeleton edges."""
    return [
        {
            "object_class_id": cid,
            "keypoints": {str(i): name for i, name in enumerate(KEYPOINT_NAMES[cid])},
            "edges": [{"from": a, "to": b} for a, b in KEYPOINT_EDGES[cid]],
        }
        for cid in range(len(CLASS_NAMES))
    ]


def export_classifier(model: ShapesClassifier, path: Path) -> None:
    """Write the classifier ONNX (raw logits, no softmax)."""
    _onnx_export(model.float().eval(), torch.zeros(1, 3, CLS_SIZE, CLS_SIZE), path, ["output0"])


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model_dir(
    folder: Path, model_id: str, task: str, variant: str, resize: dict, extra: dict[str, object] | None = None
) -> None:
    """Write the metadata and manifest.json next to weights.onnx: Roboflow's classic environment.json +
    model_type.json for the detector, segmenter and keypoint model; its package format (inference_config.json,
    which can say the (x/255 - 0.5) / 0.5 normalisation the classifier was trained with) for the classifier.

    `extra` maps further JSON file names (keypoints_metadata.json) to their content; the manifest lists them too.
    """
    if task == "classification":
        written = _write_package_metadata(folder, model_id, variant, resize)
    else:
        env = {
            "CLASS_MAP": {str(i): n for i, n in enumerate(CLASS_NAMES)},
            "PREPROCESSING": {"auto-orient": {"enabled": True}, "resize": {"enabled": True, **resize}},
            "MULTICLASS": False,
            "COLORS": dict(COLORS),
        }
        mtype = {"project_task_type": task, "model_type": "yolov8", "model_variant": variant, "model_id": model_id}
        (folder / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
        (folder / "model_type.json").write_text(json.dumps(mtype, indent=2) + "\n")
        written = ["environment.json", "model_type.json"]
    for name, content in (extra or {}).items():
        (folder / name).write_text(json.dumps(content, indent=2) + "\n")
        written.append(name)
    files = {name: sha256_file(folder / name) for name in sorted(["weights.onnx", *written])}
    (folder / "manifest.json").write_text(json.dumps({"model_id": model_id, "files": files}, indent=2) + "\n")


def _write_package_metadata(folder: Path, model_id: str, variant: str, resize: dict) -> list[str]:
    config = {
        "image_pre_processing": {"auto-orient": {"enabled": True}},
        "network_input": {"training_input_size": {"height": resize["height"], "width": resize["width"]},
                          "dynamic_spatial_size_supported": False, "color_mode": "rgb", "resize_mode": "stretch",
                          "input_channels": 3, "scaling_factor": 255,
                          "normalization": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]},
        "forward_pass": {"max_dynamic_batch_size": 16},
        "post_processing": {"type": "softmax", "fused": False},
    }
    model = {"model_architecture": "yolov8", "task_type": "classification", "model_variant": variant,
             "model_id": model_id}
    (folder / "inference_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "model_config.json").write_text(json.dumps(model, indent=2) + "\n")
    (folder / "class_names.txt").write_text("".join(f"{name}\n" for name in CLASS_NAMES))
    return ["class_names.txt", "inference_config.json", "model_config.json"]


def _snapshot(save_state: Path | None, suffix: str):
    """With --save-state, keep the EMA weights of a running training next to it (FILE.<suffix>), so an
    interrupted run is not lost: the keypoint branch's for --pose ("kpt-partial"), the whole model's for
    --pose-full ("partial")."""
    if save_state is None:
        return None

    def save(module: nn.Module, it: int) -> None:
        path = save_state.with_name(f"{save_state.name}.{suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"iteration": it, "state": module.state_dict()}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    return save


def _write_pose_model(model: ShapesDetector, out: Path, save_state: Path | None,
                      log: Callable[[str], None], size: int = DET_SIZE) -> None:
    """Keep the trained weights (--save-state) and write shapes-pose/1 for a square `size` input: the ONNX
    file and its metadata (environment.json's resize names the size)."""
    if save_state:
        save_state.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), save_state)
    folder = out / "shapes-pose" / "1"
    export_pose(model, folder / "weights.onnx", size)
    resize = {"width": size, "height": size, "format": "Fit (grey edges) in"}
    write_model_dir(folder, "shapes-pose/1", "keypoint-detection", "shapes-pose-n", resize,
                    {"keypoints_metadata.json": keypoints_metadata()})
    log(f"wrote {folder} ({(folder / 'weights.onnx').stat().st_size} bytes)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "edge_daemon" / "default_models")
    ap.add_argument("--det-images", type=int, default=12000)
    ap.add_argument("--det-iters", type=int, default=4800)
    ap.add_argument("--cls-images", type=int, default=8000)
    ap.add_argument("--cls-iters", type=int, default=1500)
    ap.add_argument("--cls-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-det", action="store_true")
    ap.add_argument("--skip-cls", action="store_true")
    ap.add_argument("--save-state", type=Path, help="also write the trained detector's EMA state_dict here "
                    "(torch.save), so a later run can continue from it with --init-state")
    ap.add_argument("--init-state", type=Path, help="start the detector from a --save-state file (loaded with "
                    "weights_only=True) instead of from scratch")
    ap.add_argument("--pose", action="store_true", help="train only the keypoint model shapes-pose/1 on top of "
                    "the shapes/1 detector (the detector and classifier are left alone)")
    ap.add_argument("--pose-images", type=int, default=6000)
    ap.add_argument("--pose-iters", type=int, default=5000)
    ap.add_argument("--pose-lr", type=float, default=2e-3)
    ap.add_argument("--pose-hidden", type=int, default=64, help="width of the keypoint branch")
    ap.add_argument("--pose-depth", type=int, default=2, help="3x3 convs in the keypoint branch")
    ap.add_argument("--pose-fine", action="store_true", help="also feed the backbone's stride-4 stem feature to the "
                    "keypoint branch at the stride-8 level (finer detail for small shapes)")
    ap.add_argument("--pose-cache", type=Path, help="folder to keep the computed neck windows in (.npy), so a second "
                    "run with the same detector, images and branch depth reads them back instead")
    ap.add_argument("--pose-init", default=str(REPO / "edge_daemon" / "default_models" / "shapes" / "1" / "weights.onnx"),
                    help="the shapes/1 detector ONNX whose backbone, neck and box/class heads the pose model keeps")
    ap.add_argument("--pose-full", action="store_true", help="instead of --pose's branch-only training, fine-tune the "
                    "WHOLE keypoint model (backbone, neck, box/class heads and keypoint branch, BatchNorm statistics "
                    "frozen) from the keypoint model ONNX --pose-full-init, with the detector's class and box losses "
                    "kept next to the keypoint loss; --pose-hidden and --pose-depth must match that file's branch, "
                    "--pose-images scenes are used, with flips; the detector and classifier are left alone")
    ap.add_argument("--pose-full-init", type=Path,
                    default=REPO / "edge_daemon" / "default_models" / "shapes-pose" / "1" / "weights.onnx",
                    help="the keypoint model ONNX --pose-full starts from (default: the bundled shapes-pose/1)")
    ap.add_argument("--pose-full-iters", type=int, default=5000, help="--pose-full iterations")
    ap.add_argument("--pose-full-batch", type=int, default=16, help="--pose-full images per iteration")
    ap.add_argument("--pose-full-lr", type=float, default=2e-4, help="--pose-full peak learning rate (AdamW, cosine)")
    ap.add_argument("--pose-kpt-weight", type=float, default=10.0,
                    help="--pose-full: weight of the keypoint loss against the class (1) and box (5) losses")
    ap.add_argument("--pose-small-px", type=float, default=0.0,
                    help="--pose-full: weigh each anchor's keypoint position error by clip(PX / GT box size, 1, 3) "
                    "(network px), so shapes under PX count up to 3 times more; 0 (default) weighs all alike")
    ap.add_argument("--pose-size", type=int, default=DET_SIZE,
                    help="--pose-full: square input size of the keypoint model (data, anchors, loss, export and "
                    "environment.json; a multiple of 32); the detector and segmenter stay at %(default)s")
    ap.add_argument("--pose-seed0", type=int, default=POSE_TRAIN_SEED0,
                    help="first scene seed of --pose / --pose-full training (--pose-images scenes from there; keep "
                    "clear of the held-out 1,000,000+, the tests' 2,000,000+ and the 20,000-40,299 seeds the e2e tests use)")
    args = ap.parse_args(argv)
    setup_torch(args.threads)
    timings: dict[str, float] = {}

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.pose_size % max(STRIDES) or (args.pose and not args.pose_full and args.pose_size != DET_SIZE):
        ap.error(f"--pose-size must be a multiple of {max(STRIDES)}, and --pose (branch only, on {DET_SIZE} px "
                 "neck windows) supports only the default")
    if args.pose_full:
        from tools.pose_training import train_pose_full
        from tools.shapes_data import build_pose_dataset

        args.skip_det = args.skip_cls = True
        model = ShapesDetector(nm=0, nk=MAX_KEYPOINTS, kpt_hidden=args.pose_hidden, kpt_depth=args.pose_depth)
        model.load_state_dict(state_from_onnx(args.pose_full_init, model), strict=True)
        t = time.perf_counter()
        seeds = list(range(args.pose_seed0, args.pose_seed0 + args.pose_images))
        pdata = build_pose_dataset(seeds, args.threads, args.pose_size)
        timings["pose_data_s"] = time.perf_counter() - t
        log(f"pose data: {len(pdata['images'])} images in {timings['pose_data_s']:.0f}s")
        t = time.perf_counter()
        model, _ = train_pose_full(model, pdata, args.pose_full_iters, batch_size=args.pose_full_batch,
                                   lr=args.pose_full_lr, w_kpt=args.pose_kpt_weight, log=log,
                                   snapshot=_snapshot(args.save_state, "partial"), small_px=args.pose_small_px)
        timings["pose_train_s"] = time.perf_counter() - t
        del pdata
        _write_pose_model(model, args.out, args.save_state, log, args.pose_size)
    elif args.pose:
        from tools.pose_training import cached_windows, train_keypoint_head

        args.skip_det = args.skip_cls = True
        model = ShapesDetector(nm=0, nk=MAX_KEYPOINTS, kpt_hidden=args.pose_hidden, kpt_depth=args.pose_depth,
                               kpt_fine=args.pose_fine)
        model.load_state_dict(state_from_onnx(Path(args.pose_init), model), strict=False)
        t = time.perf_counter()
        seeds = list(range(args.pose_seed0, args.pose_seed0 + args.pose_images))
        assert model.kpt is not None
        stem_window = model.kpt.fine_window if args.pose_fine else 0
        windows = cached_windows(args.pose_cache, Path(args.pose_init), seeds, args.threads, model.kpt.window,
                                 stem_window, log=log)
        timings["pose_data_s"] = time.perf_counter() - t
        log(f"pose data: {len(windows['windows'])} anchor windows from {len(seeds)} images in {timings['pose_data_s']:.0f}s")
        t = time.perf_counter()
        model.kpt, _ = train_keypoint_head(windows, args.pose_iters, lr=args.pose_lr, hidden=args.pose_hidden,
                                           depth=args.pose_depth, fine=model.backbone.stem_channels if args.pose_fine
                                           else 0, log=log, snapshot=_snapshot(args.save_state, "kpt-partial"))
        timings["pose_train_s"] = time.perf_counter() - t
        del windows
        _write_pose_model(model, args.out, args.save_state, log)
    if not args.skip_det:
        t = time.perf_counter()
        data = build_det_dataset(list(range(DET_TRAIN_SEED0, DET_TRAIN_SEED0 + args.det_images)), args.threads)
        timings["det_data_s"] = time.perf_counter() - t
        log(f"det data: {len(data['images'])} images in {timings['det_data_s']:.0f}s")
        t = time.perf_counter()
        init = torch.load(args.init_state, weights_only=True) if args.init_state else None
        model, _ = train_detector(data, args.det_iters, log=log, init_state=init)
        timings["det_train_s"] = time.perf_counter() - t
        del data
        if args.save_state:
            args.save_state.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.save_state)
        for model_id, task, masks in (("shapes/1", "object-detection", False), ("shapes-seg/1", "instance-segmentation", True)):
            folder = args.out / model_id
            export_detector(model, folder / "weights.onnx", masks)
            resize = {"width": DET_SIZE, "height": DET_SIZE, "format": "Fit (grey edges) in"}
            write_model_dir(folder, model_id, task, "shapes-seg-n" if masks else "shapes-n", resize)
            log(f"wrote {folder} ({(folder / 'weights.onnx').stat().st_size} bytes)")
    if not args.skip_cls:
        t = time.perf_counter()
        cdata = build_cls_dataset(list(range(CLS_TRAIN_SEED0, CLS_TRAIN_SEED0 + args.cls_images)), args.threads)
        timings["cls_data_s"] = time.perf_counter() - t
        log(f"cls data: {len(cdata['images'])} images in {timings['cls_data_s']:.0f}s")
        t = time.perf_counter()
        cmodel, _ = train_classifier(cdata, args.cls_iters, lr=args.cls_lr, log=log)
        timings["cls_train_s"] = time.perf_counter() - t
        folder = args.out / "shapes-cls" / "1"
        export_classifier(cmodel, folder / "weights.onnx")
        resize = {"width": CLS_SIZE, "height": CLS_SIZE, "format": "Stretch to"}
        write_model_dir(folder, "shapes-cls/1", "classification", "shapes-cls-n", resize)
        log(f"wrote {folder} ({(folder / 'weights.onnx').stat().st_size} bytes)")
    log("timings: " + json.dumps({k: round(v, 1) for k, v in timings.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
