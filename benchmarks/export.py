"""Benchmark `datasette-embeddings export`: time against rows, to show it is linear.

Loads N synthetic records (clustered 512-d vectors, OEmbeddings-style attributes)
for each N given, then times the real export command in a child process.  The
baseline, measured in the same run, is pyarrow writing the exported table again
from memory with the same compression: what remains when reading SQLite is free.
Seconds per 100,000 rows should stay flat as N doubles (it grew about 3x per
doubling before the export read each model with one statement).

    OPENBLAS_NUM_THREADS=1 python benchmarks/export.py --rows 50000 100000 200000 --dims 512
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from load import write_synthetic  # noqa: E402

CLI = os.path.join(os.path.dirname(sys.executable), "datasette-embeddings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 100_000, 200_000])
    parser.add_argument("--dims", type=int, default=512)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print("| rows | export | s per 100k rows | pyarrow baseline | ratio |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as d:
        for rows in args.rows:
            src, db, out = (os.path.join(d, f"{rows}.{ext}") for ext in ("parquet", "db", "out.parquet"))
            write_synthetic(src, rows, args.dims)
            subprocess.run([CLI, "load", db, src, "--quiet"], check=True)
            subprocess.run(["sync"])
            started = time.perf_counter()
            subprocess.run([CLI, "export", db, "-o", out], check=True, capture_output=True)
            seconds = time.perf_counter() - started
            table = pq.read_table(out)
            assert table.num_rows == rows
            started = time.perf_counter()
            pq.write_table(table, os.path.join(d, "baseline.parquet"), compression="zstd", row_group_size=10_000)
            baseline = time.perf_counter() - started
            print(f"| {rows:,} | {seconds:.2f} s | {seconds / rows * 100_000:.2f} | {baseline:.2f} s | {seconds / baseline:.1f} |", flush=True)
            for path in (src, db, out):
                os.unlink(path)
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
