"""An upload's memory does not scale with its pixel count beyond the stated bound (issue 12, item 4).

A 170 KB PNG declaring 6,320 x 6,320 RGBA pixels (40 MP, under the pixel limit) raised
a server's peak by 0.8 GB per request, and six in parallel reached 5 GB.  Now a decode
costs at most 4 bytes a pixel plus a small image, and at most two decodes run at once
(``max_concurrent_decodes``, default 2).  Peaks are measured in a fresh process.
"""
import struct
import subprocess
import sys
import zlib

import pytest

from datasette_embeddings.embedding import images

SIDE = 6320  # 39.9 MP: just under the default 40 MP limit

PROBE = r"""
import io, resource, sys, threading
from PIL import Image
from datasette_embeddings.embedding import runtime

data = open(sys.argv[1], "rb").read()
parallel = int(sys.argv[2])
warm = io.BytesIO()
Image.new("RGBA", (64, 64), (1, 2, 3, 4)).save(warm, "PNG")
runtime.prepare_image(warm.getvalue())  # imports and code paths, outside the measurement
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sizes = []
threads = [threading.Thread(target=lambda: sizes.append(Image.open(io.BytesIO(runtime.prepare_image(data))).size))
           for _ in range(parallel)]
for t in threads:
    t.start()
for t in threads:
    t.join()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, max(max(s) for s in sizes))
"""


def large_pixel_png(path, side: int = SIDE) -> None:
    """A PNG of side x side RGBA pixels, written row by row (a few hundred KB; never held decoded)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    squeeze = zlib.compressobj(9)
    row = b"\0" + bytes([200, 120, 40, 128]) * side
    body = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)))
        out.write(chunk(b"IDAT", body))
        out.write(chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def upload(tmp_path_factory):
    path = tmp_path_factory.mktemp("pixels") / "large.png"
    large_pixel_png(path)
    assert path.stat().st_size < 1_000_000
    return path


def peak_mb(path, parallel: int) -> tuple[float, int]:
    result = subprocess.run([sys.executable, "-c", PROBE, str(path), str(parallel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    grew, side = result.stdout.split()
    return float(grew), int(side)


# the stated bound: one canvas at 4 bytes a pixel (160 MB at 40 MP) and a small image per decode
CANVAS_MB = SIDE * SIDE * 4 / 2**20


def test_one_large_pixel_upload_costs_about_one_canvas(upload):
    grew, side = peak_mb(upload, 1)
    assert side == 1024  # what models are given
    assert grew < CANVAS_MB + 120, f"peak grew {grew:.0f} MB"  # was 800 MB


def test_six_in_parallel_cost_what_two_do(upload):
    grew, _ = peak_mb(upload, 6)
    assert grew < images.DEFAULT_CONCURRENT_DECODES * CANVAS_MB + 200, f"peak grew {grew:.0f} MB"  # was 5 GB


def test_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(out, "JPEG", quality=50)
    image = images.load_image(out.getvalue(), max_side=1024)
    assert max(image.size) == 1024 and image.mode == "RGB"


def test_shrinking_keeps_the_exif_orientation():
    import io

    from PIL import Image

    source = Image.new("RGB", (3000, 1000), (200, 10, 10))
    exif = source.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = io.BytesIO()
    source.save(out, "PNG", exif=exif.tobytes())
    image = images.load_image(out.getvalue(), max_side=1024)
    assert image.size[1] == 1024 and image.size[0] < image.size[1]


def test_shrinking_composites_transparency_on_white():
    import io

    import numpy as np
    from PIL import Image

    source = Image.new("P", (3000, 2500), 0)
    source.putpalette([0, 0, 0] * 256)
    out = io.BytesIO()
    source.save(out, "PNG", transparency=0)
    image = images.load_image(out.getvalue(), max_side=1024)
    assert image.mode == "RGB" and max(image.size) == 1024
    assert (np.asarray(image) == 255).all()
