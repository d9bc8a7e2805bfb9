"""Turning untrusted image bytes into a safe RGB Pillow image.

Every image that reaches a model (an upload in the search page, a BLOB passed to
``embed_image`` in SQL, a file read by ``embed``) passes through
:func:`load_image` first, so the limits are enforced in exactly one place:
a byte-size limit before decoding, a pixel-count limit before pixels are
decoded (a small file can declare a gigapixel canvas), and a full decode so a
truncated file fails here with a clear message instead of inside a model.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_IMAGE_BYTES = 10_000_000
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


class ImageError(ValueError):
    """The bytes are not an image we accept; the message says why."""


def load_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    name: str = "image",
) -> Image.Image:
    """Decode ``data`` into an RGB image with its EXIF orientation applied.

    ``name`` (a file name, or "image") is put in front of every error message so a
    batch run can say which file was bad.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"{name} must be image bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(f"{name} is {len(data):,} bytes; at most {max_bytes:,} bytes are allowed")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and at twice its own limit raises) on huge canvases; we check ourselves below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image Pillow can read (JPEG, PNG, GIF, WebP, TIFF, ...)") from None
    except Image.DecompressionBombError as ex:
        raise ImageError(f"{name} has too many pixels ({ex})") from None
    except Exception as ex:  # Pillow raises many types for corrupt headers
        raise ImageError(f"{name} cannot be read as an image ({ex})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: is {width}x{height} = {width * height:,} pixels; at most {max_pixels:,} are allowed"
        )
    try:
        image.load()  # decode now: truncated data fails here, not inside a model
        image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            image = _to_rgb(image)
    except Exception as ex:
        raise ImageError(f"{name} is damaged or truncated ({ex})") from None
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on white (what a viewer would see), not on black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of letting convert() clip to white
        arr = np.asarray(image, dtype=np.float64)
        top = float(arr.max()) or 1.0
        return Image.fromarray((arr * (255.0 / top)).astype("uint8"), "L").convert("RGB")
    return image.convert("RGB")
