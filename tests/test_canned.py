"""Canned queries on a real database loaded from Parquet, checked against NumPy brute force."""
import pathlib

import numpy as np
import pytest
import yaml
from datasette.app import Datasette

from datasette_embeddings.web import canned
from datasette_embeddings.storage.store import ModelInfo, vec_table_name
from tests.gallery_fixtures import FAKE_TEXT_MODEL, IMAGE_MODEL, ds, fetch, museum_db  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vectors(museum_db):
    """id -> (record, unit vector) for every record, read back through the store."""
    from datasette_embeddings.storage.connection import connect
    from datasette_embeddings.storage.store import Store

    conn = connect(str(museum_db))
    try:
        store = Store(conn)
        out = {}
        for (rid,) in conn.execute("select id from records"):
            v = store.vector(rid).astype(np.float64)
            out[rid] = (store.record(rid), v / np.linalg.norm(v))
        return out
    finally:
        conn.close()


def rows(ds, name: str, **params) -> list[dict]:
    r = fetch(ds, f"/museum/{name}.json", params={**params, "_shape": "array"})
    assert r.status_code == 200, r.text[:500]
    return r.json()


def test_similar_records(ds, vectors):
    (target,) = [i for i, (r, _) in vectors.items() if r["depiction_id"] == "SK-C-5" and r["model"] == IMAGE_MODEL]
    got = rows(ds, "similar_records", provider="rijksmuseum", depiction_id="SK-C-5", model=IMAGE_MODEL, k=4)
    query = vectors[target][1]
    expected = sorted(
        ((i, float(v @ query)) for i, (r, v) in vectors.items() if r["model"] == IMAGE_MODEL and i != target),
        key=lambda p: -p[1],
    )[:4]
    assert [r["id"] for r in got] == [i for i, _ in expected]
    assert [r["similarity"] for r in got] == pytest.approx([s for _, s in expected], abs=1e-3)


def test_similar_records_under_the_other_model(ds, vectors):
    got = rows(ds, "similar_records", provider="rijksmuseum", depiction_id="SK-C-5", model=FAKE_TEXT_MODEL, k=3)
    assert len(got) == 3 and all(r["model"] == FAKE_TEXT_MODEL for r in got)


def test_cross_provider_links(ds, vectors):
    got = rows(ds, "cross_provider_links", model=IMAGE_MODEL, provider_a="rijksmuseum",
               provider_b="the-metropolitan-museum-of-art", threshold="-1")
    a_ids = [i for i, (r, _) in vectors.items() if r["model"] == IMAGE_MODEL and r["provider"] == "rijksmuseum"]
    b_ids = [i for i, (r, _) in vectors.items() if r["model"] == IMAGE_MODEL and r["provider"] == "the-metropolitan-museum-of-art"]
    expected = {}
    for a in a_ids:
        best = max(b_ids, key=lambda b: float(vectors[a][1] @ vectors[b][1]))
        expected[a] = (best, float(vectors[a][1] @ vectors[best][1]))
    assert {r["id"]: r["match_id"] for r in got} == {a: b for a, (b, _) in expected.items()}
    for r in got:
        assert r["similarity"] == pytest.approx(expected[r["id"]][1], abs=1e-3)
        assert r["match_provider"] == "the-metropolitan-museum-of-art"
    # a threshold keeps only the links at least that similar
    cut = sorted(s for _, s in expected.values())[len(expected) // 2]
    kept = rows(ds, "cross_provider_links", model=IMAGE_MODEL, provider_a="rijksmuseum",
                provider_b="the-metropolitan-museum-of-art", threshold=str(cut - 1e-4))
    assert {r["id"] for r in kept} == {a for a, (_, s) in expected.items() if s >= cut - 1e-4}


def test_cross_provider_best_match_is_found_even_when_other_providers_are_closer(ds, vectors):
    """Rijksmuseum's prints are nearest to each other; the link still finds the best *Met* record."""
    got = rows(ds, "cross_provider_links", model=IMAGE_MODEL, provider_a="rijksmuseum", provider_b="the-metropolitan-museum-of-art",
               threshold="-1")
    assert len(got) == 4 and {r["match_provider"] for r in got} == {"the-metropolitan-museum-of-art"}


def test_near_duplicates_finds_the_three_prints(ds, vectors):
    got = rows(ds, "near_duplicates", model=IMAGE_MODEL, threshold="0.9")
    ids = [i for i, (r, _) in vectors.items() if r["model"] == IMAGE_MODEL]
    expected = set()
    for a in ids:
        b = max((j for j in ids if j != a), key=lambda j: float(vectors[a][1] @ vectors[j][1]))
        if float(vectors[a][1] @ vectors[b][1]) >= 0.9:
            expected.add(frozenset((a, b)))
    pairs = [frozenset((r["id"], r["match_id"])) for r in got]
    assert len(pairs) == len(set(pairs))  # each pair once
    assert set(pairs) == expected
    prints = {r["depiction_id"] for r in got} | {r["match_depiction_id"] for r in got}
    assert {"RP-P-1906-1485", "RP-P-1906-1486", "RP-P-1906-1487"} <= prints
    # the Night Watch and its evil twin (same vector) are a pair too
    assert "SK-C-5" in prints


def test_text_search_uses_embed_text(ds):
    got = rows(ds, "text_search", model=FAKE_TEXT_MODEL, q="Portrait of a Woman with a Man at a Casement", k=3)
    assert got[0]["attributes"] and "Portrait of a Woman with a Man at a Casement" in got[0]["attributes"]
    assert got[0]["similarity"] == pytest.approx(1.0, abs=1e-3) and len(got) == 3


# ------------------------------------------------ every search through embeddings_nearest (search/similarity.py)


def _vec0_knn(db_path, label: str, vector: bytes, k: int) -> list[tuple[int, float]]:
    """The KNN the canned queries wrote in SQL before: vec0's exact scan, the reference for their rows."""
    from datasette_embeddings.storage.connection import connect

    conn = connect(str(db_path), readonly=True)
    try:
        vec = conn.execute("select vec_table from models where label = ?", [label]).fetchone()[0]
        return [(i, round(1 - d, 4)) for i, d in conn.execute(
            f"select id, distance from {vec} where embedding match ? and k = ? order by distance", [vector, k])]
    finally:
        conn.close()


def _stored_vector(db_path, record: int) -> bytes:
    from datasette_embeddings.storage.connection import connect
    from datasette_embeddings.storage.vectors import to_blob
    from datasette_embeddings.storage.store import Store

    conn = connect(str(db_path), readonly=True)
    try:
        return to_blob(Store(conn).vector(record))
    finally:
        conn.close()


def _same_rows_up_to_ties(got: list[dict], reference: list[tuple[int, float]], everything: dict[int, float]) -> None:
    """The same similarities in the same order, each row's id at its similarity; records tied at one
    similarity may come in either order (and at the cut-off, either of them)."""
    assert [r["similarity"] for r in got] == pytest.approx([s for _, s in reference], abs=1e-4)
    assert all(everything[r["id"]] == pytest.approx(r["similarity"], abs=1e-4) for r in got)
    untied = [i for i, s in reference if sum(abs(s - t) < 1e-4 for t in everything.values()) == 1]
    assert set(untied) <= {r["id"] for r in got}


@pytest.fixture
def nearest_calls(monkeypatch):
    """Every search the SQL function embeddings_nearest runs, as (model label, k)."""
    from datasette_embeddings.sql import functions

    calls, real = [], functions.nearest_ids

    def recording(conn, model, vector, k, *args, **kwargs):
        calls.append((model.label, k))
        return real(conn, model, vector, k, *args, **kwargs)

    monkeypatch.setattr(functions, "nearest_ids", recording)
    return calls


@pytest.mark.parametrize("fast_index_config", [{}, {"enabled": False}], ids=["fast path", "vec0"])
@pytest.mark.parametrize("model, depiction, k", [(IMAGE_MODEL, "SK-C-5", 4), (FAKE_TEXT_MODEL, "SK-C-5", 50),
                                                 (FAKE_TEXT_MODEL, "SK-C-5", 2), (IMAGE_MODEL, "SK-C-5", 1000)])
def test_similar_records_searches_through_embeddings_nearest_with_the_rows_of_vec0(
        museum_db, nearest_calls, fast_index_config, model, depiction, k):
    """similar_records writes no KNN of its own: one embeddings_nearest search, for the chosen model
    only, k + 1 (the record is its own nearest), and the rows vec0's KNN in SQL gave before."""
    sql = canned.queries_for([ModelInfo(IMAGE_MODEL, vec_table_name(IMAGE_MODEL), 0, 0)])["similar_records"]["sql"]
    assert " match " not in sql and "embeddings_nearest(" in sql
    ds_ = Datasette([str(museum_db)], metadata={"plugins": {"datasette-embeddings": {"fast_index": fast_index_config}}})
    got = rows(ds_, "similar_records", provider="rijksmuseum", depiction_id=depiction, model=model, k=k)
    assert nearest_calls == [(model, min(k + 1, 1000))]
    from tests.gallery_fixtures import rid
    target = rid(museum_db, "rijksmuseum", depiction, model)
    vector = _stored_vector(museum_db, target)
    everything = dict(_vec0_knn(museum_db, model, vector, 4096))
    reference = [(i, s) for i, s in _vec0_knn(museum_db, model, vector, min(k + 1, 4096)) if i != target]
    _same_rows_up_to_ties(got, reference, everything)
    assert target not in {r["id"] for r in got} and {r["model"] for r in got} == {model}


@pytest.mark.parametrize("fast_index_config", [{}, {"enabled": False}], ids=["fast path", "vec0"])
@pytest.mark.parametrize("q, k", [("Portrait of a Woman with a Man at a Casement", 3), ("night watch", 3), ("night", 40)])
def test_text_search_searches_through_embeddings_nearest_with_the_rows_of_vec0(museum_db, nearest_calls, fast_index_config, q, k):
    from tests.gallery_fixtures import fake_words_vector

    ds_ = Datasette([str(museum_db)], metadata={"plugins": {"datasette-embeddings": {"fast_index": fast_index_config}}})
    got = rows(ds_, "text_search", model=FAKE_TEXT_MODEL, q=q, k=k)
    assert nearest_calls == [(FAKE_TEXT_MODEL, k)]
    vector = fake_words_vector(q).tobytes()
    _same_rows_up_to_ties(got, _vec0_knn(museum_db, FAKE_TEXT_MODEL, vector, k),
                          dict(_vec0_knn(museum_db, FAKE_TEXT_MODEL, vector, 4096)))


def test_similar_records_reads_a_current_table_without_searching(with_neighbours, nearest_calls, tmp_path):
    from datasette_embeddings.files import loader
    from tests.helpers import make_records, write_parquet

    args = dict(provider="met", depiction_id="met-0", model="dup-16")
    assert len(_query(with_neighbours, "similar_records", **args, k=3)) == 3
    assert nearest_calls == []  # k up to the stored k: the table answers
    assert len(_query(with_neighbours, "similar_records", **args, k=5)) == 5
    assert nearest_calls == [("dup-16", 6)]  # more than it holds: one search
    # a load makes the table stale: it is ignored, and k=3 searches too
    _mark_stored_similarities(with_neighbours, 0.25)
    extra = tmp_path / "more.parquet"
    write_parquet(extra, make_records(n=3, providers=("late",), models={"dup-16": 16}, seed=9))
    loader.load(str(with_neighbours), [str(extra)])
    got = _query(with_neighbours, "similar_records", **args, k=3)
    assert len(got) == 3 and 0.25 not in {r["similarity"] for r in got}
    assert nearest_calls[-1] == ("dup-16", 4)


@pytest.mark.parametrize("model", [IMAGE_MODEL, FAKE_TEXT_MODEL])
def test_similar_records_of_a_record_that_is_not_there_names_what_was_asked_for(ds, model):
    r = fetch(ds, "/museum/similar_records.json", params={"provider": "rijksmuseum", "depiction_id": "SK-C-404",
                                                          "model": model, "k": 3})
    assert r.status_code == 400
    assert r.json()["error"] == f"no record with provider 'rijksmuseum', depiction_id 'SK-C-404' and model '{model}'"


def test_similar_records_before_the_form_is_filled_in_finds_nothing_without_an_error(ds):
    r = fetch(ds, "/museum/similar_records.json", params={"_shape": "array"})
    assert r.status_code == 200 and r.json() == []


def test_similar_records_from_the_table_of_a_record_that_is_not_there_is_the_same_error(with_neighbours):
    r = fetch(Datasette([str(with_neighbours)]), "/dups/similar_records.json",
              params={"provider": "met", "depiction_id": "nope", "model": "dup-16", "k": 3})
    assert r.status_code == 400
    assert "depiction_id 'nope'" in r.json()["error"]


@pytest.mark.parametrize("name", ["similar_records", "cross_provider_links", "text_search", "near_duplicates"])
def test_canned_query_pages_render(ds, name):
    html = fetch(ds, f"/museum/{name}").text
    assert "<form" in html and canned.queries_for([])[name]["title"] in html


def test_canned_query_pages_render_as_galleries_with_the_table_one_click_away(ds):
    r = fetch(ds, "/museum/similar_records", params={"provider": "rijksmuseum", "depiction_id": "SK-C-5",
                                                     "model": IMAGE_MODEL, "k": "3"})
    assert r.text.count('class="emb-card"') == 3 and "_embeddings=table" in r.text
    assert 'class="rows-and-columns"' in r.text
    pairs = fetch(ds, "/museum/near_duplicates", params={"model": IMAGE_MODEL, "threshold": "0.9"}).text
    assert 'class="emb-pair"' in pairs
    plain = fetch(ds, "/museum/similar_records", params={"provider": "rijksmuseum", "depiction_id": "SK-C-5",
                                                         "model": IMAGE_MODEL, "k": "3", "_embeddings": "table"}).text
    assert 'class="emb-card"' not in plain and 'class="rows-and-columns"' in plain


def test_queries_are_offered_for_any_database_with_records(museum_db, tmp_path):
    import sqlite_utils

    plain = tmp_path / "plain.db"
    sqlite_utils.Database(plain)["things"].insert({"a": 1})
    both = Datasette([str(museum_db), str(plain)])
    assert {"similar_records", "cross_provider_links", "text_search", "near_duplicates"} <= {
        q["name"] for q in fetch(both, "/museum.json").json()["queries"]}
    assert fetch(both, "/plain.json").json()["queries"] == []


def test_metadata_queries_take_precedence(museum_db):
    custom = Datasette([str(museum_db)], metadata={"databases": {"museum": {"queries": {
        "near_duplicates": {"sql": "select 1 as one", "title": "Custom"}}}}})
    queries = {q["name"]: q for q in fetch(custom, "/museum.json").json()["queries"]}
    assert queries["near_duplicates"]["title"] == "Custom"
    assert queries["similar_records"]["title"] == "Similar records"


def test_metadata_yml_demo_queries_are_the_generated_ones():
    """metadata.yml ships the demo's queries; they must be exactly what canned.py builds
    (``python demo/canned_queries.py`` writes them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_canned_queries", ROOT / "demo" / "canned_queries.py")
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    text = (ROOT / "metadata.yml").read_text()
    metadata = yaml.safe_load(text)
    shipped = metadata["databases"]["demo"]["queries"]
    labels = sorted(metadata["plugins"]["datasette-embeddings"]["models"])  # the demo's stored models
    assert labels == ["colour-layout-v1", "sentence-transformers/all-MiniLM-L6-v2"]
    generated = writer.demo_queries(metadata)
    for name, query in generated.items():
        assert shipped[name]["sql"].strip() == query["sql"].strip(), f"{name}: run python demo/canned_queries.py"
        assert shipped[name]["params"] == query["params"]
    assert writer.with_queries(text, generated) == text  # the writer leaves a current file as it is


def test_guarded_union_has_a_branch_per_model():
    models = [ModelInfo(f"m{i}", f"vec_m{i}", 4, 0) for i in range(3)]
    sql = canned.similar_records_sql(models)
    assert sql.count("union all") == 2
    assert all(f":model = 'm{i}'" in sql for i in range(3))
    assert "it''s" in canned.similar_records_sql([ModelInfo("it's", "vec_x", 4, 0)])


# ---------------------------------------------------------------- near_duplicates against NumPy


@pytest.fixture(scope="module")
def duplicates_db(tmp_path_factory):
    """Two providers, clustered 16-d vectors with exact and near copies across them, and a second model."""
    from datasette_embeddings.files import loader
    from tests.helpers import make_records, write_parquet

    rng = np.random.default_rng(5)
    centres = rng.standard_normal((30, 16))
    records = make_records(n=60, providers=("met", "nga"), models={"other-8": 8}, seed=6)
    vectors = []
    for i in range(240):
        v = centres[i % 30] + rng.normal(0, 0.4, 16)
        if i % 40 == 1:
            v = vectors[-1].copy()  # an exact copy of the previous record
        elif i % 40 == 3:
            v = vectors[-1] + rng.normal(0, 0.01, 16)  # a near copy
        vectors.append(v)
    for i, v in enumerate(vectors):
        provider = ("met", "nga")[i % 2]
        records.append({"provider": provider, "depiction_id": f"{provider}-{i}", "subject_id": f"s{i}",
                        "model": "dup-16", "embeddings": v.astype(np.float32), "created": 1, "attributes": {}})
    path = tmp_path_factory.mktemp("dups") / "dups.db"
    write_parquet(path.with_suffix(".parquet"), records)
    loader.load(str(path), [str(path.with_suffix(".parquet"))])
    return path


def _near_duplicates_by_numpy(db_path, label: str, threshold: float) -> list[tuple[int, set, float]]:
    """(id, its nearest other records, similarity): each record's nearest by cosine, kept at or above
    threshold, a mutual pair once from its lower id, ordered by similarity then id.  Exact copies tie
    for a third record's nearest, so the nearest is a set: any of them is right."""
    from datasette_embeddings.storage.connection import connect

    conn = connect(str(db_path), readonly=True)
    try:
        vec_table = conn.execute("select vec_table from models where label = ?", [label]).fetchone()[0]
        rows = conn.execute(f"select id, embedding from {vec_table} order by id").fetchall()
    finally:
        conn.close()
    ids = np.array([r[0] for r in rows])
    matrix = np.stack([np.frombuffer(r[1], dtype="<f4").astype(np.float64) for r in rows])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    sims = matrix @ matrix.T
    np.fill_diagonal(sims, -np.inf)
    best = {}
    for i, row in enumerate(sims):
        top = row.max()
        best[int(ids[i])] = ({int(j) for j in ids[row >= top - 1e-6]}, float(top))
    out = []
    for a, (nearest, sim) in best.items():
        # which of tied copies SQL picks is its choice, but a copy's own nearest is its twin, never a tie
        b = min(nearest)
        if sim >= threshold and (a < b or a not in best[b][0]):
            out.append((a, nearest, sim))
    return sorted(out, key=lambda t: (-round(t[2], 4), t[0]))


@pytest.mark.parametrize("fast_index_config", [{}, {"enabled": False}], ids=["fast path", "vec0"])
@pytest.mark.parametrize("threshold", [-1.0, 0.9])
def test_near_duplicates_equal_numpy_brute_force(duplicates_db, fast_index_config, threshold):
    from datasette_embeddings.search import memory_index as fast_index
    expected = _near_duplicates_by_numpy(duplicates_db, "dup-16", threshold)
    sims = sorted(s for _, _, s in expected)
    assert all(abs(s - threshold) > 1e-4 for s in sims)  # no pair sits on the threshold's rounding edge
    ds_ = Datasette([str(duplicates_db)], metadata={"plugins": {"datasette-embeddings": {"fast_index": fast_index_config}}})
    r = fetch(ds_, "/dups/near_duplicates.json", params={"model": "dup-16", "threshold": str(threshold), "_shape": "array"})
    assert r.status_code == 200, r.text[:500]
    got = r.json()
    assert [g["id"] for g in got] == [a for a, _, _ in expected]
    assert all(g["match_id"] in nearest for g, (_, nearest, _) in zip(got, expected))
    assert sum(len(nearest) > 1 for _, nearest, _ in expected) >= 1  # a tie between copies was met
    assert [g["similarity"] for g in got] == pytest.approx([s for _, _, s in expected], abs=1e-4)
    assert {g["model"] for g in got} == {"dup-16"} and {g["match_model"] for g in got} <= {"dup-16"}
    # the copies are there: exact copies at similarity 1, listed once
    assert sum(1 for g in got if g["similarity"] == pytest.approx(1.0, abs=1e-4)) >= 6
    assert len({frozenset((g["id"], g["match_id"])) for g in got}) == len(got)


# ---------------------------------------------------------------- the neighbours table, when current


@pytest.fixture
def with_neighbours(duplicates_db, tmp_path):
    """A copy of the duplicates database whose dup-16 neighbours are stored (k=3)."""
    import shutil

    from datasette_embeddings.search import neighbours
    from datasette_embeddings.storage.connection import connect

    path = tmp_path / "dups.db"
    shutil.copy(duplicates_db, path)
    conn = connect(str(path))
    neighbours.build(conn, ["dup-16"], k=3)
    conn.close()
    return path


def _query(path, name: str, **params) -> list[dict]:
    ds_ = Datasette([str(path)])
    r = fetch(ds_, f"/dups/{name}.json", params={**params, "_shape": "array"})
    assert r.status_code == 200, r.text[:500]
    return r.json()


def _mark_stored_similarities(path, value: float) -> None:
    """Overwrite every stored similarity, so answers that come from the table can be told apart."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("update neighbours set similarity = ?", [value])
    conn.commit()
    conn.close()


def test_near_duplicates_read_current_stored_neighbours(with_neighbours):
    expected = _near_duplicates_by_numpy(with_neighbours, "dup-16", -1.0)
    got = _query(with_neighbours, "near_duplicates", model="dup-16", threshold="-1")
    assert [g["id"] for g in got] == [a for a, _, _ in expected]
    assert all(g["match_id"] in nearest for g, (_, nearest, _) in zip(got, expected))
    assert [g["similarity"] for g in got] == pytest.approx([s for _, _, s in expected], abs=1e-3)

    _mark_stored_similarities(with_neighbours, 0.25)
    got = _query(with_neighbours, "near_duplicates", model="dup-16", threshold="-1")
    assert got and {g["similarity"] for g in got} == {0.25}  # read from the table, not searched
    # the other model has no stored neighbours: it is searched as before
    assert {g["similarity"] for g in _query(with_neighbours, "near_duplicates", model="other-8", threshold="-1")} != {0.25}


def test_similar_records_read_stored_neighbours_up_to_their_k(with_neighbours):
    args = dict(provider="met", depiction_id="met-0", model="dup-16")
    live = _query(with_neighbours, "similar_records", **args, k=5)
    assert _query(with_neighbours, "similar_records", **args, k=3) == live[:3]  # the table agrees with search
    _mark_stored_similarities(with_neighbours, 0.25)
    stored = _query(with_neighbours, "similar_records", **args, k=3)
    assert [r["id"] for r in stored] == [r["id"] for r in live[:3]]
    assert {r["similarity"] for r in stored} == {0.25}
    # more than the table holds: searched live
    assert _query(with_neighbours, "similar_records", **args, k=5) == live


def test_a_new_load_makes_canned_queries_search_again(with_neighbours, tmp_path):
    from datasette_embeddings.files import loader
    from tests.helpers import make_records, write_parquet

    _mark_stored_similarities(with_neighbours, 0.25)
    extra = tmp_path / "more.parquet"
    write_parquet(extra, make_records(n=3, providers=("late",), models={"dup-16": 16}, seed=9))
    loader.load(str(with_neighbours), [str(extra)])
    got = _query(with_neighbours, "near_duplicates", model="dup-16", threshold="-1")
    assert 0.25 not in {g["similarity"] for g in got}
    assert [g["id"] for g in got] == [a for a, _, _ in _near_duplicates_by_numpy(with_neighbours, "dup-16", -1.0)]
