"""Keyword search: the FTS5 index load builds and keeps current, the gallery's q filter, fusion."""
import pytest

from datasette_embeddings.errors import InvalidRequestError
from datasette_embeddings.files import loader
from datasette_embeddings.search import keywords
from datasette_embeddings.storage.connection import connect
from tests.gallery_fixtures import FAKE_TEXT_MODEL, IMAGE_MODEL, ds, fetch, museum_db  # noqa: F401
from tests.helpers import make_records, write_parquet


def ids_with_words(db_path, *words, where="1", params=()):
    """Brute force: records whose title, text or credit line holds every word (case- and accent-blind)."""
    import json
    import re
    import unicodedata

    def fold(s):
        return "".join(c for c in unicodedata.normalize("NFKD", s.lower()) if not unicodedata.combining(c))

    conn = connect(str(db_path))
    try:
        out = []
        for rid, attrs in conn.execute(f"select id, attributes from records where {where} order by id", params):
            a = json.loads(attrs)
            text = a.get("text") or (a.get("preview") if a.get("type") == "text" else None)
            hay = set(re.findall(r"\w+", fold(" ".join(str(v) for v in (a.get("subject_title"), text, a.get("subject_creditline")) if v))))
            if all(any(h == fold(w) or (i == len(words) - 1 and h.startswith(fold(w))) for h in hay) for i, w in enumerate(words)):
                out.append(rid)
        return out
    finally:
        conn.close()


def test_match_expression_quotes_every_word():
    assert keywords.match_expression('night OR "watch" NEAR(x') == '"night" "OR" "watch" "NEAR" "x" *'
    assert keywords.match_expression("  ;; ") is None
    with pytest.raises(InvalidRequestError, match="at most 32 are allowed"):
        keywords.match_expression("a " * 40)


@pytest.mark.parametrize("q", ["night watch", "Portrait", "rembrandt", "erasm", "AND", 'a"b', "NEAR(", "*", "casement man"])
def test_gallery_q_finds_exactly_the_records_holding_the_words(ds, museum_db, q):
    import re

    words = re.findall(r"\w+", q)
    got, after = [], None
    while True:
        data = fetch(ds, "/museum/-/gallery.json", params={"q": q, "size": 2, **({"after": after} if after else {})}).json()
        assert data["ok"] is True, data
        got += [c["id"] for c in data["items"]]
        after = data["next_after"]
        if after is None:
            break
    expected = ids_with_words(museum_db, *words) if words else [c["id"] for c in fetch(ds, "/museum/-/gallery.json?size=200").json()["items"]]
    assert got == expected
    if words:
        assert data["total"] == len(expected)


def test_q_combines_with_model_and_provider_and_counts_agree(ds, museum_db):
    data = fetch(ds, f"/museum/-/gallery.json?q=portrait&model={IMAGE_MODEL}&provider=rijksmuseum").json()
    expected = ids_with_words(museum_db, "portrait", where="model = ? and provider = ?", params=[IMAGE_MODEL, "rijksmuseum"])
    assert [c["id"] for c in data["items"]] == expected and data["total"] == len(expected) == 3
    selected = {f["value"]: f["count"] for facet in data["facets"].values() for f in facet if f["selected"]}
    assert selected == {IMAGE_MODEL: 3, "rijksmuseum": 3}
    assert all(f["count"] > 0 for facet in data["facets"].values() for f in facet)


def test_q_with_nothing_found_says_why(ds):
    data = fetch(ds, "/museum/-/gallery.json?q=zeppelin").json()
    assert data["total"] == 0 and data["items"] == [] and "zeppelin" in data["empty_reason"]
    html = fetch(ds, "/museum/-/gallery?q=zeppelin").text
    assert "Nothing to show" in html and "zeppelin" in html and 'value="zeppelin"' in html


def _load(db, path, records):
    write_parquet(path, records)
    loader.load(str(db), [str(path)])


def test_later_loads_keep_the_index_current(tmp_path):
    db = tmp_path / "k.db"
    first = make_records(n=3, providers=("met",), models={"m": 4})
    _load(db, tmp_path / "a.parquet", first)
    changed = [dict(r) for r in first]
    changed[0] = {**changed[0], "attributes": {"type": "image", "subject_title": "A zeppelin over Lakehurst"}, "created": changed[0]["created"] + 10}
    extra = make_records(n=2, providers=("nga",), models={"m": 4}, seed=5)
    extra[0] = {**extra[0], "attributes": {"type": "text", "preview": "zeppelin hangar, described"}}
    _load(db, tmp_path / "b.parquet", changed + extra)
    conn = connect(str(db))
    try:
        found = keywords.ranked_ids(conn, "zeppelin")
        rows = dict(conn.execute("select id, depiction_id from records").fetchall())
        assert sorted(rows[i] for i, _ in found) == sorted([changed[0]["depiction_id"], extra[0]["depiction_id"]])
        assert keywords.ranked_ids(conn, first[0]["attributes"]["subject_title"]) == []  # the old title is gone
        assert conn.execute("insert into records_fts(records_fts, rank) values('integrity-check', 1)") is not None
    finally:
        conn.close()


def test_a_database_from_before_the_index_gets_it_on_the_next_load(tmp_path):
    """Migration m007 indexes the records already there."""
    import sqlite_utils

    from datasette_embeddings.storage import schema

    db = tmp_path / "old.db"
    _load(db, tmp_path / "a.parquet", make_records(n=4, providers=("met",), models={"m": 4}))
    conn = connect(str(db))
    conn.execute("drop table records_fts")
    for t in ("records_ai", "records_ad", "records_au"):
        conn.execute(f"drop trigger {t}")
    conn.execute("delete from _sqlite_migrations where name = 'm007_keyword_index'")
    conn.commit()
    assert not keywords.has_keyword_index(conn)
    schema.migrate(sqlite_utils.Database(conn))
    assert len(keywords.ranked_ids(conn, "object")) == 4
    conn.close()


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = keywords.reciprocal_rank_fusion([1, 2, 3], [3, 4, 1])
    score = dict(fused)
    assert score[1] == pytest.approx(1 / 61 + 1 / 63) and score[3] == pytest.approx(1 / 63 + 1 / 61)
    assert score[2] == pytest.approx(1 / 62) and score[4] == pytest.approx(1 / 62)
    assert [i for i, _ in fused] == [1, 3, 2, 4]  # both lists beat one list; ties keep first appearance


# ---------------------------------------------------------------- the search page's modes
def test_text_search_defaults_to_hybrid_and_fuses_by_rank(ds, museum_db):
    """Fused order = reciprocal rank fusion of the vector list and the keyword list, recomputed here."""
    data = fetch(ds, "/museum/-/search.json?q=portrait+woman&k=5").json()
    assert data["query"]["mode"] == "hybrid" and data["query"]["model"] == FAKE_TEXT_MODEL
    vector = fetch(ds, f"/museum/-/search.json?q=portrait+woman&k=100&mode=vector").json()["results"]
    conn = connect(str(museum_db))
    try:
        words = keywords.ranked_ids(conn, "portrait woman", keywords.KeywordFilter(model=FAKE_TEXT_MODEL), limit=100)
    finally:
        conn.close()
    expected = keywords.reciprocal_rank_fusion([c["id"] for c in vector], [rid for rid, _ in words])[:5]
    assert [c["id"] for c in data["results"]] == [rid for rid, _ in expected]
    assert [c["score"] for c in data["results"]] == [round(s, 6) for _, s in expected]
    assert data["results"][0]["title"] == "Portrait of a Woman with a Man at a Casement"


def test_keyword_mode_ranks_title_matches_and_needs_no_model(ds, museum_db):
    data = fetch(ds, "/museum/-/search.json?q=night+watch&mode=keyword").json()
    assert data["query"]["mode"] == "keyword" and data["query"]["model"] is None
    # one card per depiction: the Night Watch under two models is one result
    depictions = [(c["provider"], c["depiction_id"]) for c in data["results"]]
    assert depictions[0] == ("rijksmuseum", "SK-C-5") and len(depictions) == len(set(depictions))


def test_without_a_text_model_words_are_searched_and_the_page_says_so_up_front(tmp_path):
    from datasette.app import Datasette

    from tests.gallery_fixtures import build_database

    db = build_database(tmp_path, test_records=False, name="images")  # only the image model
    ds_ = Datasette([str(db)])
    page = fetch(ds_, "/images/-/search").text
    assert "Search by meaning is not available on this server" in page
    assert 'value="vector" disabled' in page.replace(" checked", "") and 'name="q"' in page
    data = fetch(ds_, "/images/-/search.json?q=night+watch").json()
    assert data["query"]["mode"] == "keyword" and data["results"][0]["depiction_id"] == "SK-C-5"
    assert data["text_search"] == {"meaning": False, "keywords": True}
    r = fetch(ds_, "/images/-/search.json?q=night+watch&mode=hybrid")
    assert r.status_code == 400 and "use mode=keyword" in r.json()["error"]


def test_too_many_matches_to_count_still_lists_pages(museum_db, monkeypatch):
    from datasette_embeddings.web import gallery

    conn = connect(str(museum_db))
    try:
        assert gallery.keyword_counts(conn, "portrait", limit=2) is None
        monkeypatch.setattr(gallery, "KEYWORD_COUNT_LIMIT", 2)
        page = gallery.gallery_page(conn, gallery.GalleryFilter(q="portrait"), size=2, base_url="/x")
        assert page["items"] and page["next_after"] is not None
        assert page["total"] is None and page["counted"] is False
        assert all(f["count"] is None for facet in page["facets"].values() for f in facet)
        monkeypatch.undo()
        exact = gallery.keyword_counts(conn, "portrait")
        assert sum(exact.by_key.values()) == len(ids_with_words(museum_db, "portrait"))
    finally:
        conn.close()


@pytest.mark.parametrize("overfetch", [1, 8])
def test_filtered_ranking_equals_ranking_then_filtering(museum_db, monkeypatch, overfetch):
    """Both paths (over-fetch then filter, and the filter inside the ranking) give the brute-force order."""
    monkeypatch.setattr(keywords, "OVERFETCH", overfetch)
    conn = connect(str(museum_db))
    try:
        everything = keywords.ranked_ids(conn, "portrait", limit=1000)
        models = dict(conn.execute("select id, model from records").fetchall())
        for limit in (1, 2, 5):
            got = keywords.ranked_ids(conn, "portrait", keywords.KeywordFilter(model=IMAGE_MODEL), limit=limit)
            assert got == [p for p in everything if models[p[0]] == IMAGE_MODEL][:limit]
    finally:
        conn.close()


@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_load_indexes_in_bulk_and_leaves_the_triggers_in_place(tmp_path, batch_size):
    """A load sets the FTS triggers aside inside its transaction, indexes each batch at once, restores them."""
    db = tmp_path / "bulk.db"
    first = make_records(n=30, providers=("met", "nga"), models={"m": 4})
    write_parquet(tmp_path / "a.parquet", first)
    loader.load(str(db), [str(tmp_path / "a.parquet")], batch_size=batch_size)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(loader.LoadError):
        loader.load(str(db), [str(bad)])
    # the same key twice in one file (the later, newer row wins), plus changed and new records
    renamed = {**first[0], "attributes": {"type": "image", "subject_title": "Zeppelin over Lakehurst"}, "created": first[0]["created"] + 5}
    again = {**renamed, "attributes": {"type": "image", "subject_title": "Airship hangar"}, "created": first[0]["created"] + 9}
    extra = make_records(n=5, providers=("rijks",), models={"m": 4}, seed=2)
    dup = {**extra[0], "attributes": {"type": "image", "subject_title": "Balloon"}, "created": extra[0]["created"] + 1}
    write_parquet(tmp_path / "b.parquet", [renamed, *extra, again, dup])
    loader.load(str(db), [str(tmp_path / "b.parquet")], batch_size=batch_size)
    conn = connect(str(db))
    try:
        triggers = {r[0]: r[1] for r in conn.execute("select name, sql from sqlite_master where type = 'trigger'")}
        assert {"records_ai", "records_ad", "records_au"} <= set(triggers)
        assert not any("WHEN old.rowid" in sql for sql in triggers.values())
        conn.execute("insert into records_fts(records_fts, rank) values('integrity-check', 1)")
        assert len(keywords.ranked_ids(conn, "object", limit=1000)) == 59 + 4
        assert keywords.ranked_ids(conn, "zeppelin") == [] and len(keywords.ranked_ids(conn, "airship hangar")) == 1
        assert len(keywords.ranked_ids(conn, "balloon")) == 1
        # a writer other than load still keeps the index current through the triggers
        conn.execute("insert into records (id, provider, depiction_id, subject_id, model, created, attributes) "
                     "values (1000, 'x', 'x1', 's', 'm', 1, '{\"subject_title\": \"dirigible\"}')")
        assert [i for i, _ in keywords.ranked_ids(conn, "dirigible")] == [1000]
    finally:
        conn.close()


def test_ranking_on_a_hand_checked_example(tmp_path):
    """BM25 as worked out by hand for "storm" (k1 1.2, b 0.75, weights title 10, text 5, credit line 2).

    Tokens per record (all columns): 1, 8, 5, 6, 2, 1, so avgdl = 23 / 6.  A record's score is
    idf * F * 2.2 / (F + 1.2 * (0.25 + 0.75 * D / avgdl)), F the weighted count of "storm":
    "Storm" (F 10, D 1): 2.09; the ship (F 10, D 8): 1.81; the seascape, in its text (F 5, D 5): 1.70;
    the harbour, in its credit line (F 2, D 6): 1.19.  The two "Storm" records tie: the lower id first.
    Filters keep the order and only take records out.
    """
    attributes = [
        ("met", "m", {"subject_title": "Storm"}),
        ("met", "m", {"subject_title": "Ship in a storm off a rocky coast"}),
        ("met", "m", {"subject_title": "Seascape", "text": "A storm at sea"}),
        ("met", "m", {"subject_title": "Harbour", "subject_creditline": "Gift of the Storm family"}),
        ("met", "m", {"subject_title": "Calm sea"}),
        ("nga", "other", {"subject_title": "Storm"}),
    ]
    records = []
    for i, (provider, model, attrs) in enumerate(attributes):
        (r,) = make_records(1, providers=(provider,), models={model: 4}, seed=i)
        r["depiction_id"] = f"d{i}"
        r["attributes"] = {"type": "image", **attrs}
        records.append(r)
    path, db = tmp_path / "storm.parquet", tmp_path / "storm.db"
    write_parquet(path, records)
    loader.load(str(db), [str(path)])
    conn = connect(str(db))
    try:
        ids = {depiction: rid for rid, depiction in conn.execute("select id, depiction_id from records")}
        ranked = keywords.ranked_ids(conn, "storm")
        assert [rid for rid, _ in ranked] == [ids[d] for d in ("d0", "d5", "d1", "d2", "d3")]
        scores = [s for _, s in ranked]
        assert scores[0] == scores[1] and scores == sorted(scores)  # FTS5: lower is better
        idf = -scores[0] / (10 * 2.2 / (10 + 1.2 * (0.25 + 0.75 * 1 / (23 / 6))))
        for (_, score), (f, d) in zip(ranked[2:], [(10, 8), (5, 5), (2, 6)]):
            assert score == pytest.approx(-idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * d / (23 / 6))))
        assert keywords.ranked_ids(conn, "storm", keywords.KeywordFilter(providers=("nga",))) == [ranked[1]]
        assert keywords.ranked_ids(conn, "storm", keywords.KeywordFilter(model="m")) == [ranked[0], *ranked[2:]]
        assert keywords.ranked_ids(conn, "storm", keywords.KeywordFilter(model="m"), limit=2) == [ranked[0], ranked[2]]
    finally:
        conn.close()
