"""Vectors without a cosine (all zeros, 3e38 values, 1e-30 values) and oversized vector inputs.

``load`` refuses them naming the file, row and field; a database that holds them anyway
(loaded by an older version, or written by another tool) answers every page and SQL
function with "no neighbours" for them, never a 500, with the fast index on and off.
"""
import asyncio
import json
import time

import numpy as np
import pytest

from datasette_embeddings.files import loader, parquet_io
from datasette_embeddings.search import memory_index as fast_index
from datasette_embeddings.search import neighbours
from datasette_embeddings.storage.connection import connect
from datasette_embeddings.storage.store import Store
from datasette_embeddings.errors import RecordError
from tests.helpers import make_records, write_parquet

BAD = {
    "zero": np.zeros(8, dtype=np.float32),
    "huge": np.full(8, 3e38, dtype=np.float32),
    "tiny": np.full(8, 1e-30, dtype=np.float32),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_load_refuses_a_vector_without_a_cosine_naming_file_row_and_field(tmp_path, kind):
    records = make_records(n=5)
    records[3]["embeddings"] = BAD[kind]
    path = tmp_path / "bad.parquet"
    write_parquet(path, records)
    with pytest.raises((RecordError, loader.LoadError)) as info:
        loader.load(str(tmp_path / "x.db"), [str(path)])
    message = str(info.value)
    assert "bad.parquet" in message and "row 3" in message and "embeddings" in message
    assert "cosine" in message


def test_a_normal_file_still_loads(tmp_path):
    path = tmp_path / "ok.parquet"
    write_parquet(path, make_records(n=5))
    loader.load(str(tmp_path / "ok.db"), [str(path)])


@pytest.fixture(scope="module")
def bad_db(tmp_path_factory):
    """40 good records and three stored vectors without a cosine, written past load's check."""
    tmp = tmp_path_factory.mktemp("degenerate")
    path = tmp / "good.parquet"
    write_parquet(path, make_records(n=20, providers=("met", "rijks")))
    db = tmp / "bad.db"
    loader.load(str(db), [str(path)])
    conn = connect(str(db))
    store = Store(conn)
    model = store.model("test-model")
    conn.execute("begin")
    store.upsert_batch(
        model,
        [("met", f"bad-{kind}", f"bad-{kind}", 1_700_000_000, "{}", vector.tobytes()) for kind, vector in BAD.items()],
    )
    store.refresh_counts()
    conn.execute("commit")
    ids = {kind: conn.execute("select id from records where depiction_id = ?", [f"bad-{kind}"]).fetchone()[0] for kind in BAD}
    conn.close()
    return db, ids


@pytest.fixture(params=[True, False], ids=["fast-index", "vec0-only"])
def datasette(request, bad_db):
    from datasette.app import Datasette

    db, ids = bad_db
    fast_index.clear_cache()
    ds = Datasette([str(db)], metadata={"plugins": {"datasette-embeddings": {"fast_index": {"enabled": request.param}}}})
    yield ds, ids, request.param
    fast_index.clear_cache()


def get(ds, path):
    return asyncio.run(ds.client.get(path))


def wait_for_index(ds, enabled, label="test-model"):
    """The fast index is built off the request threads: give it the time to be there (when enabled)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = json.loads(get(ds, f"/bad.json?sql=select+embeddings_index_status('{label}')+as+s&_shape=array").json()[0]["s"])
        if status["exact"] or not enabled:
            return
        time.sleep(0.05)


def test_record_pages_of_degenerate_vectors_have_no_neighbours(datasette):
    ds, ids, enabled = datasette
    for _ in range(2):  # before and after the fast index is built
        for kind, rid in ids.items():
            response = get(ds, f"/bad/-/gallery/{rid}.json?k=5")
            assert response.status_code == 200, (kind, response.text[:300])
            assert response.json()["similar"] == []
        wait_for_index(ds, enabled)


def test_other_records_never_get_a_degenerate_neighbour(datasette):
    ds, ids, enabled = datasette
    bad = set(ids.values())
    for _ in range(2):
        for rid in range(1, 41):
            response = get(ds, f"/bad/-/gallery/{rid}.json?k=50")
            assert response.status_code == 200, response.text[:300]
            similar = [c["id"] for c in response.json()["similar"]]
            assert len(similar) == 39 and not bad & set(similar)
        wait_for_index(ds, enabled)


def test_embeddings_nearest_over_every_row_answers(datasette):
    ds, ids, enabled = datasette
    table = Store(connect(str(ds.databases["bad"].path))).model("test-model").vec_table
    sql = f"select v.id, embeddings_nearest('test-model', v.embedding, 3) as n from {table} v"
    for _ in range(2):
        response = get(ds, "/bad.json?_shape=array&sql=" + sql.replace(" ", "+"))
        assert response.status_code == 200, response.text[:300]
        rows = {r["id"]: json.loads(r["n"]) for r in response.json()}
        for rid in ids.values():
            assert rows[rid] == []
        assert all(len(n) == 3 and not {x["id"] for x in n} & set(ids.values()) for rid, n in rows.items() if rid not in ids.values())
        wait_for_index(ds, enabled)


def test_neighbours_table_leaves_degenerate_vectors_out(bad_db):
    db, ids = bad_db
    conn = connect(str(db))
    try:
        neighbours.build(conn, k=5)
        stored = conn.execute("select record_id, neighbour_id from neighbours").fetchall()
    finally:
        conn.close()
    bad = set(ids.values())
    assert stored and not {r for r, _ in stored} & bad and not {n for _, n in stored} & bad


def test_links_leave_degenerate_vectors_out(bad_db):
    from datasette_embeddings.search import links

    db, ids = bad_db
    conn = connect(str(db))
    try:
        links.compute(conn, "met", ["rijks"], k=5)
        links.compute(conn, "rijks", ["met"], k=5)
        found = conn.execute("select source_id, target_id from links").fetchall()
    finally:
        conn.close()
    bad = set(ids.values())
    assert found and not {s for s, _ in found} & bad and not {t for _, t in found} & bad


# ---------------------------------------------------------------- vec_cosine on hostile input
@pytest.fixture
def sql():
    conn = connect(":memory:")
    from datasette_embeddings.sql.functions import register_functions

    register_functions(conn)
    yield conn
    conn.close()


def test_vec_cosine_refuses_huge_blobs_before_decoding(sql):
    # the message is the length check's, made before any byte is decoded
    with pytest.raises(Exception, match="the BLOB holds 100,000,000 float32 numbers; at most 8,192 dimensions"):
        sql.execute("select vec_cosine(zeroblob(400000000), zeroblob(400000000))").fetchone()
    with pytest.raises(Exception, match="9,000 dimensions; at most 8,192"):
        sql.execute("select vec_cosine(?, ?)", ["[" + ",".join(["1"] * 9000) + "]"] * 2).fetchone()


@pytest.mark.parametrize("value", ["[1, NaN]", "[1, Infinity]", "[1, -Infinity]"])
def test_vec_cosine_with_nan_or_infinity_is_an_error_not_null(sql, value):
    with pytest.raises(Exception, match="NaN or infinite"):
        sql.execute("select vec_cosine(?, '[1, 2]')", [value]).fetchone()
    blob = np.array([1.0, {"[1, NaN]": np.nan, "[1, Infinity]": np.inf}.get(value, -np.inf)], dtype="<f4")
    with pytest.raises(Exception, match="NaN or infinite"):
        sql.execute("select vec_cosine(?, '[1, 2]')", [blob.tobytes()]).fetchone()


def test_vec_cosine_of_3e38_vectors_is_exact(sql):
    a = np.full(4, 3e38, dtype="<f4").tobytes()
    assert sql.execute("select vec_cosine(?, ?)", [a, a]).fetchone()[0] == pytest.approx(1.0)


def test_dimension_limit_is_shared_with_load():
    from datasette_embeddings.storage import vectors

    assert parquet_io.MAX_DIMENSIONS == vectors.MAX_DIMENSIONS == 8192
