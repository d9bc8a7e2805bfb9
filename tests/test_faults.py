"""Faults during a real multi-file load: SIGKILL, and readers running alongside.

Each file is one transaction, so whatever happens the database holds whole
files only.  These tests use a real ``datasette-embeddings load`` subprocess.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from datasette_embeddings.files import loader
from tests.helpers import make_records, write_parquet, write_synthetic

CLI_BIN = str(Path(sys.executable).parent / "datasette-embeddings")
ROWS = 20_000
DIMS = 256
FILES = 4


@pytest.fixture(scope="module")
def big_files(tmp_path_factory) -> list[Path]:
    """Four files of 20,000 x 256, one provider each, so a count per provider is a count per file."""
    d = tmp_path_factory.mktemp("big")
    paths = []
    for i in range(FILES):
        path = d / f"part-{i}.parquet"
        write_synthetic(path, ROWS, DIMS, provider=f"p{i}", model="m256", seed=i, row_group_size=4_000)
        paths.append(path)
    return paths


def counts_per_provider(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("select provider, count(*) from records group by provider").fetchall())
    finally:
        conn.close()


def test_sigkill_mid_load_keeps_finished_files_and_a_rerun_completes(tmp_path, big_files):
    db = tmp_path / "killed.db"
    proc = subprocess.Popen(
        [CLI_BIN, "load", str(db), *map(str, big_files), "--batch-size", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    reported = []
    try:
        # each finished file prints one line on stdout, after its commit
        for line in proc.stdout:
            reported.append(line.split(":")[0])
            if len(reported) == 2:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert reported == [str(p) for p in big_files[:2]]

    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    conn.close()
    counts = counts_per_provider(db)
    # whole files only, in order: the two reported, and at most one more that committed
    # in the instant between its commit and its report line
    assert all(n == ROWS for n in counts.values()), counts
    finished = sorted(counts)
    assert finished == [f"p{i}" for i in range(len(finished))]
    assert 2 <= len(finished) < FILES

    rerun = subprocess.run([CLI_BIN, "load", str(db), *map(str, big_files), "--quiet"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == ""
    assert counts_per_provider(db) == {f"p{i}": ROWS for i in range(FILES)}
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert conn.execute("select record_count from models where label = 'm256'").fetchone()[0] == ROWS * FILES
    (table,) = conn.execute("select vec_table from models where label = 'm256'").fetchone()
    assert conn.execute(f"select count(*) from {table}_rowids").fetchone()[0] == ROWS * FILES
    conn.close()


def test_concurrent_readers_only_see_whole_files(tmp_path, big_files):
    db = tmp_path / "shared.db"
    seed = tmp_path / "seed.parquet"
    write_parquet(seed, make_records(n=3, providers=("seed",), models={"m256": DIMS}))
    loader.load(str(db), [str(seed)])  # the database exists (in WAL mode) before readers start

    seen: list[dict] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            while not stop.is_set():
                seen.append(dict(conn.execute("select provider, count(*) from records group by provider").fetchall()))
                time.sleep(0.005)
            conn.close()
        except BaseException as ex:  # surfaced in the main thread
            errors.append(ex)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        proc = subprocess.run(
            [CLI_BIN, "load", str(db), *map(str, big_files[:3]), "--quiet", "--batch-size", "1000"],
            capture_output=True, text=True, timeout=600,
        )
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert proc.returncode == 0, proc.stderr
    assert not errors, errors
    assert len(seen) > 20
    for snapshot in seen:
        assert snapshot.pop("seed") == 3
        assert all(n == ROWS for n in snapshot.values()), snapshot
        # and files appear in load order
        assert sorted(snapshot) == [f"p{i}" for i in range(len(snapshot))]
    # readers saw the load in progress, not only before and after
    assert len({len(s) for s in seen}) >= 2


def test_sigkill_during_a_new_databases_first_file_leaves_it_empty_and_a_rerun_completes(tmp_path):
    """A new database loads under a rollback journal: the hot journal undoes the killed file."""
    rows = 80_000  # 80 MB of vectors: more than the load's page cache, so pages reach the file mid-load
    source = tmp_path / "large.parquet"
    write_synthetic(source, rows, DIMS, provider="p0", model="m256", seed=7, row_group_size=4_000)
    db = tmp_path / "fresh.db"
    journal = tmp_path / "fresh.db-journal"
    proc = subprocess.Popen(
        [CLI_BIN, "load", str(db), str(source), "--quiet", "--batch-size", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if journal.exists() and db.exists() and db.stat().st_size > 16_000_000:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the load finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(db)  # the first connection rolls the hot journal back
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert conn.execute("select count(*) from records").fetchone()[0] == 0
    conn.close()
    assert not journal.exists()

    rerun = subprocess.run([CLI_BIN, "load", str(db), str(source), "--quiet"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert counts_per_provider(db) == {"p0": rows}
    conn = sqlite3.connect(db)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    conn.close()
