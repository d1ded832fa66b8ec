"""Training of the keypoint branch of `shapes-pose/1` on top of the frozen `shapes/1` detector.

The pose model is the `shapes/1` detector (backbone, neck, class and box heads, read back from its ONNX
file) plus one keypoint branch. Only that branch is trained: on this 2-core CPU a full network step costs
about a second, while the branch needs only the neck feature windows around the anchors that the
detector's own task-aligned assignment makes positive. Those windows are computed once with ONNX Runtime
(the detector's ONNX graph with its neck outputs exposed), so each training step is a few small matmuls.
Boxes and classes of the pose model are thus exactly those of `shapes/1`.
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
from tools.train_models import Ema, _batch_indices, assign_targets, lr_at, make_optimizer

NECK_OUTPUTS = ("/model/neck/td3/act/Mul_output_0", "/model/neck/bu4/act/Mul_output_0",
                "/model/neck/bu5/act/Mul_output_0")  # the neck's stride 8, 16 and 32 features in the ONNX graph


def _feature_session(onnx_path: Path, threads: int):
    """An ONNX Runtime session of the detector that also returns its three neck feature maps."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_path))
    produced = {o for node in proto.graph.node for o in node.output}
    for name in NECK_OUTPUTS:
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


def build_windows(
    onnx_path: Path,
    seeds: list[int],
    workers: int = 2,
    window: int = 5,
    batch: int = 32,
    chunk: int = 512,
    log: Callable[[str], None] = print,
) -> dict[str, np.ndarray]:
    """Neck windows and keypoint targets at every positive anchor of the given training scenes.

    Positives come from the same task-aligned assignment as detector training, applied to the detector's
    own predictions. Returns windows (P, c, window, window) float16, cells (P, 3) (row, column, level map
    size), anchors (P, 2), strides
    (P, 1), keypoints (P, K, 3) (x, y network px, flag 0 none / 1 hidden / 2 visible) and sizes (P,)
    (max side of the GT box, network px).
    """
    anchors, strides = make_anchors(DET_SIZE)
    half = window // 2
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("windows", "cells", "anchors", "strides", "keypoints", "sizes")}
    t0 = time.perf_counter()
    with get_context("fork").Pool(workers) as pool:
        session = _feature_session(onnx_path, workers)
        for c0 in range(0, len(seeds), chunk):
            samples = pool.map(pose_sample, seeds[c0:c0 + chunk], chunksize=16)
            for b0 in range(0, len(samples), batch):
                part = samples[b0:b0 + batch]
                x = np.stack([s[0] for s in part]).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
                pred, *feats = session.run(None, {"images": np.ascontiguousarray(x)})
                p = torch.from_numpy(pred).transpose(1, 2)  # (B, N, 8)
                xyxy = torch.cat([p[..., :2] - p[..., 2:4] / 2, p[..., :2] + p[..., 2:4] / 2], -1)
                gt_boxes = torch.from_numpy(np.stack([s[1] for s in part]))
                gt_cls = torch.from_numpy(np.stack([s[2] for s in part]))
                fg, tgt, t_boxes, _ = assign_targets(p[..., 4:], xyxy, anchors, gt_boxes, gt_cls)
                padded = [np.pad(f, ((0, 0), (0, 0), (half, half), (half, half))) for f in feats]
                for i, s in enumerate(part):
                    idx = np.flatnonzero(fg[i].numpy())
                    level, row, col, size = _level_of(idx)
                    out["windows"].append(np.stack([
                        padded[lv][i, :, r:r + window, c:c + window] for lv, r, c in zip(level, row, col, strict=True)
                    ]).astype(np.float16) if len(idx) else np.zeros((0, feats[0].shape[1], window, window), np.float16))
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
    raw = head.forward_windows(batch["windows"], batch["cells"])
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
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 200,
) -> tuple[KeypointHead, list[float]]:
    """Train the shared keypoint branch on precomputed windows; returns its EMA weights and the losses."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = KeypointHead(channels, MAX_KEYPOINTS, hidden, depth)
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
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 10.0)
        opt.step()
        ema.update(head)
        losses.append(float(loss.detach()))
        if log_every and (it % log_every == 0 or it == iters - 1):
            desc = " ".join(f"{k}={v:.3f}" for k, v in parts.items())
            log(f"kpt it {it}/{iters} loss={float(loss.detach()):.3f} {desc} {time.perf_counter() - t0:.0f}s")
    return ema.model, losses
