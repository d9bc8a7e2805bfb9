"""Coherent filters: every facet count is the number of records the link would show."""
import itertools

import pytest

from tests.gallery_fixtures import FAKE_TEXT_MODEL, IMAGE_MODEL, ds, fetch, museum_db  # noqa: F401


def count(museum_db, model=None, providers=(), kind=None):
    from datasette_embeddings.storage.connection import connect

    where, params = ["1"], []
    if model:
        where.append("model = ?"); params.append(model)  # noqa: E702
    if providers:
        where.append(f"provider in ({', '.join('?' * len(providers))})"); params += list(providers)  # noqa: E702
    if kind:
        where.append("type = ?"); params.append(kind)  # noqa: E702
    conn = connect(str(museum_db))
    try:
        return conn.execute(f"select count(*) from records where {' and '.join(where)}", params).fetchone()[0]
    finally:
        conn.close()


COMBOS = list(itertools.product([None, IMAGE_MODEL, FAKE_TEXT_MODEL], [(), ("sfo-museum",), ("rijksmuseum", "evil")], [None, "text", "image"]))


@pytest.mark.parametrize("model, providers, kind", COMBOS)
def test_every_count_is_what_following_the_link_shows(ds, museum_db, model, providers, kind):
    query = [("model", model), ("type", kind)] + [("provider", p) for p in providers]
    data = fetch(ds, "/museum/-/gallery.json", params=[(k, v) for k, v in query if v]).json()
    assert data["total"] == count(museum_db, model, providers, kind)
    for f in data["facets"]["provider"]:
        if not f["selected"]:
            assert f["count"] == count(museum_db, model, (f["value"],), kind) > 0
    for f in data["facets"]["model"]:
        assert f["count"] == count(museum_db, f["value"], providers, kind)
    for f in data["facets"]["type"]:
        assert f["count"] == count(museum_db, model, providers, f["value"])
    for facet in data["facets"].values():
        for f in facet:
            if f["selected"] and len([x for x in facet if x["selected"]]) == 1:
                assert f["count"] == data["total"]  # a selected value's count is the total
            if f["count"] == 0:
                assert f["selected"] and f["reason"]  # nothing is offered that can only return nothing
    if data["total"] == 0:
        assert data["empty_reason"] and not data["items"]


def test_a_provider_without_records_under_the_model_is_not_offered_and_says_why(ds):
    data = fetch(ds, f"/museum/-/gallery.json?model={IMAGE_MODEL}").json()
    assert "sfo-museum" not in [f["value"] for f in data["facets"]["provider"]]  # it has only text under the fake model
    empty = fetch(ds, f"/museum/-/gallery.json?model={IMAGE_MODEL}&provider=sfo-museum").json()
    assert empty["total"] == 0
    assert "sfo-museum has no records under model 'colour-layout-v1' (it has records under: fake-words-8)" == empty["empty_reason"]
    html = fetch(ds, f"/museum/-/gallery?model={IMAGE_MODEL}&provider=sfo-museum").text
    assert "sfo-museum has no records under model" in html and "Clear filters" in html
