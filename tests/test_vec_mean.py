"""vec_mean(embedding): the normalised mean of a group's vectors, held to NumPy, with clear errors."""
import asyncio

import numpy as np
import pytest
from datasette.app import Datasette

from datasette_embeddings.files import loader
from datasette_embeddings.sql import functions as sql_functions
from datasette_embeddings.storage.connection import connect, sqlite3
from datasette_embeddings.storage.store import Store
from datasette_embeddings.storage.vectors import from_blob, to_blob
from tests.helpers import make_records, write_parquet


def numpy_mean(vectors) -> np.ndarray:
    m = np.asarray(vectors, dtype=np.float64)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    mean = m.mean(axis=0)
    return mean / np.linalg.norm(mean)


@pytest.fixture
def conn():
    c = connect(":memory:")
    sql_functions.register_functions(c)
    yield c
    c.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vecmean")
    write_parquet(folder / "r.parquet", make_records(n=25, providers=("met", "nga"), models={"m-8": 8, "m-4": 4}))
    loader.load(str(folder / "v.db"), [str(folder / "r.parquet")])
    return folder / "v.db"


def test_vec_mean_matches_numpy_per_group(db):
    c = connect(str(db))
    sql_functions.register_functions(c)
    table = Store(c).model("m-8").vec_table
    rows = c.execute(f"select provider, embedding from {table}").fetchall()
    got = dict(c.execute(f"select provider, vec_mean(embedding) from {table} group by provider").fetchall())
    assert set(got) == {"met", "nga"}
    for provider, blob in got.items():
        want = numpy_mean([from_blob(b) for p, b in rows if p == provider])
        assert np.allclose(from_blob(blob), want, atol=1e-6)
        assert np.linalg.norm(from_blob(blob)) == pytest.approx(1.0, abs=1e-6)


def test_vec_mean_feeds_a_knn_query(db):
    c = connect(str(db))
    sql_functions.register_functions(c)
    table = Store(c).model("m-8").vec_table
    found = c.execute(
        f"select id from {table} where embedding match (select vec_mean(embedding) from {table} where id in (1, 2))"
        " and k = 3 order by distance"
    ).fetchall()
    assert len(found) == 3


def test_scaled_vectors_count_the_same_and_json_is_accepted(conn):
    a, b = np.array([1.0, 0, 0], dtype=np.float32), np.array([0, 10.0, 0], dtype=np.float32)
    blob = conn.execute("select vec_mean(v) from (select ? as v union all select ? union all select '[0, 0, 3]')",
                        [to_blob(a), to_blob(b)]).fetchone()[0]
    assert np.allclose(from_blob(blob), np.array([1, 1, 1]) / np.sqrt(3), atol=1e-6)


def test_nulls_are_skipped_and_no_rows_give_null(conn):
    assert conn.execute("select vec_mean(v) from (select null as v)").fetchone()[0] is None
    assert conn.execute("select vec_mean(v) from (select '[1,0]' as v) where 0").fetchone()[0] is None
    blob = conn.execute("select vec_mean(v) from (select null as v union all select '[0, 2]')").fetchone()[0]
    assert np.allclose(from_blob(blob), [0, 1])


@pytest.mark.parametrize("values, message", [
    (["[1, 2]", "[1, 2, 3]"], r"vec_mean\(\): vectors differ in length: 2 and 3"),
    (["[0, 0]"], r"vec_mean\(\): a zero \(or NaN\) vector has no direction"),
    (["[1, 0]", "[-1, 0]"], r"vec_mean\(\): the vectors cancel out"),
    (["not json"], r"vec_mean\(\): not a JSON array"),
])
def test_errors_say_why(conn, values, message):
    union = " union all ".join("select ? as v" for _ in values)
    with pytest.raises(sqlite3.OperationalError, match=message):
        conn.execute(f"select vec_mean(v) from ({union})", values).fetchone()


def test_vec_mean_in_datasette_sql(db):
    ds = Datasette([str(db)])
    table = asyncio.run(ds.get_database("v").execute("select vec_table from models where label = 'm-8'")).first()[0]
    ok = asyncio.run(ds.client.get(f"/v.json?sql=select+length(vec_mean(embedding))+as+n+from+{table}&_shape=array")).json()
    assert ok == [{"n": 32}]
    bad = asyncio.run(ds.client.get("/v.json?sql=select+vec_mean(v)+from+(select+'[1]'+as+v+union+all+select+'[1,2]')"))
    assert bad.status_code == 400 and "vectors differ in length: 1 and 2" in bad.text
