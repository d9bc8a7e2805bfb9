"""Broken and hostile inputs to ``datasette-embeddings load``, table-driven.

Every case is a real file written in the test.  For each the command must exit
non-zero, say which file (and, where there is one, which row and field) is at
fault, and leave the database byte-for-byte as it was.  Rows are numbered from 0.
"""
from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from datasette_embeddings.files import loader
from datasette_embeddings.cli import cli
from datasette_embeddings.files.parquet_io import CANONICAL_SCHEMA, MAX_DIMENSIONS, to_arrow
from tests.helpers import (
    dump_database,
    file_hashes,
    free_port,
    make_records,
    replace_column,
    table_without,
    write_duckdb_layout,
    write_parquet,
)

DIMS = 8
BAD_ROW = 3
CLI_BIN = str(Path(sys.executable).parent / "datasette-embeddings")


def records(n: int = 6, **kwargs) -> list[dict]:
    return make_records(n=n, models={"test-model": DIMS}, **kwargs)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """A real database holding the base records (6 rows of an 8-d model)."""
    d = tmp_path_factory.mktemp("template")
    src = d / "base.parquet"
    write_parquet(src, records())
    db = d / "base.db"
    loader.load(str(db), [str(src)])
    assert not Path(str(db) + "-wal").exists()
    return db


@pytest.fixture
def db(tmp_path, template_db) -> Path:
    path = tmp_path / "work.db"
    shutil.copy(template_db, path)
    return path


# ------------------------------------------------------------------ builders
# each builder writes a broken file into a directory and returns its path


def _table_with_row(column: str, bad_value, typ: pa.DataType | None = None) -> pa.Table:
    """The canonical table whose ``column`` holds ``bad_value`` at BAD_ROW."""
    recs = records()
    values = [r[column] for r in recs]
    values[BAD_ROW] = bad_value
    return replace_column(recs, column, pa.array(values, typ or CANONICAL_SCHEMA.field(column).type))


def _vectors_with_row(bad_vector, value_type=pa.float32()) -> pa.Table:
    recs = records()
    vectors = [list(map(float, r["embeddings"])) for r in recs]
    vectors[BAD_ROW] = bad_vector
    return replace_column(recs, "embeddings", pa.array(vectors, pa.list_(value_type)))


def _attributes_with_row(bad_json: str) -> pa.Table:
    recs = records()
    values = [json.dumps(r["attributes"]) for r in recs]
    values[BAD_ROW] = bad_json
    return replace_column(recs, "attributes", pa.array(values, pa.string()))


def _write(table: pa.Table):
    def build(d: Path) -> Path:
        path = d / "broken.parquet"
        pq.write_table(table, str(path))
        return path

    return build


def _raw(data: bytes, name: str = "broken.parquet"):
    def build(d: Path) -> Path:
        path = d / name
        path.write_bytes(data)
        return path

    return build


def _truncated(d: Path) -> Path:
    whole = d / "whole.parquet"
    write_parquet(whole, records(200))
    data = whole.read_bytes()
    path = d / "truncated.parquet"
    path.write_bytes(data[: len(data) // 2])
    return path


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def _invalid_utf8(d: Path) -> Path:
    # pyarrow writes whatever bytes a string column holds: view binary data as string
    ids = [r["depiction_id"].encode() for r in records()]
    ids[BAD_ROW] = b"caf\xe9 \xff"
    table = replace_column(records(), "depiction_id", pa.array(ids, pa.binary()).view(pa.string()))
    path = d / "latin1.parquet"
    pq.write_table(table, str(path))
    return path


def _late_error_many_row_groups(d: Path) -> Path:
    """Four row groups; the bad row is in the third, after batches were written."""
    recs = make_records(n=400, models={"test-model": DIMS}, providers=("late",))
    recs[250]["embeddings"][2] = np.nan
    path = d / "late.parquet"
    write_parquet(path, recs, row_group_size=100)
    return path


def _map_of(value_type: pa.DataType, bad_value):
    """attributes as map<string, value_type>: only BAD_ROW has an entry, the others are empty maps."""
    recs = records()
    typed = pa.array(
        [[("title", bad_value)] if i == BAD_ROW else [] for i in range(len(recs))],
        pa.map_(pa.string(), value_type),
    )
    return _write(replace_column(recs, "attributes", typed))


# (id, builder, expected row or None, expected field or None, message fragment)
CASES = [
    ("zero-bytes", _raw(b""), None, None, "not a readable Parquet file"),
    ("plain-text", _raw(b"provider,depiction_id\nmet,1\n", "text.parquet"), None, None, "not a readable Parquet file"),
    ("jpeg", _raw(_jpeg(), "image.parquet"), None, None, "not a readable Parquet file"),
    ("magic-only", _raw(b"PAR1" + b"\x00" * 64 + b"PAR1"), None, None, "not a readable Parquet file"),
    ("truncated", _truncated, None, None, "not a readable Parquet file"),
    *[
        (f"missing-{col}", _write(table_without(records(), col)), None, None, f"missing required column(s): {col}")
        for col in ("provider", "depiction_id", "subject_id", "model", "embeddings", "created", "attributes")
    ],
    ("embeddings-as-string", _write(replace_column(records(), "embeddings", ["[1,2,3]"] * 6)), None, "embeddings", "wrong column type string"),
    ("embeddings-as-ints", _write(replace_column(records(), "embeddings", pa.array([[1, 2]] * 6, pa.list_(pa.int32())))), None, "embeddings", "list elements are int32"),
    ("provider-as-int", _write(replace_column(records(), "provider", pa.array(range(6), pa.int64()))), None, "provider", "wrong column type int64"),
    ("created-as-string", _write(replace_column(records(), "created", ["2024-01-01"] * 6)), None, "created", "wrong column type string"),
    ("attributes-as-int", _write(replace_column(records(), "attributes", pa.array(range(6), pa.int64()))), None, "attributes", "wrong column type int64"),
    ("attributes-nested-json", _write(_attributes_with_row('{"title": {"nested": {"deep": 1}}}')), BAD_ROW, "attributes.title", "nested dict"),
    ("attributes-json-array", _write(_attributes_with_row('["a", "b"]')), BAD_ROW, "attributes", "must be a JSON object"),
    ("attributes-not-json", _write(_attributes_with_row("{oops")), BAD_ROW, "attributes", "not a JSON object"),
    ("attributes-map-of-lists", _map_of(pa.list_(pa.string()), ["a", "b"]), BAD_ROW, "attributes.title", "nested list"),
    ("attributes-map-nan", _map_of(pa.float64(), float("nan")), BAD_ROW, "attributes.title", "non-finite"),
    ("nan-float32", _write(_vectors_with_row([0.0, 1.0, float("nan")] + [0.0] * (DIMS - 3))), BAD_ROW, "embeddings", "NaN or infinite value at position 2"),
    ("inf-float64", _write(_vectors_with_row([float("inf")] + [0.0] * (DIMS - 1), pa.float64())), BAD_ROW, "embeddings", "NaN or infinite value at position 0"),
    ("float64-overflows-float32", _write(_vectors_with_row([1e300] + [0.0] * (DIMS - 1), pa.float64())), BAD_ROW, "embeddings", "NaN or infinite"),
    ("dimensions-differ-in-file", _write(_vectors_with_row([0.5] * (DIMS + 1))), BAD_ROW, "embeddings", f"{DIMS + 1} dimensions but row 0"),
    ("dimensions-differ-from-db", _write(replace_column(records(), "embeddings", pa.array([[0.5] * 4] * 6, pa.list_(pa.float32())))), 0, "embeddings", f"has {DIMS} in the database"),
    ("empty-vector", _write(_vectors_with_row([])), BAD_ROW, "embeddings", "empty vector"),
    ("null-vector", _write(_vectors_with_row(None)), BAD_ROW, "embeddings", "is null"),
    ("null-list-element", _write(_vectors_with_row([0.1, None] + [0.1] * (DIMS - 2))), BAD_ROW, "embeddings", "null number"),
    ("100000-dimensions", _write(replace_column(records(1), "embeddings", pa.array([[0.25] * 100_000], pa.list_(pa.float32())))), 0, "embeddings", f"at most {MAX_DIMENSIONS}"),
    ("empty-depiction-id", _write(_table_with_row("depiction_id", "")), BAD_ROW, "depiction_id", "is empty"),
    ("null-depiction-id", _write(_table_with_row("depiction_id", None)), BAD_ROW, "depiction_id", "is empty"),
    ("empty-provider", _write(_table_with_row("provider", "")), BAD_ROW, "provider", "is empty"),
    ("empty-model", _write(_table_with_row("model", "")), BAD_ROW, "model", "is empty"),
    ("10kb-depiction-id", _write(_table_with_row("depiction_id", "x" * 10_240)), BAD_ROW, "depiction_id", "10240 characters long"),
    ("nul-in-provider", _write(_table_with_row("provider", "met\x00evil")), BAD_ROW, "provider", "NUL character"),
    ("invalid-utf8-id", _invalid_utf8, BAD_ROW, "depiction_id", "not valid UTF-8"),
    ("created-negative", _write(_table_with_row("created", -5)), BAD_ROW, "created", "is negative"),
    ("created-null", _write(_table_with_row("created", None)), BAD_ROW, "created", "is empty"),
    ("created-beyond-int64", _write(_table_with_row("created", 2**64 - 1, pa.uint64())), BAD_ROW, "created", "is too large"),
    ("error-in-third-row-group", _late_error_many_row_groups, 250, "embeddings", "NaN or infinite"),
    ("duplicate-provider-column", _write(to_arrow(records()).append_column("provider", pa.array(["other"] * 6))), None, None,
     "duplicate column name(s): provider (2 columns)"),
]


@pytest.mark.parametrize("name,build,row,field,fragment", CASES, ids=[c[0] for c in CASES])
def test_broken_file_is_refused_and_database_unchanged(tmp_path, db, name, build, row, field, fragment):
    path = build(tmp_path)
    before = file_hashes(db)
    # a small batch size makes the late-error case commit several batches inside the transaction first
    result = CliRunner().invoke(cli, ["load", str(db), str(path), "--batch-size", "64"])
    assert result.exit_code == 1, result.output
    message = result.output
    assert str(path) in message
    assert fragment in message
    if row is not None:
        assert f"row {row}," in message
    else:
        assert "row " not in message.split(str(path), 1)[1].split(":")[0]
    if field is not None:
        assert f"field '{field}'" in message
    assert "Traceback" not in message
    assert file_hashes(db) == before


def test_at_least_25_broken_files():
    assert len(CASES) >= 25


def test_first_load_that_fails_leaves_no_database_behind(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    target = tmp_path / "new.db"
    result = CliRunner().invoke(cli, ["load", str(target), str(bad)])
    assert result.exit_code == 1
    assert sorted(os.listdir(tmp_path)) == ["bad.parquet"]


def test_first_load_failing_late_in_a_file_leaves_no_database_behind(tmp_path):
    path = _late_error_many_row_groups(tmp_path)
    target = tmp_path / "new.db"
    result = CliRunner().invoke(cli, ["load", str(target), str(path), "--batch-size", "64"])
    assert result.exit_code == 1
    assert "row 250" in result.output
    assert not any(p.name.startswith("new.db") for p in tmp_path.iterdir())


# ------------------------------------------------------------------ subprocess


@pytest.mark.parametrize("name", ["plain-text", "nan-float32", "invalid-utf8-id", "missing-embeddings"])
def test_real_subprocess_exit_code_and_message(tmp_path, db, name):
    _, build, row, field, fragment = next(c for c in CASES if c[0] == name)
    path = build(tmp_path)
    before = file_hashes(db)
    proc = subprocess.run([CLI_BIN, "load", str(db), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("Error: " + str(path))
    assert fragment in proc.stderr
    if row is not None:
        assert f"row {row}" in proc.stderr
    if field is not None:
        assert f"field '{field}'" in proc.stderr
    assert file_hashes(db) == before


# ------------------------------------------------------------------ sources that cannot be read


@pytest.fixture
def http_dir(tmp_path):
    """A real local http.server serving tmp_path/www (404 for anything missing)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where,fragment", [
    ("closed-port", "could not download (["),
    ("missing", "could not download (HTTP 404"),
])
def test_url_that_cannot_be_downloaded(db, http_dir, where, fragment):
    _, base = http_dir
    # nothing listens on a port just released; the live server answers 404 for a missing file
    url = f"http://127.0.0.1:{free_port()}/x.parquet" if where == "closed-port" else base + "/missing.parquet"
    before = file_hashes(db)
    result = CliRunner().invoke(cli, ["load", str(db), url])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {url}: {fragment}")
    assert file_hashes(db) == before


def test_url_serving_a_broken_file_names_the_url(db, http_dir):
    root, base = http_dir
    (root / "bad.parquet").write_bytes(b"<html>not parquet</html>")
    url = base + "/bad.parquet"
    before = file_hashes(db)
    result = CliRunner().invoke(cli, ["load", str(db), url])
    assert result.exit_code == 1
    assert result.output.startswith("Error: " + url)
    assert file_hashes(db) == before


def test_url_that_works_is_loaded(tmp_path, http_dir):
    root, base = http_dir
    write_parquet(root / "good.parquet", records(5, providers=("web",)))
    target = tmp_path / "web.db"
    downloads_before = set(Path(tempfile.gettempdir()).glob("datasette-embeddings-*.parquet"))
    result = CliRunner().invoke(cli, ["load", str(target), base + "/good.parquet", "--quiet"])
    assert result.exit_code == 0, result.output
    # the download went to a temporary file, which is gone again
    assert set(Path(tempfile.gettempdir()).glob("datasette-embeddings-*.parquet")) == downloads_before
    conn = sqlite3.connect(target)
    assert conn.execute("select count(*) from records where provider = 'web'").fetchone()[0] == 5


def test_missing_local_file_and_empty_directory(tmp_path, db):
    before = file_hashes(db)
    missing = tmp_path / "nope.parquet"
    result = CliRunner().invoke(cli, ["load", str(db), str(missing)])
    assert result.exit_code == 1 and f"{missing}: no such file or directory" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["load", str(db), str(empty)])
    assert result.exit_code == 1 and f"{empty}: directory holds no .parquet files" in result.output
    assert file_hashes(db) == before


# ------------------------------------------------------------------ database paths that cannot be written
# Tests run as root, and root ignores permission bits (chmod 0444 / 0555 do not stop it),
# so an "unwritable" path is made real the only ways root meets: a parent directory that
# does not exist, a path that is a directory, and a file that is not a database.


def test_database_under_missing_directory(tmp_path):
    good = tmp_path / "good.parquet"
    write_parquet(good, records())
    target = tmp_path / "no" / "such" / "dir" / "x.db"
    result = CliRunner().invoke(cli, ["load", str(target), str(good)])
    assert result.exit_code != 0
    assert str(target) in result.output and "does not exist" in result.output
    assert not (tmp_path / "no").exists()


def test_database_path_is_a_directory(tmp_path):
    good = tmp_path / "good.parquet"
    write_parquet(good, records())
    target = tmp_path / "adir"
    target.mkdir()
    result = CliRunner().invoke(cli, ["load", str(target), str(good)])
    assert result.exit_code != 0
    assert str(target) in result.output and "directory" in result.output
    assert os.listdir(target) == []


def test_database_path_is_not_sqlite(tmp_path):
    good = tmp_path / "good.parquet"
    write_parquet(good, records())
    target = tmp_path / "notes.db"
    target.write_text("these are my notes, not a database\n" * 10)
    before = target.read_bytes()
    result = CliRunner().invoke(cli, ["load", str(target), str(good)])
    assert result.exit_code == 1
    assert str(target) in result.output
    assert target.read_bytes() == before


def test_other_sqlite_database_is_left_alone(tmp_path):
    good = tmp_path / "good.parquet"
    write_parquet(good, records())
    target = tmp_path / "other.db"
    conn = sqlite3.connect(target)
    conn.execute("create table notes (body text)")
    conn.execute("insert into notes values ('keep me')")
    conn.commit()
    conn.close()
    before = file_hashes(target)
    result = CliRunner().invoke(cli, ["load", str(target), str(good)])
    assert result.exit_code == 1
    assert "not a datasette-embeddings one" in result.output
    assert file_hashes(target) == before


# ------------------------------------------------------------------ allowed oddities: documented results


def test_extra_columns_are_ignored_and_reported(tmp_path, db):
    table = pq.read_table(_write_path(tmp_path, records(providers=("extra",))))
    table = table.append_column("notes", pa.array(["n"] * 6)).append_column("score", pa.array([1.0] * 6))
    table = table.append_column("notes", pa.array(["again"] * 6))  # a repeated extra column is named once
    path = tmp_path / "extra.parquet"
    pq.write_table(table, str(path))
    result = CliRunner().invoke(cli, ["load", str(db), str(path)])
    assert result.exit_code == 0, result.output
    assert "ignored columns: notes, score" in result.output
    dump = [row for row in dump_database(db) if row[0] == "extra"]
    assert len(dump) == 6
    assert all("notes" not in row[5] and "score" not in row[5] for row in dump)


def _write_path(d: Path, recs: list[dict]) -> Path:
    path = d / "plain.parquet"
    write_parquet(path, recs)
    return path


def test_dangerous_model_label_is_plain_data(tmp_path, db):
    label = 'x"; drop table records; --'
    recs = make_records(n=4, models={label: 3}, providers=("evil",))
    path = tmp_path / "evil.parquet"
    write_parquet(path, recs)
    result = CliRunner().invoke(cli, ["load", str(db), str(path)])
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(db)
    assert conn.execute("select count(*) from records").fetchone()[0] == 6 + 4
    (vec_table,) = conn.execute("select vec_table from models where label = ?", [label]).fetchone()
    assert vec_table.startswith("vec_x_drop_table_records_") and vec_table.replace("_", "").isalnum()
    conn.close()
    out = tmp_path / "out.parquet"
    assert CliRunner().invoke(cli, ["export", str(db), "-o", str(out), "--model", label]).exit_code == 0
    assert set(pq.read_table(out).column("model").to_pylist()) == {label}


def test_duckdb_double_with_odd_ids_is_accepted(tmp_path, db):
    recs = records(providers=("ünïcødé 博物館",))
    recs[0]["depiction_id"] = "id with spaces/and/slashes?&#"
    path = tmp_path / "duck.parquet"
    write_duckdb_layout(path, recs)
    result = CliRunner().invoke(cli, ["load", str(db), str(path), "--quiet"])
    assert result.exit_code == 0 and result.output == ""
    got = {row[1]: row for row in dump_database(db) if row[0] == "ünïcødé 博物館"}
    assert got["id with spaces/and/slashes?&#"][6] == np.asarray(recs[0]["embeddings"], np.float32).tobytes()
