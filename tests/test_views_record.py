"""The record page: the depiction, its other models, and its k most similar records under filters."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasette_embeddings.search.similarity import MAX_K
from tests.gallery_fixtures import FAKE_TEXT_MODEL, IMAGE_MODEL, ds, fetch, museum_db, rid  # noqa: F401


def brute_force(museum_db, record_id: int, where: str = "1", params=()) -> list[tuple[int, float]]:
    """Cosine similarities by NumPy over every candidate, for comparison with the vec0 KNN."""
    from datasette_embeddings.storage.connection import connect
    from datasette_embeddings.storage.store import Store

    conn = connect(str(museum_db))
    try:
        store = Store(conn)
        record = store.record(record_id)
        query = store.vector(record_id)
        ids = [r[0] for r in conn.execute(
            f"select id from records where model = ? and id != ? and {where}", [record["model"], record_id, *params])]
        sims = []
        for other in ids:
            v = store.vector(other)
            sims.append((other, float(v @ query / np.linalg.norm(v) / np.linalg.norm(query))))
        return sorted(sims, key=lambda p: -p[1])
    finally:
        conn.close()


def test_record_json_has_the_record_models_and_k_most_similar(ds, museum_db):
    night_watch = rid(museum_db, "rijksmuseum", "SK-C-5")
    data = fetch(ds, f"/museum/-/gallery/{night_watch}.json?k=5").json()
    assert data["record"]["title"] == "The Night Watch"
    assert data["record"]["subject_url"] == "https://www.rijksmuseum.nl/en/collection/SK-C-5"
    assert {m["model"] for m in data["models"]} == {IMAGE_MODEL, FAKE_TEXT_MODEL}
    expected = brute_force(museum_db, night_watch)[:5]
    assert [c["id"] for c in data["similar"]] == [i for i, _ in expected]
    for card, (_, sim) in zip(data["similar"], expected):
        assert card["similarity"] == pytest.approx(sim, abs=1e-3)
        assert card["url"] == f"/museum/-/gallery/{card['id']}"


def test_default_k_is_20_and_capped_by_the_collection(ds, museum_db):
    night_watch = rid(museum_db, "rijksmuseum", "SK-C-5")
    data = fetch(ds, f"/museum/-/gallery/{night_watch}.json").json()
    assert data["filters"]["k"] == 20
    assert len(data["similar"]) == len(brute_force(museum_db, night_watch))  # every other image record


def test_near_identical_prints_are_each_others_nearest(ds, museum_db):
    print_1485 = rid(museum_db, "rijksmuseum", "RP-P-1906-1485")
    data = fetch(ds, f"/museum/-/gallery/{print_1485}.json?k=2").json()
    assert {c["depiction_id"] for c in data["similar"]} == {"RP-P-1906-1486", "RP-P-1906-1487"}


@pytest.mark.parametrize(
    "query, where, params",
    [
        ("provider=the-metropolitan-museum-of-art", "provider = ?", ["the-metropolitan-museum-of-art"]),
        ("exclude_provider=rijksmuseum", "provider != ?", ["rijksmuseum"]),
        ("provider=the-metropolitan-museum-of-art&provider=evil", "provider in (?, ?)", ["the-metropolitan-museum-of-art", "evil"]),
        ("exclude_provider=rijksmuseum&exclude_provider=evil", "provider not in (?, ?)", ["rijksmuseum", "evil"]),
    ],
)
def test_provider_filters_return_k_matching_records(ds, museum_db, query, where, params):
    print_1485 = rid(museum_db, "rijksmuseum", "RP-P-1906-1485")
    expected = brute_force(museum_db, print_1485, where, params)
    k = min(3, len(expected))
    data = fetch(ds, f"/museum/-/gallery/{print_1485}.json?k={k}&{query}").json()
    assert [c["id"] for c in data["similar"]] == [i for i, _ in expected[:k]]
    assert len(data["similar"]) == k


def test_exclude_subject_drops_other_depictions_of_the_object(ds, museum_db):
    evil_image = rid(museum_db, "evil", "evil-1")
    # the evil record shares the Night Watch vector; Night Watch is its nearest but another subject
    with_all = fetch(ds, f"/museum/-/gallery/{evil_image}.json?k=3").json()
    assert with_all["similar"][0]["depiction_id"] == "SK-C-5"
    night_watch = rid(museum_db, "rijksmuseum", "SK-C-5")
    data = fetch(ds, f"/museum/-/gallery/{night_watch}.json?k=3&exclude_subject=1").json()
    assert data["filters"]["exclude_subject"] is True
    assert all(c["subject_id"] != "SK-C-5" for c in data["similar"])
    assert len(data["similar"]) == 3


def test_model_param_switches_to_the_same_depiction_under_another_model(ds, museum_db):
    image_id = rid(museum_db, "rijksmuseum", "SK-C-5")
    text_id = rid(museum_db, "rijksmuseum", "SK-C-5", FAKE_TEXT_MODEL)
    data = fetch(ds, f"/museum/-/gallery/{image_id}.json?model={FAKE_TEXT_MODEL}&k=3").json()
    assert data["record"]["id"] == text_id and data["record"]["model"] == FAKE_TEXT_MODEL
    assert all(c["model"] == FAKE_TEXT_MODEL for c in data["similar"])


def test_record_html_has_switcher_controls_bars_and_links(ds, museum_db):
    image_id = rid(museum_db, "rijksmuseum", "SK-C-5")
    text_id = rid(museum_db, "rijksmuseum", "SK-C-5", FAKE_TEXT_MODEL)
    html = fetch(ds, f"/museum/-/gallery/{image_id}?k=4").text
    assert f'href="/museum/-/gallery/{text_id}?k=4"' in html  # model switcher keeps k
    assert html.count('class="emb-card"') == 4
    assert html.count('class="emb-bar"') == 4
    assert "Only this provider" in html and "Only other providers" in html and "All providers" in html
    assert "exclude_provider=rijksmuseum" in html and "Only the-metropolitan-museum-of-art" in html
    assert 'name="exclude_subject"' in html and 'name="k"' in html
    assert 'src="https://images.example.org/SK-C-5.jpg"' in html
    assert "Rembrandt van Rijn" in html  # credit line


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/museum/-/gallery/99999", 404, "no record with id 99999"),
        ("/museum/-/gallery/abc", 404, "record id must be a whole number"),
        ("/museum/-/gallery/99999999999999999999999", 404, "record id must be a whole number"),
        ("/museum/-/gallery/%D9%A3", 404, "record id must be a whole number"),
        ("/museum/-/gallery/1?k=0", 400, f"k must be a whole number from 1 to {MAX_K}"),
        ("/museum/-/gallery/1?k=-5", 400, "k must be a whole number"),
        ("/museum/-/gallery/1?k=100000", 400, "k must be a whole number"),
        ("/museum/-/gallery/1?k=ten", 400, "k must be a whole number"),
        ("/museum/-/gallery/1?k=2.5", 400, "k must be a whole number"),
        ("/museum/-/gallery/1?model=nope", 404, "unknown model 'nope'"),
        ("/museum/-/gallery/1?provider=nobody", 400, "unknown provider 'nobody'"),
        ("/museum/-/gallery/1?exclude_provider=nobody", 400, "unknown provider 'nobody'"),
    ],
)
def test_bad_requests_are_clear_4xx(ds, path, status, message):
    r = fetch(ds, path)
    assert r.status_code == status and message.replace("'", "&#39;") in r.text
    json_path = path.replace("?", ".json?") if "?" in path else path + ".json"
    r = fetch(ds, json_path)
    assert r.status_code == status
    assert message in r.json()["error"] and r.json()["ok"] is False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/museum/-/gallery.json", "/museum/-/gallery/1.json", "/museum/-/search.json"]),
    name=st.sampled_from(["k", "after", "size", "provider", "exclude_provider", "model", "type", "exclude_subject", "q"]),
    value=st.text(max_size=30),
)
def test_no_parameter_value_reaches_a_500(ds, path, name, value):
    r = fetch(ds, path, params={name: value})
    assert r.status_code < 500, (path, name, value, r.text[:300])
    assert r.json()["ok"] is (r.status_code == 200)


# ---------------------------------------------------------------- what a record page asks SQLite


def _statements(museum_db, path: str) -> list[str]:
    """Every statement the museum database's connection runs for one request (the second one, so the
    facet cache and the schema reads of a first request are not counted)."""
    import asyncio

    from datasette.app import Datasette

    one = Datasette([str(museum_db)], settings={"num_sql_threads": 1})  # one thread: one connection to trace
    db = one.get_database("museum")
    seen: list[str] = []
    assert fetch(one, path).status_code == 200
    asyncio.run(db.execute_fn(lambda conn: conn.set_trace_callback(seen.append)))
    try:
        assert fetch(one, path).status_code == 200
    finally:
        asyncio.run(db.execute_fn(lambda conn: conn.set_trace_callback(None)))
    return seen


def test_a_record_page_reads_the_record_row_once(museum_db):
    """The row is read once and passed down (it was read four times: 19 statements, now 15)."""
    import re

    night_watch = rid(museum_db, "rijksmuseum", "SK-C-5")
    for path in (f"/museum/-/gallery/{night_watch}", f"/museum/-/gallery/{night_watch}.json"):
        statements = _statements(museum_db, path)
        row_reads = [s for s in statements if re.search(r"from records where id = %d\b" % night_watch, s)]
        assert len(row_reads) == 1, statements
