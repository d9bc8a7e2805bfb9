"""The map, clusters and "more like these" pages and their JSON twins, through Datasette's real client."""
import asyncio

import numpy as np
import pytest
from datasette.app import Datasette

from datasette_embeddings.files import loader
from datasette_embeddings.search import maps
from datasette_embeddings.search.similarity import MAX_SELECTION
from datasette_embeddings.storage.connection import connect
from tests.helpers import make_records, write_parquet
from tests.test_maps import THEMES, planted_records


def fetch(ds, path):
    return asyncio.run(ds.client.get(path))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mapviews")
    records, truth = planted_records()
    # a second model without a map
    records += make_records(n=6, providers=("met",), models={"unmapped-4": 4})
    write_parquet(folder / "p.parquet", records)
    db = folder / "planted.db"
    loader.load(str(db), [str(folder / "p.parquet")])
    conn = connect(str(db))
    maps.build(conn, ["m-16"], n_clusters=5)
    theme_of = {rid: truth[d] for rid, d in conn.execute("select id, depiction_id from records where model = 'm-16'")}
    conn.close()
    return db, theme_of


@pytest.fixture(scope="module")
def ds(planted):
    return Datasette([str(planted[0])])


def test_map_json_holds_every_point_once_across_pages(ds, planted):
    _, theme_of = planted
    ids, xs, after, pages = [], [], None, 0
    while True:
        data = fetch(ds, "/planted/-/map.json?model=m-16&size=50" + (f"&after={after}" if after else "")).json()
        assert data["ok"] and data["scale"] == 65535
        ids += data["points"]["id"]
        xs += data["points"]["x"] + data["points"]["y"]
        assert len({len(v) for v in data["points"].values()}) == 1
        assert set(data["points"]["provider"]) <= set(range(len(data["providers"])))
        after = data["next_after"]
        pages += 1
        if after is None:
            break
        assert data["next_url"].endswith(f"after={after}")
    assert pages == 3
    assert ids == sorted(theme_of)
    assert min(xs) == 0 and max(xs) == 65535
    assert data["providers"] == ["brooklyn", "met", "rijks"] and data["types"] == ["image"]


def test_map_json_is_compact(ds):
    response = fetch(ds, "/planted/-/map.json?model=m-16")
    assert response.headers["content-type"].startswith("application/json")
    assert b", " not in response.content
    assert len(response.content) / 120 < 40  # about 30 bytes a point


def test_map_page_draws_from_the_json_with_a_packaged_script(ds):
    html = fetch(ds, "/planted/-/map?model=m-16").text
    assert '<canvas id="emb-canvas"' in html
    assert 'data-points-url="/planted/-/map.json?model=m-16"' in html
    import re

    # the script's address follows the installed distribution's name (Datasette serves static files by it)
    src = re.search(r'src="([^"]*/-/static-plugins/[^"]+/map\.js)"', html).group(1)
    assert "ship" in html  # cluster labels ride along for the legend
    script = fetch(ds, src)
    assert script.status_code == 200 and b"ImageData" in script.content
    # no model named: the first mapped model
    assert "Map of m-16" in fetch(ds, "/planted/-/map").text


@pytest.mark.parametrize("path", ["/planted/-/map?model=nope", "/planted/-/map.json?model=nope",
                                  "/planted/-/clusters.json?model=nope", "/planted/-/clusters/0.json?model=nope"])
def test_unknown_model_is_404(ds, path):
    response = fetch(ds, path)
    assert response.status_code == 404
    assert "unknown model &#39;nope&#39;" in response.text or "unknown model 'nope'" in response.text


@pytest.mark.parametrize("path", ["/planted/-/map.json?model=unmapped-4", "/planted/-/clusters?model=unmapped-4"])
def test_a_model_without_a_map_says_which_command_makes_one(ds, path):
    response = fetch(ds, path)
    assert response.status_code == 404
    assert "datasette-embeddings map DB --model" in response.text


@pytest.mark.parametrize("query", ["size=0", "size=250001", "after=-1", "after=x"])
def test_bad_paging_is_400(ds, query):
    response = fetch(ds, f"/planted/-/map.json?model=m-16&{query}")
    assert response.status_code == 400 and response.json()["ok"] is False


def test_clusters_json_lists_label_size_mix_and_samples(ds, planted):
    data = fetch(ds, "/planted/-/clusters.json?model=m-16").json()
    assert len(data["clusters"]) == 5
    for c in data["clusters"]:
        assert c["size"] == 24 and c["provider_count"] == 3
        assert sorted(p["provider"] for p in c["providers"]) == ["brooklyn", "met", "rijks"]
        assert 1 <= len(c["samples"]) <= 6 and all(s["url"].startswith("/planted/-/gallery/") for s in c["samples"])
        assert any(set(c["words"][:3]) == set(t) for t in THEMES)
        assert c["url"] == f"/planted/-/clusters/{c['cluster']}?model=m-16"
    html = fetch(ds, "/planted/-/clusters?model=m-16&sort=diversity").text
    assert "Most providers first" in html and 'class="emb-mix"' in html


def test_clusters_sort_by_provider_diversity(tmp_path):
    # one cluster of a single provider, one mixing two: diversity puts the mixed one first
    rng = np.random.default_rng(0)
    records = []
    for i in range(20):
        theme = i % 2
        provider = "met" if theme == 0 else ("met", "brooklyn")[i // 2 % 2]
        v = np.eye(8)[theme] + 0.01 * rng.standard_normal(8)
        records.append({"provider": provider, "depiction_id": f"d{i}", "subject_id": f"s{i}", "model": "m",
                        "embeddings": v.astype(np.float32), "created": 1, "attributes": {"subject_title": f"t{theme}"}})
    write_parquet(tmp_path / "d.parquet", records)
    loader.load(str(tmp_path / "d.db"), [str(tmp_path / "d.parquet")])
    maps.build(connect(str(tmp_path / "d.db")), n_clusters=2)
    ds = Datasette([str(tmp_path / "d.db")])
    data = fetch(ds, "/d/-/clusters.json?sort=diversity").json()
    assert [c["provider_count"] for c in data["clusters"]] == [2, 1]
    assert fetch(ds, "/d/-/clusters.json?sort=nope").status_code == 400


def test_cluster_page_pages_through_members_and_lists_nearest_clusters(ds, planted):
    _, theme_of = planted
    members, after = [], None
    while True:
        data = fetch(ds, "/planted/-/clusters/2.json?model=m-16&size=10" + (f"&after={after}" if after else "")).json()
        members += [m["id"] for m in data["members"]]
        after = data["next_after"]
        if after is None:
            break
    assert len(members) == len(set(members)) == 24
    assert len({theme_of[m] for m in members}) == 1
    assert [n["cluster"] for n in data["nearest"]] and 2 not in [n["cluster"] for n in data["nearest"]]
    html = fetch(ds, "/planted/-/clusters/2?model=m-16").text
    assert "Nearest clusters" in html and "/planted/-/gallery/similar?id=" in html
    assert fetch(ds, "/planted/-/clusters/99.json?model=m-16").status_code == 404
    assert fetch(ds, "/planted/-/clusters/x.json?model=m-16").status_code == 404


def test_more_like_these_finds_the_theme_of_the_chosen_records(ds, planted):
    _, theme_of = planted
    chosen = [rid for rid, t in sorted(theme_of.items()) if t == 3][:4]
    query = "&".join(f"id={i}" for i in chosen)
    data = fetch(ds, f"/planted/-/gallery/similar.json?{query}&k=10").json()
    assert [c["id"] for c in data["selection"]] == chosen
    found = [c["id"] for c in data["similar"]]
    assert len(found) == 10 and not set(found) & set(chosen)
    assert all(theme_of[i] == 3 for i in found)
    assert all(c["percentile"] is not None and c["percentile"] > 90 for c in data["similar"])
    # filters
    data = fetch(ds, f"/planted/-/gallery/similar.json?{query}&k=5&provider=met").json()
    assert len(data["similar"]) == 5 and {c["provider"] for c in data["similar"]} == {"met"}
    data = fetch(ds, f"/planted/-/gallery/similar.json?{query}&k=5&exclude_provider=met").json()
    assert "met" not in {c["provider"] for c in data["similar"]}
    html = fetch(ds, f"/planted/-/gallery/similar?{query}").text
    assert "More like these 4 records" in html and "higher than" in html


def test_more_like_these_bad_input(ds, planted):
    _, theme_of = planted
    empty = fetch(ds, "/planted/-/gallery/similar.json")
    assert empty.status_code == 400 and "at least one record" in empty.json()["error"]
    too_many = fetch(ds, "/planted/-/gallery/similar.json?" + "&".join(f"id={i}" for i in range(1, MAX_SELECTION + 2)))
    assert too_many.status_code == 413 and f"at most {MAX_SELECTION} records" in too_many.json()["error"]
    assert fetch(ds, "/planted/-/gallery/similar.json?id=999999").status_code == 400
    assert fetch(ds, "/planted/-/gallery/similar.json?id=abc").status_code == 400
    one = min(theme_of)
    other = connect(str(planted[0])).execute("select id from records where model = 'unmapped-4' limit 1").fetchone()[0]
    mixed = fetch(ds, f"/planted/-/gallery/similar.json?id={one}&id={other}")
    assert mixed.status_code == 400 and "different models" in mixed.json()["error"]
    assert fetch(ds, f"/planted/-/gallery/similar.json?id={one}&provider=nope").status_code == 400


def test_record_cards_for_hover(ds, planted):
    _, theme_of = planted
    first = min(theme_of)
    data = fetch(ds, f"/planted/-/map/records.json?id={first}").json()
    assert data["records"][0]["id"] == first and data["records"][0]["preview_url"].startswith("https://")
    assert fetch(ds, "/planted/-/map/records.json").status_code == 400


def test_a_load_marks_map_and_clusters_stale(tmp_path):
    records, _ = planted_records(per_theme=4)
    write_parquet(tmp_path / "a.parquet", records)
    db = tmp_path / "s.db"
    loader.load(str(db), [str(tmp_path / "a.parquet")])
    maps.build(connect(str(db)), n_clusters=2)
    ds = Datasette([str(db)])
    assert fetch(ds, "/s/-/map.json").json()["map"]["stale"] is False
    more, _ = planted_records(per_theme=1, seed=5)
    for r in more:
        r["depiction_id"] += "-x"
    write_parquet(tmp_path / "b.parquet", more)
    loader.load(str(db), [str(tmp_path / "b.parquet")])
    ds = Datasette([str(db)])
    assert fetch(ds, "/s/-/map.json").json()["map"]["stale"] is True
    assert "were loaded after the map was computed" in fetch(ds, "/s/-/map").text
    assert "were loaded after the clusters were computed" in fetch(ds, "/s/-/clusters").text


def test_record_page_shows_where_each_score_falls(ds, planted):
    _, theme_of = planted
    first = min(theme_of)
    data = fetch(ds, f"/planted/-/gallery/{first}.json?k=5").json()
    for c in data["similar"]:
        assert 90 < c["percentile"] <= 100
        assert c["percentile_text"].startswith("higher than ") and c["percentile_text"].endswith("% of pairs under this model")
    assert "of pairs under this model" in fetch(ds, f"/planted/-/gallery/{first}").text
    # a model without a stored distribution shows no percentile rather than a made-up one
    other = connect(str(planted[0])).execute("select id from records where model = 'unmapped-4' limit 1").fetchone()[0]
    data = fetch(ds, f"/planted/-/gallery/{other}.json?k=3").json()
    assert all(c["percentile"] is None for c in data["similar"])


def test_links_show_where_each_score_falls(ds):
    data = fetch(ds, "/planted/-/links.json?model=m-16&from=met&k=2").json()
    assert data["links"]
    for link in data["links"]:
        assert link["percentile"] is not None and link["percentile_text"].startswith("higher than ")
    assert "of pairs under this model" in fetch(ds, "/planted/-/links?model=m-16&from=met&k=2").text


def test_gallery_and_overview_link_to_maps_clusters_and_compare(ds):
    assert 'href="/planted/-/map?model=m-16">Map</a>' in fetch(ds, "/planted/-/gallery").text
    overview = fetch(ds, "/-/embeddings")
    assert 'href="/planted/-/map?model=m-16">map</a>' in overview.text
    assert 'href="/planted/-/clusters?model=m-16">clusters</a>' in overview.text
    assert "not mapped" in overview.text  # unmapped-4
    assert 'action="/-/embeddings/compare"' in overview.text
    data = fetch(ds, "/-/embeddings.json").json()
    (db,) = data["databases"]
    assert {m["label"]: m.get("map_url") for m in db["models"]} == {"m-16": "/planted/-/map?model=m-16", "unmapped-4": None}
