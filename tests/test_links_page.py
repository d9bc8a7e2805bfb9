"""The links page and its twins: keyset paging past 1,000 rows in JSON and CSV, staleness, on the fly."""
from __future__ import annotations

import csv
import io
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.app import Datasette

from datasette_embeddings.cli import cli
from datasette_embeddings.files import loader
from tests.gallery_fixtures import fetch
from tests.helpers import make_records, write_parquet

N = 260  # met records: 260 x k=5 = 1,300 links, past Datasette's 1,000-row cap


@pytest.fixture(scope="module")
def linked_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("links-page")
    write_parquet(folder / "a.parquet", make_records(n=N, providers=("met", "rijks"), models={"m-8": 8}))
    write_parquet(folder / "b.parquet", make_records(n=20, providers=("bk",), models={"m-8": 8}, seed=3))
    path = folder / "linked.db"
    loader.load(str(path), [str(folder / "a.parquet"), str(folder / "b.parquet")])
    result = CliRunner().invoke(cli, ["links", str(path), "--from", "met", "--to", "rijks", "--threshold", "-1", "-q"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def ds(linked_db):
    return Datasette([str(linked_db)])


def stored(path, sql):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def unit_vectors(path, provider: str):
    from datasette_embeddings.storage.connection import connect

    conn = connect(str(path), readonly=True)
    try:
        vec = conn.execute("select vec_table from models").fetchone()[0]
        rows = conn.execute(f"select r.id, v.embedding from records r join {vec} v on v.id = r.id "
                            "where r.provider = ? order by r.id", [provider]).fetchall()
    finally:
        conn.close()
    m = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows])
    return [r[0] for r in rows], m / np.linalg.norm(m, axis=1, keepdims=True)


def walk_json(ds, query: str, size: int = 400) -> tuple[list[dict], int]:
    out, after, pages = [], None, 0
    while True:
        url = f"/linked/-/links.json?size={size}{query}" + (f"&after={after}" if after else "")
        response = fetch(ds, url)
        assert response.status_code == 200, response.text
        data = response.json()
        out.extend(data["links"])
        pages += 1
        after = data["next"]
        if after is None:
            return out, pages
        assert pages < 50


def test_json_pages_walk_every_link_past_1000_by_similarity(ds, linked_db):
    links, pages = walk_json(ds, "&model=m-8")
    want = stored(linked_db, "select id from links order by similarity desc, id")
    assert len(want) == N * 5 > 1000 and pages == 4
    assert [l["id"] for l in links] == [r[0] for r in want]
    first = links[0]
    assert first["source"]["provider"] == "met" and first["target"]["provider"] == "rijks"
    assert first["source"]["url"].endswith(f"/-/gallery/{first['source_id']}")


def test_json_pages_by_source_with_filters(ds, linked_db):
    links, _ = walk_json(ds, "&sort=source&min=0.2&max=0.9&from=met&to=rijks", size=150)
    want = stored(
        linked_db,
        "select id from links where similarity between 0.2 and 0.9 order by source_provider, source_key, rank, id",
    )
    assert [l["id"] for l in links] == [r[0] for r in want] and len(want) > 150


def test_csv_streams_every_matching_row(ds, linked_db):
    response = fetch(ds, "/linked/-/links.csv?model=m-8")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    want = stored(linked_db, "select id, similarity, source_key, target_key from links order by similarity desc, id")
    assert len(rows) == len(want) == N * 5
    assert [int(r["id"]) for r in rows] == [w[0] for w in want]
    assert float(rows[0]["similarity"]) == pytest.approx(want[0][1])
    assert rows[0]["source_title"].startswith("Object ")


@pytest.mark.parametrize("query, message", [
    ("level=object", "level must be one of depiction, subject"),
    ("min=2", "min must be a number from -1 to 1"),
    ("after=[1]", "after must be the 'next' value"),
    ("size=0", "size must be a whole number from 1 to 1000"),
    ("sort=title", "sort must be one of similarity, source"),
])
def test_bad_parameters_are_400_naming_them(ds, query, message):
    for suffix in (".json", ".csv"):
        response = fetch(ds, f"/linked/-/links{suffix}?{query}")
        assert response.status_code == 400
        assert message in response.json()["error"]


def test_unknown_model_is_404(ds):
    response = fetch(ds, "/linked/-/links.json?model=clip")
    assert response.status_code == 404
    assert "unknown model 'clip'; the database has: m-8" in response.json()["error"]


def test_without_a_links_table_the_page_computes_on_the_fly_and_says_so(ds, linked_db):
    data = fetch(ds, "/linked/-/links.json?from=bk&to=met&size=1000").json()
    assert data["mode"] == "computed"
    assert data["computed"]["sources_used"] == 20
    assert any("computed on the fly" in n for n in data["notices"])
    # the same blocked code: each bk record's 5 best met records, exact
    bk_ids, a = unit_vectors(linked_db, "bk")
    met_ids, b = unit_vectors(linked_db, "met")
    scores = a @ b.T
    got = {}
    for link in data["links"]:
        got.setdefault(link["source_id"], []).append((link["rank"], link["target_id"]))
    assert len(got) == 20
    for i, rid in enumerate(bk_ids):
        assert [t for _, t in sorted(got[rid])] == [met_ids[j] for j in np.argsort(-scores[i], kind="stable")[:5]]


def test_on_the_fly_is_bounded_by_the_configured_number_of_sources(linked_db):
    ds = Datasette([str(linked_db)], metadata={"plugins": {"datasette-embeddings": {"links": {"on_the_fly_max_sources": 7}}}})
    data = fetch(ds, "/linked/-/links.json?from=bk&size=1000").json()
    assert data["computed"]["sources_used"] == 7 and data["computed"]["sources_total"] == 20
    assert "the first 7 of 20 records" in " ".join(data["notices"])
    assert len({l["source_id"] for l in data["links"]}) == 7


def test_html_page_shows_both_records_and_a_next_link(ds):
    response = fetch(ds, "/linked/-/links?model=m-8&size=3")
    assert response.status_code == 200
    html = response.text
    assert html.count('class="emb-link"') == 3
    assert "Object " in html and 'rel="next"' in html
    assert "/linked/-/links.csv?model=m-8" in html


def test_a_load_makes_stored_links_stale_and_the_page_says_so(tmp_path):
    write_parquet(tmp_path / "a.parquet", make_records(n=6, providers=("met", "rijks"), models={"m-8": 8}))
    path = tmp_path / "stale.db"
    loader.load(str(path), [str(tmp_path / "a.parquet")])
    assert CliRunner().invoke(cli, ["links", str(path), "--from", "met", "-q"]).exit_code == 0
    data = fetch(Datasette([str(path)]), "/stale/-/links.json").json()
    assert data["mode"] == "stored" and data["notices"] == []
    write_parquet(tmp_path / "b.parquet", make_records(n=2, providers=("rijks",), models={"m-8": 8}, seed=5,
                                                       created=1_800_000_000))
    loader.load(str(path), [str(tmp_path / "b.parquet")])
    data = fetch(Datasette([str(path)]), "/stale/-/links.json").json()
    assert data["mode"] == "computed"
    assert any("are stale" in n for n in data["notices"])
    ids = {l["id"] for l in data["links"]}
    assert ids  # computed afresh, not the stored rows
    html = fetch(Datasette([str(path)]), "/stale/-/links").text
    assert "emb-stale" in html and "are stale" in html


# ---------------------------------------------------------------- the cross_provider_links canned query
def canned_rows(ds, db: str, **params) -> list[dict]:
    from urllib.parse import urlencode

    response = fetch(ds, f"/{db}/cross_provider_links.json?" + urlencode({**params, "_shape": "objects"}))
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def test_canned_links_read_the_current_table_and_compute_when_it_is_stale(tmp_path):
    write_parquet(tmp_path / "a.parquet", make_records(n=8, providers=("met", "rijks"), models={"m-8": 8}))
    path = tmp_path / "canned.db"
    loader.load(str(path), [str(tmp_path / "a.parquet")])
    params = dict(model="m-8", provider_a="met", provider_b="rijks", threshold="-1")
    computed = canned_rows(Datasette([str(path)]), "canned", **params)  # no run yet: embeddings_links()
    met_ids, a = unit_vectors(path, "met")
    rijks_ids, b = unit_vectors(path, "rijks")
    best = {met_ids[i]: (rijks_ids[int(np.argmax(row))], float(row.max())) for i, row in enumerate(a @ b.T)}
    assert {r["id"]: r["match_id"] for r in computed} == {k: v[0] for k, v in best.items()}
    assert [r["similarity"] for r in computed] == sorted((round(v[1], 4) for v in best.values()), reverse=True)

    assert CliRunner().invoke(cli, ["links", str(path), "--from", "met", "--to", "rijks", "--threshold", "-1", "-q"]).exit_code == 0
    conn = sqlite3.connect(str(path))
    conn.execute("update links set similarity = 0.999 where rank = 1 and source_key = 'met-d3'")  # a marker only the table has
    conn.commit()
    conn.close()
    from_table = canned_rows(Datasette([str(path)]), "canned", **params)
    assert from_table[0]["depiction_id"] == "met-d3" and from_table[0]["similarity"] == 0.999
    assert {r["id"]: r["match_id"] for r in from_table} == {k: v[0] for k, v in best.items()}

    write_parquet(tmp_path / "b.parquet", make_records(n=1, providers=("bk",), models={"m-8": 8}, seed=4))
    loader.load(str(path), [str(tmp_path / "b.parquet")])  # a load: the run is stale, the marker must go
    again = canned_rows(Datasette([str(path)]), "canned", **params)
    assert 0.999 not in [r["similarity"] for r in again]
    assert {r["id"]: r["match_id"] for r in again} == {k: v[0] for k, v in best.items()}


def test_canned_links_past_the_row_cap_point_to_the_links_page(linked_db):
    ds = Datasette([str(linked_db)], settings={"max_returned_rows": 100})
    html = fetch(ds, "/linked/cross_provider_links?model=m-8&provider_a=met&provider_b=rijks&threshold=-1").text
    assert "Not every link fits here: see every link on the links page" in html
    assert "/linked/-/links?model=m-8&amp;from=met&amp;to=rijks&amp;level=depiction&amp;min=-1" in html
    # and the links page does walk all of them: rank 1 of every met record is there
    links, _ = walk_json(ds, "&model=m-8&from=met&to=rijks&level=depiction&min=-1", size=1000)
    assert len({l["source_id"] for l in links if l["rank"] == 1}) == N


@pytest.mark.parametrize("sql, message", [
    ("select embeddings_links('clip', 'met', 'rijks')", "embeddings_links: unknown model 'clip'"),
    ("select embeddings_links('m-8', 'met', 'rijks', 0)", "embeddings_links: k must be a whole number from 1 to 1000"),
    ("select embeddings_links('m-8', 'met', 'rijks', 1, 'high')", "embeddings_links: threshold must be a number"),
])
def test_embeddings_links_sql_errors_name_the_argument(ds, sql, message):
    from urllib.parse import quote

    response = fetch(ds, f"/linked.json?sql={quote(sql)}")
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_embeddings_links_sql_function_matches_the_table(ds, linked_db):
    from urllib.parse import quote

    sql = "select embeddings_links('m-8', 'met', 'rijks', 2, -1) as j, embeddings_links_current('m-8', 'met', 'rijks', 'depiction') as c"
    row = fetch(ds, f"/linked.json?sql={quote(sql)}&_shape=array").json()[0]
    import json

    got = sorted((s, t, r) for s, t, _sim, r, _c in json.loads(row["j"]))
    want = sorted(stored(linked_db, "select source_id, target_id, rank from links where rank <= 2"))
    assert got == [tuple(w) for w in want] and row["c"] == 1


def test_a_provider_asked_for_without_stored_links_is_named(ds):
    data = fetch(ds, "/linked/-/links.json?model=m-8&from=met&to=rijks&to=bk&size=5").json()
    assert data["mode"] == "stored" and len(data["links"]) == 5
    assert data["notices"] == ["No links of m-8 from met to bk are stored: run datasette-embeddings links "
                               "--from met --to bk to add them."]
