"""Concurrent requests with BLAS capped at one thread (``fast_index.blas_threads: 1``) or not (``0``).

    python benchmarks/blas_threads.py --records 100000 --clients 4 --requests 400

The same database (clustered 512-d vectors, ten providers) is served twice by a
real ``datasette`` on 127.0.0.1, once per setting, the environment left without
``OPENBLAS_NUM_THREADS`` so the setting alone decides.  ``clients`` threads fire
the same planned mix of requests that multiply the model's matrix: record pages'
similar records (JSON), SQL ``embeddings_nearest()``, and the links page computing
links on the fly for a few hundred records.  Prints p50 / p95 per kind and the
throughput of each setting.  A benchmark, not a test: nothing asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from knn import PROVIDERS, build_db  # noqa: E402
from synthetic import clustered  # noqa: E402

KINDS = ("record.json", "sql nearest", "links on the fly")


def start_server(db: str, port: int, blas_threads: int, max_sources: int) -> subprocess.Popen:
    metadata = {"plugins": {"datasette-embeddings": {
        "fast_index": {"blas_threads": blas_threads},
        "links": {"on_the_fly_max_sources": max_sources},
    }}}
    path = db + f".metadata-{blas_threads}.json"
    with open(path, "w") as fp:
        json.dump(metadata, fp)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    exe = os.path.join(os.path.dirname(sys.executable), "datasette")
    proc = subprocess.Popen([exe, "serve", "-i", db, "--metadata", path, "--host", "127.0.0.1", "--port", str(port),
                             "--setting", "sql_time_limit_ms", "60000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 180
    base = f"http://127.0.0.1:{port}"
    name = os.path.splitext(os.path.basename(db))[0]
    while time.time() < deadline:
        try:
            # wait for the warm-up: the status says the exact index is held
            sql = "select embeddings_index_status('bench') as s"
            url = f"{base}/{name}.json?" + urllib.parse.urlencode({"sql": sql, "_shape": "array"})
            status = json.loads(json.loads(urllib.request.urlopen(url, timeout=5).read())[0]["s"])
            if status["exact"]:
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("datasette exited: " + proc.stderr.read().decode(errors="replace"))
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the index was not warm in 180 s")


def one_request(base: str, name: str, vec: str, kind: str, record_id: int, provider: str) -> tuple[str, float]:
    if kind == "record.json":
        url = f"{base}/{name}/-/gallery/{record_id}.json?k=10"
    elif kind == "sql nearest":
        sql = (f"select j.value from json_each(embeddings_nearest('bench', "
               f"(select embedding from {vec} where id = {int(record_id)}), 10)) j")
        url = f"{base}/{name}.json?" + urllib.parse.urlencode({"sql": sql})
    else:
        url = f"{base}/{name}/-/links.json?" + urllib.parse.urlencode(
            {"model": "bench", "from": provider, "to": PROVIDERS[0] if provider != PROVIDERS[0] else PROVIDERS[1],
             "k": 1 + record_id % 5, "size": 10})  # k varies: each request computes (no cached result)
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
    return kind, time.perf_counter() - started


def run(base: str, name: str, vec: str, plan: list, clients: int) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(lambda item: one_request(base, name, vec, *item), plan))
    elapsed = time.perf_counter() - started
    out = {"seconds": elapsed, "per_second": len(results) / elapsed, "kinds": {}}
    for kind in KINDS:
        times = sorted(t for k, t in results if k == kind)
        if times:
            out["kinds"][kind] = (1000 * statistics.median(times), 1000 * times[int(0.95 * (len(times) - 1))], len(times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--links-sources", type=int, default=300, help="links.on_the_fly_max_sources for the links requests")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--settings", type=int, nargs="+", default=[1, 0],
                        help="blas_threads values, served one after the other in this order")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-blas-")
    db = os.path.join(folder, "bench.db")
    build_db(db, clustered(args.records, args.dims))
    from datasette_embeddings.storage.store import vec_table_name

    vec = vec_table_name("bench")
    rng = random.Random(1)
    ids = list(range(1, args.records + 1))
    plan = [(rng.choices(KINDS, [0.45, 0.45, 0.1])[0], rng.choice(ids), rng.choice(PROVIDERS)) for _ in range(args.requests)]
    print(f"{args.records:,} x {args.dims} records, {args.clients} clients, {args.requests} requests, "
          f"{os.cpu_count()} cores; load before {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    for setting in args.settings:
        proc = start_server(db, args.port, setting, args.links_sources)
        try:
            base = f"http://127.0.0.1:{args.port}"
            run(base, "bench", vec, plan[:20], args.clients)  # warm the connections and caches
            rows.append((setting, run(base, "bench", vec, plan, args.clients)))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print("| blas_threads | request | p50 ms | p95 ms | n | requests/s (all kinds) |")
    print("|---|---|---|---|---|---|")
    for setting, result in rows:
        label = {1: "1 (default)", 0: "0 (BLAS default: one per core)"}.get(setting, str(setting))
        for kind, (p50, p95, n) in result["kinds"].items():
            print(f"| {label} | {kind} | {p50:.1f} | {p95:.1f} | {n} | {result['per_second']:.1f} |")
    print(f"load after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
