"""Turning untrusted image bytes into a safe RGB Pillow image.

Every image that reaches a model (an upload in the search page, a BLOB passed to
``embed_image`` in SQL, a file read by ``embed``) passes through
:func:`load_image` first, so the limits are enforced in exactly one place:
a byte-size limit before decoding, a pixel-count limit before pixels are
decoded (a small file can declare a gigapixel canvas), and a full decode so a
truncated file fails here with a clear message instead of inside a model.

Memory: a 170 KB PNG can declare 6,320 x 6,320 RGBA pixels (40 MP, under the
pixel limit); decoded, composited on white and converted, it cost 0.8 GB per
request and six in parallel 5 GB.  So, with ``max_side`` (what models are given):

* JPEG is decoded at a reduced scale (``draft``: 1/2, 1/4 or 1/8 in the decoder),
  never above twice ``max_side``;
* other formats are decoded once at full size (4 bytes a pixel at most: 160 MB at
  the default 40 MP limit) and shrunk to ``max_side`` *before* any conversion, a
  strip of rows at a time (:func:`_shrink`): Pillow's own resize of an RGBA image
  first copies the whole canvas to premultiplied alpha, which doubled the cost;
* at most ``max_concurrent_decodes`` decodes (configuration, default 2) run at once
  in the process (the others wait their turn), and freed decode memory is handed
  back to the system.

Per upload that bounds the memory to ``4 x max_image_pixels`` bytes plus a
``max_side`` image; per process to ``max_concurrent_decodes`` times that.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import io
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_UPLOAD_BYTES

#: the configuration's defaults (``max_upload_bytes``, ``max_image_pixels``), so a caller without
#: a configuration gets the limits a server does, not second numbers
DEFAULT_MAX_IMAGE_BYTES = DEFAULT_MAX_UPLOAD_BYTES


#: decodes running at once in the process unless the caller says otherwise (the configuration's
#: ``max_concurrent_decodes``); more uploads wait instead of each holding a canvas
DEFAULT_CONCURRENT_DECODES = 2
#: a decode larger than this (bytes) is followed by ``malloc_trim``: glibc otherwise keeps the freed canvas
TRIM_AFTER_BYTES = 32 * 1024 * 1024

_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def decode_slots(limit: int) -> threading.BoundedSemaphore:
    """The process's semaphore for ``limit`` decodes at once (one per limit, shared by every caller)."""
    with _slots_lock:
        slots = _slots.get(limit)
        if slots is None:
            slots = _slots[limit] = threading.BoundedSemaphore(limit)
        return slots


def _libc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to hand back
        return None


_malloc_trim = _libc_trim()


class ImageError(ValueError):
    """The bytes are not an image we accept; the message says why."""


def load_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    name: str = "image",
    max_side: int | None = None,
    max_concurrent_decodes: int = DEFAULT_CONCURRENT_DECODES,
) -> Image.Image:
    """Decode ``data`` into an RGB image with its EXIF orientation applied.

    ``name`` (a file name, or "image") is put in front of every error message so a
    batch run can say which file was bad.  With ``max_side`` the result is at most
    that many pixels on its long side, decoded at a reduced scale where the format
    allows (see the module docstring for the memory this bounds).  At most
    ``max_concurrent_decodes`` calls decode at once; others wait for a slot.
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
    canvas = width * height * max(len(image.getbands()), 1)
    try:
        with decode_slots(max_concurrent_decodes):
            if max_side is not None and image.format == "JPEG":
                image.draft(image.mode, (2 * max_side, 2 * max_side))  # DCT scaling: never below 2 x max_side
            image.load()  # decode now: truncated data fails here, not inside a model
            if max_side is not None and max(image.size) > max_side:
                image = _shrink(image, max_side)  # before any conversion copies the canvas
            image = ImageOps.exif_transpose(image)
            if image.mode != "RGB":
                image = _to_rgb(image)
    except Exception as ex:
        raise ImageError(f"{name} is damaged or truncated ({ex})") from None
    finally:
        if canvas > TRIM_AFTER_BYTES and _malloc_trim is not None:
            _malloc_trim(0)
    return image


#: modes a strip can be reduced in as it is; others are converted strip by strip first
_REDUCIBLE = {"RGB", "RGBA", "L", "LA"}
#: high bit-depth modes are resized whole (no premultiplied copy) and scaled to 8 bits afterwards
_WIDE = {"I", "I;16", "I;16B", "I;16L", "F"}
STRIP_ROWS = 256


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """The image at most ``max_side`` on its long side, never copying the full canvas.

    An integer box reduction runs over strips of rows (each strip is copied,
    converted and reduced on its own), then an antialiased resize of the small
    result gives the exact size.  Metadata (EXIF orientation) is carried over.
    """
    if image.mode in _WIDE:
        image.thumbnail((max_side, max_side))
        return image
    width, height = image.size
    factor = max(width, height) // max_side
    if factor >= 2:
        step = factor * max(1, STRIP_ROWS // factor)
        out: Image.Image | None = None
        for top in range(0, height, step):
            strip = image.crop((0, top, width, min(top + step, height)))
            if strip.mode not in _REDUCIBLE:
                transparent = strip.mode in ("PA", "RGBa") or (strip.mode == "P" and "transparency" in image.info)
                strip = strip.convert("RGBA" if transparent else "RGB")
            small = strip.reduce(factor)
            if out is None:
                out = Image.new(small.mode, (-(-width // factor), -(-height // factor)))
            out.paste(small, (0, top // factor))
        assert out is not None
        out.info = dict(image.info)
        image = out
    image.thumbnail((max_side, max_side))
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
