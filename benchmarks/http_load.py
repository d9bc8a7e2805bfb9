"""A bounded load test of a real datasette server on 127.0.0.1.

Concurrent clients fetch record pages (HTML and JSON) and image-search JSON
against a database of N records (default 100,000) under the built-in
colour-layout-v1 model, so search embeds a real uploaded image at request time.
The run is bounded twice: a fixed number of requests and a wall-clock cap.
Loopback only; it prints p50/p99 per kind of request and the count of 5xx.

    python benchmarks/http_load.py --records 100000 --requests 2000 --clients 8
"""
from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from datasette_embeddings.files import loader  # noqa: E402
from datasette_embeddings.files.parquet_io import write_records  # noqa: E402

MODEL = "colour-layout-v1"


def build_database(path: str, records: int, seed: int = 7) -> None:
    """Clustered vectors with the built-in image model's dimensions, ten providers."""
    from datasette_embeddings.embedding import colour_layout
    from PIL import Image

    dims = colour_layout.describe(Image.new("RGB", (32, 32), "white")).shape[0]
    rng = np.random.default_rng(seed)
    centres = rng.random((200, dims)).astype(np.float32)
    parquet = path + ".parquet"

    def rows():
        for i in range(records):
            vector = np.abs(centres[i % len(centres)] + 0.05 * rng.standard_normal(dims).astype(np.float32))
            yield {
                "provider": f"provider-{i % 10}", "depiction_id": f"d{i}", "subject_id": f"s{i // 2}",
                "model": MODEL, "embeddings": vector, "created": 1_700_000_000,
                "attributes": {"type": "image", "subject_title": f"Object {i}", "preview": f"https://example.org/{i}.jpg"},
            }

    write_records(parquet, rows())
    loader.load(path, [parquet])
    os.unlink(parquet)


def query_image() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def start_server(db: str, port: int, *, metadata: str | None = None, immutable: bool = True) -> subprocess.Popen:
    """``datasette serve`` on 127.0.0.1 (``-i`` unless a load will write to ``db`` meanwhile)."""
    exe = os.path.join(os.path.dirname(sys.executable), "datasette")
    args = [exe, "serve", "-i" if immutable else "", db, "--host", "127.0.0.1", "--port", str(port)]
    if metadata:
        args += ["--metadata", metadata]
    proc = subprocess.Popen([a for a in args if a], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/versions.json", timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("datasette exited: " + proc.stderr.read().decode(errors="replace"))
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("datasette did not start in 120 s")


def one_request(base: str, db: str, kind: str, record_id: int, image: bytes) -> tuple[str, int, float]:
    if kind == "record.json":
        req = urllib.request.Request(f"{base}/{db}/-/gallery/{record_id}.json?k=20")
    elif kind == "record.html":
        req = urllib.request.Request(f"{base}/{db}/-/gallery/{record_id}?k=20&exclude_subject=1")
    else:
        req = urllib.request.Request(
            f"{base}/{db}/-/search.json?k=20&model={MODEL}", data=image, headers={"Content-Type": "image/png"}
        )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as ex:
        status = ex.code
    except OSError:
        status = 599  # connection refused / reset / timed out: counted as a server failure
    return kind, status, time.perf_counter() - started


def run(base: str, db: str, ids: list[int], *, requests: int, clients: int, time_cap: float, seed: int = 1) -> dict:
    """Fire ``requests`` requests from ``clients`` threads, stopping early at ``time_cap`` seconds."""
    rng = random.Random(seed)
    image = query_image()
    plan = [(rng.choices(["record.json", "record.html", "search.json"], [0.45, 0.35, 0.2])[0], rng.choice(ids))
            for _ in range(requests)]
    deadline = time.perf_counter() + time_cap
    results: list[tuple[str, int, float]] = []

    def worker(item):
        if time.perf_counter() > deadline:
            return None
        return one_request(base, db, item[0], item[1], image)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for result in pool.map(worker, plan):
            if result is not None:
                results.append(result)
    elapsed = time.perf_counter() - started
    summary: dict = {"sent": len(results), "planned": requests, "seconds": elapsed,
                     "server_errors": sum(1 for _, s, _ in results if s >= 500),
                     "statuses": sorted({s for _, s, _ in results}), "kinds": {}}
    for kind in ("record.json", "record.html", "search.json"):
        times = sorted(t for k, _, t in results if k == kind)
        if times:
            summary["kinds"][kind] = {
                "n": len(times),
                "p50_ms": 1000 * statistics.median(times),
                "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--time-cap", type=float, default=300.0)
    parser.add_argument("--port", type=int, default=8911)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-http-")
    db = os.path.join(tmp, "load.db")
    print(f"building {args.records:,} records ...", flush=True)
    build_database(db, args.records)
    proc = start_server(db, args.port)
    try:
        base = f"http://127.0.0.1:{args.port}"
        # warm the fast index and the model once, outside the measurement
        run(base, "load", [1], requests=3, clients=1, time_cap=120)
        summary = run(base, "load", list(range(1, args.records + 1)), requests=args.requests,
                      clients=args.clients, time_cap=args.time_cap)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"\n{summary['sent']:,} of {summary['planned']:,} requests in {summary['seconds']:.1f}s, "
          f"{args.clients} clients, statuses {summary['statuses']}, 5xx: {summary['server_errors']}")
    print("| request | n | p50 | p99 |\n|---|---:|---:|---:|")
    for kind, s in summary["kinds"].items():
        print(f"| {kind} | {s['n']} | {s['p50_ms']:.0f} ms | {s['p99_ms']:.0f} ms |")


if __name__ == "__main__":
    main()
