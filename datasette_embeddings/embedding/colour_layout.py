"""``colour-layout-v1``: a classic content-based image descriptor that needs no weights.

It finds near-duplicates (the same print photographed twice, a crop, a re-scan) and
images of similar colour and composition.  It knows nothing about *meaning*: a red
vase and a red sunset may be close, two portraits in different palettes may not.
Use a learned model (CLIP, SigLIP through an llm plugin) for "things that look like".

The vector joins three L2-normalised parts, weighted and L2-normalised again:

* a joint HSV colour histogram (hue x saturation x value, with one extra row of
  greys for unsaturated pixels, whose hue is noise), square-rooted so one dominant
  colour does not swamp the rest (the Hellinger trick);
* a coarse layout: the image squeezed to a small grid of CIE-L*a*b*-like colours,
  centred on the image mean so a different paper tint or exposure moves it little;
* an edge layout: gradient-magnitude energy per grid cell and four orientations,
  which tells a line engraving from a flat photograph of the same colours.

Everything is NumPy on a fixed-size thumbnail, so the output is deterministic for
the same decoded pixels.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

MODEL_ID = "colour-layout-v1"

WORK_SIZE = 96  # the thumbnail every measurement is taken on
HUE_BINS, SAT_BINS, VAL_BINS = 12, 3, 3
GREY_BINS = 6
GRID = 6
EDGE_GRID = 4
ORIENTATIONS = 4
WEIGHTS = {"histogram": 1.0, "layout": 1.0, "edges": 0.8}

DIMENSIONS = (
    HUE_BINS * SAT_BINS * VAL_BINS + GREY_BINS + GRID * GRID * 3 + EDGE_GRID * EDGE_GRID * ORIENTATIONS
)


def describe(image: Image.Image) -> np.ndarray:
    """The descriptor of an RGB image, as a unit-length float32 vector."""
    thumb = image.convert("RGB").resize((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    rgb = np.asarray(thumb, dtype=np.float64) / 255.0
    parts = [
        WEIGHTS["histogram"] * _unit(np.sqrt(_hsv_histogram(rgb))),
        WEIGHTS["layout"] * _unit(_colour_layout(rgb)),
        WEIGHTS["edges"] * _unit(_edge_layout(rgb)),
    ]
    return _unit(np.concatenate(parts)).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _hsv_histogram(rgb: np.ndarray) -> np.ndarray:
    top = rgb.max(axis=2)
    bottom = rgb.min(axis=2)
    chroma = top - bottom
    saturation = np.where(top > 0, chroma / np.maximum(top, 1e-12), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(chroma, 1e-12)
    hue = np.where(
        top == r, ((g - b) / safe) % 6.0, np.where(top == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    ) / 6.0
    grey = saturation < 0.12
    h = np.minimum((hue * HUE_BINS).astype(int), HUE_BINS - 1)
    s = np.minimum(((saturation - 0.12) / 0.88 * SAT_BINS).astype(int), SAT_BINS - 1).clip(0)
    v = np.minimum((top * VAL_BINS).astype(int), VAL_BINS - 1)
    colour_index = (h * SAT_BINS + s) * VAL_BINS + v
    colour = np.bincount(colour_index[~grey], minlength=HUE_BINS * SAT_BINS * VAL_BINS).astype(np.float64)
    grey_index = np.minimum((top[grey] * GREY_BINS).astype(int), GREY_BINS - 1)
    greys = np.bincount(grey_index, minlength=GREY_BINS).astype(np.float64)
    hist = np.concatenate([colour, greys])
    return hist / hist.sum()


def _lab_like(rgb: np.ndarray) -> np.ndarray:
    """sRGB -> CIE L*a*b* (D65), scaled to roughly unit range per channel."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness / 100.0, a / 100.0, b / 100.0], axis=-1)


def _cells(values: np.ndarray, grid: int) -> np.ndarray:
    """Mean of ``values`` (H x W x C) over a grid x grid partition."""
    h, w = values.shape[:2]
    cell_h, cell_w = h // grid, w // grid
    trimmed = values[: cell_h * grid, : cell_w * grid]
    return trimmed.reshape(grid, cell_h, grid, cell_w, -1).mean(axis=(1, 3))


def _colour_layout(rgb: np.ndarray) -> np.ndarray:
    lab = _cells(_lab_like(rgb), GRID)
    return (lab - lab.reshape(-1, 3).mean(axis=0)).ravel()


def _edge_layout(rgb: np.ndarray) -> np.ndarray:
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # orientation, not direction
    index = np.minimum((angle / np.pi * ORIENTATIONS).astype(int), ORIENTATIONS - 1)
    channels = np.zeros(grey.shape + (ORIENTATIONS,))
    np.put_along_axis(channels, index[..., None], magnitude[..., None], axis=2)
    return np.sqrt(_cells(channels, EDGE_GRID)).ravel()
