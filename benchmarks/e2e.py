"""End to end: p50 of a similar-records JSON request through a real Datasette server.

    python benchmarks/e2e.py                         # 100k x 512
    python benchmarks/e2e.py --n 1000000 --requests 200

Builds a database through the store, starts ``datasette serve`` on 127.0.0.1
(a subprocess, the installed plugin), waits until the model's index is built
(and its HNSW graph, above the threshold), then times
``/<db>/-/gallery/<id>.json`` for random records, unfiltered and with one
provider of ten, plus ``embeddings_nearest()`` through ``/<db>.json?sql=``.
The same requests go to a second server with the fast path switched off (vec0
answers), and recall@10 of each is measured against NumPy exact search.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from knn import PROVIDERS, build_db  # noqa: E402
from synthetic import clustered, normalised, recall  # noqa: E402

K = 10
DATASETTE = os.path.join(os.path.dirname(sys.executable), "datasette")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 600) -> tuple[float, dict | list]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    return (time.perf_counter() - t) * 1000, json.loads(body)


class Server:
    def __init__(self, db: str, workdir: str, fast: dict):
        self.port = free_port()
        meta = os.path.join(workdir, f"metadata-{self.port}.json")
        with open(meta, "w") as f:
            json.dump({"plugins": {"datasette-embeddings": {"fast_index": fast}}}, f)
        self.proc = subprocess.Popen(
            [DATASETTE, "serve", db, "-h", "127.0.0.1", "-p", str(self.port), "-m", meta],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while True:
            try:
                get(self.base + "/-/versions.json", timeout=5)
                return
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"datasette did not start: {self.proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.3)

    def sql(self, db: str, sql: str) -> list:
        return get(f"{self.base}/{db}.json?" + urllib.parse.urlencode({"sql": sql, "_shape": "array"}))[1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def measure(server: Server, db: str, record_ids, truths, prov_truths, label: str) -> list[dict]:
    rows = []
    vec_table = server.sql(db, "select vec_table from models where label = 'bench'")[0]["vec_table"]

    def sql_url(rid: int) -> str:
        sql = (
            "select json_extract(j.value, '$.id') as id from json_each(embeddings_nearest('bench', "
            f"(select embedding from {vec_table} where id = {rid}), {K + 1})) j"
        )
        return f"/{db}.json?" + urllib.parse.urlencode({"sql": sql, "_shape": "array"})

    cases = [
        ("gallery record JSON", lambda rid: f"/{db}/-/gallery/{rid}.json?k={K}", truths, "similar"),
        ("gallery record JSON, 1 of 10 providers", lambda rid: f"/{db}/-/gallery/{rid}.json?k={K}&provider={PROVIDERS[3]}", prov_truths, "similar"),
        ("SQL embeddings_nearest()", sql_url, truths, "sql"),
    ]
    for name, url_of, expected, kind in cases:
        times, recalls = [], []
        for rid, truth in zip(record_ids, expected):
            url = url_of(rid)
            ms, data = get(server.base + url)
            times.append(ms)
            if kind == "similar":
                found = [c["id"] for c in data["similar"]]
            else:
                found = [r["id"] for r in data if r["id"] != rid][:K]
            recalls.append(recall(np.array(found), truth))
        rows.append({"server": label, "request": name, "p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)), "recall": float(np.mean(recalls)), "n": len(times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--vec0-requests", type=int, default=10)
    parser.add_argument("--ann-threshold", type=int, default=1_500_000, help="records above which the HNSW graph answers")
    parser.add_argument("--ann-expansion-add", type=int, default=128, help="HNSW efConstruction in the server's config")
    args = parser.parse_args()
    vectors = clustered(args.n, args.dims)
    matrix = normalised(vectors)
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory(prefix="e2e-bench-") as workdir:
        db_path = os.path.join(workdir, "e2e.db")
        build_db(db_path, vectors)
        db = "e2e"
        # truth: ids are 1..N in vector order; the record itself excluded
        record_ids = [int(i) + 1 for i in rng.choice(args.n, args.requests, replace=False)]
        from datasette_embeddings.storage.connection import connect

        conn = connect(db_path)
        provider_of = np.array([PROVIDERS.index(p) for (p,) in conn.execute("select provider from records order by id")])
        conn.close()
        truths, prov_truths = [], []
        for rid in record_ids:
            scores = matrix @ matrix[rid - 1]
            scores[rid - 1] = -np.inf
            truths.append(np.argsort(-scores)[:K] + 1)
            scores[provider_of != 3] = -np.inf
            prov_truths.append(np.argsort(-scores)[:K] + 1)
        results = []
        server = Server(db_path, workdir, {"ann_threshold": args.ann_threshold, "ann_expansion_add": args.ann_expansion_add})
        try:
            t = time.perf_counter()
            get(f"{server.base}/{db}/-/gallery/{record_ids[0]}.json")  # builds the exact index
            while True:
                status = json.loads(server.sql(db, "select embeddings_index_status('bench') as s")[0]["s"])
                if status["ann"] != "building":
                    break
                time.sleep(1)
            warm = time.perf_counter() - t
            results += measure(server, db, record_ids, truths, prov_truths, "fast path")
        finally:
            server.stop()
        vec0 = Server(db_path, workdir, {"enabled": False})
        try:
            n = args.vec0_requests
            results += measure(vec0, db, record_ids[:n], truths[:n], prov_truths[:n], "vec0 only")
        finally:
            vec0.stop()
    print(f"N={args.n:,} dims={args.dims}; index ready {warm:.1f}s after the first request; status {status}")
    print("| server | request | requests | p50 ms | p95 ms | recall@10 |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['server']} | {r['request']} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['recall']:.3f} |")
    fast = {r["request"]: r["p50"] for r in results if r["server"] == "fast path"}
    slow = {r["request"]: r["p50"] for r in results if r["server"] == "vec0 only"}
    print()
    for name in fast:
        print(f"  {name}: vec0 / fast path p50 = {slow[name] / fast[name]:.1f}")


if __name__ == "__main__":
    main()
