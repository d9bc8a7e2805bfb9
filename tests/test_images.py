import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from datasette_embeddings.embedding.images import ImageError, load_image


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize(
    "mode,colour",
    [("L", 200), ("1", 1), ("P", 3), ("CMYK", (0, 255, 255, 0)), ("RGB", (1, 2, 3)), ("I;16", 4000), ("I", 70000)],
)
def test_any_mode_becomes_rgb(mode, colour):
    fmt = "TIFF" if mode in ("CMYK", "I") else "PNG"
    image = load_image(encode(Image.new(mode, (5, 4), colour), fmt))
    assert image.mode == "RGB"
    assert image.size == (5, 4)


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white():
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    source = Image.fromarray(arr)
    assert source.mode == "I;16"
    image = load_image(encode(source))
    values = np.asarray(image)[..., 0]
    assert values[0, 0] == 0 and values[1, 1] == 255
    assert 0 < values[0, 1] < values[1, 0] < 255


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    rgb = load_image(encode(image))
    assert rgb.getpixel((0, 0)) == (255, 0, 0)
    assert rgb.getpixel((1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    upright = load_image(encode(image, "JPEG", exif=exif, quality=95))
    assert upright.size == (20, 40)
    r, g, b = upright.getpixel((10, 3))  # the left stripe is now at the top
    assert r > 200 and b < 60


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge canvas but carries almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_fast_before_decoding():
    bomb = png_header_only(12_000, 12_000)  # 144 million pixels declared
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"12000x12000 = 144,000,000 pixels; at most 40,000,000"):
        load_image(bomb, max_pixels=40_000_000)
    assert time.perf_counter() - started < 1.0


def test_pillows_own_bomb_error_is_a_clear_image_error():
    bomb = png_header_only(20_000, 20_000)  # 400 million pixels: Pillow itself refuses to open it
    with pytest.raises(ImageError, match="has too many pixels"):
        load_image(bomb, max_pixels=10**12)


def test_byte_limit():
    data = encode(Image.new("RGB", (64, 64), (9, 9, 9)))
    with pytest.raises(ImageError, match=rf"photo.png is {len(data):,} bytes; at most 100 bytes"):
        load_image(data, max_bytes=100, name="photo.png")


def test_without_a_configuration_the_limit_is_the_configurations_default():
    """One number for one limit: a library caller gets what a server's max_upload_bytes defaults to."""
    from datasette_embeddings.config import PluginConfig

    limit = PluginConfig().embedding.max_upload_bytes
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    padded = png.getvalue() + b"\0" * (limit + 1 - len(png.getvalue()))  # trailing bytes after IEND
    with pytest.raises(ImageError, match=f"at most {limit:,} bytes"):
        load_image(padded)
    assert load_image(padded[:limit]).size == (4, 4)


def test_truncated_image(data_dir):
    data = (data_dir / "images" / "SK-C-5.jpg").read_bytes()
    with pytest.raises(ImageError, match="damaged or truncated|cannot be read"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize("data,message", [(b"not an image at all", "is not an image"), (b"", "is empty")])
def test_not_an_image(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_text_is_refused():
    with pytest.raises(ImageError, match="must be image bytes, got str"):
        load_image("/etc/passwd")


def test_a_small_canvas_with_missing_pixel_data_is_truncated():
    with pytest.raises(ImageError, match="is damaged or truncated"):
        load_image(png_header_only(100, 100), name="scan.png")
