"""Time ``datasette-embeddings neighbours`` (the precomputed neighbours table) on clustered vectors.

    python benchmarks/neighbours.py                 # 100k x 512, k=10 (target: under 5 minutes)
    python benchmarks/neighbours.py --n 20000 --k 20

Builds a real database through the store, runs the real command's work
(read from vec0, blocked products, one transaction), checks a sample of rows
against NumPy brute force, and prints the time split and the ratio to the target.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from knn import build_db  # noqa: E402
from synthetic import clustered, normalised, recall  # noqa: E402

from datasette_embeddings.search import neighbours  # noqa: E402
from datasette_embeddings.storage.connection import connect  # noqa: E402

TARGET_SECONDS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--check", type=int, default=200, help="rows checked against brute force")
    args = parser.parse_args()
    vectors = clustered(args.n, args.dims)
    with tempfile.TemporaryDirectory(prefix="neighbours-bench-") as workdir:
        path = os.path.join(workdir, "neighbours.db")
        build_db(path, vectors)
        conn = connect(path)
        started, cpu_started = time.perf_counter(), time.process_time()
        (report,) = neighbours.build(conn, ["bench"], k=args.k)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        size = conn.execute("select count(*) from neighbours").fetchone()[0]
        # spot check: ids are 1..N in vector order (build_db inserts in order)
        matrix = normalised(vectors)
        rng = np.random.default_rng(0)
        recalls = []
        for i in rng.choice(args.n, min(args.check, args.n), replace=False):
            scores = matrix @ matrix[i]
            scores[i] = -np.inf
            truth = np.argsort(-scores)[: args.k] + 1
            stored = [r[0] for r in conn.execute("select neighbour_id from neighbours where record_id = ? order by rank", [int(i) + 1])]
            recalls.append(recall(np.array(stored), truth))
        conn.close()
    # on a shared machine wall time overstates; CPU seconds / cores is what an idle machine would take at best
    print(f"| N | dims | k | rows written | seconds | CPU seconds | target s | ratio to target | agreement with brute force |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.n:,} | {args.dims} | {args.k} | {size:,} | {seconds:.1f} | {cpu_seconds:.1f} | {TARGET_SECONDS} | "
        f"{seconds / TARGET_SECONDS:.2f} | {np.mean(recalls):.3f} |"
    )


if __name__ == "__main__":
    main()
