"""The precomputed neighbours table: brute-force correct, built by the CLI, used by record pages while current."""
import numpy as np
import pytest
from click.testing import CliRunner

from datasette_embeddings.files import loader
from datasette_embeddings.search import neighbours
from datasette_embeddings.cli import cli
from datasette_embeddings.search.similarity import NeighbourFilter, similar_to_record
from datasette_embeddings.storage.connection import connect
from datasette_embeddings.storage.store import Store
from tests.helpers import make_records, write_parquet


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "n.parquet"
    write_parquet(path, make_records(n=40, providers=("met", "rijks", "nga"), models={"m-8": 8, "m-4": 4}))
    db = tmp_path / "n.db"
    loader.load(str(db), [str(path)])
    return db


def _brute_force(conn, label, k):
    model = Store(conn).model(label)
    rows = conn.execute(f"select id, embedding from {model.vec_table} order by id").fetchall()
    ids = np.array([r[0] for r in rows])
    m = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float64)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    sims = m @ m.T
    np.fill_diagonal(sims, -np.inf)
    expected = {}
    for i, rid in enumerate(ids):
        order = np.argsort(-sims[i], kind="stable")[:k]
        expected[int(rid)] = [(int(ids[j]), float(sims[i, j])) for j in order]
    return expected


def _stored(conn, label):
    got = {}
    for rid, nid, rank, sim in conn.execute(
        "select record_id, neighbour_id, rank, similarity from neighbours where model = ? order by record_id, rank", [label]
    ):
        got.setdefault(rid, []).append((nid, sim))
    return got


def _assert_matches(stored, expected):
    assert set(stored) == set(expected)
    for rid, pairs in expected.items():
        assert [n for n, _ in stored[rid]] == [n for n, _ in pairs]
        np.testing.assert_allclose([s for _, s in stored[rid]], [s for _, s in pairs], atol=1e-5)


def test_table_matches_brute_force_with_small_blocks(db):
    conn = connect(str(db))
    try:
        neighbours.build(conn, ["m-8"], k=7)
        # the same again with a block size that does not divide N: blocks must not change the answer
        model = Store(conn).model("m-8")
        index = neighbours.fast_index.build(conn, model, ())
        rows, _ = neighbours.top_k_blocks(index.matrix, 7, block_rows=13)
        expected = _brute_force(conn, "m-8", 7)
        _assert_matches(_stored(conn, "m-8"), expected)
        by_blocks = {int(index.ids[i]): [int(index.ids[j]) for j in rows[i]] for i in range(len(index.ids))}
        assert by_blocks == {rid: [n for n, _ in pairs] for rid, pairs in expected.items()}
        assert _stored(conn, "m-4") == {}  # only the model asked for
    finally:
        conn.close()


def test_cli_builds_all_models_and_replaces_older_rows(db):
    runner = CliRunner()
    result = runner.invoke(cli, ["neighbours", str(db), "--k", "5"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["neighbours", str(db), "--model", "m-4", "--k", "3"])
    assert result.exit_code == 0, result.output
    conn = connect(str(db))
    try:
        counts = dict(conn.execute("select model, count(*) from neighbours group by model").fetchall())
        assert counts == {"m-8": 120 * 5, "m-4": 120 * 3}
        assert dict(conn.execute("select model, k from neighbour_runs").fetchall()) == {"m-8": 5, "m-4": 3}
        for label, k in (("m-8", 5), ("m-4", 3)):
            _assert_matches(_stored(conn, label), _brute_force(conn, label, k))
    finally:
        conn.close()


@pytest.mark.parametrize(
    "args, message",
    [(["--model", "nope"], "unknown model 'nope'"), (["--k", "0"], "--k must be a whole number from 1 to 1000")],
)
def test_cli_rejects_bad_input(db, args, message):
    result = CliRunner().invoke(cli, ["neighbours", str(db), *args])
    assert result.exit_code == 1
    assert message in result.output and str(db) in result.output


def test_similar_to_record_reads_the_table_while_current(db, tmp_path):
    conn = connect(str(db))
    try:
        rid = conn.execute("select id from records where model = 'm-8' order by id limit 1").fetchone()[0]
        neighbours.build(conn, ["m-8"], k=5)
        # make the stored rows recognisable: if similar_to_record returns them, it read the table
        conn.execute("update neighbours set similarity = -2 - rank where record_id = ?", [rid])
        _, found = similar_to_record(conn, rid, k=4)
        assert [n.similarity for n in found] == [-3, -4, -5, -6]
        assert found[0].record["model"] == "m-8"
        # more than stored, or filtered: live search
        _, found = similar_to_record(conn, rid, k=6)
        assert len(found) == 6 and all(n.similarity > -1 for n in found)
        _, found = similar_to_record(conn, rid, k=3, flt=NeighbourFilter(providers=("nga",)))
        assert all(n.record["provider"] == "nga" and n.similarity > -1 for n in found)
        # a new load makes the table stale: live search again
        more = tmp_path / "more.parquet"
        write_parquet(more, make_records(n=3, providers=("tate",), models={"m-8": 8}, seed=9))
        loader.load(str(db), [str(more)])
        _, found = similar_to_record(conn, rid, k=4)
        assert all(n.similarity > -1 for n in found)
    finally:
        conn.close()


def test_record_page_in_datasette_uses_the_table(db):
    """The gallery's record JSON (a real Datasette) answers from the table while it is current."""
    import asyncio

    from datasette.app import Datasette

    conn = connect(str(db))
    try:
        rid = conn.execute("select id from records where model = 'm-4' order by id limit 1").fetchone()[0]
        neighbours.build(conn, ["m-4"], k=5)
        expected = [r[0] for r in conn.execute("select neighbour_id from neighbours where record_id = ? order by rank", [rid])]
        conn.execute("update neighbours set similarity = 0.5 where record_id = ?", [rid])
    finally:
        conn.close()
    ds = Datasette([str(db)])

    async def fetch():
        return await ds.client.get(f"/n/-/gallery/{rid}.json", params={"k": 5})

    response = asyncio.run(fetch())
    assert response.status_code == 200, response.text
    similar = response.json()["similar"]
    assert [c["id"] for c in similar] == expected
    assert {c["similarity"] for c in similar} == {0.5}
