"""Preprocessing driven by the model's Roboflow PREPROCESSING metadata, and the geometry to undo it.

Order as in Roboflow's stacks: (EXIF orientation at decode) → static crop → contrast → grayscale → resize
(stretch, letterbox, letterbox with reflected edges, or a centre crop) → colour order, NCHW float32, scaled
and normalised as the model's family (or its metadata) says. Each image's `Geometry` records exactly what was
done so boxes, keypoints and polygons map back to original-image pixels.

RF-DETR (`InputSpec.via_version_size`) resizes as Roboflow's default stack does for it
(inference_models/models/rfdetr/pre_processing.py): a non-stretch resize is made (OpenCV, on uint8, with the
padding value) at the dataset version's resize size, then that frame is stretched with Pillow to the network
input; without a dataset-version size, every mode is a plain Pillow stretch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from edge_daemon.images.decode import DecodedImage, DecodeTarget

log = logging.getLogger(__name__)

ResizeMode = Literal["stretch", "letterbox", "letterbox-reflect", "center-crop"]
_PAD_COLOURS = {"black": 0, "white": 255, "grey": 114, "gray": 114}


@dataclass(frozen=True)
class InputSpec:
    """How uint8 pixels become network input: colour order, then (x * scale - mean) / std per channel."""

    colour: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize_filter: str = "opencv"  # or "pillow": Pillow's bilinear, antialiased when shrinking (RF-DETR)
    # RF-DETR: a non-stretch resize is made at the dataset version's size, then stretched to the input (see the
    # module docstring); letterbox-reflect-edges pads as a letterbox and fit-longer-edge stretches, as there.
    via_version_size: bool = False

    def overridden(self, **changes: object) -> InputSpec:
        """This spec with the given fields replaced, where they are not None (metadata that declares them)."""
        return replace(self, **{name: value for name, value in changes.items() if value is not None})

    def normalisation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-channel float32 mean and std (shaped for NCHW), or None when there are none."""
        if self.mean is None and self.std is None:
            return None
        mean = np.asarray(self.mean or (0.0, 0.0, 0.0), np.float32)
        std = np.asarray(self.std or (1.0, 1.0, 1.0), np.float32)
        return mean.reshape(3, 1, 1), std.reshape(3, 1, 1)


@dataclass(frozen=True)
class PreprocSwitches:
    """Per-request `disable_preproc_*` flags."""

    disable_auto_orient: bool = False
    disable_contrast: bool = False
    disable_grayscale: bool = False
    disable_static_crop: bool = False


@dataclass(frozen=True)
class Geometry:
    """How network-input pixels relate to the original image."""

    original_width: int
    original_height: int
    crop_x: int
    crop_y: int
    crop_width: int
    crop_height: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    decode_ratio_x: float = 1.0  # original pixels per decoded pixel (a reduced JPEG decode makes it > 1)
    decode_ratio_y: float = 1.0
    # The image's size inside the network input (letterbox: truncated, so it may fall short of crop * scale);
    # 0: crop * scale.
    resized_width: int = 0
    resized_height: int = 0
    # RF-DETR's dataset-version frame: the network input is this frame stretched, and every field above is in
    # the frame's pixels (so are boxes, once a decoder scales its 0..1 outputs by `frame_size`). 0: none.
    frame_width: int = 0
    frame_height: int = 0

    def frame_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) the fields above are measured in: the dataset-version frame, else the input."""
        return (self.frame_width, self.frame_height) if self.frame_width else input_size

    def resized_size(self) -> tuple[int, int]:
        """How many network pixels (columns, rows) the image itself covers."""
        return (self.resized_width or round(self.crop_width * self.scale_x),
                self.resized_height or round(self.crop_height * self.scale_y))

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map Nx4 xyxy network boxes to original pixels: undo resize, clip to the crop, add its offset, undo
        any reduced decode, round to whole pixels (as Roboflow)."""
        out = np.empty_like(boxes, dtype=np.float64)
        out[:, 0::2] = np.clip((boxes[:, 0::2] - self.pad_x) / self.scale_x, 0, self.crop_width)
        out[:, 1::2] = np.clip((boxes[:, 1::2] - self.pad_y) / self.scale_y, 0, self.crop_height)
        out[:, 0::2] = (out[:, 0::2] + self.crop_x) * self.decode_ratio_x
        out[:, 1::2] = (out[:, 1::2] + self.crop_y) * self.decode_ratio_y
        np.clip(out[:, 0::2], 0, self.original_width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.original_height, out=out[:, 1::2])
        return np.round(out)

    def points_to_original(self, points: np.ndarray) -> np.ndarray:
        """Map Nx2 network points (x, y) to original pixels as box corners are, rounded but not clipped:
        Roboflow's default stack clips boxes only, so a keypoint placed past the image edge stays there."""
        out = np.empty_like(points, dtype=np.float64)
        out[:, 0] = ((points[:, 0] - self.pad_x) / self.scale_x + self.crop_x) * self.decode_ratio_x
        out[:, 1] = ((points[:, 1] - self.pad_y) / self.scale_y + self.crop_y) * self.decode_ratio_y
        return np.round(out)

    def network_to_original(self, input_size: tuple[int, int]) -> np.ndarray:
        """The 2x3 affine map from original pixels to network-input pixels (for drawing a network image back at
        the original size; the inverse of boxes_to_original without its clipping and rounding)."""
        width, height = self.frame_size(input_size)
        stretch_x, stretch_y = input_size[0] / width, input_size[1] / height  # RF-DETR's frame to the input
        ax = self.scale_x / self.decode_ratio_x * stretch_x
        ay = self.scale_y / self.decode_ratio_y * stretch_y
        bx = (self.pad_x - self.crop_x * self.scale_x) * stretch_x
        by = (self.pad_y - self.crop_y * self.scale_y) * stretch_y
        return np.array([[ax, 0.0, bx], [0.0, ay, by]])

    def network_valid_area(self) -> tuple[float, float, float, float]:
        """The unpadded image area in network pixels (x1, y1, x2, y2): letterbox bars are never content."""
        width, height = self.resized_size()
        return (self.pad_x, self.pad_y, self.pad_x + width, self.pad_y + height)

    def original_pixels_per_network_px(self) -> float:
        """How many original pixels one network pixel spans (the finer axis; < 1 when the image was enlarged)."""
        return min(self.decode_ratio_x / self.scale_x, self.decode_ratio_y / self.scale_y)

    def points_to_pixel_centres(self, points: np.ndarray) -> np.ndarray:
        """Map Nx2 network-input points (x, y) to original pixel indices, as boxes are mapped (pixel (c, r)
        has its centre at c + 0.5, r + 0.5 in continuous coordinates), clipped to the image."""
        out = np.empty_like(points, dtype=np.float64)
        out[:, 0] = (np.clip((points[:, 0] - self.pad_x) / self.scale_x, 0, self.crop_width) + self.crop_x) \
            * self.decode_ratio_x - 0.5
        out[:, 1] = (np.clip((points[:, 1] - self.pad_y) / self.scale_y, 0, self.crop_height) + self.crop_y) \
            * self.decode_ratio_y - 0.5
        np.clip(out[:, 0], 0, self.original_width - 1, out=out[:, 0])
        np.clip(out[:, 1], 0, self.original_height - 1, out=out[:, 1])
        return out


def _enabled(step: Any) -> bool:
    return isinstance(step, dict) and step.get("enabled", True) not in (False, "false", "False")


def version_size(preprocessing: dict[str, Any], input_size: tuple[int, int]) -> tuple[int, int] | None:
    """The dataset version's resize (width, height). A package says it in `network_input.
    dataset_version_resize_dimensions` (kept as resize `version_size`; absent: None). Classic PREPROCESSING's
    resize width x height is the version's resize itself; Roboflow's classic stack makes a non-stretch mode
    there first only when it is not square (fact sheet §3.1), else straight at the network input."""
    resize = preprocessing.get("resize") or {}
    if "version_size" in resize:
        size = resize["version_size"]
        return (int(size[0]), int(size[1])) if size else None
    try:
        width, height = int(resize["width"]), int(resize["height"])
    except (KeyError, TypeError, ValueError):
        return input_size
    return (width, height) if width != height else input_size


def resize_settings(preprocessing: dict[str, Any]) -> tuple[ResizeMode, int]:
    """Resize mode and pad value from a Roboflow resize `format` string (a package's `padding_value` wins)."""
    resize = preprocessing.get("resize")
    if not _enabled(resize):
        return "stretch", 0
    text = str(resize.get("format", "Stretch to")).lower()
    declared_pad = resize.get("padding_value")
    if text.startswith("stretch"):
        return "stretch", 0
    if text.startswith("center crop"):
        return "center-crop", int(declared_pad or 0)
    if "(reflect edges)" in text:  # Roboflow's default stack reflects; its classic stack padded black
        return "letterbox-reflect", 0
    for colour, value in _PAD_COLOURS.items():
        if f"({colour} edges)" in text:
            return "letterbox", int(declared_pad) if declared_pad is not None else value
    if text.startswith(("fit", "fill")):
        log.warning("resize format %r is served as a black-edge letterbox", resize.get("format"))
        return "letterbox", 0
    log.warning("unknown resize format %r is served as stretch", resize.get("format"))
    return "stretch", 0


class Preprocessor:
    """Turns decoded BGR images into the network's input tensor for one model."""

    def __init__(self, preprocessing: dict[str, Any], input_width: int, input_height: int,
                 spec: InputSpec | None = None):
        self.preprocessing = preprocessing
        self.input_width = input_width
        self.input_height = input_height
        self.mode, self.pad_value = resize_settings(preprocessing)
        self.spec = spec or InputSpec()
        self.frame: tuple[int, int] | None = None  # RF-DETR: the non-stretch resize is made at this size
        if self.spec.via_version_size:
            self._plan_via_version_size()
        # Divide, then subtract and divide, in float32, as Roboflow's default stack does (x / 255, then
        # torchvision's normalize): the network sees bit-identical input, so near-tied scores rank alike.
        self._divisor = np.float32(1.0 / self.spec.scale)
        self._normalisation = self.spec.normalisation()

    def _plan_via_version_size(self) -> None:
        """RF-DETR's resize plan (Roboflow's default stack): fit-longer-edge, or no dataset-version size, is a
        plain stretch; otherwise the mode runs at the version's size, letterbox-reflect-edges padding as a
        letterbox and a centre crop padding with 0, whatever the declared value."""
        resize = self.preprocessing.get("resize") or {}
        size = version_size(self.preprocessing, (self.input_width, self.input_height))
        if self.mode == "stretch" or size is None or resize.get("resize_mode") == "fit-longer-edge":
            self.mode, self.pad_value = "stretch", 0
            return
        if self.mode == "letterbox-reflect":
            self.mode, self.pad_value = "letterbox", int(resize.get("padding_value") or 0)
        elif self.mode == "center-crop":
            self.pad_value = 0
        self.frame = size

    def auto_orient(self, switches: PreprocSwitches) -> bool:
        """EXIF orientation applies when the model's metadata has an auto-orient step (as Roboflow does)."""
        return "auto-orient" in self.preprocessing and not switches.disable_auto_orient

    def _static_crop(self, image: np.ndarray) -> tuple[np.ndarray, int, int]:
        step = self.preprocessing.get("static-crop")
        height, width = image.shape[:2]
        try:
            x0 = int(float(step["x_min"]) / 100 * width)
            y0 = int(float(step["y_min"]) / 100 * height)
            x1 = int(float(step["x_max"]) / 100 * width)
            y1 = int(float(step["y_max"]) / 100 * height)
        except (KeyError, TypeError, ValueError):
            log.warning("static-crop metadata is malformed; skipping the crop")
            return image, 0, 0
        x0, y0 = max(0, min(x0, width - 1)), max(0, min(y0, height - 1))
        x1, y1 = max(x0 + 1, min(x1, width)), max(y0 + 1, min(y1, height))
        return image[y0:y1, x0:x1], x0, y0

    def _contrast(self, image: np.ndarray) -> np.ndarray:
        kind = str(self.preprocessing["contrast"].get("type", "")).lower()
        if "stretch" in kind:
            low, high = np.percentile(image, (2, 98))
            if high <= low:
                return image
            stretched = (image.astype(np.float32) - low) * (255.0 / (high - low))
            return np.clip(stretched, 0, 255).astype(np.uint8)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if "adaptive" in kind:
            # skimage's clip_limit=0.03 (a fraction of the tile) is about 0.03*256 in OpenCV's units.
            gray = cv2.createCLAHE(clipLimit=0.03 * 256, tileGridSize=(8, 8)).apply(gray)
        elif "histogram" in kind:
            gray = cv2.equalizeHist(gray)
        else:
            return image
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)

    def decode_target(self, switches: PreprocSwitches) -> DecodeTarget | None:
        """How small a JPEG may be decoded for this model; None where a static crop needs full detail."""
        if _enabled(self.preprocessing.get("static-crop")) and not switches.disable_static_crop:
            return None
        if self.mode == "center-crop":  # crops pixels out of the full-size image: never decode smaller
            return None
        width, height = self.frame or (self.input_width, self.input_height)
        return DecodeTarget(width, height, self.mode != "stretch")

    def prepare(self, decoded: DecodedImage | np.ndarray, switches: PreprocSwitches) -> tuple[np.ndarray, Geometry]:
        """Return the HxWx3 BGR uint8 network-size image and its geometry."""
        image, geometry = self._resized(decoded, switches)
        if self.frame is None:
            return image, geometry
        # RF-DETR: the frame made at the dataset version's size, stretched to the network input.
        stretched = self._stretch(image, self.input_width, self.input_height)
        return stretched, replace(geometry, frame_width=self.frame[0], frame_height=self.frame[1])

    def _resized(self, decoded: DecodedImage | np.ndarray, switches: PreprocSwitches) -> tuple[np.ndarray, Geometry]:
        """The steps up to the resize, and the resize to the network input (or to RF-DETR's frame)."""
        if isinstance(decoded, np.ndarray):
            decoded = DecodedImage.full(decoded)
        image = decoded.pixels
        original_height, original_width = decoded.original_height, decoded.original_width
        ratio_x, ratio_y = original_width / image.shape[1], original_height / image.shape[0]
        crop_x = crop_y = 0
        if _enabled(self.preprocessing.get("static-crop")) and not switches.disable_static_crop:
            image, crop_x, crop_y = self._static_crop(image)
        if _enabled(self.preprocessing.get("contrast")) and not switches.disable_contrast:
            image = self._contrast(image)
        if _enabled(self.preprocessing.get("grayscale")) and not switches.disable_grayscale:
            image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        height, width = image.shape[:2]
        target_w, target_h = self.frame or (self.input_width, self.input_height)
        if self.mode == "stretch":
            resized = self._stretch(image, target_w, target_h)
            geometry = Geometry(original_width, original_height, crop_x, crop_y, width, height,
                                target_w / width, target_h / height, 0, 0, ratio_x, ratio_y)
            return resized, geometry
        if self.mode == "center-crop":
            return self._centre_crop(image, original_width, original_height, crop_x, crop_y, ratio_x, ratio_y)
        scale = min(target_w / width, target_h / height)
        # Sizes truncated exactly as Roboflow's default stack does (451x300 into 320 gives 212 rows, not 213;
        # and where width * (320 / width) comes out as 319.99..., 319 columns and one of padding).
        new_w = max(1, min(target_w, int(width * scale)))
        new_h = max(1, min(target_h, int(height * scale)))
        pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if self.mode == "letterbox-reflect":
            canvas = cv2.copyMakeBorder(resized, pad_y, target_h - new_h - pad_y, pad_x, target_w - new_w - pad_x,
                                        cv2.BORDER_REFLECT_101 if min(new_w, new_h) > 1 else cv2.BORDER_REPLICATE)
        else:
            canvas = np.full((target_h, target_w, 3), self.pad_value, dtype=np.uint8)
            canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
        # One scale for both axes (not new_w / width, new_h / height), as Roboflow maps boxes back: with a
        # truncated side the two differ, by up to 2 px at the far edge of a 451x300 image.
        geometry = Geometry(original_width, original_height, crop_x, crop_y, width, height,
                            scale, scale, pad_x, pad_y, ratio_x, ratio_y, new_w, new_h)
        return canvas, geometry

    def _stretch(self, image: np.ndarray, width: int, height: int) -> np.ndarray:
        if self.spec.resize_filter == "pillow" and image.shape[:2] != (height, width):
            # Per channel, so channel order does not matter; Pillow is exactly what the model was trained with.
            return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.BILINEAR))
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)

    def _centre_crop(self, image: np.ndarray, original_width: int, original_height: int, crop_x: int, crop_y: int,
                     ratio_x: float, ratio_y: float) -> tuple[np.ndarray, Geometry]:
        """The network-size window at the centre of the image, no resize (padded where the image is smaller)."""
        height, width = image.shape[:2]
        target_w, target_h = self.frame or (self.input_width, self.input_height)
        # Negative: the image is smaller, and sits floor(slack / 2) in (as Roboflow's default stack centres it).
        offset_x = (width - target_w) // 2 if width >= target_w else -((target_w - width) // 2)
        offset_y = (height - target_h) // 2 if height >= target_h else -((target_h - height) // 2)
        canvas = np.full((target_h, target_w, 3), self.pad_value, dtype=np.uint8)
        src_x, src_y = max(0, offset_x), max(0, offset_y)
        dst_x, dst_y = max(0, -offset_x), max(0, -offset_y)
        copy_w, copy_h = min(width - src_x, target_w - dst_x), min(height - src_y, target_h - dst_y)
        canvas[dst_y:dst_y + copy_h, dst_x:dst_x + copy_w] = image[src_y:src_y + copy_h, src_x:src_x + copy_w]
        return canvas, Geometry(original_width, original_height, crop_x, crop_y, width, height, 1.0, 1.0,
                                -offset_x, -offset_y, ratio_x, ratio_y)

    def to_tensor(self, images: list[np.ndarray]) -> np.ndarray:
        """Stack network-size BGR images into one NCHW float32 RGB batch, normalised.

        Channel swap in OpenCV, then one converting copy per image into the preallocated batch: measured 3-4x
        faster than `cv2.dnn.blobFromImages` at 640x640 (bench/decode_speed.py). Then x / 255 (and - mean, / std)
        in place, in that order, as Roboflow's default stack does, so the network sees bit-identical input; the
        divisions cost about 0.5 ms more than a multiply-add at 640x640 (measured).
        """
        height, width = images[0].shape[:2]
        batch = np.empty((len(images), 3, height, width), dtype=np.float32)
        swap = self.spec.colour == "rgb"
        for index, image in enumerate(images):
            batch[index] = (cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if swap else image).transpose(2, 0, 1)
        batch /= self._divisor
        if self._normalisation is not None:
            mean, std = self._normalisation
            batch -= mean
            batch /= std
        return batch
