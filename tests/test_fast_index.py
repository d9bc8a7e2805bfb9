"""The in-memory exact path answers exactly what vec0 answers, for every filter, and notices new loads."""
import json

import numpy as np
import pytest

from datasette_embeddings import config as plugin_config
from datasette_embeddings.config import IndexSettings
from datasette_embeddings.search import memory_index as fast_index
from datasette_embeddings.sql import functions as sql_functions

#: the approximate index from 1,000 records on, so a small test collection gets one
ANN = IndexSettings(ann_threshold=1000)
from datasette_embeddings.files import loader
from datasette_embeddings.search.similarity import NeighbourFilter, nearest_ids, vec0_nearest_ids
from datasette_embeddings.storage.connection import connect
from datasette_embeddings.storage.store import Store
from tests.helpers import write_parquet

DIMS = 24
PROVIDERS = ("alpha", "beta", "gamma", "lonely")


def _records(seed: int, count: dict, created: int = 1, start: int = 0) -> list[dict]:
    """Clustered vectors; 'lonely' has few rows pointing away from the others; subjects shared in threes."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, DIMS))
    records = []
    for provider, n in count.items():
        for i in range(start, start + n):
            v = centres[rng.integers(0, 8)] + rng.normal(0, 0.3, DIMS)
            if provider == "lonely":
                v = -v
            records.append(
                {
                    "provider": provider,
                    "depiction_id": f"{provider}-{i}",
                    "subject_id": f"{provider}-s{i // 3}",
                    "model": "m",
                    "embeddings": v.astype(np.float32),
                    "created": created,
                    "attributes": {"subject_title": f"{provider} {i}"},
                }
            )
    return records


COUNTS = {"alpha": 300, "beta": 250, "gamma": 200, "lonely": 12}


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "fast.db"
    parquet = path.parent / "first.parquet"
    write_parquet(parquet, _records(1, COUNTS))
    loader.load(str(path), [str(parquet)])
    return path


@pytest.fixture
def conn(db_path):
    fast_index.clear_cache()
    c = connect(str(db_path))
    yield c
    c.close()


def _model(conn):
    return Store(conn).model("m")


def _queries(conn, n=6):
    """Stored vectors of a few records (so exclude-subject and exclude-ids matter) plus random ones."""
    model = _model(conn)
    rows = conn.execute(f"select id, embedding from {model.vec_table} order by id limit ?", [n]).fetchall()
    rng = np.random.default_rng(7)
    stored = [(rid, np.frombuffer(blob, dtype="<f4")) for rid, blob in rows[::2]]
    return stored + [(None, rng.standard_normal(DIMS).astype(np.float32)) for _ in range(3)]


def _subject_of(conn, rid):
    return conn.execute("select subject_id from records where id = ?", [rid]).fetchone()[0] if rid else "alpha-s1"


FILTERS = {
    "none": lambda s: NeighbourFilter(),
    "one provider": lambda s: NeighbourFilter(providers=("beta",)),
    "two providers": lambda s: NeighbourFilter(providers=("gamma", "alpha")),
    "unknown provider": lambda s: NeighbourFilter(providers=("nobody",)),
    "exclude provider": lambda s: NeighbourFilter(exclude_providers=("alpha",)),
    "exclude two providers": lambda s: NeighbourFilter(exclude_providers=("alpha", "gamma")),
    "providers minus one": lambda s: NeighbourFilter(providers=("alpha", "beta", "gamma"), exclude_providers=("beta",)),
    "exclude subject": lambda s: NeighbourFilter(exclude_subject=s),
    "provider and exclude subject": lambda s: NeighbourFilter(providers=("alpha", "lonely"), exclude_subject=s),
    "exclude provider and subject": lambda s: NeighbourFilter(exclude_providers=("beta",), exclude_subject=s),
}


def _assert_same(fast, reference):
    assert [rid for rid, _ in fast] == [rid for rid, _ in reference]
    np.testing.assert_allclose([s for _, s in fast], [s for _, s in reference], atol=1e-5)


@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("k", [1, 10, 40])
def test_fast_path_matches_vec0(conn, name, k):
    model = _model(conn)
    for rid, vector in _queries(conn):
        flt = FILTERS[name](_subject_of(conn, rid))
        exclude = (rid,) if rid else ()
        fast = fast_index.search(conn, model, vector, k, flt, exclude)
        assert fast is not None, "the fast path should answer for a file database"
        _assert_same(fast, vec0_nearest_ids(conn, model, vector, k, flt, exclude))
        # and nearest_ids (what the views call) goes through it
        _assert_same(nearest_ids(conn, model, vector, k, flt, exclude), fast)


def test_selective_filter_returns_k_rows(conn):
    model = _model(conn)
    # a query right among alpha's vectors: lonely's rows are the farthest of all
    alpha_vec = np.frombuffer(
        conn.execute(f"select embedding from {model.vec_table} where provider = 'alpha' limit 1").fetchone()[0], "<f4"
    )
    found = fast_index.search(conn, model, alpha_vec, 10, NeighbourFilter(providers=("lonely",)))
    assert len(found) == 10
    lonely_ids = {r[0] for r in conn.execute("select id from records where provider = 'lonely'")}
    assert {rid for rid, _ in found} <= lonely_ids
    # asking for more than match gives all that match, not fewer
    found = fast_index.search(conn, model, alpha_vec, 40, NeighbourFilter(providers=("lonely",)))
    assert {rid for rid, _ in found} == lonely_ids


def test_rows_are_grouped_by_provider(conn):
    index = fast_index.index_for(conn, _model(conn))
    assert list(index.providers) == sorted(COUNTS)
    assert [stop - start for start, stop in index.providers.values()] == [COUNTS[p] for p in sorted(COUNTS)]
    assert np.allclose(np.linalg.norm(index.matrix, axis=1), 1.0, atol=1e-5)


def test_index_is_cached_between_queries(conn):
    model = _model(conn)
    first = fast_index.index_for(conn, model)
    other = connect(conn.execute("pragma database_list").fetchone()[2])
    try:
        assert fast_index.index_for(other, model) is first
    finally:
        other.close()


def test_second_load_is_noticed(tmp_path):
    """New records and replaced vectors after the index was built show up in the next query."""
    fast_index.clear_cache()
    db = tmp_path / "reload.db"
    first = tmp_path / "a.parquet"
    write_parquet(first, _records(3, {"alpha": 60, "beta": 60}))
    loader.load(str(db), [str(first)])
    conn = connect(str(db))
    try:
        model = _model(conn)
        query = np.ones(DIMS, dtype=np.float32)
        before = fast_index.search(conn, model, query, 5, NeighbourFilter())
        index_before = fast_index.index_for(conn, model)
        # a second load: a newer version of alpha-0 pointing exactly at the query, and a new provider
        replacement = _records(4, {"alpha": 1}, created=2)
        replacement[0]["embeddings"] = query.copy()
        added = _records(5, {"delta": 30}, created=2)
        second = tmp_path / "b.parquet"
        write_parquet(second, replacement + added)
        loader.load(str(db), [str(second)])
        model = _model(conn)
        after = fast_index.search(conn, model, query, 5, NeighbourFilter())
        assert fast_index.index_for(conn, model) is not index_before
        _assert_same(after, vec0_nearest_ids(conn, model, query, 5, NeighbourFilter()))
        alpha0 = conn.execute("select id from records where depiction_id = 'alpha-0'").fetchone()[0]
        assert after[0][0] == alpha0 and after[0][1] == pytest.approx(1.0, abs=1e-5)
        assert after != before
        delta = fast_index.search(conn, model, query, 50, NeighbourFilter(providers=("delta",)))
        assert len(delta) == 30
    finally:
        conn.close()


def test_memory_budget_falls_back_to_vec0(conn):
    tiny = IndexSettings(max_memory_mb=0.001)
    model = _model(conn)
    vector = np.ones(DIMS, dtype=np.float32)
    assert fast_index.search(conn, model, vector, 5, NeighbourFilter(), settings=tiny) is None
    _assert_same(nearest_ids(conn, model, vector, 5, settings=tiny), vec0_nearest_ids(conn, model, vector, 5))


def test_sql_function_through_a_connection(conn):
    sql_functions.register_functions(conn)
    model = _model(conn)
    vector = np.ones(DIMS, dtype=np.float32)
    rows = conn.execute(
        "select json_extract(j.value, '$.id'), json_extract(j.value, '$.similarity') "
        "from json_each(embeddings_nearest('m', ?, 7, 'gamma')) j",
        [vector.tobytes()],
    ).fetchall()
    expected = vec0_nearest_ids(conn, model, vector, 7, NeighbourFilter(providers=("gamma",)))
    assert [r[0] for r in rows] == [rid for rid, _ in expected]
    np.testing.assert_allclose([r[1] for r in rows], [s for _, s in expected], atol=1e-5)
    # a JSON array works as the query too, and without a provider
    as_json = conn.execute("select embeddings_nearest('m', ?, 3)", [json.dumps(vector.tolist())]).fetchone()[0]
    assert [d["id"] for d in json.loads(as_json)] == [rid for rid, _ in vec0_nearest_ids(conn, model, vector, 3)]
    status = json.loads(conn.execute("select embeddings_index_status('m')").fetchone()[0])
    assert status["exact"] and status["rows"] == sum(COUNTS.values())


@pytest.mark.parametrize(
    "args, message",
    [
        (("'nope'", "?", "3"), "unknown model 'nope'"),
        (("'m'", "'[1, 2]'", "3"), "query vector has 2 dimensions; model 'm' has 24"),
        (("'m'", "'not json'", "3"), "query_vector: not a JSON array"),
        (("'m'", "?", "0"), "k must be a whole number from 1 to 1000"),
        (("'m'", "?", "'ten'"), "k must be an integer"),
    ],
)
def test_sql_function_rejects_bad_input(conn, args, message):
    sql_functions.register_functions(conn)
    params = [np.ones(DIMS, dtype=np.float32).tobytes()] if "?" in args else []
    with pytest.raises(Exception, match=message):
        conn.execute(f"select embeddings_nearest({', '.join(args)})", params).fetchone()


def test_sql_function_in_datasette(db_path):
    from datasette.app import Datasette

    ds = Datasette([str(db_path)])
    vector = json.dumps([1.0] * DIMS)
    sql = f"select json_extract(value, '$.id') as id from json_each(embeddings_nearest('m', '{vector}', 4))"
    import asyncio

    async def fetch():
        return await ds.client.get("/fast.json", params={"sql": sql, "_shape": "array"})

    response = asyncio.run(fetch())
    assert response.status_code == 200, response.text
    conn = connect(str(db_path))
    try:
        expected = vec0_nearest_ids(conn, _model(conn), np.ones(DIMS, dtype=np.float32), 4)
    finally:
        conn.close()
    assert [row["id"] for row in response.json()] == [rid for rid, _ in expected]


# ------------------------------------------------------------------ approximate path


@pytest.fixture
def ann_db(tmp_path, monkeypatch):
    if not fast_index.ann_available():
        pytest.skip("faiss-cpu (the ann extra) is not installed")
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((40, 32))
    records = []
    for i in range(4000):
        provider = "big" if i < 3600 else "small"
        v = centres[rng.integers(0, 40)] + rng.normal(0, 0.25, 32)
        records.append(
            {
                "provider": provider,
                "depiction_id": f"d{i}",
                "subject_id": f"s{i}",
                "model": "m",
                "embeddings": v.astype(np.float32),
                "created": 1,
                "attributes": {},
            }
        )
    path = tmp_path / "ann.parquet"
    write_parquet(path, records)
    db = tmp_path / "ann.db"
    loader.load(str(db), [str(path)])
    fast_index.clear_cache()
    conn = connect(str(db))
    yield conn, centres
    conn.close()
    fast_index.clear_cache()


def test_ann_recall_on_clustered_data(ann_db):
    conn, centres = ann_db
    model = _model(conn)
    index = fast_index.index_for(conn, model, ANN, wait_for_ann=True)
    assert index.ann_state == "ready"
    rng = np.random.default_rng(12)
    recalls = []
    for _ in range(50):
        q = (centres[rng.integers(0, 40)] + rng.normal(0, 0.25, 32)).astype(np.float32)
        found = fast_index.search(conn, model, q, 10, NeighbourFilter(), settings=ANN)
        exact = vec0_nearest_ids(conn, model, q, 10, NeighbourFilter())
        recalls.append(len({r for r, _ in found} & {r for r, _ in exact}) / 10)
        # similarities are exact even when the candidates come from the graph
        exact_sims = dict(exact)
        for rid, sim in found:
            if rid in exact_sims:
                assert sim == pytest.approx(exact_sims[rid], abs=1e-5)
    assert np.mean(recalls) >= 0.9


def test_ann_filtered_query_still_returns_k(ann_db):
    conn, centres = ann_db
    model = _model(conn)
    fast_index.index_for(conn, model, ANN, wait_for_ann=True)
    q = centres[0].astype(np.float32)
    # 'small' (400 rows) is below the threshold: scored exactly on its own rows
    small = fast_index.search(conn, model, q, 10, NeighbourFilter(providers=("small",)), settings=ANN)
    _assert_same(small, vec0_nearest_ids(conn, model, q, 10, NeighbourFilter(providers=("small",))))
    # 'big' is above it: the graph answers, k rows, all of that provider (a range selector)
    big = fast_index.search(conn, model, q, 10, NeighbourFilter(providers=("big",)), settings=ANN)
    assert len(big) == 10
    big_ids = {r[0] for r in conn.execute("select id from records where provider = 'big'")}
    assert {rid for rid, _ in big} <= big_ids
    exact_big = vec0_nearest_ids(conn, model, q, 10, NeighbourFilter(providers=("big",)))
    assert len({r for r, _ in big} & {r for r, _ in exact_big}) >= 8


def test_ann_bitmap_filter_and_excluded_subject(ann_db, monkeypatch):
    """Two providers (neither adjacent nor whole) become a bitmap selector; excluded rows never come back."""
    conn, centres = ann_db
    model = _model(conn)
    index = fast_index.index_for(conn, model, ANN, wait_for_ann=True)
    assert index.ann_state == "ready"
    query = centres[3].astype(np.float32)
    rows = index.ann.candidates(query, 30, [(0, 100), (3700, 4000)])
    assert len(rows) == 30 and all(r < 100 or r >= 3700 for r in rows)
    nearest = fast_index.search(conn, model, query, 1, NeighbourFilter(), settings=ANN)[0][0]
    subject = conn.execute("select subject_id from records where id = ?", [nearest]).fetchone()[0]
    found = fast_index.search(conn, model, query, 10, NeighbourFilter(exclude_subject=subject), settings=ANN)
    assert len(found) == 10 and nearest not in {rid for rid, _ in found}


def test_plugin_config_reaches_the_index(db_path):
    """fast_index settings come from metadata's plugin config; enabled=false leaves vec0 answering."""
    import asyncio

    from datasette.app import Datasette

    fast_index.clear_cache()
    ds = Datasette([str(db_path)], metadata={"plugins": {"datasette-embeddings": {"fast_index": {"enabled": False, "ann_threshold": 1234}}}})
    vector = json.dumps([1.0] * DIMS)
    sql = f"select embeddings_nearest('m', '{vector}', 3) as n, embeddings_index_status('m') as s"

    async def fetch():
        return await ds.client.get("/fast.json", params={"sql": sql, "_shape": "array"})

    row = asyncio.run(fetch()).json()[0]
    assert plugin_config.for_datasette(ds).fast_index.ann_threshold == 1234
    assert len(json.loads(row["n"])) == 3
    assert json.loads(row["s"])["exact"] is False  # nothing was built: vec0 answered


# ------------------------------------------------------------------ building the index


def _reference_build(conn, model):
    """The index as a row-by-row read defines it: every row normalised, grouped by provider name, then id."""
    rows = conn.execute(f"select id, embedding, provider from {model.vec_table}").fetchall()
    rows.sort(key=lambda r: (r[2], r[0]))
    matrix = np.stack([np.frombuffer(blob, dtype="<f4") for _, blob, _ in rows])
    norms = np.linalg.norm(matrix, axis=1)
    norms[norms == 0] = 1.0
    return [r[0] for r in rows], matrix / norms[:, None], [r[2] for r in rows]


def test_build_is_exactly_the_row_by_row_index(db_path, conn):
    model = _model(conn)
    index = fast_index.build(conn, model, ("test",))
    ids, matrix, providers = _reference_build(conn, model)
    assert index.ids.tolist() == ids
    assert index.matrix.dtype == np.float32 and index.matrix.tobytes() == matrix.astype(np.float32).tobytes()
    for provider, (start, stop) in index.providers.items():
        assert set(providers[start:stop]) == {provider}
    assert sum(stop - start for start, stop in index.providers.values()) == len(ids)


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def fetchmany(self, size):
        out, self.rows = self.rows[:size], self.rows[size:]
        return out


class _LoadBetweenReads:
    """A connection on which a record disappears between build's first and second read, once."""

    def __init__(self, conn):
        self.conn = conn
        self.vector_reads = 0

    def execute(self, sql, *args):
        cursor = self.conn.execute(sql, *args)
        if "embedding from" in sql:
            self.vector_reads += 1
            if self.vector_reads == 1:
                return _Rows(cursor.fetchall()[1:])
        return cursor


def test_build_reads_again_when_a_load_lands_between_its_reads(conn):
    model = _model(conn)
    changing = _LoadBetweenReads(conn)
    index = fast_index.build(changing, model, ("test",))
    assert changing.vector_reads == 2
    ids, matrix, _ = _reference_build(conn, model)
    assert index.ids.tolist() == ids and np.array_equal(index.matrix, matrix.astype(np.float32))


def test_sql_function_leaves_the_calling_query_running(conn):
    """Calling it must not expire the statement that calls it: near_duplicates' plan calls it
    thousands of times from a materialised subquery (making a sqlite-utils Database per call
    did, and SQLite aborted the query with "abort due to ROLLBACK")."""
    from datasette_embeddings.sql import functions as sql_functions
    from datasette_embeddings.web import canned
    sql_functions.register_functions(conn)  # the canned queries check their parameters with these
    model = _model(conn)
    sql = canned.near_duplicates_sql([model])
    rows = conn.execute(sql, {"model": "m", "threshold": "-1"}).fetchall()
    assert len(rows) > sum(COUNTS.values()) // 2
    sql = f"with s as materialized (select embeddings_index_status('m') as s from {model.vec_table}) select count(*) from s"
    assert conn.execute(sql).fetchone()[0] == sum(COUNTS.values())
