"""The upsert rule of ``load``, checked against full dumps of records and vectors.

Key: (provider, depiction_id, model).  A newer ``created`` replaces the stored
record and vector (keeping its id); an older one is skipped as stale; the same
row again changes nothing.  Rows of one file follow the same rule in row order.
"""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from datasette_embeddings.files import loader
from datasette_embeddings.storage.connection import connect
from tests.helpers import dump_database, file_hashes, make_records, write_parquet

DIMS = 8


def recs(n=10, created=1_700_000_000, seed=0, providers=("met",)):
    return make_records(n=n, providers=providers, models={"m": DIMS}, seed=seed, created=created)


def write(tmp_path, name, records, **kwargs):
    path = tmp_path / name
    write_parquet(path, records, **kwargs)
    return str(path)


def nearest_id(db, vector) -> int:
    conn = connect(str(db), readonly=True)
    try:
        (table,) = conn.execute("select vec_table from models where label = 'm'").fetchone()
        return conn.execute(
            f"select id from {table} where embedding match ? and k = 1", [np.asarray(vector, "<f4").tobytes()]
        ).fetchone()[0]
    finally:
        conn.close()


def test_loading_the_same_file_twice_changes_nothing(tmp_path):
    db = tmp_path / "x.db"
    src = write(tmp_path, "a.parquet", recs())
    first = loader.load(str(db), [src])
    assert first.totals().inserted == 10
    dump, hashes = dump_database(db), file_hashes(db)
    again = loader.load(str(db), [src])
    t = again.totals()
    assert (t.inserted, t.updated, t.stale, t.unchanged) == (0, 0, 0, 10)
    assert dump_database(db) == dump
    assert file_hashes(db) == hashes


def test_newer_created_replaces_record_and_vector_keeping_the_id(tmp_path):
    db = tmp_path / "x.db"
    old = recs()
    loader.load(str(db), [write(tmp_path, "old.parquet", old)])
    ids_before = {row[1]: row[7] for row in dump_database(db)}
    new = recs(seed=99, created=1_800_000_000)
    for r in new:
        r["attributes"] = {"subject_title": "re-embedded " + r["depiction_id"]}
    report = loader.load(str(db), [write(tmp_path, "new.parquet", new)])
    assert report.totals().updated == 10 and report.totals().inserted == 0
    dump = {row[1]: row for row in dump_database(db)}
    assert len(dump) == 10
    for r in new:
        row = dump[r["depiction_id"]]
        assert row[4] == 1_800_000_000
        assert row[5] == '{"subject_title": "re-embedded %s"}' % r["depiction_id"]
        assert row[6] == np.asarray(r["embeddings"], "<f4").tobytes()
        assert row[7] == ids_before[r["depiction_id"]]
    # the vec0 index holds the new vector, not the old one
    target = new[3]
    assert nearest_id(db, target["embeddings"]) == ids_before[target["depiction_id"]]
    conn = sqlite3.connect(db)
    assert conn.execute("select record_count from models where label = 'm'").fetchone()[0] == 10


def test_knn_no_longer_finds_the_replaced_vector(tmp_path):
    db = tmp_path / "x.db"
    old = recs(n=30)
    loader.load(str(db), [write(tmp_path, "old.parquet", old)])
    replaced = dict(old[5], embeddings=-np.asarray(old[5]["embeddings"]), created=old[5]["created"] + 1)
    loader.load(str(db), [write(tmp_path, "one.parquet", [replaced])])
    rid = {row[1]: row[7] for row in dump_database(db)}["met-d5"]
    assert nearest_id(db, replaced["embeddings"]) == rid
    assert nearest_id(db, old[5]["embeddings"]) != rid


def test_older_created_is_skipped_as_stale(tmp_path):
    db = tmp_path / "x.db"
    loader.load(str(db), [write(tmp_path, "new.parquet", recs(created=1_800_000_000))])
    dump = dump_database(db)
    report = loader.load(str(db), [write(tmp_path, "old.parquet", recs(seed=5, created=1_700_000_000))])
    assert report.totals().stale == 10
    assert dump_database(db) == dump


def test_same_created_different_content_replaces(tmp_path):
    db = tmp_path / "x.db"
    loader.load(str(db), [write(tmp_path, "a.parquet", recs())])
    changed = recs()
    changed[0]["attributes"] = {"subject_title": "corrected"}
    report = loader.load(str(db), [write(tmp_path, "b.parquet", changed)])
    t = report.totals()
    assert (t.updated, t.unchanged) == (1, 9)
    assert {row[1]: row[5] for row in dump_database(db)}["met-d0"] == '{"subject_title": "corrected"}'


@pytest.mark.parametrize("batch_size", [1, 3, 4096], ids=["batch-1", "batch-3", "one-batch"])
def test_duplicate_keys_in_one_file_follow_the_rule_in_row_order(tmp_path, batch_size):
    base = recs(n=1)[0]
    v = lambda x: np.full(DIMS, x, np.float32)  # noqa: E731
    rows = [
        dict(base, created=100, embeddings=v(1)),  # inserted
        dict(base, created=300, embeddings=v(3)),  # newer: replaces
        dict(base, created=200, embeddings=v(2)),  # older than the row before: stale
        dict(base, created=300, embeddings=v(3)),  # identical: unchanged
        dict(base, created=300, embeddings=v(4), attributes={"k": "last"}),  # same time, new content: replaces
    ]
    db = tmp_path / "x.db"
    report = loader.load(str(db), [write(tmp_path, "dups.parquet", rows)], batch_size=batch_size)
    t = report.totals()
    assert (t.inserted, t.updated, t.stale, t.unchanged) == (1, 2, 1, 1)
    (row,) = dump_database(db)
    assert row[4] == 300 and row[5] == '{"k": "last"}' and row[6] == v(4).tobytes()


def test_subject_id_empty_becomes_the_depiction_id(tmp_path):
    rows = recs(n=3)
    rows[1]["subject_id"] = ""
    db = tmp_path / "x.db"
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.helpers import replace_column

    pq.write_table(replace_column(rows, "subject_id", pa.array(["met-s0", "", None])), str(tmp_path / "s.parquet"))
    loader.load(str(db), [str(tmp_path / "s.parquet")])
    subjects = {row[1]: row[3] for row in dump_database(db)}
    assert subjects == {"met-d0": "met-s0", "met-d1": "met-d1", "met-d2": "met-d2"}


def test_a_failing_file_keeps_earlier_files_of_the_run(tmp_path):
    db = tmp_path / "x.db"
    good = write(tmp_path, "1-good.parquet", recs(providers=("good",)))
    bad = tmp_path / "2-bad.parquet"
    bad.write_bytes(b"nope")
    after = write(tmp_path, "3-after.parquet", recs(providers=("after",)))
    with pytest.raises(loader.LoadError) as info:
        loader.load(str(db), [good, str(bad), after])
    assert str(bad) in str(info.value)
    providers = {row[0] for row in dump_database(db)}
    assert providers == {"good"}


def test_directory_loads_its_parquet_files_in_name_order(tmp_path):
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    write_parquet(d / "b.parquet", recs(created=200))
    write_parquet(d / "sub" / "a.parquet", recs(seed=3, created=100))
    (d / "readme.txt").write_text("ignored")
    db = tmp_path / "x.db"
    report = loader.load(str(db), [str(d)])
    assert [f.source for f in report.files] == [str(d / "b.parquet"), str(d / "sub" / "a.parquet")]
    assert report.totals().stale == 10
    assert {row[4] for row in dump_database(db)} == {200}


def test_new_database_is_in_wal_mode_and_counts_are_kept(tmp_path):
    db = tmp_path / "x.db"
    loader.load(str(db), [write(tmp_path, "a.parquet", recs(providers=("a", "b")))])
    conn = sqlite3.connect(db)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert conn.execute("select record_count, dimensions from models").fetchall() == [(20, DIMS)]
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_reader_thread_stops_when_a_file_fails_and_when_it_succeeds(tmp_path):
    import threading

    good = recs(n=50)
    bad = recs(n=50, providers=("bad",))
    bad[40]["embeddings"][0] = np.nan
    db = tmp_path / "x.db"
    loader.load(str(db), [write(tmp_path, "good.parquet", good, row_group_size=5)], batch_size=5)
    with pytest.raises(loader.LoadError, match="row 40, field 'embeddings'"):
        loader.load(str(db), [write(tmp_path, "bad.parquet", bad, row_group_size=5)], batch_size=5)
    assert not [t for t in threading.enumerate() if t.name == "datasette-embeddings-reader"]
    assert {row[0] for row in dump_database(db)} == {"met"}


@pytest.mark.parametrize("batch_size", [4, 4096], ids=["small-batches", "one-batch"])
def test_a_batch_mixing_new_and_stored_keys(tmp_path, batch_size):
    """New keys go in directly; stored ones, and repeats inside the batch, are judged by the rule."""
    db = tmp_path / "x.db"
    loader.load(str(db), [write(tmp_path, "a.parquet", recs(n=10, seed=1, created=200))])
    before = {row[1]: row for row in dump_database(db)}
    update = recs(n=16, seed=2, created=200)  # met-d0 .. met-d15
    for i in range(3):
        update[i]["created"] = 300  # newer: replaced
    for i in range(3, 6):
        update[i]["created"] = 100  # older: stale
    for i in range(6, 10):
        update[i] = recs(n=10, seed=1, created=200)[i]  # identical: unchanged
    # met-d10 .. met-d15 are new; met-d12 comes twice, the second newer
    update.append(dict(update[12], created=400, embeddings=np.full(DIMS, 7, np.float32)))
    report = loader.load(str(db), [write(tmp_path, "b.parquet", update)], batch_size=batch_size)
    t = report.totals()
    assert (t.inserted, t.updated, t.stale, t.unchanged) == (6, 4, 3, 4)

    after = {row[1]: row for row in dump_database(db)}
    assert len(after) == 16
    written = {r["depiction_id"]: r for r in update}
    for i in range(16):
        key = f"met-d{i}"
        expected = before[key] if 3 <= i < 10 else None
        if expected is not None:
            assert after[key] == expected
        else:
            assert after[key][4] == written[key]["created"]
            assert after[key][6] == np.asarray(written[key]["embeddings"], np.float32).tobytes()
    # replaced records keep their id; every record has exactly one vector under the same id
    assert all(after[f"met-d{i}"][7] == before[f"met-d{i}"][7] for i in range(10))
    conn = sqlite3.connect(db)
    (table,) = conn.execute("select vec_table from models").fetchone()
    conn.close()
    conn = connect(str(db), readonly=True)
    assert sorted(r[0] for r in conn.execute(f"select id from {table}")) == sorted(row[7] for row in after.values())
    conn.close()
    assert nearest_id(db, np.full(DIMS, 7, np.float32)) == after["met-d12"][7]


def journal_mode(db) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("pragma journal_mode").fetchone()[0]
    finally:
        conn.close()


def test_a_new_database_loads_under_a_rollback_journal_and_ends_in_wal(tmp_path):
    """WAL would write every new page twice; a database nobody can be reading yet needs no WAL."""
    from datasette_embeddings.storage.store import NEW_DATABASE_PAGE_SIZE

    db = tmp_path / "x.db"
    modes = []
    src = write(tmp_path, "a.parquet", recs(n=40), row_group_size=10)
    loader.load(str(db), [src], batch_size=10, progress=lambda n: modes.append(journal_mode(db)))
    assert modes and set(modes) == {"delete"}
    assert journal_mode(db) == "wal"
    conn = sqlite3.connect(db)
    assert conn.execute("pragma page_size").fetchone()[0] == NEW_DATABASE_PAGE_SIZE
    (ddl,) = conn.execute("select sql from sqlite_master where name = (select vec_table from models)").fetchone()
    assert "chunk_size=256" in ddl
    conn.close()
    assert not (tmp_path / "x.db-journal").exists()


def test_loading_into_an_existing_database_stays_in_wal_for_its_readers(tmp_path):
    db = tmp_path / "x.db"
    loader.load(str(db), [write(tmp_path, "a.parquet", recs(n=5))])
    modes = []
    src = write(tmp_path, "b.parquet", recs(n=40, seed=3, providers=("nga",)), row_group_size=10)
    loader.load(str(db), [src], batch_size=10, progress=lambda n: modes.append(journal_mode(db)))
    assert modes and set(modes) == {"wal"}
    assert {row[0] for row in dump_database(db)} == {"met", "nga"}


# ------------------------------------------------------------------ memory bounded by bytes


def _write_heavy_attributes(path, rows: int, text_bytes: int) -> None:
    """``rows`` records of 8-d vectors whose one attribute is ``text_bytes`` of random letters.

    Pages of 64 rows, as Go's and DuckDB's writers make them: pyarrow's default puts
    1,024 values in a page, and a reader must hold a whole page (here 50 MB) whatever
    its batch size.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datasette_embeddings.files.parquet_io import CANONICAL_SCHEMA

    rng = np.random.default_rng(rows)
    with pq.ParquetWriter(str(path), CANONICAL_SCHEMA, compression="zstd", write_batch_size=64) as writer:
        for start in range(0, rows, 1000):
            n = min(1000, rows - start)
            text = rng.integers(97, 123, size=n * text_bytes, dtype=np.uint8).tobytes().decode()
            ids = [f"d{start + i}" for i in range(n)]
            vectors = rng.standard_normal((n, DIMS)).astype(np.float32)
            writer.write_table(pa.Table.from_arrays([
                pa.array(["heavy"] * n), pa.array(ids), pa.array(ids), pa.array(["m"] * n),
                pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * DIMS, DIMS, dtype=np.int32)), pa.array(vectors.ravel()),
                                         type=CANONICAL_SCHEMA.field("embeddings").type),
                pa.array([1_700_000_000] * n, pa.int64()),
                pa.array([[("description", text[i * text_bytes:(i + 1) * text_bytes])] for i in range(n)],
                         CANONICAL_SCHEMA.field("attributes").type),
            ], schema=CANONICAL_SCHEMA))


def _peak_rss_mb_of_load(db, source) -> float:
    """Peak RSS of a real ``load`` child process, measured by a wrapper that runs only it."""
    import subprocess
    import sys
    from pathlib import Path

    cli_bin = str(Path(sys.executable).parent / "datasette-embeddings")
    wrapper = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:], capture_output=True).returncode\n"
        "assert code == 0, code\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, cli_bin, "load", str(db), str(source), "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return int(out.stdout) / 1024


def test_load_memory_is_bounded_by_bytes_not_only_rows(tmp_path):
    """120 MB of attribute text in 2,400 rows must cost far less than 120 MB a batch.

    With 4,096-row batches only, every row of the heavy file was one batch: its load
    peaked 740 MB above the same rows with short attributes (now about 270 MB, most of
    it SQLite's page cache filling with the text's overflow pages).
    """
    peaks = {}
    for name, text_bytes in (("light", 50), ("heavy", 50_000)):
        source = tmp_path / f"{name}.parquet"
        _write_heavy_attributes(source, 2_400, text_bytes)
        peaks[name] = _peak_rss_mb_of_load(tmp_path / f"{name}.db", source)
        source.unlink()
    assert peaks["heavy"] - peaks["light"] < 400, peaks


def test_a_heavy_file_is_read_in_smaller_batches(tmp_path):
    from datasette_embeddings.files.parquet_io import BATCH_BYTES, read_batches

    source = tmp_path / "heavy.parquet"
    _write_heavy_attributes(source, 1_000, 50_000)
    sizes = [len(b) for b in read_batches(str(source), batch_size=4096)]
    assert sum(sizes) == 1_000
    assert max(sizes) <= BATCH_BYTES // 50_000 + 1 and len(sizes) >= 3, sizes
    light = tmp_path / "light.parquet"
    write_parquet(light, recs(n=3000))
    assert [len(b) for b in read_batches(str(light), batch_size=1000)] == [1000, 1000, 1000]
