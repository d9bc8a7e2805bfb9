"""A bounded load test of a real datasette server on 127.0.0.1.

Concurrent clients fetch record pages (HTML and JSON) and image-search JSON
against a database of N records (default 100,000) under the built-in
colour-layout-v1 model, so search embeds a real uploaded image at request time.
The run is bounded twice: a fixed number of requests and a wall-clock cap.
Loopback only; it prints p50/p99 per kind of request and the count of 5xx.

A hostile mix follows the normal one (``--mix both``, the default): record pages
as before, interleaved with uploads of large-pixel images (a ~170 KB PNG declaring
6,320 x 6,320 RGBA pixels, just under the 40 MP limit: valid, so it is decoded and
embedded) and multipart bodies at and beyond the parser's limits (16 parts with
headers at their size limit: valid; 17 parts, a header of 40,000 parameters, a
nested part, an 11 MB body: refused).  The record pages measure whether anything
stalls the server; the server's peak resident memory (``VmHWM``) is read after each mix.

    python benchmarks/http_load.py --records 100000 --requests 2000 --clients 8
"""
from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
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


def large_pixel_png(side: int = 6320) -> bytes:
    """A PNG declaring side x side RGBA pixels (40 MP at 6,320), built row by row: about 170 KB."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    squeeze = zlib.compressobj(9)
    row = b"\0" + bytes([200, 120, 40, 128]) * side
    body = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


BOUNDARY = "bench0boundary"


def _part(name: str, value: bytes, *, filename: str | None = None, headers: int = 0) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    # extra headers at the parser's 1,024-byte line limit (4 lines per part in all)
    head += "".join(f"X-Pad-{i}: {'p' * 1000}\r\n" for i in range(headers))
    if filename:
        head += "Content-Type: image/png\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


def hostile_bodies(image: bytes) -> dict[str, tuple[bytes, str]]:
    """``kind -> (body, content type)``: at the parser's limits (valid) and beyond them (refused)."""
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    end = f"--{BOUNDARY}--\r\n".encode()
    fields = [_part(f"field{i}", b"x" * 8000, headers=2) for i in range(15)]
    return {
        "form.at_limits": (b"".join(fields) + _part("image", image, filename="q.png", headers=1) + end, ctype),
        "form.17_parts": (b"".join(_part(f"f{i}", b"x") for i in range(17)) + end, ctype),
        "form.40000_params": (_part("q", b"x")[:-4].replace(b'name="q"', b'name="q"' + b"".join(
            f'; p{i}="v"'.encode() for i in range(40_000))) + b"\r\n\r\nx\r\n" + end, ctype),
        "form.nested": (_part("q", b"--in\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n" * 3000)
                        .replace(b"\r\n\r\n--in", b"\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n--in", 1) + end, ctype),
        "body.11MB": (b"\x89PNG\r\n\x1a\n" + b"\0" * (11 * 1024 * 1024), "image/png"),
    }


def post(base: str, db: str, kind: str, body: bytes, content_type: str) -> tuple[str, int, float]:
    req = urllib.request.Request(
        f"{base}/{db}/-/search.json?k=20&model={MODEL}", data=body, headers={"Content-Type": content_type}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as ex:
        status = ex.code
    except OSError:
        # a server may answer 413 and close before an 11 MB body is sent: the client sees a reset
        status = 413 if kind == "body.11MB" else 599
    return kind, status, time.perf_counter() - started


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory so far (Linux ``VmHWM``), in MB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


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


NORMAL_MIX = {"record.json": 0.45, "record.html": 0.35, "search.json": 0.2}
HOSTILE_MIX = {"record.json": 0.5, "upload.large_pixels": 0.15, "form.at_limits": 0.15, "form.17_parts": 0.05,
               "form.40000_params": 0.05, "form.nested": 0.05, "body.11MB": 0.05}


def run(base: str, db: str, ids: list[int], *, requests: int, clients: int, time_cap: float, seed: int = 1,
        mix: dict[str, float] = NORMAL_MIX) -> dict:
    """Fire ``requests`` requests from ``clients`` threads, stopping early at ``time_cap`` seconds."""
    rng = random.Random(seed)
    image = query_image()
    hostile = hostile_bodies(image) if mix is not NORMAL_MIX else {}
    if "upload.large_pixels" in mix:
        hostile["upload.large_pixels"] = (large_pixel_png(), "image/png")
    kinds = list(mix)
    plan = [(rng.choices(kinds, [mix[k] for k in kinds])[0], rng.choice(ids)) for _ in range(requests)]
    deadline = time.perf_counter() + time_cap
    results: list[tuple[str, int, float]] = []

    def worker(item):
        if time.perf_counter() > deadline:
            return None
        if item[0] in hostile:
            return post(base, db, item[0], *hostile[item[0]])
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
    for kind in kinds:
        times = sorted(t for k, _, t in results if k == kind)
        if times:
            summary["kinds"][kind] = {
                "n": len(times),
                "p50_ms": 1000 * statistics.median(times),
                "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
                "max_ms": 1000 * times[-1],
                "statuses": sorted({s for k, s, _ in results if k == kind}),
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--time-cap", type=float, default=300.0)
    parser.add_argument("--port", type=int, default=8911)
    parser.add_argument("--mix", choices=["normal", "hostile", "both"], default="both")
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
        ids = list(range(1, args.records + 1))
        mixes = {"normal": [("normal", NORMAL_MIX)], "hostile": [("hostile", HOSTILE_MIX)],
                 "both": [("normal", NORMAL_MIX), ("hostile", HOSTILE_MIX)]}[args.mix]
        summaries = []
        for name, mix in mixes:
            summary = run(base, "load", ids, requests=args.requests, clients=args.clients,
                          time_cap=args.time_cap, mix=mix)
            summary["peak_rss_mb"] = peak_rss_mb(proc.pid)
            summaries.append((name, summary))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for name, summary in summaries:
        print(f"\n{name} mix: {summary['sent']:,} of {summary['planned']:,} requests in {summary['seconds']:.1f}s, "
              f"{args.clients} clients, statuses {summary['statuses']}, 5xx: {summary['server_errors']}, "
              f"server peak RSS so far: {summary['peak_rss_mb']:.0f} MB")
        print("| request | n | statuses | p50 | p99 | max |\n|---|---:|---|---:|---:|---:|")
        for kind, s in summary["kinds"].items():
            statuses = ", ".join(map(str, s["statuses"]))
            print(f"| {kind} | {s['n']} | {statuses} | {s['p50_ms']:.0f} ms | {s['p99_ms']:.0f} ms | {s['max_ms']:.0f} ms |")


if __name__ == "__main__":
    main()
