"""Training of `shapes-pose/1`: its keypoint branch on top of the frozen `shapes/1` detector (`--pose`),
then the whole network fine-tuned (`--pose-full`, train_pose_full at the end of this file).

The pose model is the `shapes/1` detector (backbone, neck, class and box heads, read back from its ONNX
file) plus one keypoint branch. In the `--pose` stage only that branch is trained: on this 2-core CPU a full
network step costs
about a second, while the branch needs only the neck feature windows around the anchors that the
detector's own task-aligned assignment makes positive. Those windows are computed once with ONNX Runtime
(the detector's ONNX graph with its neck outputs exposed), so each training step is a few small matmuls.
Boxes and classes after that stage are thus exactly those of `shapes/1`; the `--pose-full` stage then
trains every layer with the detector losses kept, so they may move a little.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from edge_daemon.scenes import MAX_KEYPOINTS
from tools.shapes_data import pose_sample
from tools.shapes_layout import DET_SIZE, STRIDES
from tools.shapes_nets import KeypointHead, decode_keypoints, make_anchors
from tools.train_models import Ema, _batch_indices, assign_targets, log_progress, lr_at, make_optimizer, train_step

NECK_OUTPUTS = ("/model/neck/td3/act/Mul_output_0", "/model/neck/bu4/act/Mul_output_0",
                "/model/neck/bu5/act/Mul_output_0")  # the neck's stride 8, 16 and 32 features in the ONNX graph
STEM_OUTPUT = "/model/backbone/stem/stem.1/act/Mul_output_0"  # the backbone's stride-4 feature (32 channels)
STEM_STRIDE = 4


def _feature_session(onnx_path: Path, threads: int):
    """An ONNX Runtime session of the detector that also returns its three neck feature maps."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_path))
    produced = {o for node in proto.graph.node for o in node.output}
    for name in (*NECK_OUTPUTS, STEM_OUTPUT):
        assert name in produced, f"{onnx_path} has no tensor {name}"
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _level_of(anchor_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Level, row, column and level size of flat anchor indices (level-major, row-major)."""
    sizes = np.array([DET_SIZE // s for s in STRIDES])
    starts = np.concatenate([[0], np.cumsum(sizes**2)[:-1]])
    level = np.searchsorted(starts, anchor_idx, side="right") - 1
    local = anchor_idx - starts[level]
    size = sizes[level]
    return level, local // size, local % size, size


def stem_window_start(stride: int, row: int, col: int, w: int) -> tuple[int, int]:
    """First stem row and column of a w x w stem window centred on the anchor of cell (row, col) at `stride`.

    The anchor centre (col + 0.5) * stride lies on a stem cell border for strides >= 8, so an even w centres.
    """
    k = stride // STEM_STRIDE
    return k * row + k // 2 - w // 2, k * col + k // 2 - w // 2


def build_windows(
    onnx_path: Path,
    seeds: list[int],
    workers: int = 2,
    window: int = 5,
    stem_window: int = 0,
    batch: int = 32,
    chunk: int = 512,
    log: Callable[[str], None] = print,
) -> dict[str, np.ndarray]:
    """Neck windows and keypoint targets at every positive anchor of the given training scenes.

    Positives come from the same task-aligned assignment as detector training, applied to the detector's
    own predictions. Returns windows (P, c, window, window) float16, cells (P, 3) (row, column, level map
    size), anchors (P, 2), strides
    (P, 1), keypoints (P, K, 3) (x, y network px, flag 0 none / 1 hidden / 2 visible) and sizes (P,)
    (max side of the GT box, network px). With `stem_window` > 0 also stem (P, 32, w, w) float16: the
    zero-padded stride-4 stem feature in a w x w window centred on the anchor (see stem_window_start).
    """
    anchors, strides = make_anchors(DET_SIZE)
    half = window // 2
    keys = ("windows", "cells", "anchors", "strides", "keypoints", "sizes") + (("stem",) if stem_window else ())
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    t0 = time.perf_counter()
    with get_context("fork").Pool(workers) as pool:
        session = _feature_session(onnx_path, workers)
        for c0 in range(0, len(seeds), chunk):
            samples = pool.map(pose_sample, seeds[c0:c0 + chunk], chunksize=16)
            for b0 in range(0, len(samples), batch):
                part = samples[b0:b0 + batch]
                x = np.stack([s[0] for s in part]).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
                pred, *feats, stem = session.run(None, {"images": np.ascontiguousarray(x)})
                p = torch.from_numpy(pred).transpose(1, 2)  # (B, N, 8)
                xyxy = torch.cat([p[..., :2] - p[..., 2:4] / 2, p[..., :2] + p[..., 2:4] / 2], -1)
                gt_boxes = torch.from_numpy(np.stack([s[1] for s in part]))
                gt_cls = torch.from_numpy(np.stack([s[2] for s in part]))
                fg, tgt, t_boxes, _ = assign_targets(p[..., 4:], xyxy, anchors, gt_boxes, gt_cls)
                padded = [np.pad(f, ((0, 0), (0, 0), (half, half), (half, half))) for f in feats]
                spad = stem_window
                stem_padded = np.pad(stem, ((0, 0), (0, 0), (spad, spad), (spad, spad))) if stem_window else None
                for i, s in enumerate(part):
                    idx = np.flatnonzero(fg[i].numpy())
                    level, row, col, size = _level_of(idx)
                    out["windows"].append(np.stack([
                        padded[lv][i, :, r:r + window, c:c + window] for lv, r, c in zip(level, row, col, strict=True)
                    ]).astype(np.float16) if len(idx) else np.zeros((0, feats[0].shape[1], window, window), np.float16))
                    if stem_padded is not None:
                        st = [stem_window_start(int(STRIDES[lv]), int(r), int(c), stem_window) for lv, r, c
                              in zip(level, row, col, strict=True)]
                        out["stem"].append(np.stack([
                            stem_padded[i, :, r0 + spad:r0 + spad + stem_window, c0 + spad:c0 + spad + stem_window]
                            for r0, c0 in st
                        ]).astype(np.float16) if len(idx) else np.zeros((0, stem.shape[1], stem_window, stem_window),
                                                                          np.float16))
                    out["cells"].append(np.stack([row, col, size], 1).astype(np.float32))
                    out["anchors"].append(anchors[idx].numpy())
                    out["strides"].append(strides[idx].numpy())
                    out["keypoints"].append(s[3][tgt[i, idx].numpy()])
                    box = t_boxes[i, idx].numpy()
                    out["sizes"].append(np.maximum(box[:, 2:] - box[:, :2], 0).max(1).astype(np.float32))
            done = min(c0 + chunk, len(seeds))
            log(f"pose windows: {done}/{len(seeds)} images, {sum(len(w) for w in out['windows'])} anchors "
                f"{time.perf_counter() - t0:.0f}s")
    return {k: np.concatenate(v) for k, v in out.items()}


def keypoint_loss(head: KeypointHead, batch: dict[str, torch.Tensor], w_vis: float = 0.5) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 position error in units of the GT box's longer side (the PCK scale) plus visibility BCE.

    Every keypoint the class has counts for position, hidden ones too (they follow from the visible
    ones); visibility is trained on all K slots, padded slots towards 0.
    """
    stem = batch.get("stem") if head.fine is not None else None
    if stem is not None:  # the stem feature joins the stride-8 level only
        stem = stem * (batch["strides"] == STRIDES[0]).to(stem.dtype)[:, :, None, None]
    raw = head.forward_windows(batch["windows"], batch["cells"], stem)
    raw = raw.reshape(raw.shape[0], MAX_KEYPOINTS, 3)
    xy = decode_keypoints(raw, batch["anchors"], batch["strides"])
    tk = batch["keypoints"]
    exists = (tk[..., 2] > 0).float()
    err = (xy - tk[..., :2]).abs().sum(-1) / batch["sizes"].clamp(min=1.0)[:, None]
    l_pos = (err * exists).sum() / exists.sum().clamp(min=1.0)
    l_vis = F.binary_cross_entropy_with_logits(raw[..., 2], (tk[..., 2] > 1.5).float())
    within = ((xy - tk[..., :2]).norm(dim=-1) <= 0.05 * batch["sizes"][:, None]).float()
    pck = float((within * (tk[..., 2] > 1.5)).sum() / (tk[..., 2] > 1.5).sum().clamp(min=1.0))
    return l_pos + w_vis * l_vis, {"pos": float(l_pos.detach()), "vis": float(l_vis.detach()), "pck": pck}


def train_keypoint_head(
    data: dict[str, np.ndarray],
    iters: int,
    batch_size: int = 256,
    lr: float = 2e-3,
    channels: int = 48,
    hidden: int = 64,
    depth: int = 2,
    fine: int = 0,
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 200,
    snapshot: Callable[[KeypointHead, int], None] | None = None,
    snapshot_every: int = 5000,
) -> tuple[KeypointHead, list[float]]:
    """Train the shared keypoint branch on precomputed windows; returns its EMA weights and the losses.

    `fine` > 0 (the stem's channel count) adds the stem path (KeypointHead); `data` then needs "stem" windows.
    `snapshot(ema_head, iteration)` is called every `snapshot_every` iterations, so a long run that is cut
    short still leaves weights behind.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = KeypointHead(channels, MAX_KEYPOINTS, hidden, depth, fine)
    if not fine:
        data = {k: v for k, v in data.items() if k != "stem"}
    ema = Ema(head, tau=200.0)
    opt = make_optimizer(head, lr, 5e-4)
    n = len(data["windows"])
    losses: list[float] = []
    t0 = time.perf_counter()
    head.train()
    for it, idx in enumerate(_batch_indices(rng, n, batch_size, iters)):
        batch = {k: torch.from_numpy(v[idx]).float() for k, v in data.items()}
        for g in opt.param_groups:
            g["lr"] = lr_at(it, iters, lr, min(300, iters // 10 + 1))
        loss, parts = keypoint_loss(head, batch)
        train_step(opt, head, ema, loss, losses)
        log_progress(log, log_every, "kpt", it, iters, losses, parts, t0)
        if snapshot is not None and it and it % snapshot_every == 0:
            snapshot(ema.model, it)
    return ema.model, losses


def cached_windows(cache: Path | None, onnx_path: Path, seeds: list[int], workers: int, window: int,
                   stem_window: int, log: Callable[[str], None] = print) -> dict[str, np.ndarray]:
    """build_windows, kept as .npy files in `cache` (a folder) so a second training run skips the ONNX pass.

    The folder's meta.json names the detector (sha256), seeds and window sizes; a cache made for other ones
    is recomputed (one with stem windows also serves a run without them). Stem windows are only cut when
    `stem_window` > 0.
    """
    import hashlib
    import json

    meta = {"detector_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(), "seeds": [seeds[0], len(seeds)],
            "window": window, "stem_window": stem_window}
    if cache is not None and (cache / "meta.json").is_file():
        have = json.loads((cache / "meta.json").read_text())
        if have == meta or (stem_window == 0 and have == meta | {"stem_window": have.get("stem_window")}):
            data = {f.stem: np.load(f) for f in sorted(cache.glob("*.npy")) if stem_window or f.stem != "stem"}
            log(f"pose windows: {len(data['windows'])} anchors read from {cache}")
            return data
    data = build_windows(onnx_path, seeds, workers, window, stem_window, log=log)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "meta.json").unlink(missing_ok=True)
        for k, v in data.items():
            np.save(cache / f"{k}.npy", v)
        (cache / "meta.json").write_text(json.dumps(meta) + "\n")  # last: a cut-short write is never read back
    return data


# --------------------------------------------------------------------------- whole-network fine-tuning


def flip_pose_batch(batch: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Random horizontal/vertical flips of images, boxes and keypoints in place (images are square; their
    side is the network input size).

    A flipped polygon's vertices are put back into the canonical order (`order_keypoints`: topmost first,
    then clockwise on screen), as the scene generator orders them; visibility flags travel with their points.
    """
    from edge_daemon.scenes import order_keypoints

    size = batch["images"].shape[1]
    for i in range(len(batch["images"])):
        valid = batch["classes"][i] >= 0
        flips = (rng.random() < 0.5, rng.random() < 0.5)
        if not any(flips):
            continue
        b, kp = batch["boxes"][i], batch["keypoints"][i]
        if flips[0]:
            batch["images"][i] = batch["images"][i][:, ::-1]
            b[valid, 0], b[valid, 2] = size - b[valid, 2], size - b[valid, 0]
            kp[..., 0] = np.where(kp[..., 2] > 0, size - kp[..., 0], kp[..., 0])
        if flips[1]:
            batch["images"][i] = batch["images"][i][::-1]
            b[valid, 1], b[valid, 3] = size - b[valid, 3], size - b[valid, 1]
            kp[..., 1] = np.where(kp[..., 2] > 0, size - kp[..., 1], kp[..., 1])
        for j in np.flatnonzero(valid):
            k = int((kp[j, :, 2] > 0).sum())
            if k > 1:
                kp[j, :k] = kp[j, :k][order_keypoints(kp[j, :k, :2].astype(np.float64))]


class PoseLoss:
    """The detector's losses (soft-target class BCE, CIoU boxes; see train_models.DetLoss) plus keypoints.

    The keypoint term is keypoint_loss's: L1 position error in units of the GT box's longer side for every
    keypoint the class has, plus visibility BCE, over the anchors the task-aligned assignment makes positive.
    With `small_px` > 0 each anchor's position error is also weighted by clip(small_px / GT size, 1, 3)
    (GT size: the box's longer side in network px), still divided by the plain keypoint count, so shapes
    under `small_px` weigh up to 3 times more and larger ones as before. `size` is the square network input
    the anchors are laid out for.
    """

    def __init__(self, w_cls: float = 1.0, w_box: float = 5.0, w_kpt: float = 10.0, w_vis: float = 0.5,
                 small_px: float = 0.0, size: int = DET_SIZE) -> None:
        anchors, strides = make_anchors(size)
        self.anchors, self.strides = anchors, strides
        self.w_cls, self.w_box, self.w_kpt, self.w_vis = w_cls, w_box, w_kpt, w_vis
        self.small_px = small_px

    def __call__(self, outs: list, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        from tools.shapes_nets import decode_ltrb, flatten_keypoints, flatten_levels
        from tools.train_models import box_iou_aligned

        cls, box, _ = flatten_levels(outs)
        kraw = flatten_keypoints(outs)  # (B, N, K, 3)
        pboxes = decode_ltrb(box, self.anchors, self.strides)
        gt_boxes, gt_cls = batch["boxes"], batch["classes"]
        fg, tgt, t_boxes, t_scores = assign_targets(cls.detach().sigmoid(), pboxes.detach(), self.anchors, gt_boxes,
                                                    gt_cls)
        tss = t_scores.sum().clamp(min=1.0)
        l_cls = F.binary_cross_entropy_with_logits(cls, t_scores, reduction="sum") / tss
        weight = t_scores.sum(-1)[fg]
        l_box = ((1.0 - box_iou_aligned(pboxes[fg], t_boxes[fg], ciou=True)) * weight).sum() / tss
        b_idx, a_idx = fg.nonzero(as_tuple=True)
        raw = kraw[b_idx, a_idx]  # (P, K, 3)
        anchors = self.anchors[a_idx]
        strides = self.strides[a_idx]
        xy = decode_keypoints(raw, anchors, strides)
        tk = batch["keypoints"][b_idx, tgt[b_idx, a_idx]]  # (P, K, 3)
        tb = t_boxes[b_idx, a_idx]
        sizes = (tb[:, 2:] - tb[:, :2]).clamp(min=0).amax(-1)
        exists = (tk[..., 2] > 0).float()
        err = (xy - tk[..., :2]).abs().sum(-1) / sizes.clamp(min=1.0)[:, None]
        if self.small_px > 0:
            err = err * (self.small_px / sizes.clamp(min=1.0)).clamp(1.0, 3.0)[:, None]
        l_pos = (err * exists).sum() / exists.sum().clamp(min=1.0)
        l_vis = F.binary_cross_entropy_with_logits(raw[..., 2], (tk[..., 2] > 1.5).float()) if len(raw) else cls.sum() * 0
        loss = self.w_cls * l_cls + self.w_box * l_box + self.w_kpt * (l_pos + self.w_vis * l_vis)
        with torch.no_grad():
            vis = tk[..., 2] > 1.5
            within = (xy - tk[..., :2]).norm(dim=-1) <= 0.05 * sizes[:, None]
            pck = float((within & vis).sum() / vis.sum().clamp(min=1))
        parts = {"cls": float(l_cls.detach()), "box": float(l_box.detach()), "pos": float(l_pos.detach()),
                 "vis": float(l_vis.detach()), "pck": pck}
        return loss, parts


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """BatchNorm layers keep their running statistics (eval mode) while their scale and shift still train.

    A model read back with state_from_onnx has identity BatchNorm statistics (the real ones are folded
    into the convs), so batch statistics must not replace them.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def train_pose_full(
    model: torch.nn.Module,
    data: dict[str, np.ndarray],
    iters: int,
    batch_size: int = 16,
    lr: float = 4e-4,
    w_kpt: float = 10.0,
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 50,
    snapshot: Callable[[torch.nn.Module, int], None] | None = None,
    snapshot_every: int = 250,
    small_px: float = 0.0,
) -> tuple[torch.nn.Module, list[float]]:
    """Fine-tune the whole keypoint model (backbone, neck, box/class heads and keypoint branch) from its weights.

    `data` is build_pose_dataset's (images, boxes, classes, keypoints). Detector losses stay in, so boxes keep
    their quality, next to the keypoint loss (weight `w_kpt`); BatchNorm statistics stay frozen
    (freeze_batchnorm); AdamW, short warmup then cosine, EMA of the weights (returned). `snapshot(ema_model,
    iteration)` is called every `snapshot_every` iterations. `small_px` > 0 weighs small shapes' keypoint
    positions more (PoseLoss). The input size (anchors, flips) is the images' side, so data built at another
    --pose-size trains at that size.
    """
    from tools.train_models import Ema, _to_tensor_images

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = model.to(memory_format=torch.channels_last)
    ema = Ema(model, tau=100.0)
    opt = make_optimizer(model, lr, 5e-4)
    crit = PoseLoss(w_kpt=w_kpt, small_px=small_px, size=int(data["images"].shape[1]))
    n = len(data["images"])
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    freeze_batchnorm(model)
    for it, idx in enumerate(_batch_indices(rng, n, batch_size, iters)):
        nb = {k: v[idx].copy() for k, v in data.items()}
        flip_pose_batch(nb, rng)
        batch = {"boxes": torch.from_numpy(nb["boxes"]), "classes": torch.from_numpy(nb["classes"]),
                 "keypoints": torch.from_numpy(nb["keypoints"])}
        for g in opt.param_groups:
            g["lr"] = lr_at(it, iters, lr, min(100, iters // 10 + 1))
        outs, _ = model(_to_tensor_images(np.ascontiguousarray(nb["images"]), False))
        loss, parts = crit(outs, batch)
        train_step(opt, model, ema, loss, losses)
        log_progress(log, log_every, "pose-full", it, iters, losses, parts, t0)
        if snapshot is not None and it and it % snapshot_every == 0:
            snapshot(ema.model, it)
    return ema.model, losses
