"""Publishing read-only: a real ``datasette -i`` server with the plugin never changes the file."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from datasette_embeddings.files import loader
from tests.helpers import file_hashes, free_port, make_records, write_parquet

DATASETTE = str(Path(sys.executable).parent / "datasette")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    d = tmp_path_factory.mktemp("immutable")
    src = d / "c.parquet"
    write_parquet(src, make_records(n=12, providers=("met", "nga"), models={"m": 8}))
    db = d / "collection.db"
    loader.load(str(db), [str(src)])
    before = file_hashes(db)
    port = free_port()
    proc = subprocess.Popen(
        [DATASETTE, "-i", str(db), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(base + "/-/versions.json", timeout=2)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("datasette did not start: " + (proc.stdout.read() if proc.stdout else ""))
            time.sleep(0.2)
    yield base, db, before, proc
    proc.terminate()
    proc.wait(timeout=30)


def test_database_and_records_pages_answer(published):
    base, _db, _before, _proc = published
    assert httpx.get(base + "/collection.json").status_code == 200
    r = httpx.get(base + "/collection/records.json?_shape=array&_size=100")
    assert r.status_code == 200
    rows = r.json()
    assert len(rows) == 24 and {row["provider"] for row in rows} == {"met", "nga"}


def test_knn_query_runs_on_an_immutable_database(published):
    base, _db, _before, _proc = published
    table = httpx.get(base + "/collection.json?sql=select+vec_table+from+models&_shape=array").json()[0]["vec_table"]
    vector = "[" + ",".join(map(str, np.ones(8))) + "]"
    r = httpx.get(
        base + "/collection.json",
        params={"sql": f"select id from {table} where embedding match :v and k = 3", "v": vector, "_shape": "array"},
    )
    assert r.status_code == 200, r.text
    assert len(r.json()) == 3


def test_file_is_unchanged_while_and_after_serving(published):
    base, db, before, proc = published
    for path in ("/", "/collection", "/collection/records", "/collection/models.json"):
        assert httpx.get(base + path).status_code == 200
    assert file_hashes(db) == before
    assert not Path(str(db) + "-shm").exists()  # immutable: SQLite never even opened the WAL index
    proc.terminate()
    proc.wait(timeout=30)
    assert file_hashes(db) == before
