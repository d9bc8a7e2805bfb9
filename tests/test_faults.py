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


# ------------------------------------------------------------------ two loads on one database


@pytest.fixture
def held_url():
    """A loopback HTTP server whose one URL answers junk only once ``release`` is set."""
    import http.server

    arrived = threading.Event()
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            arrived.set()
            release.wait(timeout=120)
            body = b"<html>this is not parquet</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/slow.parquet", arrived, release
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_failing_first_load_never_deletes_what_another_load_committed(tmp_path, held_url):
    """Load B (slow URL, then junk) into a new path; load A of a good file starts meanwhile."""
    url, arrived, release = held_url
    good = tmp_path / "good.parquet"
    write_parquet(good, make_records(n=50, providers=("a",), models={"m": 8}))
    db = tmp_path / "shared.db"
    load_b = subprocess.Popen([CLI_BIN, "load", str(db), url, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    load_a = None
    try:
        assert arrived.wait(timeout=60), "load B never asked for its URL"
        load_a = subprocess.Popen([CLI_BIN, "load", str(db), str(good), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # A either finishes (two loads overlapping) or says it waits for B: then B gets its junk
        waited = load_a.stderr.readline()
        release.set()
        b_out, b_err = load_b.communicate(timeout=60)
        a_out, a_err = load_a.communicate(timeout=60)
    finally:
        for proc in (load_b, load_a):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert load_b.returncode == 1 and url in b_err and "Traceback" not in b_err
    assert load_a.returncode == 0, waited + a_err
    assert db.exists(), "load B's cleanup deleted the database load A committed"
    assert counts_per_provider(db) == {"a": 50}
    assert "another load of this database" in waited and "waiting" in waited
    # the lock file is gone with the run
    assert not Path(str(db) + ".write-lock").exists()


def test_a_second_load_waits_for_the_first_and_both_land(tmp_path, big_files):
    db = tmp_path / "both.db"
    first = subprocess.Popen([CLI_BIN, "load", str(db), str(big_files[0]), "--quiet", "--batch-size", "1000"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not Path(str(db) + ".write-lock").exists() and time.time() < deadline:
            time.sleep(0.002)
        second = subprocess.run([CLI_BIN, "load", str(db), str(big_files[1]), "--quiet"], capture_output=True, text=True, timeout=300)
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()
    assert second.returncode == 0, second.stderr
    assert counts_per_provider(db) == {"p0": ROWS, "p1": ROWS}


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB tmpfs, so writes fail with ENOSPC; needs root and mount (skipped otherwise)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture(scope="module")
def too_big(tmp_path_factory) -> Path:
    """5,000 x 256 float32: 5 MB of vectors, more than the small disk holds."""
    path = tmp_path_factory.mktemp("too-big") / "too-big.parquet"
    write_synthetic(path, 5_000, DIMS, provider="big", model="m256", seed=3, row_group_size=1_000)
    return path


def test_disk_full_during_a_first_load_leaves_nothing(small_disk, too_big):
    db = small_disk / "new.db"
    proc = subprocess.run([CLI_BIN, "load", str(db), str(too_big), "--batch-size", "500"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"Error: {too_big}: not loaded, the disk is full"), proc.stderr
    assert os.listdir(small_disk) == []


def test_disk_full_during_a_load_into_an_existing_database_keeps_it(small_disk, too_big, tmp_path):
    db = small_disk / "kept.db"
    seed = tmp_path / "seed.parquet"
    write_parquet(seed, make_records(n=20, providers=("seed",), models={"m256": DIMS}))
    assert subprocess.run([CLI_BIN, "load", str(db), str(seed), "--quiet"], capture_output=True, timeout=120).returncode == 0
    proc = subprocess.run([CLI_BIN, "load", str(db), str(too_big), "--batch-size", "500"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "the disk is full" in proc.stderr and "the database is as it was" in proc.stderr, proc.stderr
    assert counts_per_provider(db) == {"seed": 20}
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    conn.close()


@pytest.mark.parametrize("existing", [False, True], ids=["new-database", "existing-database"])
def test_sqlite_full_is_a_clear_error_on_any_filesystem(tmp_path, monkeypatch, too_big, existing):
    """SQLITE_FULL through ``max_page_count``, for machines where a small disk cannot be mounted."""
    from click.testing import CliRunner

    from datasette_embeddings.cli import cli

    db = tmp_path / "capped.db"
    if existing:
        seed = tmp_path / "seed.parquet"
        write_parquet(seed, make_records(n=20, providers=("seed",), models={"m256": DIMS}))
        loader.load(str(db), [str(seed)])
    tune = loader.tune_for_loading

    def capped(conn) -> None:
        tune(conn)
        conn.execute("pragma max_page_count = 40")  # 40 pages of 16 KiB: 640 KB

    monkeypatch.setattr(loader, "tune_for_loading", capped)
    result = CliRunner().invoke(cli, ["load", str(db), str(too_big), "--batch-size", "500"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.exception.__class__.__name__ == "SystemExit"
    assert "the disk is full" in result.output, result.output
    if existing:
        assert counts_per_provider(db) == {"seed": 20}
    else:
        assert not any(p.name.startswith("capped.db") for p in tmp_path.iterdir())


def test_a_download_that_fills_the_temporary_folder_is_a_clear_error(small_disk, too_big, tmp_path):
    """URLs are streamed to TMPDIR first: a full TMPDIR is named, and the partial download removed."""
    import http.server

    payload = too_big.read_bytes()  # more than the 3 MB disk holds

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/big.parquet"
    db = tmp_path / "web.db"
    try:
        proc = subprocess.run([CLI_BIN, "load", str(db), url], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "TMPDIR": str(small_disk)})
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"Error: {url}: could not download: the disk holding the temporary folder {small_disk} is full")
    assert os.listdir(small_disk) == []
    assert not any(p.name.startswith("web.db") for p in tmp_path.iterdir())


def test_ctrl_c_during_a_first_load_leaves_no_database(tmp_path, monkeypatch):
    source = tmp_path / "some.parquet"
    write_parquet(source, make_records(n=50, providers=("a",), models={"m": 8}))
    db = tmp_path / "interrupted.db"

    def interrupt(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loader.load(str(db), [str(source)], batch_size=10, progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["some.parquet"]
