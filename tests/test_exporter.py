"""``export``: what it refuses to write over, where it writes, and what it reads.

Real databases, real files, real devices and a real subprocess for the signals.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from datasette_embeddings.files import exporter, loader
from datasette_embeddings.files.parquet_io import ParquetRecordWriter
from tests.helpers import dump_database, file_hashes, make_records, write_parquet, write_synthetic

CLI_BIN = str(Path(sys.executable).parent / "datasette-embeddings")


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "z.db"
    src = tmp_path / "src.parquet"
    write_parquet(src, make_records(n=6, providers=("met", "nga"), models={"clip": 6, "minilm": 4}))
    loader.load(str(path), [str(src)])
    return path


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "partial" in p.name)


# ------------------------------------------------------------------ targets refused


def test_export_over_its_own_database_is_refused(tmp_path, db):
    before = file_hashes(db)
    for name in (db, tmp_path / "." / "z.db"):
        result = invoke("export", db, "-o", name)
        assert result.exit_code == 1
        assert "is the database being exported" in result.output
    assert file_hashes(db) == before


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "wal-name"])
def test_export_over_the_database_under_another_name_is_refused(tmp_path, db, kind):
    other = tmp_path / "other-name.parquet"
    if kind == "symlink":
        other.symlink_to(db)
    elif kind == "hardlink":
        os.link(db, other)
    else:
        other = Path(str(db) + "-wal")
    before = file_hashes(db)
    result = invoke("export", db, "-o", other)
    assert result.exit_code == 1, result.output
    assert "is the database being exported" in result.output
    assert file_hashes(db) == before


@pytest.fixture
def device_node(tmp_path) -> Path:
    """A private copy of /dev/full's device node (char 1,7): an export that got it wrong replaces only this one."""
    node = tmp_path / "full"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("mknod needs root")
    return node


def test_export_to_a_device_is_refused_and_the_device_stays(db, device_node):
    result = invoke("export", db, "-o", device_node)
    assert result.exit_code == 1
    assert f"{device_node}: is not a regular file" in result.output
    assert stat.S_ISCHR(os.stat(device_node).st_mode)


def test_export_to_a_fifo_is_refused_without_blocking(tmp_path, db):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = invoke("export", db, "-o", fifo)
    assert result.exit_code == 1
    assert "is not a regular file" in result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_export_writes_through_a_symlink(tmp_path, db):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = real_dir / "collection.parquet"
    real.write_bytes(b"old content")
    link = tmp_path / "link.parquet"
    link.symlink_to(real)
    result = invoke("export", db, "-o", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert pq.read_table(real).num_rows == 24
    assert leftovers(tmp_path) == [] and leftovers(real_dir) == []


def test_export_through_a_dangling_symlink_creates_its_target(tmp_path, db):
    target = tmp_path / "made-by-export.parquet"
    link = tmp_path / "link.parquet"
    link.symlink_to(target)
    assert invoke("export", db, "-o", link).exit_code == 0
    assert link.is_symlink() and pq.read_table(target).num_rows == 24


# ------------------------------------------------------------------ interruptions leave nothing


def _interrupting_writer(monkeypatch, after_rows: int):
    """Make the Parquet writer raise KeyboardInterrupt (as Ctrl-C does) once it holds some rows."""
    original = ParquetRecordWriter.write_stored

    def write_stored(self, rows):
        original(self, rows)
        self.flush()
        if self.count >= after_rows:
            raise KeyboardInterrupt

    monkeypatch.setattr(ParquetRecordWriter, "write_stored", write_stored)


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-file", "named-partial-fallback"])
def test_an_interrupted_export_leaves_no_partial_and_keeps_the_old_file(tmp_path, db, monkeypatch, unnamed):
    out = tmp_path / "out.parquet"
    out.write_bytes(b"the previous export")
    if not unnamed:
        monkeypatch.setattr(exporter, "_unnamed_file", lambda directory: None)
    _interrupting_writer(monkeypatch, after_rows=1)
    with pytest.raises(KeyboardInterrupt):
        exporter.export(str(db), str(out))
    assert out.read_bytes() == b"the previous export"
    assert leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def large_db(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("large")
    src = d / "large.parquet"
    write_synthetic(src, 60_000, 256, provider="p", model="m", seed=1)
    path = d / "large.db"
    loader.load(str(path), [str(src)])
    return path


def _open_files_in(pid: int, directory: Path) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory) + "/") and not target.endswith(".db"):
            found.append(target)
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_a_signalled_export_leaves_nothing(tmp_path, large_db, sig):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([CLI_BIN, "export", str(large_db), "-o", str(out_dir / "x.parquet")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not _open_files_in(proc.pid, out_dir):
            time.sleep(0.002)
        assert proc.poll() is None, "the export finished before it could be interrupted"
        time.sleep(0.05)  # some rows written
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr.read()
    assert os.listdir(out_dir) == []


# ------------------------------------------------------------------ one snapshot


def test_an_export_during_a_load_is_one_snapshot(tmp_path, db, monkeypatch):
    """A load commits new rows of both models while the export is reading its first model."""
    more = tmp_path / "more.parquet"
    write_parquet(more, make_records(n=5, providers=("louvre",), models={"clip": 6, "minilm": 4}, seed=9))
    expected = dump_database(db)
    paused, resume = threading.Event(), threading.Event()
    from datasette_embeddings.storage import connection

    real_connect = connection.connect

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)

        def on_statement(sql: str) -> None:
            # the first statement that reads vectors: the export is under way
            if "join vec_" in sql and not paused.is_set():
                paused.set()
                assert resume.wait(timeout=60)

        conn.set_trace_callback(on_statement)
        return conn

    monkeypatch.setattr(connection, "connect", connect)
    out = tmp_path / "snapshot.parquet"
    result: list = []
    thread = threading.Thread(target=lambda: result.append(exporter.export(str(db), str(out))))
    thread.start()
    try:
        assert paused.wait(timeout=60)
        loaded = subprocess.run([CLI_BIN, "load", str(db), str(more), "--quiet"], capture_output=True, text=True, timeout=120)
        assert loaded.returncode == 0, loaded.stderr
    finally:
        resume.set()
        thread.join(timeout=60)
    assert len(dump_database(db)) == len(expected) + 10
    table = pq.read_table(out)
    assert "louvre" not in set(table.column("provider").to_pylist())
    assert result == [len(expected)]


# ------------------------------------------------------------------ speed shape


def test_export_reads_each_model_with_one_statement(db, monkeypatch):
    """Paging with ``id > ? limit ?`` re-joined and re-sorted the rest of the model for every page."""
    from datasette_embeddings.storage.connection import connect
    from datasette_embeddings.storage.store import Store

    conn = connect(str(db), readonly=True)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    rows = [row for batch in Store(conn).iter_stored_rows(batch_size=2) for row in batch]
    conn.close()
    assert len(rows) == 24
    reads = [s for s in statements if "join vec_" in s]
    assert len(reads) == 2 and all("limit" not in s.lower() for s in reads)


def test_export_row_groups_are_bounded_by_bytes(tmp_path):
    """2,200 records of 8,192-d vectors (72 MB) are not held as one 10,000-row group."""
    src = tmp_path / "wide.parquet"
    write_synthetic(src, 2_200, 8_192, provider="p", model="wide", seed=2, row_group_size=500)
    db = tmp_path / "wide.db"
    loader.load(str(db), [str(src)])
    out = tmp_path / "wide-out.parquet"
    assert exporter.export(str(db), str(out)) == 2_200
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups >= 2
    assert all(meta.row_group(i).total_byte_size < 48 << 20 for i in range(meta.num_row_groups))
