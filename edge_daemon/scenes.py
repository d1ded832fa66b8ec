"""Deterministic procedural scenes of simple shapes with exact ground truth.

The bundled default models were trained on these scenes, and the tests and the
``edge-daemon demo-image`` CLI use them at runtime, so this module depends on
numpy and OpenCV only.  Every random draw comes from one
``np.random.default_rng`` per call, which makes a seed reproduce its image
byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star")

# (width, height) choices: 4:3, 16:9, 1:1 and portrait 3:4, small to 720p.
IMAGE_SIZES: tuple[tuple[int, int], ...] = (
    (320, 240), (640, 480), (800, 600), (1024, 768),
    (640, 360), (960, 540), (1280, 720),
    (320, 320), (480, 480), (640, 640),
    (240, 320), (480, 640), (600, 800),
)

# Keypoints at the shape vertices (see `_keypoints`): names per class id, and the skeleton's edges.
KEYPOINT_NAMES: dict[int, tuple[str, ...]] = {
    0: ("center",),
    1: ("corner_1", "corner_2", "corner_3", "corner_4"),
    2: ("corner_1", "corner_2", "corner_3"),
    3: ("tip_1", "tip_2", "tip_3", "tip_4", "tip_5"),
}
MAX_KEYPOINTS = max(len(names) for names in KEYPOINT_NAMES.values())
KEYPOINT_EDGES: dict[int, tuple[tuple[int, int], ...]] = {
    cid: tuple((i, (i + 1) % len(names)) for i in range(len(names))) if len(names) > 1 else ()
    for cid, names in KEYPOINT_NAMES.items()
}

MIN_VISIBLE_FRACTION = 0.7
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly
_SCALE = 1 << _SHIFT


@dataclass(frozen=True)
class SceneObject:
    """One labelled shape; box and mask describe only its visible pixels.

    Keypoints are the shape's vertices (all of them, occluded or not) in the box's coordinates: pixel (i, j)
    covers [i, i+1) x [j, j+1), so a vertex drawn at pixel centre (i, j) is at (i + 0.5, j + 0.5). A keypoint
    is visible unless a shape drawn later covers the pixel it lies in.
    """

    class_id: int
    class_name: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 (x2/y2 exclusive)
    mask: np.ndarray  # HxW bool
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) float x, y, see order_keypoints
    keypoints_visible: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=bool))  # (K,) bool


@dataclass(frozen=True)
class Scene:
    """A rendered image with its detection and classification ground truth."""

    image: np.ndarray  # HxWx3 uint8 BGR
    objects: list[SceneObject]
    label: int | None


def _pick_size(rng: np.random.Generator, width: int | None, height: int | None) -> tuple[int, int]:
    """Fill in a missing dimension so callers may fix one side, both or none."""
    w, h = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    if width is None and height is None:
        return w, h
    if width is None:
        assert height is not None
        return max(16, round(height * w / h)), int(height)
    if height is None:
        return int(width), max(16, round(width * h / w))
    return int(width), int(height)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour from HSV so that hues, pale tints and dark tones all occur."""
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(40, 256), rng.integers(40, 256)]]], dtype=np.uint8
    )
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Low-frequency value noise in [-1, 1] at (h, w); cheap because it is upsampled."""
    gh = max(2, round(cells * h / max(w, h)) + 1)
    gw = max(2, round(cells * w / max(w, h)) + 1)
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Gradient plus blotchy texture and an optional pattern, as float32 BGR."""
    # Work at quarter resolution; backgrounds carry no sharp detail.
    sw, sh = max(8, w // 4), max(8, h // 4)
    c0, c1 = _random_colour(rng), _random_colour(rng)
    ang = rng.uniform(0, 2 * math.pi)
    xs = np.linspace(-0.5, 0.5, sw, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, sh, dtype=np.float32)[:, None]
    t = np.clip(math.cos(ang) * xs + math.sin(ang) * ys + 0.5, 0.0, 1.0)
    bg = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    amp = rng.uniform(5, 35)
    tex = _smooth_noise(rng, sw, sh, int(rng.integers(3, 12)))
    bg += amp * tex[..., None] * rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    kind = int(rng.integers(0, 4))
    if kind == 1:  # soft stripes, like boards or fabric
        period = rng.uniform(6, 30)
        a2 = rng.uniform(0, math.pi)
        gx, gy = np.meshgrid(np.arange(sw, dtype=np.float32), np.arange(sh, dtype=np.float32))
        s = np.sin((gx * math.cos(a2) + gy * math.sin(a2)) * 2 * math.pi / period)
        bg += rng.uniform(4, 15) * s[..., None]
    elif kind == 2:  # fine speckle, like concrete or paper
        fine = rng.uniform(-1, 1, size=(sh, sw)).astype(np.float32)
        bg += rng.uniform(3, 12) * fine[..., None]
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    return bg


def _shape_polygon(rng: np.random.Generator, class_id: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Vertices (K, 2) of a shape with circumradius r, randomly rotated."""
    rot = rng.uniform(0, 2 * math.pi)
    if class_id == 0:  # circle
        ang = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        rad = np.full_like(ang, r)
    elif class_id == 1:  # square
        ang = rot + np.arange(4) * (math.pi / 2)
        rad = np.full_like(ang, r)
    elif class_id == 2:  # triangle, mildly irregular so it is not a stamp
        ang = rot + np.arange(3) * (2 * math.pi / 3) + rng.uniform(-0.12, 0.12, size=3)
        rad = r * rng.uniform(0.92, 1.0, size=3)
    else:  # five-pointed star
        inner = rng.uniform(0.38, 0.5)
        ang = rot + np.arange(10) * (math.pi / 5)
        rad = np.where(np.arange(10) % 2 == 0, r, r * inner)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)


def order_keypoints(points: np.ndarray) -> np.ndarray:
    """Indices putting polygon vertices in the canonical order: the topmost first, then clockwise on screen.

    Topmost is the smallest y (ties: smallest x); clockwise on screen is increasing atan2(y - cy, x - cx)
    about the vertices' mean, since image y points down. A rotated square or triangle thus has one
    well-defined first corner. Training code calls this again after flipping an image.
    """
    if len(points) < 2:
        return np.arange(len(points))
    centre = points.mean(axis=0)
    ang = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
    first = int(np.lexsort((points[:, 0], points[:, 1]))[0])
    return np.argsort((ang - ang[first]) % (2 * math.pi), kind="stable")


def _keypoints(class_id: int, poly: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Canonically ordered keypoints (K, 2) in box coordinates: centre, corners or outer star tips."""
    if class_id == 0:
        pts = np.array([[cx, cy]])
    elif class_id == 3:
        pts = poly[0::2]  # outer tips; odd vertices are the inner notches
    else:
        pts = poly
    pts = pts + 0.5  # polygon vertices are pixel-centre coordinates
    return pts[order_keypoints(pts)]


def _rasterise(poly: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Anti-aliased coverage (h, w) uint8 of a polygon inside the ROI at (x0, y0)."""
    cov = np.zeros((h, w), dtype=np.uint8)
    pts = np.round((poly - [x0, y0]) * _SCALE).astype(np.int32)
    cv2.fillPoly(cov, [pts], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return cov


def _draw_clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    """Thin lines and crosses: texture that is clearly none of the four shapes."""
    h, w = img.shape[:2]
    short = min(w, h)
    for _ in range(count):
        colour = tuple(float(v) for v in _random_colour(rng))
        thick = int(rng.integers(1, 3))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        length = rng.uniform(0.08, 0.35) * short
        ang = rng.uniform(0, math.pi)
        dx, dy = math.cos(ang) * length / 2, math.sin(ang) * length / 2
        p1 = (round((x - dx) * _SCALE), round((y - dy) * _SCALE))
        p2 = (round((x + dx) * _SCALE), round((y + dy) * _SCALE))
        cv2.line(img, p1, p2, colour, thick, cv2.LINE_AA, _SHIFT)
        if rng.random() < 0.3:  # a cross
            p3 = (round((x - dy) * _SCALE), round((y + dx) * _SCALE))
            p4 = (round((x + dy) * _SCALE), round((y - dx) * _SCALE))
            cv2.line(img, p3, p4, colour, thick, cv2.LINE_AA, _SHIFT)


def _pick_fill(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """Choose a fill colour that stands out from the pixels it will cover."""
    best, best_frac = _random_colour(rng), 2.0
    for _ in range(12):
        col = best if best_frac == 2.0 else _random_colour(rng)
        dist = np.sqrt(((under - col) ** 2).sum(axis=1))
        frac = float((dist < 70).mean())
        if frac < best_frac:
            best, best_frac = col, frac
        if frac < 0.02:
            break
    return best


def _degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Camera-like blur and sensor noise, then quantise to uint8."""
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2))
    sigma = rng.uniform(0.0, 7.0)
    h, w = img.shape[:2]
    noise = rng.standard_normal((h, w), dtype=np.float32)
    noise = cv2.cvtColor(noise * np.float32(sigma) + np.float32(0.5), cv2.COLOR_GRAY2BGR)
    img = cv2.add(img, noise)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def _render(
    rng: np.random.Generator,
    w: int,
    h: int,
    n_objects: int,
    size_range: tuple[float, float],
    centre_box: tuple[float, float, float, float],
    clutter: int,
) -> tuple[np.ndarray, list[SceneObject], list[int]]:
    """Place, occlusion-check and paint shapes; returns image, visible GT, unoccluded areas."""
    canvas = _background(rng, w, h)
    _draw_clutter(rng, canvas, clutter)
    short = min(w, h)
    placed: list[tuple[int, np.ndarray, int]] = []  # (class_id, visible mask, own area)
    keypoints: list[tuple[np.ndarray, np.ndarray]] = []  # (K, 2) points and (K,) visibility, as `placed`
    for _ in range(n_objects):
        class_id = int(rng.integers(len(CLASS_NAMES)))
        for _attempt in range(25):
            r = rng.uniform(*size_range) * short / 2
            margin = r + 2
            lo_x, hi_x = max(margin, centre_box[0] * w), min(w - margin, centre_box[2] * w)
            lo_y, hi_y = max(margin, centre_box[1] * h), min(h - margin, centre_box[3] * h)
            if lo_x >= hi_x or lo_y >= hi_y:
                continue
            cx, cy = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
            poly = _shape_polygon(rng, class_id, cx, cy, r)
            x0 = max(0, math.floor(poly[:, 0].min()) - 1)
            y0 = max(0, math.floor(poly[:, 1].min()) - 1)
            x1 = min(w, math.ceil(poly[:, 0].max()) + 2)
            y1 = min(h, math.ceil(poly[:, 1].max()) + 2)
            cov = _rasterise(poly, x0, y0, x1 - x0, y1 - y0)
            roi_mask = cov >= 128
            if roi_mask.sum() < 12:
                continue
            # Would covering earlier objects leave any of them under-visible?
            ok = True
            for _cid, vis, own in placed:
                lost = int((vis[y0:y1, x0:x1] & roi_mask).sum())
                if lost and int(vis.sum()) - lost < MIN_VISIBLE_FRACTION * own:
                    ok = False
                    break
            if ok:
                break
        else:
            continue  # no valid placement: skip this object rather than break visibility
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y1, x0:x1] = roi_mask
        for _cid, vis, _own in placed:
            vis[y0:y1, x0:x1] &= ~roi_mask
        for pts, kp_vis in keypoints:  # keypoints under the new shape are hidden (no random draws here)
            ix, iy = np.floor(pts[:, 0]).astype(int) - x0, np.floor(pts[:, 1]).astype(int) - y0
            inside = (ix >= 0) & (ix < x1 - x0) & (iy >= 0) & (iy < y1 - y0)
            kp_vis[inside] &= ~roi_mask[iy[inside], ix[inside]]
        placed.append((class_id, mask, int(roi_mask.sum())))
        kp = _keypoints(class_id, poly, cx, cy)
        keypoints.append((kp, np.ones(len(kp), dtype=bool)))
        # Paint: fill colour with a shading ramp and an occasional rim.
        roi = canvas[y0:y1, x0:x1]
        under = roi[roi_mask][::4]
        fill = _pick_fill(rng, under)
        rh, rw = roi.shape[:2]
        sa = rng.uniform(0, 2 * math.pi)
        ramp = (np.cos(sa) * np.linspace(-1, 1, rw, dtype=np.float32)[None, :]
                + np.sin(sa) * np.linspace(-1, 1, rh, dtype=np.float32)[:, None])
        paint = fill[None, None, :] + rng.uniform(0, 22) * ramp[..., None]
        alpha = cov.astype(np.float32)[..., None] / 255.0
        roi[:] = roi * (1 - alpha) + paint * alpha
        if rng.random() < 0.3:
            rim = np.clip(fill * rng.uniform(0.4, 0.7), 0, 255)
            pts = np.round((poly - [x0, y0]) * _SCALE).astype(np.int32)
            cv2.polylines(roi, [pts], True, tuple(float(v) for v in rim), 1, cv2.LINE_AA, _SHIFT)
    objects: list[SceneObject] = []
    areas: list[int] = []
    for (class_id, vis, own), (kp, kp_vis) in zip(placed, keypoints, strict=True):
        cols, rows = np.flatnonzero(vis.any(axis=0)), np.flatnonzero(vis.any(axis=1))
        if len(cols) == 0:
            continue
        box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        objects.append(SceneObject(class_id, CLASS_NAMES[class_id], box, vis, kp, kp_vis))
        areas.append(own)
    return _degrade(rng, canvas), objects, areas


def scene_with_areas(
    seed: int, width: int | None = None, height: int | None = None, classification: bool = False
) -> tuple[Scene, list[int]]:
    """The scene plus each object's unoccluded pixel area (lets tests verify visibility)."""
    if classification:
        rng = np.random.default_rng([seed, 1])
        w, h = _pick_size(rng, width, height)
        clutter = int(rng.integers(0, 7))
        image, objects, areas = _render(rng, w, h, 1, (0.3, 0.7), (0.25, 0.25, 0.75, 0.75), clutter)
        label = objects[0].class_id if objects else None
        return Scene(image=image, objects=objects, label=label), areas
    rng = np.random.default_rng(seed)
    w, h = _pick_size(rng, width, height)
    n = int(rng.integers(1, 7))
    clutter = int(rng.integers(0, 4)) if rng.random() < 0.4 else 0
    image, objects, areas = _render(rng, w, h, n, (0.04, 0.40), (0.0, 0.0, 1.0, 1.0), clutter)
    return Scene(image=image, objects=objects, label=None), areas


def generate_scene(seed: int, width: int | None = None, height: int | None = None) -> Scene:
    """Detection/segmentation scene with 1-6 shapes, each at least 70 % visible."""
    return scene_with_areas(seed, width, height)[0]


def generate_classification_scene(seed: int, width: int | None = None, height: int | None = None) -> Scene:
    """One prominent shape (label = its class) among thin non-shape clutter."""
    return scene_with_areas(seed, width, height, classification=True)[0]


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a BGR image, as a camera or client would upload it."""
    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
