"""Benchmark `datasette-embeddings load`: rows/s and peak memory.

Writes two synthetic Parquet files of N records each (clustered vectors,
realistic ids and attributes), then runs the real CLI in a child process so its
peak RSS is measured on its own: the first file into a new database, the second
into that database again (WAL mode, as when a published collection is updated).  A NumPy baseline measured in the same run (reading the
same file into one float32 matrix and writing it with ``np.save``) gives the
ratio: how far loading into SQLite + vec0 is from just moving the bytes.

    python benchmarks/load.py --rows 100000 --dims 512
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from datasette_embeddings.files.parquet_io import CANONICAL_SCHEMA  # noqa: E402


def write_synthetic(path: str, rows: int, dims: int, providers: int = 10, chunk: int = 50_000, first_id: int = 0) -> None:
    """Clustered vectors written a row group at a time, so N can exceed memory comfort."""
    rng = np.random.default_rng(42 + first_id)
    centres = np.random.default_rng(42).standard_normal((1000, dims)).astype(np.float32)
    with pq.ParquetWriter(path, CANONICAL_SCHEMA, compression="zstd") as writer:
        for start in range(first_id, first_id + rows, chunk):
            n = min(chunk, first_id + rows - start)
            ids = np.arange(start, start + n)
            vectors = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, dims)).astype(np.float32)
            flat = pa.array(vectors.ravel(), pa.float32())
            offsets = pa.array(np.arange(0, (n + 1) * dims, dims, dtype=np.int32))
            embeddings = pa.ListArray.from_arrays(offsets, flat, type=CANONICAL_SCHEMA.field("embeddings").type)
            attributes = pa.array(
                [[("type", "image"), ("subject_title", f"Object {i}"), ("preview", f"https://example.org/{i}.jpg")] for i in ids],
                CANONICAL_SCHEMA.field("attributes").type,
            )
            table = pa.Table.from_arrays(
                [
                    pa.array([f"provider-{i % providers}" for i in ids]),
                    pa.array([f"d{i}" for i in ids]),
                    pa.array([f"s{i // 2}" for i in ids]),
                    pa.array(["bench-model"] * n),
                    embeddings,
                    pa.array(np.full(n, 1_700_000_000, dtype=np.int64)),
                    attributes,
                ],
                schema=CANONICAL_SCHEMA,
            )
            writer.write_table(table)


def numpy_baseline(path: str, out: str) -> float:
    started = time.perf_counter()
    parts = []
    for batch in pq.ParquetFile(path).iter_batches(columns=["embeddings"], batch_size=65536):
        arr = batch.column(0)
        parts.append(arr.flatten().to_numpy().reshape(len(arr), -1))
    np.save(out, np.concatenate(parts))
    return time.perf_counter() - started


def run_load(db: str, path: str) -> tuple[float, float, float]:
    """Seconds, peak RSS (MB) and CPU seconds (user + system) of the real CLI in a child process.

    The peak is the child's own VmHWM, polled from /proc: getrusage(RUSAGE_CHILDREN)
    would also count the forked copy of this (large) benchmark process before exec.
    CPU seconds come from the child's own rusage (``wait4``); on a machine shared
    with other jobs they move far less than the wall-clock time does.
    """
    exe = os.path.join(os.path.dirname(sys.executable), "datasette-embeddings")
    started = time.perf_counter()
    proc = subprocess.Popen([exe, "load", db, path, "--quiet"])
    peak_kb = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            with open(f"/proc/{proc.pid}/status") as fp:
                for line in fp:
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"load failed with exit code {proc.returncode}")
    return seconds, peak_kb / 1024, usage.ru_utime + usage.ru_stime


def settled() -> None:
    """Flush earlier writes to disk so a timed step does not pay for the previous one's writeback."""
    os.sync()
    time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step; the median is reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-load-")
    first = os.path.join(tmp, "first.parquet")
    second = os.path.join(tmp, "second.parquet")
    print(f"writing 2 x {args.rows:,} x {args.dims} synthetic records ...", flush=True)
    write_synthetic(first, args.rows, args.dims)
    # the same providers and model, other depictions: an update of a published collection
    write_synthetic(second, args.rows, args.dims, first_id=args.rows)
    runs: dict[str, list[tuple[float, float, float]]] = {"baseline": [], "new": [], "append": []}
    for i in range(args.repeat):
        db = os.path.join(tmp, f"bench-{i}.db")
        settled()
        runs["baseline"].append((numpy_baseline(first, os.path.join(tmp, "baseline.npy")), 0.0, 0.0))
        settled()
        runs["new"].append(run_load(db, first))
        settled()
        runs["append"].append(run_load(db, second))
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(db + suffix):
                os.unlink(db + suffix)

    def median(step: str) -> tuple[float, float, float]:
        middle = len(runs[step]) // 2
        seconds = sorted(r[0] for r in runs[step])[middle]
        cpu = sorted(r[2] for r in runs[step])[middle]
        return seconds, max(r[1] for r in runs[step]), cpu

    baseline, _, _ = median("baseline")
    print()
    print(f"{args.rows:,} x {args.dims}, median of {args.repeat} runs, load average {os.getloadavg()[0]:.2f}")
    print("| what | seconds | rows/s | CPU s | peak RSS | ratio to NumPy |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| NumPy baseline (Parquet -> .npy) | {baseline:.2f} | {args.rows / baseline:,.0f} | - | - | 1.0x |")
    rates = {}
    for step, what in (("new", "load into a new database"), ("append", "load into that database again (WAL, other depictions)")):
        seconds, peak_mb, cpu = median(step)
        rates[step] = args.rows / seconds
        print(f"| {what} | {seconds:.2f} | {rates[step]:,.0f} | {cpu:.2f} | {peak_mb:,.0f} MB | {seconds / baseline:.1f}x |")
    peak = max(r[1] for step in ("new", "append") for r in runs[step])
    print()
    print(
        f"targets: new database >= 30,000 rows/s ({'met' if rates['new'] >= 30_000 else 'MISSED'}); "
        f"peak RSS < 1 GB ({'met' if peak < 1024 else 'MISSED'})"
    )
    if not args.keep:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
