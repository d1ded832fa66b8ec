"""Where every request image is decoded: raw bytes, base64 text, URLs and numpy payloads → BGR uint8.

Parsing the request only records *what* the image is (`ImageSource`); decoding waits until the model is
known, because the model's preprocessing decides whether EXIF orientation is applied.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from edge_daemon.errors import BadRequest, PayloadTooLarge
from edge_daemon.images.header import image_size
from edge_daemon.images.safe_numpy import NPY_MAGIC, array_to_bgr, load_array
from edge_daemon.images.url_fetch import UrlPolicy, fetch_url

SourceKind = Literal["bytes", "base64", "url", "numpy"]
IMAGE_TYPES = ("base64", "url", "numpy")

_DATA_URI = re.compile(rb"^\s*data:[^,;]*(;[^,]*)?;base64,", re.IGNORECASE)
_MAGIC_NUMBERS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class ImageSource:
    """An image as the request named it, not yet decoded. `data` is bytes, or the URL for kind 'url'."""

    kind: SourceKind
    data: bytes | str

    def __repr__(self) -> str:  # never dump image bytes into logs
        size = len(self.data)
        return f"ImageSource(kind={self.kind!r}, {size} {'chars' if isinstance(self.data, str) else 'bytes'})"


@dataclass(frozen=True)
class DecodedImage:
    """Decoded BGR pixels plus the true size of the image as sent (the pixels may be a reduced decode)."""

    pixels: np.ndarray
    original_width: int
    original_height: int

    @classmethod
    def full(cls, pixels: np.ndarray) -> DecodedImage:
        return cls(pixels, pixels.shape[1], pixels.shape[0])


@dataclass(frozen=True)
class DecodeTarget:
    """The network input an image will be resized to; lets a large JPEG be decoded at 1/2, 1/4 or 1/8 scale
    (DCT-domain scaling, far cheaper than a full decode) without dropping below the resolution used."""

    width: int
    height: int
    letterbox: bool

    def reduction(self, width: int, height: int) -> int:
        scale = (min if self.letterbox else max)(self.width / width, self.height / height)
        for factor in (8, 4, 2):
            if factor * scale <= 1.0:
                return factor
        return 1


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


@dataclass(frozen=True)
class DecodeOptions:
    allow_numpy: bool
    allow_url: bool
    url_policy: UrlPolicy
    max_pixels: int = 64 * 1024 * 1024


def looks_like_encoded_image(payload: bytes) -> bool:
    """True for the leading bytes of common image files (and .npy), i.e. a body that is not base64 text."""
    if payload.startswith(_MAGIC_NUMBERS) or payload.startswith(NPY_MAGIC):
        return True
    return payload[:4] == b"RIFF" and payload[8:12] == b"WEBP"


def decode_base64(text: bytes | str) -> bytes:
    """Decode base64 text as clients send it: optional data-URI prefix, line breaks, missing padding, url-safe."""
    raw = text.encode("ascii", "ignore") if isinstance(text, str) else text
    prefix = _DATA_URI.match(raw)
    if prefix:
        raw = raw[prefix.end():]
    raw = re.sub(rb"\s+", b"", raw.strip(b"\"'"))
    if not raw:
        raise BadRequest("image payload is empty")
    raw += b"=" * (-len(raw) % 4)
    altchars = b"-_" if (b"-" in raw or b"_" in raw) else None
    try:
        return base64.b64decode(raw, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image payload is neither an image file nor valid base64 text") from None


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse empty images and images over the pixel budget (decompression bombs), naming the limit."""
    if width <= 0 or height <= 0:
        raise BadRequest(f"image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"image is {width}x{height} = {width * height} pixels, over the {max_pixels}-pixel "
                              f"limit (EDGE_DAEMON_MAX_IMAGE_PIXELS)")


def decode_image_bytes(payload: bytes, auto_orient: bool = True, max_pixels: int = 64 * 1024 * 1024,
                       target: DecodeTarget | None = None) -> DecodedImage:
    """Decode an encoded image file; EXIF orientation is honoured only when `auto_orient` is set.

    The header is checked against `max_pixels` before any pixel is decoded. With a `target`, a JPEG much
    larger than the network input is decoded at reduced scale; the true size is still reported.
    """
    if not payload:
        raise BadRequest("image payload is empty")
    declared = image_size(payload)
    if declared is not None:
        check_pixels(*declared, max_pixels)
    orientation = 0 if auto_orient else cv2.IMREAD_IGNORE_ORIENTATION
    factor = target.reduction(*declared) if target and declared and payload.startswith(b"\xff\xd8") else 1
    if factor > 1 and declared is not None:
        image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), _REDUCED_FLAGS[factor] | orientation)
        if image is not None:
            width, height = declared
            reduced = (math.ceil(width / factor), math.ceil(height / factor))
            if (image.shape[1], image.shape[0]) == reduced:
                return DecodedImage(image, width, height)
            if (image.shape[0], image.shape[1]) == reduced:  # EXIF rotated it by 90 degrees
                return DecodedImage(image, height, width)
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR | orientation)
    if image is None:
        raise BadRequest("could not decode the image: not a supported image file (JPEG, PNG, BMP, WebP, TIFF)")
    return DecodedImage.full(image)


def decode_source(source: ImageSource, options: DecodeOptions, auto_orient: bool = True,
                  target: DecodeTarget | None = None) -> DecodedImage:
    """Turn one `ImageSource` into decoded BGR uint8 pixels, or raise a 4xx `ApiError`."""
    if source.kind == "url":
        if not options.allow_url:
            raise BadRequest("URL image input is disabled on this server")
        payload = fetch_url(str(source.data), options.url_policy)
        return decode_image_bytes(payload, auto_orient, options.max_pixels, target)
    payload = source.data if isinstance(source.data, bytes) else source.data.encode("ascii", "ignore")
    if source.kind == "numpy":
        if not options.allow_numpy:
            raise BadRequest("numpy image input is disabled on this server (enable EDGE_DAEMON_ALLOW_NUMPY_INPUT)")
        if not payload.startswith(NPY_MAGIC) and not payload.startswith(b"\x80"):
            payload = decode_base64(payload)
        image = array_to_bgr(load_array(payload))
        check_pixels(image.shape[1], image.shape[0], options.max_pixels)
        return DecodedImage.full(image)
    if source.kind == "base64":
        payload = decode_base64(payload)
    return decode_image_bytes(payload, auto_orient, options.max_pixels, target)
