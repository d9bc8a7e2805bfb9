"""Cross-collection links at scale: our blocked top k against a plain NumPy blocked baseline.

    python benchmarks/links.py                 # 10k x 10k, 100k x 100k (both), one worker per core
    python benchmarks/links.py --sizes 1000000x100000 --no-baseline
    python benchmarks/links.py --workers 1     # one core each side

Each size links ``sources`` clustered 512-d vectors to ``targets`` vectors drawn
around the same cluster centres, top 5 per source, exact.  Both sides run in the
same invocation, each in its own child process (which makes its data from the
same seed), so each reports its own peak RSS:

* ours: ``search.links.top_k_between`` (what ``datasette-embeddings links`` runs:
  blocked products, the two-step top k, a 256 MB score block, ``--workers``
  threads over blocks with one BLAS thread each);
* baseline: the textbook NumPy version, the same blocks, ``argpartition`` over
  every column and a sort of the k, with OpenBLAS given the same number of
  threads (``OPENBLAS_NUM_THREADS`` = workers), which is how plain NumPy uses
  the cores.

Prints seconds, the ratio ours / baseline, the peak RSS of each child, and checks
the two agree on the first 2,000 sources.  A benchmark, not a test: it asserts
nothing about speed.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads OpenBLAS (children set their own)

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


K = 5
DIMS = 512
CHECK_ROWS = 2000


def unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    matrix /= norms
    return matrix


def around_centres(n: int, seed: int, clusters: int = 1000, spread: float = 0.35) -> np.ndarray:
    """``n`` unit vectors in Gaussian clusters around 1,000 random unit centres (always the same ones)."""
    centres = np.random.default_rng(0).standard_normal((clusters, DIMS), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIMS), dtype=np.float32)
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        out[start:stop] = centres[rng.integers(0, clusters, stop - start)]
        out[start:stop] += rng.standard_normal((stop - start, DIMS), dtype=np.float32) * np.float32(spread / np.sqrt(DIMS))
    return unit(out)


def data(sources: int, targets: int) -> tuple[np.ndarray, np.ndarray]:
    """Sources and targets around the same 1,000 cluster centres, with their own noise."""
    return around_centres(sources, seed=1), around_centres(targets, seed=2)


def baseline(source: np.ndarray, target: np.ndarray, k: int, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    cols = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block_rows):
        scores = source[start:start + block_rows] @ target.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        cols[start:start + block_rows] = np.take_along_axis(top, order, axis=1)
        sims[start:start + block_rows] = np.take_along_axis(top_scores, order, axis=1)
    return cols, sims


def child(which: str, sources: int, targets: int, workers: int, queue) -> None:
    from datasette_embeddings.search import links

    source, target = data(sources, targets)
    block = links._block_rows(len(target), None)
    started = time.perf_counter()
    if which == "ours":
        cols, sims = links.top_k_between(source, target, K, workers=workers)
    else:
        cols, sims = baseline(source, target, K, block)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"which": which, "seconds": seconds, "peak_mb": peak_mb, "block": block,
               "cols": cols[:CHECK_ROWS].copy(), "sims": sims[:CHECK_ROWS].copy()})


def run(which: str, sources: int, targets: int, workers: int) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter: its peak RSS is its own
    queue = ctx.Queue()
    # OpenBLAS reads its thread count when NumPy loads: ours runs one BLAS thread per worker
    # thread, the baseline gives BLAS every worker
    os.environ["OPENBLAS_NUM_THREADS"] = "1" if which == "ours" else str(workers)
    proc = ctx.Process(target=child, args=(which, sources, targets, workers, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["10000x10000", "100000x100000"],
                        help="SOURCESxTARGETS, e.g. 100000x100000")
    parser.add_argument("--no-baseline", action="store_true", help="time ours only (the 1M x 100k run)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="threads for ours, BLAS threads for the baseline (default: the cores)")
    args = parser.parse_args()
    print(f"{args.workers} worker(s) on {os.cpu_count()} cores, {DIMS} dims, top {K}, clustered")
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("| sources x targets | ours s | ours whole run s | baseline s | ours / baseline | ours peak RSS MB "
          "| baseline peak RSS MB | agree |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        sources, targets = (int(x) for x in size.lower().split("x"))
        started = time.perf_counter()
        ours = run("ours", sources, targets, args.workers)
        wall = time.perf_counter() - started  # the child's whole life: start, make the data, link
        if args.no_baseline:
            print(f"| {sources:,} x {targets:,} | {ours['seconds']:.1f} | {wall:.1f} | - | - | {ours['peak_mb']:,.0f} | - | - |",
                  flush=True)
            continue
        base = run("baseline", sources, targets, args.workers)
        # the same links (ties aside): the same columns, the same similarities
        agree = bool(np.array_equal(ours["cols"], base["cols"]) or np.allclose(ours["sims"], base["sims"], atol=1e-6))
        print(f"| {sources:,} x {targets:,} | {ours['seconds']:.1f} | {wall:.1f} | {base['seconds']:.1f} | "
              f"{ours['seconds'] / base['seconds']:.2f} | {ours['peak_mb']:,.0f} | {base['peak_mb']:,.0f} | "
              f"{'yes' if agree else 'NO'} |", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
