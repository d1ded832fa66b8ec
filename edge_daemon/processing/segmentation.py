"""Instance masks from YOLO mask coefficients and prototypes, computed only inside each box.

mask = sigmoid(coefficients · prototypes). For each detection only the prototype pixels under its box are
multiplied out, resized to the chosen resolution (`fast`: prototype resolution; `accurate`: network-input
resolution; `tradeoff`: in between by `tradeoff_factor`), cut to the box and thresholded at 0.5. Never N
full-size float masks at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from edge_daemon.processing.detection import Detections
from edge_daemon.processing.preprocess import Geometry

MaskDecodeMode = Literal["accurate", "fast", "tradeoff"]


@dataclass(frozen=True)
class MaskPatch:
    """A binary mask over a network-space rectangle: patch pixel (u, v) has its centre at
    (x0 + (u + 0.5) * step_x, y0 + (v + 0.5) * step_y) in network-input pixels."""

    mask: np.ndarray  # (h, w) uint8 0/1
    x0: float
    y0: float
    step_x: float
    step_y: float
    # When the mask lies on the original image's pixel grid: its top-left pixel (column, row) there, so an
    # RLE can be read off it exactly rather than through its outline.
    pixel_origin: tuple[int, int] | None = None

    def contours(self, largest_only: bool = True, output_px_per_mask_px: float = 1.0) -> list[np.ndarray]:
        """External contours as (n, 2) float arrays in network-input pixels; the largest first.

        Each outline passes through the centres of the outermost *output* pixels the mask covers, so filling
        the polygon (cv2.fillPoly includes its boundary) at the output resolution gives the mask back, to
        within half a pixel along diagonal edges, whose staircases are simplified. When one mask pixel spans
        several output pixels, the binary mask is first repeated up to the output resolution (nearest
        neighbour, cheap): tracing the centres of coarse pixels instead would shrink the mask by half a coarse
        pixel all round.
        """
        mask, step_x, step_y = self.mask, self.step_x, self.step_y
        factor = min(output_px_per_mask_px, MAX_OUTLINE_UPSAMPLING)
        if factor > 1.0:
            height, width = mask.shape
            out_w, out_h = max(1, round(width * factor)), max(1, round(height * factor))
            mask = cv2.resize(mask, (out_w, out_h), interpolation=cv2.INTER_NEAREST)
            step_x, step_y = step_x * width / out_w, step_y * height / out_h
        found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        ordered = sorted(found, key=cv2.contourArea, reverse=True)
        if largest_only:
            ordered = ordered[:1]
        result = []
        for contour in ordered:
            # Staircase vertices within half a pixel of a straighter line are dropped: a third fewer points.
            simplified = cv2.approxPolyDP(contour, OUTLINE_TOLERANCE_PX, True)
            points = _closed_polygon(simplified.reshape(-1, 2).astype(np.float64) + 0.5)
            points[:, 0] = self.x0 + points[:, 0] * step_x
            points[:, 1] = self.y0 + points[:, 1] * step_y
            result.append(points)
        return result


OUTLINE_TOLERANCE_PX = 0.5  # how far (in output pixels) a simplified outline may stray from the traced one
MAX_OUTLINE_UPSAMPLING = 4.0  # beyond it an outline sits (k/4 - 1)/2 original px inside: bounds the work


def _closed_polygon(centres: np.ndarray) -> np.ndarray:
    """At least three vertices: a dot or a one-pixel line becomes the (degenerate) box around it."""
    if len(centres) >= 3:
        return centres
    low, high = centres.min(axis=0), centres.max(axis=0)
    return np.array([[low[0], low[1]], [high[0], low[1]], [high[0], high[1]], [low[0], high[1]]])


def resolution(mode: MaskDecodeMode, tradeoff_factor: float, proto_scale: float) -> float:
    """Mask pixels per network pixel for a decode mode (proto_scale: prototype px per network px).

    `accurate` is the network input's resolution, as Roboflow's. Decoding finer, at the original image's
    resolution, was measured on the bundled segmenter (v2): 0.893 against 0.891 of objects at mask IoU >= 0.8
    for 3.5x the post-processing time, so it is not done.
    """
    if mode == "fast":
        return proto_scale
    if mode == "tradeoff":
        return proto_scale + (1.0 - proto_scale) * min(max(tradeoff_factor, 0.0), 1.0)
    return 1.0


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -80, 80)))  # clipped: exp overflows float32 past 88


def mask_patch(coefficients: np.ndarray, prototypes: np.ndarray, box: np.ndarray, valid: tuple[float, float, float, float],
               input_size: tuple[int, int], pixels_per_network_px: float) -> MaskPatch:
    """The thresholded mask of one detection over its box.

    `prototypes` is (nm, mh, mw); `box` is xyxy in network pixels; `valid` is the unpadded image area in
    network pixels (the letterbox padding is never part of a mask); `input_size` is (width, height).
    """
    num_masks, proto_h, proto_w = prototypes.shape
    sx, sy = proto_w / input_size[0], proto_h / input_size[1]
    x1, y1 = max(box[0], valid[0]), max(box[1], valid[1])
    x2, y2 = min(box[2], valid[2]), min(box[3], valid[3])
    if x2 <= x1 or y2 <= y1:
        return MaskPatch(np.zeros((1, 1), np.uint8), float(x1), float(y1), 1.0, 1.0)
    px0, py0 = max(0, math.floor(x1 * sx)), max(0, math.floor(y1 * sy))
    px1, py1 = min(proto_w, math.ceil(x2 * sx)), min(proto_h, math.ceil(y2 * sy))
    region = prototypes[:, py0:py1, px0:px1]
    logits = (coefficients @ region.reshape(num_masks, -1)).reshape(py1 - py0, px1 - px0)
    probabilities = _sigmoid(logits.astype(np.float32))
    span_w, span_h = (px1 - px0) / sx, (py1 - py0) / sy  # the region in network pixels
    out_w = max(1, round(span_w * pixels_per_network_px))
    out_h = max(1, round(span_h * pixels_per_network_px))
    if (out_w, out_h) != probabilities.shape[::-1]:
        probabilities = cv2.resize(probabilities, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    origin_x, origin_y = px0 / sx, py0 / sy
    step_x, step_y = span_w / out_w, span_h / out_h
    centres_x = origin_x + (np.arange(out_w) + 0.5) * step_x
    centres_y = origin_y + (np.arange(out_h) + 0.5) * step_y
    inside = ((centres_y >= y1) & (centres_y <= y2))[:, None] & ((centres_x >= x1) & (centres_x <= x2))[None, :]
    mask = ((probabilities > 0.5) & inside).astype(np.uint8)
    return MaskPatch(mask, origin_x, origin_y, step_x, step_y)


def polygon_region(polygons: list[np.ndarray], width: int, height: int) -> tuple[np.ndarray, int, int]:
    """Rasterise polygons (original pixel coordinates, as `points`) over their own bounding region only.

    Returns (mask, top_row, left_column) of that region inside the (height, width) image.
    """
    shapes = [np.round(p).astype(np.int32) for p in polygons if len(p) >= 3]
    if not shapes:
        return np.zeros((0, 0), np.uint8), 0, 0
    stacked = np.concatenate(shapes)
    left, top = max(0, int(stacked[:, 0].min())), max(0, int(stacked[:, 1].min()))
    right, bottom = min(width, int(stacked[:, 0].max()) + 1), min(height, int(stacked[:, 1].max()) + 1)
    if right <= left or bottom <= top:
        return np.zeros((0, 0), np.uint8), 0, 0
    mask = np.zeros((bottom - top, right - left), np.uint8)
    cv2.fillPoly(mask, shapes, 1, offset=(-left, -top))
    return mask, top, left


def coco_rle(region: np.ndarray, top: int, left: int, height: int, width: int) -> dict[str, object]:
    """COCO run-length encoding of a (height, width) mask that is zero outside `region` placed at
    (top, left): column-major runs starting with zeros, in COCO's compressed string form.

    Work is proportional to the region, not the image: transitions are found per region column and
    placed at their column-major positions in the full image.
    """
    total = height * width
    if region.size == 0 or not region.any():
        return {"size": [height, width], "counts": _compress_counts([total])}
    padded = np.zeros((region.shape[0] + 2, region.shape[1]), np.int8)
    padded[1:-1] = region
    # A change between padded rows i and i+1 of column j sits before image row top+i of column left+j.
    changes_by_column = np.diff(padded, axis=0).T  # (columns, rows + 1), so nonzero() is column-major
    columns, rows = np.nonzero(changes_by_column)
    positions = (left + columns).astype(np.int64) * height + top + rows
    # A run ending at a column's last row and one starting at the next column's first row meet at one
    # position: those two transitions cancel.
    unique, counts = np.unique(positions, return_counts=True)
    transitions = unique[counts % 2 == 1]
    boundaries = np.concatenate([[0], transitions, [total]])
    return {"size": [height, width], "counts": _compress_counts(np.diff(boundaries).tolist())}


def _compress_counts(counts: list[int]) -> str:
    """COCO's LEB128-like text form: deltas against the count two back, 5 bits a character from '0'."""
    chars = []
    for index, value in enumerate(counts):
        if index > 2:
            value -= counts[index - 2]
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            if more:
                chunk |= 0x20
            chars.append(chr(chunk + 48))
    return "".join(chars)


def prediction_and_prototypes(shapes: list[tuple[int, ...]]) -> tuple[int, int, int] | None:
    """(predictions index, prototypes index, mask coefficients nm) among one image's output shapes: the
    predictions are the first 2-D output, the prototypes the only 3-D `[nm, mh, mw]` one (YOLOv7-seg's extra
    4-D outputs are ignored; its prototypes are output 4 of 5). None when the outputs are not shaped so."""
    two_d = [index for index, shape in enumerate(shapes) if len(shape) == 2]
    three_d = [index for index, shape in enumerate(shapes) if len(shape) == 3]
    if not two_d or len(three_d) != 1:
        return None
    return two_d[0], three_d[0], shapes[three_d[0]][0]


def yolo_masks(found: Detections, prototypes: np.ndarray, geometry: Geometry, input_size: tuple[int, int],
               mode: MaskDecodeMode, tradeoff_factor: float, smoothing: bool = True) -> list[MaskPatch]:
    """Each detection's mask from its coefficients and the prototypes, computed only over its box.

    `accurate` (the default) follows Roboflow's default stack: sigmoid(c . P) on the prototype grid, zero
    outside the box rounded to that grid, the letterbox padding cut off there, a bilinear resize to the
    image's own size and > 0.5. `fast` and `tradeoff` stay at (or between) prototype resolution.

    `smoothing=False` is how that stack decodes YOLO26 masks: the logits themselves (no sigmoid) are cut to
    the box, resized and kept > 0; the zeros outside the box interpolate with positive logits inside it, so
    a mask may reach up to one prototype cell past its box edge (for YOLOv8/v11 the sigmoid keeps it inside)."""
    coefficients = found.extras if found.extras is not None else []
    if mode == "accurate":
        return [_yolo_mask_on_image_grid(coefficient, prototypes, box, geometry, input_size, smoothing)
                for coefficient, box in zip(coefficients, found.boxes)]
    scale = resolution(mode, tradeoff_factor, prototypes.shape[2] / input_size[0])
    valid = geometry.network_valid_area()
    return [mask_patch(coefficient, prototypes, box, valid, input_size, scale)
            for coefficient, box in zip(coefficients, found.boxes)]


@dataclass(frozen=True)
class MaskGrid:
    """How a mask grid (mh, mw) covering the network input lines up with the image: the part that is image
    (the letterbox padding cut off, rounded to the grid as Roboflow does) and the image size it stretches to."""

    left: int
    top: int
    right: int  # exclusive
    bottom: int
    out_width: int  # the (cropped, decoded) image size the valid part is resized to
    out_height: int

    @classmethod
    def of(cls, mask_h: int, mask_w: int, geometry: Geometry, input_size: tuple[int, int],
           clamp: bool = True) -> MaskGrid:
        """`clamp=False` keeps a part that reaches past the grid (a centre crop of a larger image: the grid
        sees only the middle of the image), for a caller that pads the grid with zeros out to it."""
        sx, sy = mask_w / input_size[0], mask_h / input_size[1]
        new_w, new_h = geometry.resized_size()
        left, top = round(sx * geometry.pad_x), round(sy * geometry.pad_y)
        right = mask_w - round(sx * (input_size[0] - geometry.pad_x - new_w))
        bottom = mask_h - round(sy * (input_size[1] - geometry.pad_y - new_h))
        if not clamp:
            return cls(left, top, max(right, left + 1), max(bottom, top + 1), geometry.crop_width,
                       geometry.crop_height)
        return cls(max(0, left), max(0, top), min(mask_w, max(right, left + 1)), min(mask_h, max(bottom, top + 1)),
                   geometry.crop_width, geometry.crop_height)


def aligned_mask(values: np.ndarray, window: tuple[int, int], grid: MaskGrid, geometry: Geometry,
                 threshold: float) -> MaskPatch:
    """`values` (a window of the mask grid at (column, row) `window`, inside the grid's image part) resized
    bilinearly as the whole image part would be to the image size, then > threshold; only the image pixels the
    window can reach are computed. The window's edges replicate, so a window that stops at the image part's
    edge behaves as the whole map's edge does, and one that stops inside it must end in a row of zeros."""
    fx = grid.out_width / (grid.right - grid.left)
    fy = grid.out_height / (grid.bottom - grid.top)
    u0, v0 = window[0] - grid.left, window[1] - grid.top  # the window in the image part's coordinates
    height, width = values.shape
    x0 = max(0, math.floor((u0 - 0.5) * fx) - 1)
    y0 = max(0, math.floor((v0 - 0.5) * fy) - 1)
    x1 = min(grid.out_width, math.ceil((u0 + width + 0.5) * fx) + 1)
    y1 = min(grid.out_height, math.ceil((v0 + height + 0.5) * fy) + 1)
    if x1 <= x0 or y1 <= y0:
        return MaskPatch(np.zeros((1, 1), np.uint8), 0.0, 0.0, 1.0, 1.0)
    # Output pixel x samples the image part at (x + 0.5) / fx - 0.5 (half-pixel centres, as a bilinear resize).
    transform = np.array([[1 / fx, 0, (x0 + 0.5) / fx - 0.5 - u0], [0, 1 / fy, (y0 + 0.5) / fy - 0.5 - v0]])
    resized = cv2.warpAffine(values.astype(np.float32), transform, (x1 - x0, y1 - y0),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    mask = (resized > threshold).astype(np.uint8)
    on_original_grid = geometry.decode_ratio_x == 1.0 and geometry.decode_ratio_y == 1.0
    return MaskPatch(mask, geometry.pad_x + x0 * geometry.scale_x, geometry.pad_y + y0 * geometry.scale_y,
                     geometry.scale_x, geometry.scale_y,
                     (x0 + geometry.crop_x, y0 + geometry.crop_y) if on_original_grid else None)


def _yolo_mask_on_image_grid(coefficients: np.ndarray, prototypes: np.ndarray, box: np.ndarray,
                             geometry: Geometry, input_size: tuple[int, int], smoothing: bool = True) -> MaskPatch:
    num_masks, mask_h, mask_w = prototypes.shape
    grid = MaskGrid.of(mask_h, mask_w, geometry, input_size)
    sx, sy = mask_w / input_size[0], mask_h / input_size[1]
    bx1, by1, bx2, by2 = (int(v) for v in np.round(box * (sx, sy, sx, sy)))  # half-open, on the grid
    # One row/column of zeros around the box (where the box crop leaves zeros) for the interpolation.
    wx0, wy0 = max(grid.left, bx1 - 1), max(grid.top, by1 - 1)
    wx1, wy1 = min(grid.right, bx2 + 1), min(grid.bottom, by2 + 1)
    if wx1 <= wx0 or wy1 <= wy0:
        return MaskPatch(np.zeros((1, 1), np.uint8), 0.0, 0.0, 1.0, 1.0)
    values = np.zeros((wy1 - wy0, wx1 - wx0), np.float32)
    ix0, iy0, ix1, iy1 = max(bx1, wx0), max(by1, wy0), min(bx2, wx1), min(by2, wy1)
    if ix1 > ix0 and iy1 > iy0:
        region = prototypes[:, iy0:iy1, ix0:ix1]
        logits = (coefficients @ region.reshape(num_masks, -1)).reshape(iy1 - iy0, ix1 - ix0)
        logits = logits.astype(np.float32)
        values[iy0 - wy0:iy1 - wy0, ix0 - wx0:ix1 - wx0] = _sigmoid(logits) if smoothing else logits
    return aligned_mask(values, (wx0, wy0), grid, geometry, 0.5 if smoothing else 0.0)
