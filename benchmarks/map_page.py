"""The map page at scale: time to first paint and to every point drawn in Chromium, bytes sent, redraw time.

    OPENBLAS_NUM_THREADS=1 python benchmarks/map_page.py               # 100,000 points
    OPENBLAS_NUM_THREADS=1 python benchmarks/map_page.py --n 1000000   # a million: loads and draws?

Builds a real database of clustered vectors through the store, runs the real
``map`` work (PCA + k-means, stored), serves it with a real ``datasette`` and opens
``/<db>/-/map`` in headless Chromium (/usr/bin/chromium).  Prints the build time,
first contentful paint, the time until the first page of points and until all
points are drawn, the bytes of HTML + script + map.json, and one redraw (what a pan
or zoom costs), beside a NumPy baseline measured in the same run: the same
transform and 2 x 2 pixel writes, vectorised, for the same points.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from knn import build_db  # noqa: E402
from synthetic import clustered  # noqa: E402

from datasette_embeddings.search import maps  # noqa: E402
from datasette_embeddings.storage.connection import connect  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def numpy_raster_ms(n: int, width: int = 976, height: int = 630, repeats: int = 5) -> float:
    """The NumPy baseline: transform n points to pixels and write 2 x 2 squares into a frame."""
    rng = np.random.default_rng(0)
    xs, ys = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    colours = rng.integers(0, 2**32, n, dtype=np.uint32)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        frame = np.full((height, width), 0xFFFFFFFF, dtype=np.uint32)
        scale = min(width, height) * 0.92
        px = (xs * scale + (width - scale) / 2).astype(np.int32)
        py = ((1 - ys) * scale + (height - scale) / 2).astype(np.int32)
        for dx in (0, 1):
            for dy in (0, 1):
                frame[np.clip(py + dy, 0, height - 1), np.clip(px + dx, 0, width - 1)] = colours
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=50)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="map-bench-") as workdir:
        path = os.path.join(workdir, "bench.db")
        started = time.perf_counter()
        build_db(path, clustered(args.n, args.dims))
        load_s = time.perf_counter() - started
        conn = connect(path)
        started = time.perf_counter()
        maps.build(conn, ["bench"], n_clusters=args.clusters)
        map_s = time.perf_counter() - started
        conn.close()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        datasette = pathlib.Path(sys.executable).parent / "datasette"
        proc = subprocess.Popen([str(datasette), path, "--host", "127.0.0.1", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(base + "/-/versions.json", timeout=2)
                    break
                except OSError:
                    time.sleep(0.2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                sizes: dict[str, int] = {}
                page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())) if r.ok and "127.0.0.1" in r.url else None)
                t0 = time.perf_counter()
                page.goto(f"{base}/bench/-/map?model=bench")
                page.wait_for_function("window.embMap && embMap.drawn() > 0", timeout=600_000, polling=50)
                first_points = time.perf_counter() - t0
                page.wait_for_function(f"document.getElementById('emb-map').dataset.loaded == '1' && embMap.drawn() == {args.n}",
                                       timeout=1_800_000, polling=100)
                all_points = time.perf_counter() - t0
                fcp = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null")
                redraw = page.evaluate("embMap.timeDraw(5)")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    json_bytes = sum(v for k, v in sizes.items() if "/-/map.json" in k)
    total_bytes = sum(sizes.values())
    baseline = numpy_raster_ms(args.n)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| points | dims | build db s | map (PCA + k-means) s | first contentful paint ms | first points s | all points s "
          "| map.json MB | bytes/point | page total MB | redraw ms | NumPy raster ms | redraw / NumPy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.n:,} | {args.dims} | {load_s:.1f} | {map_s:.1f} | {fcp:.0f} | {first_points:.2f} | {all_points:.2f} | "
          f"{json_bytes / 1e6:.2f} | {json_bytes / args.n:.1f} | {total_bytes / 1e6:.2f} | {redraw:.1f} | {baseline:.1f} | "
          f"{redraw / baseline:.2f} |")


if __name__ == "__main__":
    main()
