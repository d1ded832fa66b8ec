"""COCO-style average precision, numpy only (no torch) so tests can import it.

Matching follows COCO: per image and class, predictions are taken in
descending score order and each is matched to the unmatched ground truth with
the highest IoU at or above the threshold.  AP is the 101-point interpolated
precision/recall area; mAP averages the classes that have ground truth.
"""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (A, B) of xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (ix2 - ix1).clip(0) * (iy2 - iy1).clip(0)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def roi_mask_iou(preds: list[tuple[np.ndarray, int, int]], gts: list[np.ndarray]) -> np.ndarray:
    """Pairwise IoU (P, G) of ROI masks (mask, x0, y0) against full-size GT masks."""
    out = np.zeros((len(preds), len(gts)), dtype=np.float64)
    gt_areas = [int(g.sum()) for g in gts]
    for i, (roi, x0, y0) in enumerate(preds):
        area_p = int(roi.sum())
        if area_p == 0:
            continue
        h, w = roi.shape
        for j, g in enumerate(gts):
            inter = int(np.count_nonzero(g[y0:y0 + h, x0:x0 + w] & roi))
            if inter:
                out[i, j] = inter / (area_p + gt_areas[j] - inter)
    return out


class APAccumulator:
    """Collects per-image matches, then computes AP per class and IoU threshold."""

    def __init__(self, num_classes: int, iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> None:
        self.num_classes = num_classes
        self.thresholds = np.asarray(iou_thresholds, dtype=np.float64)
        self._scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self._tps: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self.num_gt = np.zeros(num_classes, dtype=np.int64)

    def add(self, iou: np.ndarray, pred_scores: np.ndarray, pred_classes: np.ndarray, gt_classes: np.ndarray) -> None:
        """Add one image given the (P, G) IoU matrix between its predictions and GT."""
        pred_scores = np.asarray(pred_scores, dtype=np.float64)
        pred_classes = np.asarray(pred_classes, dtype=np.int64)
        gt_classes = np.asarray(gt_classes, dtype=np.int64)
        iou = np.asarray(iou, dtype=np.float64).reshape(len(pred_scores), len(gt_classes))
        for c in range(self.num_classes):
            p_idx = np.flatnonzero(pred_classes == c)
            g_idx = np.flatnonzero(gt_classes == c)
            self.num_gt[c] += len(g_idx)
            if len(p_idx) == 0:
                continue
            p_idx = p_idx[np.argsort(-pred_scores[p_idx], kind="stable")]
            sub = iou[np.ix_(p_idx, g_idx)]
            tp = np.zeros((len(p_idx), len(self.thresholds)), dtype=bool)
            for t, thr in enumerate(self.thresholds):
                taken = np.zeros(len(g_idx), dtype=bool)
                for i in range(len(p_idx)):
                    if not len(g_idx):
                        break
                    cand = np.where(taken, -1.0, sub[i])
                    j = int(np.argmax(cand))
                    if cand[j] >= thr:
                        taken[j] = True
                        tp[i, t] = True
            self._scores[c].append(pred_scores[p_idx])
            self._tps[c].append(tp)

    def ap(self) -> np.ndarray:
        """AP (C, T); NaN for classes without ground truth."""
        out = np.full((self.num_classes, len(self.thresholds)), np.nan)
        recall_pts = np.linspace(0.0, 1.0, 101)
        for c in range(self.num_classes):
            if self.num_gt[c] == 0:
                continue
            if not self._scores[c]:
                out[c] = 0.0
                continue
            scores = np.concatenate(self._scores[c])
            tps = np.concatenate(self._tps[c])
            order = np.argsort(-scores, kind="mergesort")
            tps = tps[order]
            tp_cum = np.cumsum(tps, axis=0)
            fp_cum = np.cumsum(~tps, axis=0)
            recall = tp_cum / self.num_gt[c]
            precision = tp_cum / np.maximum(tp_cum + fp_cum, 1e-12)
            for t in range(len(self.thresholds)):
                prec = np.maximum.accumulate(precision[::-1, t])[::-1]  # monotone envelope
                idx = np.searchsorted(recall[:, t], recall_pts, side="left")
                vals = np.where(idx < len(prec), prec[np.minimum(idx, len(prec) - 1)], 0.0)
                out[c, t] = float(vals.mean())
        return out

    def summary(self) -> dict[str, float]:
        """mAP@0.5 and mAP@0.5:0.95 over classes with ground truth."""
        ap = self.ap()
        valid = ~np.isnan(ap[:, 0])
        if not valid.any():
            return {"map50": 0.0, "map50_95": 0.0}
        t50 = int(np.argmin(np.abs(self.thresholds - 0.5)))
        return {"map50": float(ap[valid, t50].mean()), "map50_95": float(ap[valid].mean())}
