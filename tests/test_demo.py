"""The shipped demo collection: it loads, and its links mean something.

These run on the Parquet files committed in demo/data/ (what `make demo` serves),
so a rebuild that broke the data or the models' meaning fails here.
"""
import pathlib

import pytest

from datasette_embeddings.files import loader
from datasette_embeddings.search.similarity import NeighbourFilter, similar_to_record
from datasette_embeddings.storage.connection import connect

DEMO = pathlib.Path(__file__).resolve().parent.parent / "demo"
TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def demo_conn(tmp_path_factory):
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    loader.load(str(db), [str(DEMO / "data")])
    conn = connect(str(db))
    yield conn
    conn.close()


def _id(conn, provider, title, model=TEXT_MODEL):
    row = conn.execute(
        "select id from records where provider = ? and model = ? and json_extract(attributes, '$.subject_title') = ?",
        [provider, model, title],
    ).fetchone()
    assert row, f"{provider} record titled {title!r} is missing from the demo"
    return row[0]


def _best_brooklyn_text(conn, record_id):
    _, neighbours = similar_to_record(conn, record_id, k=1, flt=NeighbourFilter(providers=("brooklyn",)))
    return neighbours[0].record["attributes"]["text"], neighbours[0].similarity


def test_demo_holds_three_providers_and_two_models(demo_conn):
    rows = dict(
        ((p, m), n)
        for p, m, n in demo_conn.execute("select provider, model, count(*) from records group by provider, model")
    )
    assert rows[("met", TEXT_MODEL)] > 5000
    assert rows[("brooklyn", TEXT_MODEL)] > 3900
    assert rows[("rijksmuseum", "colour-layout-v1")] == 4
    assert rows[("met", "colour-layout-v1")] == 2
    dims = dict(demo_conn.execute("select label, dimensions from models"))
    assert dims[TEXT_MODEL] == 384


def test_only_cc0_images_are_shipped(demo_conn):
    previews = sorted(p.name for p in (DEMO / "previews").iterdir())
    assert previews == sorted(
        ["SK-C-5.jpg", "RP-P-1906-1485.jpg", "RP-P-1906-1486.jpg", "RP-P-1906-1487.jpg", "DP159891.jpg", "DP259541.jpg"]
    )
    providers = {r[0] for r in demo_conn.execute("select provider from records where model = 'colour-layout-v1'")}
    assert providers == {"rijksmuseum", "met"}


@pytest.mark.parametrize(
    "met_title, word",
    [
        ("Portrait of a Lady", "Portrait"),
        ("Winter Landscape", "Winter Landscape"),
        ("Landscape with Figures", "Landscape"),
    ],
)
def test_met_to_brooklyn_links_are_meaningful(demo_conn, met_title, word):
    text, similarity = _best_brooklyn_text(demo_conn, _id(demo_conn, "met", met_title))
    assert word in text
    assert similarity > 0.5


def test_rijksmuseum_prints_find_each_other_in_the_demo(demo_conn):
    ids = {
        depiction: rid
        for rid, depiction in demo_conn.execute(
            "select id, depiction_id from records where model = 'colour-layout-v1' and depiction_id like 'RP-P-1906-%'"
        )
    }
    for depiction, rid in ids.items():
        _, neighbours = similar_to_record(demo_conn, rid, k=2)
        assert {n.record["depiction_id"] for n in neighbours} == set(ids) - {depiction}


def test_the_demo_map_has_clusters_shared_by_the_met_and_brooklyn(demo_conn):
    """The README tour's map step: the most mixed clusters hold both museums, portraits first."""
    from datasette_embeddings.search import maps

    (report,) = maps.build(demo_conn, [TEXT_MODEL])
    assert report.records == 9264 and report.clusters == 68
    mixed = sorted(maps.cluster_rows(demo_conn, TEXT_MODEL), key=lambda c: -c["provider_diversity"])[:3]
    assert all(set(c["providers"]) == {"met", "brooklyn"} for c in mixed)
    assert "portrait" in mixed[0]["words"]


def test_every_local_preview_the_demo_points_at_is_shipped(demo_conn):
    """Previews under /previews are served from demo/previews (make demo's --static): none may be missing."""
    local = [
        (provider, depiction, preview)
        for provider, depiction, preview in demo_conn.execute(
            "select provider, depiction_id, json_extract(attributes, '$.preview') from records "
            "where json_extract(attributes, '$.type') = 'image' or json_extract(attributes, '$.preview') like '/%'"
        )
        if preview and preview.startswith("/")
    ]
    assert local, "the demo has no shipped previews"
    missing = [(p, d, url) for p, d, url in local if not url.startswith("/previews/") or not (DEMO / "previews" / url[len("/previews/"):]).is_file()]
    assert missing == []
    # every shipped file is used, and the Met titles of the two shipped paintings show them too
    assert {url.rsplit("/", 1)[1] for _, _, url in local} == {p.name for p in (DEMO / "previews").iterdir()}
    titles = {d: url for p, d, url in local if p == "met" and d.endswith("#title")}
    assert titles == {"436896#title": "/previews/DP159891.jpg", "37854#title": "/previews/DP259541.jpg"}
