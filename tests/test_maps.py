"""The `map` command: stored 2D layouts, k-means clusters with word labels, similarity distributions."""
import sys
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from datasette_embeddings.storage.store import stored_version
from datasette_embeddings.cli import cli
from datasette_embeddings.errors import InvalidRequestError
from datasette_embeddings.files import loader
from datasette_embeddings.search import clusters, distribution, maps, projection
from datasette_embeddings.storage.connection import connect
from tests.helpers import make_records, write_parquet

#: five planted themes, each with its own words; "painting" is in every title
THEMES = [
    ("ship", "harbour", "sail"),
    ("flower", "vase", "bouquet"),
    ("portrait", "woman", "lace"),
    ("mountain", "river", "valley"),
    ("horse", "rider", "saddle"),
]
PROVIDERS = ("met", "brooklyn", "rijks")


def planted_records(per_theme: int = 24, dims: int = 16, seed: int = 1, model: str = "m-16") -> tuple[list[dict], dict]:
    """Records around five far-apart unit directions; returns the records and depiction_id -> theme."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.standard_normal((dims, dims)))[0][:, : len(THEMES)].T  # orthonormal
    records, truth = [], {}
    for t, words in enumerate(THEMES):
        for i in range(per_theme):
            provider = PROVIDERS[i % len(PROVIDERS)]
            depiction = f"{provider}-{t}-{i}"
            vector = centres[t] + 0.08 * rng.standard_normal(dims)
            title = f"{words[i % 3].title()} {words[(i + 1) % 3]} painting no. {i}"
            records.append({
                "provider": provider, "depiction_id": depiction, "subject_id": depiction, "model": model,
                "embeddings": vector.astype(np.float32), "created": 1_700_000_000,
                "attributes": {"type": "image", "subject_title": title, "preview": f"https://example.org/{depiction}.jpg"},
            })
            truth[depiction] = t
    return records, truth


@pytest.fixture
def planted_db(tmp_path):
    records, truth = planted_records()
    path = tmp_path / "planted.parquet"
    write_parquet(path, records)
    db = tmp_path / "planted.db"
    loader.load(str(db), [str(path)])
    return db, truth


def test_map_stores_one_point_per_record(planted_db):
    db, truth = planted_db
    result = CliRunner().invoke(cli, ["map", str(db), "--clusters", "5"])
    assert result.exit_code == 0, result.output
    conn = connect(str(db))
    ids = [r[0] for r in conn.execute("select id from records where model = 'm-16' order by id")]
    stored = [r[0] for r in conn.execute("select record_id from projection_points where model = 'm-16' order by record_id")]
    assert stored == ids
    assert len(ids) == len(truth)
    xs = conn.execute("select x, y from projection_points").fetchall()
    assert all(np.isfinite(v) for row in xs for v in row)
    status = maps.status(conn, "m-16")
    assert status["records"] == len(ids) and status["clusters"] == 5 and not status["stale"]


def test_planted_clusters_are_recovered_and_labelled_from_member_titles(planted_db):
    db, truth = planted_db
    conn = connect(str(db))
    maps.build(conn, ["m-16"], n_clusters=5)
    rows = conn.execute(
        "select r.depiction_id, p.cluster from projection_points p join records r on r.id = p.record_id"
    ).fetchall()
    expected = [truth[d] for d, _ in rows]
    found = [c for _, c in rows]
    assert adjusted_rand_score(expected, found) >= 0.9
    stored = maps.cluster_rows(conn, "m-16")
    assert sorted(c["size"] for c in stored) == [24] * 5
    for c in stored:
        theme = Counter(truth[d] for d, k in rows if k == c["cluster"]).most_common(1)[0][0]
        # the label's words are the theme's own words; the word every title shares is never chosen
        assert set(c["words"][:3]) == set(THEMES[theme]), c
        assert "painting" not in c["words"]
        assert c["providers"] == {"brooklyn": 8, "met": 8, "rijks": 8}
        assert c["provider_count"] == 3 and c["provider_diversity"] == pytest.approx(3.0)


def test_nearest_clusters_exclude_the_cluster_itself(planted_db):
    db, _ = planted_db
    conn = connect(str(db))
    maps.build(conn, [], n_clusters=5)
    near = maps.nearest_clusters(conn, "m-16", 0, count=10)
    assert [c for c, _ in near] and 0 not in [c for c, _ in near] and len(near) == 4
    assert [s for _, s in near] == sorted((s for _, s in near), reverse=True)


def test_a_load_makes_the_map_stale(planted_db, tmp_path):
    db, _ = planted_db
    conn = connect(str(db))
    maps.build(conn, [], n_clusters=3)
    assert maps.status(conn, "m-16")["stale"] is False
    assert distribution.current(conn, "m-16", stored_version(conn, "m-16"))
    more, _ = planted_records(per_theme=1, seed=9)
    for r in more:
        r["depiction_id"] += "-new"
    write_parquet(tmp_path / "more.parquet", more)
    loader.load(str(db), [str(tmp_path / "more.parquet")])
    conn = connect(str(db))
    assert maps.status(conn, "m-16")["stale"] is True
    assert distribution.current(conn, "m-16", stored_version(conn, "m-16")) is None


def test_more_clusters_than_records_is_a_clear_error_and_stores_nothing(planted_db):
    db, _ = planted_db
    result = CliRunner().invoke(cli, ["map", str(db), "--clusters", "500"])
    assert result.exit_code == 1
    assert "has 120 record(s), fewer than the 500 clusters" in result.output
    conn = connect(str(db))
    assert conn.execute("select count(*) from projection_points").fetchone()[0] == 0


def test_unknown_model_and_bad_method(planted_db):
    db, _ = planted_db
    result = CliRunner().invoke(cli, ["map", str(db), "--model", "nope"])
    assert result.exit_code == 1 and "unknown model 'nope'" in result.output and "m-16" in result.output
    result = CliRunner().invoke(cli, ["map", str(db), "--method", "tsne"])
    assert result.exit_code == 2


def test_umap_without_the_extra_says_how_to_install_it(planted_db, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed: import fails
    db, _ = planted_db
    result = CliRunner().invoke(cli, ["map", str(db), "--method", "umap"])
    assert result.exit_code == 1 and "pip install 'datasette-museum-embeddings[umap]'" in result.output


def test_nan_vectors_are_refused_with_the_records_named():
    matrix = np.eye(4, dtype=np.float32)
    matrix[2, 1] = np.nan
    with pytest.raises(InvalidRequestError, match=r"1 record\(s\) have a vector with NaN.*record ids 12"):
        projection.layout(matrix, np.array([10, 11, 12, 13]))


def test_pca_matches_numpy_svd_up_to_sign():
    rng = np.random.default_rng(3)
    m = rng.standard_normal((200, 10)).astype(np.float32) * np.linspace(3, 0.1, 10).astype(np.float32)
    got = projection.pca_2d(m, block_rows=37)
    centred = m.astype(np.float64) - m.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    want = centred @ vt[:2].T
    for j in range(2):
        assert np.allclose(np.abs(got[:, j]), np.abs(want[:, j]), atol=1e-6)


def test_class_tfidf_by_hand():
    # sizes 3, 4, 3 words: A = 10/3; word totals f: ship 3, sea 1, rose 4, moon 2
    # cluster 0: ship 2/3 * ln(1 + A/3) = 0.498 > sea 1/3 * ln(1 + A/1) = 0.489
    # cluster 1: rose 3/4 * ln(1 + A/4) = 0.455 > ship 1/4 * ln(1 + A/3) = 0.187
    # cluster 2: moon 2/3 * ln(1 + A/2) = 0.654 > rose 1/3 * ln(1 + A/4) = 0.202
    words = clusters.class_tfidf(
        [Counter({"ship": 2, "sea": 1}), Counter({"ship": 1, "rose": 3}), Counter({"rose": 1, "moon": 2})], top=2
    )
    assert words == [["ship", "sea"], ["rose", "ship"], ["moon", "rose"]]


def test_a_word_in_every_cluster_is_never_a_label():
    words = clusters.class_tfidf([Counter({"painting": 9, "sea": 1}), Counter({"painting": 9, "rose": 1})])
    assert words == [["sea"], ["rose"]]


def test_words_skip_stop_words_numbers_and_short_words():
    assert clusters.words_of("The Harbour of Amsterdam, 1665 (no. 3) by A. Storck") == ["harbour", "amsterdam", "storck"]


@pytest.mark.parametrize("n,expected", [(0, 0), (1, 1), (2, 2), (8, 2), (200, 10), (20_000, 100), (1_000_000, 100)])
def test_default_cluster_count(n, expected):
    assert clusters.default_cluster_count(n) == expected


def test_distribution_percentiles():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((300, 8)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    sims = distribution.sample_similarities(m, pairs=10_000)
    assert len(sims) == 10_000 and np.all(np.abs(sims) <= 1.0 + 1e-6)
    q = distribution.quantiles_of(sims)
    assert len(q) == distribution.QUANTILES and q == sorted(q)
    for score in (-0.5, 0.0, 0.3, 0.8):
        assert distribution.percentile(q, score) == pytest.approx(100 * np.mean(sims < score), abs=0.3)
    assert distribution.percentile(q, 2.0) == 100.0 and distribution.percentile(q, -2.0) == 0.0
    assert distribution.describe(99.76) == "higher than 99.7% of pairs under this model"


def test_small_models_use_every_pair():
    m = np.eye(3, dtype=np.float32)
    assert sorted(distribution.sample_similarities(m).tolist()) == [0.0, 0.0, 0.0]


def test_neighbours_also_stores_the_distribution(tmp_path):
    path = tmp_path / "n.parquet"
    write_parquet(path, make_records(n=30, providers=("met",), models={"m-8": 8}))
    db = tmp_path / "n.db"
    loader.load(str(db), [str(path)])
    assert CliRunner().invoke(cli, ["neighbors", str(db), "--k", "3"]).exit_code == 0
    conn = connect(str(db))
    assert distribution.current(conn, "m-8", stored_version(conn, "m-8"))[-1] <= 1.0


def test_umap_layout_keeps_planted_clusters_apart(planted_db):
    pytest.importorskip("umap")
    db, truth = planted_db
    result = CliRunner().invoke(cli, ["map", str(db), "--method", "umap", "--clusters", "5"])
    assert result.exit_code == 0, result.output
    conn = connect(str(db))
    rows = conn.execute(
        "select r.depiction_id, p.x, p.y from projection_points p join records r on r.id = p.record_id"
    ).fetchall()
    assert len(rows) == len(truth) and maps.status(conn, "m-16")["method"] == "umap"
    xy = np.array([(x, y) for _, x, y in rows])
    labels = np.array([truth[d] for d, _, _ in rows])
    # every point is nearer its own theme's centre on the map than any other theme's
    centres = np.array([xy[labels == t].mean(axis=0) for t in range(len(THEMES))])
    nearest = np.argmin(((xy[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    assert (nearest == labels).mean() >= 0.95
