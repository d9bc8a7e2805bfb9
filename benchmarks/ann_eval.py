"""Which approximate-nearest-neighbour library?  usearch vs faiss-cpu vs hnswlib, same data, same run.

    python benchmarks/ann_eval.py --n 100000 --dims 512

Prints build time, memory (resident growth), p50/p95 query time and recall@10
against NumPy exact search, for HNSW in each library with comparable settings
(M=16, efConstruction=128, ef search 64 and 128), inner product on normalised vectors.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic import clustered, exact_top_k, normalised, queries, recall  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def build_usearch(x, m, efc):
    from usearch.index import Index

    index = Index(ndim=x.shape[1], metric="ip", dtype="f16", connectivity=m, expansion_add=efc)
    index.add(np.arange(len(x)), x, threads=os.cpu_count())

    def search(q, k, ef):
        index.expansion_search = ef
        return index.search(q, k).keys

    return index, search


def _faiss_hnsw(index, x, efc):
    index.hnsw.efConstruction = efc
    index.train(x[:10_000])
    index.add(x)

    def search(q, k, ef):
        index.hnsw.efSearch = ef
        return index.search(q[None, :], k)[1][0]

    return index, search


def build_faiss(x, m, efc):
    import faiss

    return _faiss_hnsw(faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT), x, efc)


def build_faiss_sq16(x, m, efc):
    """What fast_index uses: half-precision vectors in the graph."""
    import faiss

    return _faiss_hnsw(faiss.IndexHNSWSQ(x.shape[1], faiss.ScalarQuantizer.QT_fp16, m, faiss.METRIC_INNER_PRODUCT), x, efc)


def build_hnswlib(x, m, efc):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=x.shape[1])
    index.init_index(max_elements=len(x), M=m, ef_construction=efc)
    index.add_items(x, np.arange(len(x)), num_threads=os.cpu_count())

    def search(q, k, ef):
        index.set_ef(ef)
        return index.knn_query(q, k)[0][0]

    return index, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--libs", default="usearch,faiss,faiss_sq16,hnswlib")
    args = parser.parse_args()
    x = normalised(clustered(args.n, args.dims))
    qs = normalised(queries(args.queries, args.dims))
    truth = [exact_top_k(x, q, 10) for q in qs]
    builders = {"usearch": build_usearch, "faiss": build_faiss, "faiss_sq16": build_faiss_sq16, "hnswlib": build_hnswlib}
    print(f"N={args.n:,} dims={args.dims} queries={args.queries} cores={os.cpu_count()}")
    print(f"{'library':10} {'build s':>8} {'mem MB':>8} {'ef':>4} {'p50 ms':>7} {'p95 ms':>7} {'recall@10':>9}")
    for name in args.libs.split(","):
        before = rss_mb()
        t = time.perf_counter()
        index, search = builders[name](x, 16, 128)
        build = time.perf_counter() - t
        mem = rss_mb() - before
        for ef in (64, 128):
            times, recalls = [], []
            for q, tr in zip(qs, truth):
                t = time.perf_counter()
                found = search(q, 10, ef)
                times.append((time.perf_counter() - t) * 1000)
                recalls.append(recall(found, tr))
            print(f"{name:10} {build:8.1f} {mem:8.0f} {ef:4} {np.percentile(times, 50):7.2f} {np.percentile(times, 95):7.2f} {np.mean(recalls):9.3f}")
        del index, search


if __name__ == "__main__":
    main()
