"""The gallery page and its JSON twin: facets, filters, keyset pagination, errors, CORS."""
import pytest
from datasette.app import Datasette

from tests.gallery_fixtures import FAKE_TEXT_MODEL, IMAGE_MODEL, ds, fetch, museum_db  # noqa: F401


def all_pages(ds, query: str, size: int = 5) -> list[dict]:
    items, after, pages = [], None, 0
    while True:
        url = f"/museum/-/gallery.json?size={size}{query}" + (f"&after={after}" if after else "")
        data = fetch(ds, url).json()
        items.extend(data["items"])
        pages += 1
        after = data["next_after"]
        if after is None:
            return items
        assert pages < 100


def db_ids(museum_db, where: str = "1", params=()) -> list[int]:
    from datasette_embeddings.storage.connection import connect

    conn = connect(str(museum_db))
    try:
        return [r[0] for r in conn.execute(f"select id from records where {where} order by id", params)]
    finally:
        conn.close()


def test_gallery_json_lists_every_record_once_across_pages(ds, museum_db):
    items = all_pages(ds, "")
    assert [c["id"] for c in items] == db_ids(museum_db)


@pytest.mark.parametrize(
    "query, where, params",
    [
        (f"&model={IMAGE_MODEL}", "model = ?", [IMAGE_MODEL]),
        ("&provider=rijksmuseum", "provider = ?", ["rijksmuseum"]),
        ("&provider=rijksmuseum&provider=the-metropolitan-museum-of-art", "provider in (?, ?)", ["rijksmuseum", "the-metropolitan-museum-of-art"]),
        (f"&provider=rijksmuseum&model={FAKE_TEXT_MODEL}", "provider = ? and model = ?", ["rijksmuseum", FAKE_TEXT_MODEL]),
        ("&type=text", "type = ?", ["text"]),
        (f"&type=image&model={FAKE_TEXT_MODEL}", "type = ? and model = ?", ["image", FAKE_TEXT_MODEL]),
        ("&type=image&provider=evil", "type = ? and provider = ?", ["image", "evil"]),
    ],
)
def test_filters_paginate_to_exactly_the_matching_records(ds, museum_db, query, where, params):
    items = all_pages(ds, query, size=3)
    assert [c["id"] for c in items] == db_ids(museum_db, where, params)


def test_facet_counts_match_the_database(ds, museum_db):
    data = fetch(ds, f"/museum/-/gallery.json?model={IMAGE_MODEL}").json()
    providers = {f["value"]: f["count"] for f in data["facets"]["provider"]}
    for provider, count in providers.items():
        assert count == len(db_ids(museum_db, "provider = ? and model = ?", [provider, IMAGE_MODEL]))
    models = {f["value"]: f["count"] for f in data["facets"]["model"]}
    assert models == {IMAGE_MODEL: 7, FAKE_TEXT_MODEL: 9}
    assert [f["value"] for f in data["facets"]["model"] if f["selected"]] == [IMAGE_MODEL]
    assert data["total"] == 7


def test_text_record_shows_its_text_not_an_image(ds):
    data = fetch(ds, "/museum/-/gallery.json?type=text").json()
    (card,) = data["items"]
    assert card["preview_url"] is None and card["text"].startswith("Color postcard")
    html = fetch(ds, "/museum/-/gallery?type=text").text
    assert "Color postcard; QSL card" in html
    assert 'class="emb-text"' in html


def test_gallery_html_has_cards_facets_and_next_link(ds):
    r = fetch(ds, "/museum/-/gallery?size=4&provider=rijksmuseum")
    assert r.status_code == 200
    html = r.text
    assert html.count('class="emb-card"') == 4
    assert 'src="https://images.example.org/SK-C-5.jpg"' in html
    # one tab stop per card: the picture link is out of the tab order and hidden from screen readers
    assert html.count('tabindex="-1" aria-hidden="true"') == 4 and 'alt=""' in html
    assert "after=" in html and 'rel="next"' in html
    assert 'aria-current="true"' in html  # the selected provider facet


def test_keyset_pagination_uses_the_indexes(museum_db):
    """Every lane query the gallery issues is answered by one index in id order (no sort, no scan)."""
    from datasette_embeddings.web import gallery
    from datasette_embeddings.storage.connection import connect

    conn = connect(str(museum_db))
    try:
        counts = gallery.facet_counts(conn, "plan-test")
        for flt in [
            gallery.GalleryFilter(providers=("rijksmuseum",)),
            gallery.GalleryFilter(providers=("rijksmuseum",), model=IMAGE_MODEL),
            gallery.GalleryFilter(type="text"),
            gallery.GalleryFilter(model=IMAGE_MODEL),
        ]:
            for where, params in gallery._lanes(counts, flt):
                plan = " ".join(
                    r[3] for r in conn.execute(
                        f"explain query plan select id from {where} and id > ? order by id limit 10", [*params, 0]
                    )
                )
                assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
                assert "TEMP B-TREE" not in plan, plan
    finally:
        conn.close()


@pytest.mark.parametrize(
    "query, status, message",
    [
        ("provider=nobody", 400, "unknown provider 'nobody'"),
        ("model=nope", 404, "unknown model 'nope'"),
        ("type=video", 400, "unknown type 'video'"),
        ("size=0", 400, "size must be a whole number from 1 to 200"),
        ("size=abc", 400, "size must be a whole number"),
        ("after=-3", 400, "after must be a whole number"),
    ],
)
def test_bad_parameters_are_4xx_in_html_and_json(ds, query, status, message):
    r = fetch(ds, f"/museum/-/gallery.json?{query}")
    assert r.status_code == status
    assert {key: r.json()[key] for key in ("ok", "status")} == {"ok": False, "status": status}
    assert message in r.json()["error"]
    r = fetch(ds, f"/museum/-/gallery?{query}")
    assert r.status_code == status
    assert message.replace("'", "&#39;") in r.text


def test_unknown_database_and_database_without_records(ds, tmp_path):
    assert fetch(ds, "/nowhere/-/gallery.json").status_code == 404
    import sqlite_utils

    plain = tmp_path / "plain.db"
    sqlite_utils.Database(plain)["things"].insert({"a": 1})
    other = Datasette([str(plain)])
    r = fetch(other, "/plain/-/gallery.json")
    assert r.status_code == 404 and "no records and models tables" in r.json()["error"]


def test_cors_header_only_with_datasette_cors(museum_db):
    plain = Datasette([str(museum_db)])
    assert "access-control-allow-origin" not in fetch(plain, "/museum/-/gallery.json").headers
    with_cors = Datasette([str(museum_db)], cors=True)
    for path in ["/museum/-/gallery.json", "/museum/-/gallery/1.json", "/museum/-/search.json", "/-/embeddings.json",
                 "/museum/-/gallery/99999.json"]:
        assert fetch(with_cors, path).headers["access-control-allow-origin"] == "*", path


def test_overview_lists_databases_models_and_providers(ds, museum_db):
    data = fetch(ds, "/-/embeddings.json").json()
    (db,) = data["databases"]
    assert db["name"] == "museum"
    models = {m["label"]: (m["dimensions"], m["records"]) for m in db["models"]}
    assert models[IMAGE_MODEL] == (286, 7) and models[FAKE_TEXT_MODEL] == (8, 9)
    providers = {p["provider"]: p["records"] for p in db["providers"]}
    assert providers["rijksmuseum"] == len(db_ids(museum_db, "provider = 'rijksmuseum'"))
    assert db["records"] == len(db_ids(museum_db))
    html = fetch(ds, "/-/embeddings").text
    assert "colour-layout-v1" in html and "286" in html and "rijksmuseum" in html


def test_overview_skips_databases_without_embeddings(museum_db, tmp_path):
    import sqlite_utils

    plain = tmp_path / "plain.db"
    sqlite_utils.Database(plain)["things"].insert({"a": 1})
    both = Datasette([str(museum_db), str(plain)])
    assert [d["name"] for d in fetch(both, "/-/embeddings.json").json()["databases"]] == ["museum"]


def test_database_and_table_pages_link_to_the_gallery(ds):
    database = fetch(ds, "/museum").text
    assert 'href="/museum/-/gallery">Browse the collection gallery' in database
    assert 'href="/museum/-/search">Search by text or image' in database
    assert 'href="/museum/-/gallery">Browse records as a gallery' in fetch(ds, "/museum/records").text
    assert 'href="/-/embeddings">Embeddings overview' in database  # the menu


def test_records_table_page_is_a_gallery_with_the_table_one_click_away(ds, museum_db):
    html = fetch(ds, "/museum/records?provider=rijksmuseum").text
    assert html.count('class="emb-card"') == len(db_ids(museum_db, "provider = 'rijksmuseum'"))
    assert 'class="rows-and-columns"' not in html
    assert 'href="/museum/records?provider=rijksmuseum&amp;_embeddings=table">Show as a table' in html
    table = fetch(ds, "/museum/records?provider=rijksmuseum&_embeddings=table").text
    assert 'class="rows-and-columns"' in table and 'class="emb-card"' not in table
    assert 'href="/museum/records?provider=rijksmuseum">Show as a gallery' in table


def test_other_tables_keep_datasette_table(ds):
    html = fetch(ds, "/museum/models").text
    assert 'class="rows-and-columns"' in html and 'class="emb-card"' not in html


def test_overview_shows_the_configured_query_model(museum_db):
    configured = Datasette([str(museum_db)], metadata={
        "plugins": {"datasette-embeddings": {"models": {IMAGE_MODEL: "colour-layout-v1"}}}})
    (db,) = fetch(configured, "/-/embeddings.json").json()["databases"]
    # the fake text model's label is itself an llm model id: the one resolver's third rule
    assert {m["label"]: m["query_model"] for m in db["models"]} == {IMAGE_MODEL: "colour-layout-v1", FAKE_TEXT_MODEL: FAKE_TEXT_MODEL}


def test_facets_and_lanes_see_a_load_that_changes_a_records_type(tmp_path):
    """A running server must not keep counts from before a load: the facet cache follows the data version.

    The cache's key was once the highest id and the record counts, which an update leaves unchanged:
    after a load turned an image record into a text record, the gallery filtered by model and type
    left it out until the server restarted.
    """
    from datasette.app import Datasette

    from datasette_embeddings.files import loader
    from tests.helpers import make_records, write_parquet

    records = make_records(n=6, providers=("met",), models={"m-4": 4}, seed=2)
    first = tmp_path / "first.parquet"
    write_parquet(first, records)
    db = tmp_path / "facets.db"
    loader.load(str(db), [str(first)])
    ds = Datasette([str(db)])
    before = fetch(ds, "/facets/-/gallery.json?model=m-4").json()
    assert {f["value"]: f["count"] for f in before["facets"]["type"]} == {"image": 6}

    changed = dict(records[0], created=records[0]["created"] + 60, attributes={**records[0]["attributes"], "type": "text"})
    second = tmp_path / "second.parquet"
    write_parquet(second, [changed])
    loader.load(str(db), [str(second)])

    after = fetch(ds, "/facets/-/gallery.json?model=m-4").json()
    assert {f["value"]: f["count"] for f in after["facets"]["type"]} == {"image": 5, "text": 1}
    texts = fetch(ds, "/facets/-/gallery.json?model=m-4&type=text").json()
    assert [item["depiction_id"] for item in texts["items"]] == [records[0]["depiction_id"]]
