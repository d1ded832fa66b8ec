"""Small anchor-free detector/segmenter and classifier for the procedural shapes.

Layouts follow the Roboflow YOLOv8 ONNX exports the daemon decodes: the export
wrappers below decode boxes to cx, cy, w, h in network pixels and apply the
class sigmoid inside the graph, so the training modules can stay raw.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tools.shapes_layout import DET_SIZE, STRIDES

NUM_CLASSES = 4
NUM_MASK_COEFFS = 32
NUM_KEYPOINTS = 5  # the most any class has (star tips); see edge_daemon.scenes.KEYPOINT_NAMES


class ConvBnAct(nn.Module):
    """Conv + BatchNorm + SiLU, the basic unit everywhere."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, momentum=0.03, eps=1e-3)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Residual(nn.Module):
    """Two 3x3 convs with a skip (optionally through a narrower middle)."""

    def __init__(self, c: int, hidden: int | None = None) -> None:
        super().__init__()
        h = hidden or c
        self.a = ConvBnAct(c, h, 3)
        self.b = ConvBnAct(h, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


class Backbone(nn.Module):
    """Strided CNN returning features at strides 4 (for mask detail), 8, 16 and 32.

    Capacity sits at stride 8 (small objects); deeper levels use narrower
    residual middles to keep the ONNX file under 3 MB.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBnAct(3, 16, 3, 2), ConvBnAct(16, 32, 3, 2))
        self.s8 = nn.Sequential(ConvBnAct(32, 64, 3, 2), Residual(64))
        self.s16 = nn.Sequential(ConvBnAct(64, 80, 3, 2), Residual(80, 48))
        self.s32 = nn.Sequential(ConvBnAct(80, 112, 3, 2), Residual(112, 48))
        self.stem_channels = 32
        self.channels = (64, 80, 112)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        p2 = self.stem(x)
        p3 = self.s8(p2)
        p4 = self.s16(p3)
        p5 = self.s32(p4)
        return p2, (p3, p4, p5)


class Neck(nn.Module):
    """FPN top-down then PAN bottom-up, all levels at width c."""

    def __init__(self, chans: tuple[int, int, int], c: int = 64) -> None:
        super().__init__()
        c3, c4, c5 = chans
        self.lat5 = ConvBnAct(c5, c, 1)
        self.td4 = ConvBnAct(c4 + c, c, 3)
        self.td3 = ConvBnAct(c3 + c, c, 3)
        self.down3 = ConvBnAct(c, c, 3, 2)
        self.bu4 = ConvBnAct(2 * c, c, 1)
        self.down4 = ConvBnAct(c, c, 3, 2)
        self.bu5 = ConvBnAct(2 * c, c, 1)

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = feats
        l5 = self.lat5(p5)
        t4 = self.td4(torch.cat([p4, F.interpolate(l5, scale_factor=2.0, mode="nearest")], 1))
        t3 = self.td3(torch.cat([p3, F.interpolate(t4, scale_factor=2.0, mode="nearest")], 1))
        b4 = self.bu4(torch.cat([self.down3(t3), t4], 1))
        b5 = self.bu5(torch.cat([self.down4(b4), l5], 1))
        return [t3, b4, b5]


class LevelHead(nn.Module):
    """Per-level head: one shared 3x3 conv, then 1x1 class, ltrb and mask outputs."""

    def __init__(self, c: int, nc: int, nm: int) -> None:
        super().__init__()
        self.stem = ConvBnAct(c, c, 3)
        self.cls = nn.Conv2d(c, nc, 1)
        self.box = nn.Conv2d(c, 4, 1)
        self.coef = nn.Conv2d(c, nm, 1) if nm else None
        # Rare positives: start with low class probability; boxes ~2.5 strides per side.
        nn.init.constant_(self.cls.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.constant_(self.box.bias, math.log(math.expm1(2.5)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = self.stem(x)
        coef = self.coef(x) if self.coef is not None else None
        return self.cls(x), self.box(x), coef


class KeypointHead(nn.Module):
    """Keypoints per anchor, one branch shared by all levels: `depth` 3x3 convs, a 1x1 conv, then K triples.

    The outputs are raw x, y offsets (see decode_keypoints) and a visibility logit per keypoint. Sharing
    the weights over levels keeps the file small; offsets are scaled by each level's stride. An output sees
    a (2 * depth + 1)-wide window of its level's neck feature.

    With `fine` > 0 the stride-8 level also gets the backbone's stride-4 stem feature (`fine` channels),
    which still holds edge detail the neck has lost: a 4x4 stride-2 conv (padding 1, no bias) brings it to
    stride 8 and adds it to the first conv's output, before the activation. Small shapes are found at
    stride 8, where 0.05 of a 30-pixel shape is under a fifth of a cell.
    """

    def __init__(self, c: int, nk: int, hidden: int = 64, depth: int = 2, fine: int = 0) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c if i == 0 else hidden, hidden, 3, 1, 1) for i in range(depth))
        self.fine = nn.Conv2d(fine, hidden, 4, 2, 1, bias=False) if fine else None
        self.mix = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, 3 * nk, 1)
        nn.init.zeros_(self.out.bias)
        self.window = 2 * depth + 1
        self.fine_window = 2 * (2 * depth - 1) + 2  # stem cells under the first conv's (2 depth - 1)² outputs

    def forward(self, x: torch.Tensor, stem: torch.Tensor | None = None) -> torch.Tensor:
        """Full maps: a level's neck feature and, for the stride-8 level of a `fine` head, the stem feature."""
        for i, conv in enumerate(self.convs):
            y = conv(x)
            if i == 0 and stem is not None and self.fine is not None:
                y = y + self.fine(stem)
            x = F.silu(y)
        return self.out(F.silu(self.mix(x)))

    def forward_windows(
        self, windows: torch.Tensor, cells: torch.Tensor, stem: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The same outputs at chosen anchors only, from (P, c, W, W) zero-padded feature windows -> (P, 3K).

        `cells` (P, 3) holds each anchor's row, column and its level's map size. An intermediate output
        outside the map is zeroed: there the full-map convolution sees the next conv's zero padding.
        `stem` (P, fine, F, F), F = fine_window, holds the zero-padded stem feature from stem row and column
        2 * (anchor row/column - depth + 1) - 1 on; it must be zero for anchors of the other levels.
        """
        x = windows
        for i, conv in enumerate(self.convs):
            y = F.conv2d(x, conv.weight, conv.bias)
            if i == 0 and stem is not None and self.fine is not None:
                y = y + F.conv2d(stem, self.fine.weight, stride=2)
            x = F.silu(y)
            if i < len(self.convs) - 1:
                d = torch.arange(x.shape[-1], device=x.device) - x.shape[-1] // 2
                rows = cells[:, 0:1] + d
                cols = cells[:, 1:2] + d
                size = cells[:, 2:3]
                inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
                x = x * inside[:, None].to(x.dtype)
        return self.out(F.silu(self.mix(x))).flatten(1)


class ProtoHead(nn.Module):
    """Mask prototypes at stride 2.

    The stride-8 neck feature is upsampled to stride 4 and joined with the stem's stride-4 feature, which
    still holds edge detail, then upsampled once more; the last two steps are cheap per pixel.
    """

    def __init__(self, c: int, c_skip: int, nm: int, hidden: int = 24) -> None:
        super().__init__()
        self.pre = ConvBnAct(c, c, 3)
        self.up4 = nn.ConvTranspose2d(c, hidden, 2, 2, bias=True)
        self.fuse = ConvBnAct(hidden + c_skip, hidden, 3)
        self.up2 = nn.ConvTranspose2d(hidden, hidden, 2, 2, bias=True)
        self.out = nn.Conv2d(hidden, nm, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.up4(self.pre(x)))
        x = self.fuse(torch.cat([x, skip], 1))
        return self.out(F.silu(self.up2(x)))


class ShapesDetector(nn.Module):
    """Detector (nm=0), instance segmenter (nm=32) or keypoint detector (nm=0, nk=5) returning raw maps.

    Each level's output is (class logits, ltrb logits, mask coefficients or None, keypoints or None).
    """

    def __init__(
        self, nc: int = NUM_CLASSES, nm: int = NUM_MASK_COEFFS, c: int = 48, nk: int = 0, kpt_hidden: int = 64,
        kpt_depth: int = 2, kpt_fine: bool = False,
    ) -> None:
        super().__init__()
        self.nc, self.nm, self.nk = nc, nm, nk
        self.backbone = Backbone()
        self.neck = Neck(self.backbone.channels, c)
        self.heads = nn.ModuleList(LevelHead(c, nc, nm) for _ in STRIDES)
        self.proto = ProtoHead(c, self.backbone.stem_channels, nm) if nm else None
        fine = self.backbone.stem_channels if kpt_fine else 0
        self.kpt = KeypointHead(c, nk, kpt_hidden, kpt_depth, fine) if nk else None

    def forward(self, x: torch.Tensor) -> tuple[list, torch.Tensor | None]:
        stem, levels = self.backbone(x)
        feats = self.neck(levels)
        outs = [(*head(f), self.kpt(f, stem if i == 0 else None) if self.kpt is not None else None)
                for i, (head, f) in enumerate(zip(self.heads, feats, strict=True))]
        protos = self.proto(feats[0], stem) if self.proto is not None else None
        return outs, protos


def make_anchors(size: int = DET_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres (N, 2) in network pixels and their strides (N, 1), level-major."""
    points, strides = [], []
    for s in STRIDES:
        n = size // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float().add(0.5).mul(s)
        points.append(pts)
        strides.append(torch.full((n * n, 1), float(s)))
    return torch.cat(points), torch.cat(strides)


def flatten_levels(outs: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Concatenate per-level maps to (B, N, C) tensors in anchor order."""
    cls = torch.cat([o[0].flatten(2) for o in outs], 2).transpose(1, 2)
    box = torch.cat([o[1].flatten(2) for o in outs], 2).transpose(1, 2)
    coef = None
    if outs[0][2] is not None:
        coef = torch.cat([o[2].flatten(2) for o in outs], 2).transpose(1, 2)
    return cls, box, coef


def flatten_keypoints(outs: list) -> torch.Tensor:
    """Per-level keypoint maps -> (B, N, K, 3) raw x, y offsets and visibility logits in anchor order."""
    kpt = torch.cat([o[3].flatten(2) for o in outs], 2).transpose(1, 2)
    return kpt.reshape(kpt.shape[0], kpt.shape[1], -1, 3)


def decode_keypoints(raw: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Raw (..., K, 3) -> keypoint x, y (..., K, 2) in network pixels: anchor + 2 * offset * stride.

    Linear in the offset, as YOLOv8-pose decodes, so a keypoint may lie outside its anchor's cell or box.
    `anchors` (..., 2) and `strides` (..., 1) broadcast over the keypoints.
    """
    return anchors[..., None, :] + raw[..., :2] * (2.0 * strides[..., None, :])


def decode_ltrb(box_logits: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Box logits (B, N, 4) -> x1, y1, x2, y2 in network pixels."""
    dist = F.softplus(box_logits) * strides
    lt, rb = dist[..., :2], dist[..., 2:]
    return torch.cat([anchors - lt, anchors + rb], -1)


class ExportDetect(nn.Module):
    """ONNX wrapper: output0 (B, 4+nc[+nm or +3K], N) and, for segmentation, output1 protos.

    Keypoints (a model with nk > 0) follow YOLOv8-pose: K triples x, y (network pixels), sigmoid visibility.
    """

    def __init__(self, model: ShapesDetector, with_masks: bool, size: int = DET_SIZE) -> None:
        super().__init__()
        self.model = model
        self.with_masks = with_masks
        self.with_keypoints = model.nk > 0
        anchors, strides = make_anchors(size)  # baked into the graph: the export is for this input size only
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("strides", strides, persistent=False)

    def forward(self, images: torch.Tensor):
        outs, protos = self.model(images)
        if self.with_keypoints:
            return self._forward_keypoints(outs)
        cls, box, coef = flatten_levels(outs)
        xyxy = decode_ltrb(box, self.anchors, self.strides)
        cxcy = (xyxy[..., :2] + xyxy[..., 2:]) * 0.5
        wh = xyxy[..., 2:] - xyxy[..., :2]
        parts = [cxcy, wh, torch.sigmoid(cls)]
        if self.with_masks:
            assert coef is not None and protos is not None
            parts.append(coef)
            return torch.cat(parts, -1).transpose(1, 2), protos
        return torch.cat(parts, -1).transpose(1, 2)

    def _forward_keypoints(self, outs: list) -> torch.Tensor:
        """output0 of a keypoint model, decoded as decode_ltrb and decode_keypoints do, but with a single use of
        the anchor and stride tables, so the graph holds each as one constant: the exporter inlines a buffer
        at every use, and at 512 px five (N, ...) tables would put the file over 3 MB.

        Box centres are anchor + (r - l) / 2 (the same as the mean of the corners up to float rounding);
        keypoints are anchor + (2 * offset) * stride, exactly decode_keypoints' value.
        """
        cls, box, _ = flatten_levels(outs)
        raw = flatten_keypoints(outs)  # (B, N, K, 3)
        b, n, k = raw.shape[0], raw.shape[1], raw.shape[2]
        scaled = torch.cat([F.softplus(box), raw[..., :2].reshape(b, n, 2 * k) * 2.0], -1) * self.strides
        lt, rb, kxy = scaled[..., :2], scaled[..., 2:4], scaled[..., 4:].reshape(b, n, k, 2)
        offsets = torch.cat([((rb - lt) * 0.5)[:, :, None], kxy], 2)  # (B, N, 1 + K, 2)
        points = offsets + self.anchors[:, None, :]  # one (N, 1, 2) constant after folding
        kpts = torch.cat([points[:, :, 1:], torch.sigmoid(raw[..., 2:3])], -1).reshape(b, n, 3 * k)
        return torch.cat([points[:, :, 0], lt + rb, torch.sigmoid(cls), kpts], -1).transpose(1, 2)


class ShapesClassifier(nn.Module):
    """Tiny classifier over the whole (stretched) image; returns raw logits."""

    def __init__(self, nc: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBnAct(3, 16, 3, 2),
            ConvBnAct(16, 32, 3, 2),
            Residual(32),
            ConvBnAct(32, 64, 3, 2),
            Residual(64),
            ConvBnAct(64, 128, 3, 2),
            Residual(128),
        )
        self.fc = nn.Linear(128, nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))
