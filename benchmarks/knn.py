"""Nearest-neighbour search, side by side: NumPy brute force vs vec0 vs our exact and approximate paths.

    python benchmarks/knn.py                      # 10k and 100k, 512 and 1152 dims (a few minutes)
    python benchmarks/knn.py --sizes 1000000 --dims 512 --vec0-queries 10

Every path answers the same queries over the same clustered vectors, stored in
a real SQLite database through the store (records + vec0), in the same run.
Prints p50/p95 per query, the ratio to the NumPy baseline, recall@10 against
exact search, and what each model's index costs in memory.  A benchmark, not a
test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from synthetic import clustered, exact_top_k, normalised, queries, recall  # noqa: E402

from datasette_embeddings.config import IndexSettings  # noqa: E402
from datasette_embeddings.storage.store import Store  # noqa: E402
from datasette_embeddings.search import memory_index as fast_index  # noqa: E402
from datasette_embeddings.storage.vectors import to_blob  # noqa: E402
from datasette_embeddings.search.similarity import NeighbourFilter, nearest_ids, vec0_nearest_ids  # noqa: E402

K = 10
#: the index settings every run starts from (the plugin defaults, or --ann-expansion-*)
SETTINGS = IndexSettings()
PROVIDERS = [f"provider-{i}" for i in range(10)]


def build_db(path: str, vectors: np.ndarray, seed: int = 0) -> None:
    """Write the vectors through the store, as ``load`` does, ten providers in random order."""
    store = Store.open(path, readonly=False, create=True)
    conn = store.conn
    rng = np.random.default_rng(seed)
    providers = rng.integers(0, len(PROVIDERS), len(vectors))
    model = store.ensure_model("bench", vectors.shape[1])
    step = 10_000
    for start in range(0, len(vectors), step):
        conn.execute("begin")
        rows = [
            (PROVIDERS[providers[i]], f"d{i}", f"s{i // 2}", 1, "{}", to_blob(vectors[i]))
            for i in range(start, min(start + step, len(vectors)))
        ]
        store.upsert_batch(model, rows)
        conn.execute("commit")
    store.refresh_counts()
    store.finish_writing()
    conn.close()


def timed(fn, qs) -> tuple[list, np.ndarray]:
    results, times = [], []
    for q in qs:
        t = time.perf_counter()
        results.append(fn(q))
        times.append((time.perf_counter() - t) * 1000)
    return results, np.array(times)


def interleaved(paths: dict, qs) -> dict:
    """Each query through every path in turn, so a busy machine slows all paths alike."""
    results = {name: ([], []) for name in paths}
    for q in qs:
        for name, fn in paths.items():
            t = time.perf_counter()
            found = fn(q)
            results[name][1].append((time.perf_counter() - t) * 1000)
            results[name][0].append(found)
    return {name: (found, np.array(times)) for name, (found, times) in results.items()}


def run_case(n: int, dims: int, n_queries: int, vec0_queries: int, ann: bool, workdir: str) -> list[dict]:
    vectors = clustered(n, dims)
    qs = queries(n_queries, dims)
    path = os.path.join(workdir, f"knn_{n}_{dims}.db")
    t = time.perf_counter()
    build_db(path, vectors)
    db_seconds = time.perf_counter() - t
    store = Store.open(path, readonly=False)
    conn, model = store.conn, store.model("bench")
    ids = np.array([r[0] for r in conn.execute("select id from records order by id")])
    matrix = normalised(vectors)  # rows in id order: ids[i] is vectors[i]
    del vectors  # 4.6 GB at 1,000,000 x 1152: the database and ``matrix`` hold them now
    provider = PROVIDERS[3]
    prov_ids = np.array([r[0] for r in conn.execute("select id from records where provider = ? order by id", [provider])])
    prov_matrix = matrix[np.searchsorted(ids, prov_ids)]
    flt = NeighbourFilter(providers=(provider,))
    truth = [ids[exact_top_k(matrix, q, K)] for q in qs]
    prov_truth = [prov_ids[exact_top_k(prov_matrix, q, K)] for q in qs]

    # build our indexes (exact first, then the graph over the same matrix); a budget that
    # holds them, as an operator serving a model this large would configure
    fast_index.clear_cache()
    exact_settings = replace(SETTINGS, ann=False, max_memory_mb=max(SETTINGS.max_memory_mb, 2.5 * matrix.nbytes / 1e6))
    query_settings = exact_settings
    t = time.perf_counter()
    index = fast_index.index_for(conn, model, exact_settings)
    build_exact = time.perf_counter() - t
    exact_mb = index.nbytes / 1e6
    ann_note = ""
    use_ann = ann and fast_index.ann_available()
    if use_ann:
        query_settings = replace(exact_settings, ann=True, ann_threshold=0)
        fast_index.clear_cache()
        index = fast_index.index_for(conn, model, query_settings, wait_for_ann=True)
        ann_note = f"build {index.ann_seconds:.1f}s, +{index.ann.nbytes / 1e6:,.0f} MB"

    def ours(threshold: int, f: NeighbourFilter):
        settings = replace(query_settings, ann_threshold=threshold)

        def search(q):
            return [rid for rid, _ in nearest_ids(conn, model, q, K, f, settings=settings)]

        return search

    exact_only = sys.maxsize
    paths = {
        "numpy exact (baseline)": lambda q: ids[exact_top_k(matrix, q, K)],
        "ours exact": ours(exact_only, NeighbourFilter()),
        "numpy exact, 1 of 10 providers": lambda q: prov_ids[exact_top_k(prov_matrix, q, K)],
        "ours exact, 1 of 10 providers": ours(exact_only, flt),
    }
    if use_ann:
        paths["ours approximate (HNSW)"] = ours(0, NeighbourFilter())
        paths["ours approximate, 1 of 10 providers"] = ours(0, flt)
    measured = interleaved(paths, qs)
    vq = qs[:vec0_queries]
    measured["vec0 exact"] = timed(lambda q: [rid for rid, _ in vec0_nearest_ids(conn, model, q, K)], vq)
    measured["vec0 exact, 1 of 10 providers"] = timed(lambda q: [rid for rid, _ in vec0_nearest_ids(conn, model, q, K, flt)], vq)
    notes = {"ours exact": f"build {build_exact:.1f}s from vec0, {exact_mb:,.0f} MB", "ours approximate (HNSW)": ann_note}
    order = [
        "numpy exact (baseline)", "vec0 exact", "ours exact", "ours approximate (HNSW)",
        "numpy exact, 1 of 10 providers", "vec0 exact, 1 of 10 providers",
        "ours exact, 1 of 10 providers", "ours approximate, 1 of 10 providers",
    ]
    rows_out = []
    for name in order:
        if name not in measured:
            continue
        found, times = measured[name]
        expected = prov_truth if "providers" in name else truth
        rows_out.append(
            {
                "N": n,
                "dims": dims,
                "path": name,
                "p50": float(np.percentile(times, 50)),
                "p95": float(np.percentile(times, 95)),
                "recall": float(np.mean([recall(f, e) for f, e in zip(found, expected)])),
                "note": notes.get(name, ""),
            }
        )
    conn.close()
    fast_index.clear_cache()
    print(f"# N={n:,} dims={dims}: database written in {db_seconds:.1f}s", file=sys.stderr)
    os.unlink(path)
    return rows_out


def print_table(rows: list[dict]) -> None:
    print(f"| N | dims | path | p50 ms | p95 ms | x NumPy p50 | recall@10 | notes |")
    print("|---|---|---|---|---|---|---|---|")
    base = {}
    for r in rows:
        if r["path"].startswith("numpy"):
            base[(r["N"], r["dims"])] = r["p50"]
        ratio = r["p50"] / base[(r["N"], r["dims"])]
        rec = f"{r['recall']:.3f}" if r["recall"] is not None else ""
        print(f"| {r['N']:,} | {r['dims']} | {r['path']} | {r['p50']:.2f} | {r['p95']:.2f} | {ratio:.2f} | {rec} | {r['note']} |")
    print()
    print("Ratios of p50 (x NumPy is against the NumPy row of the same filter):")
    cases = sorted({(r["N"], r["dims"]) for r in rows})
    for case in cases:
        p50 = {r["path"]: r["p50"] for r in rows if (r["N"], r["dims"]) == case}
        parts = [
            f"ours exact / NumPy = {p50['ours exact'] / p50['numpy exact (baseline)']:.2f}",
            f"vec0 / ours exact = {p50['vec0 exact'] / p50['ours exact']:.1f}",
            f"ours exact filtered / unfiltered = {p50['ours exact, 1 of 10 providers'] / p50['ours exact']:.2f}",
        ]
        if "ours approximate (HNSW)" in p50:
            parts.append(f"approximate / NumPy = {p50['ours approximate (HNSW)'] / p50['numpy exact (baseline)']:.2f}")
            parts.append(
                f"approximate filtered / unfiltered = {p50['ours approximate, 1 of 10 providers'] / p50['ours approximate (HNSW)']:.2f}"
            )
        print(f"  N={case[0]:,} dims={case[1]}: " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated N (add 1000000 for the large case)")
    parser.add_argument("--dims", default="512,1152", help="comma-separated dimensions")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--vec0-queries", type=int, default=20, help="queries for vec0 (slow at large N)")
    parser.add_argument("--no-ann", action="store_true", help="skip the approximate index (its build dominates at 1M)")
    parser.add_argument("--include-1m-1152", action="store_true", help="also run 1M x 1152 (about 9 GB while building)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--ann-expansion-add", type=int, help="HNSW efConstruction (default: the plugin's)")
    parser.add_argument("--ann-expansion-search", type=int, help="HNSW efSearch (default: the plugin's)")
    args = parser.parse_args()
    global SETTINGS
    if args.ann_expansion_add:
        SETTINGS = replace(SETTINGS, ann_expansion_add=args.ann_expansion_add)
    if args.ann_expansion_search:
        SETTINGS = replace(SETTINGS, ann_expansion_search=args.ann_expansion_search)
    sizes = [int(s) for s in args.sizes.split(",")]
    dims_list = [int(d) for d in args.dims.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="knn-bench-") as workdir:
        for n in sizes:
            for dims in dims_list:
                if n >= 1_000_000 and dims > 512 and not args.include_1m_1152:
                    print(f"# skipping N={n:,} dims={dims} (pass --include-1m-1152)", file=sys.stderr)
                    continue
                rows += run_case(n, dims, args.queries, args.vec0_queries, not args.no_ann, workdir)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
