"""Filtered KNN through vec0: the filter is applied inside the scan, never after top-k."""
import numpy as np
import pytest

from datasette_embeddings.files import loader
from datasette_embeddings.search.similarity import (
    NeighbourFilter,
    SimilarityError,
    similar_to_record,
    similar_to_vector,
)
from datasette_embeddings.storage.connection import connect
from tests.helpers import write_parquet

DIMS = 16


def _record(provider, i, vector, subject=None):
    return {
        "provider": provider,
        "depiction_id": f"{provider}-{i}",
        "subject_id": subject or f"{provider}-s{i}",
        "model": "m",
        "embeddings": np.asarray(vector, dtype=np.float32),
        "created": 1,
        "attributes": {"subject_title": f"{provider} {i}"},
    }


@pytest.fixture
def crowded_db(tmp_path):
    """500 'near' vectors from provider 'crowd' surround the query; 30 'far' ones belong to 'lonely'."""
    rng = np.random.default_rng(1)
    query = np.zeros(DIMS, dtype=np.float32)
    query[0] = 1.0
    records = []
    for i in range(500):
        v = query + rng.normal(0, 0.05, DIMS)
        records.append(_record("crowd", i, v))
    for i in range(30):
        v = rng.normal(0, 1, DIMS)
        v[0] = -abs(v[0])  # pointing away from the query: all farther than the crowd
        records.append(_record("lonely", i, v, subject="shared-subject" if i < 5 else None))
    path = tmp_path / "crowd.parquet"
    write_parquet(path, records)
    db = tmp_path / "crowd.db"
    loader.load(str(db), [str(path)])
    conn = connect(str(db))
    yield conn, query
    conn.close()


def test_unfiltered_returns_nearest_of_the_crowd(crowded_db):
    conn, query = crowded_db
    result = similar_to_vector(conn, "m", query, k=10)
    assert len(result) == 10
    assert {n.record["provider"] for n in result} == {"crowd"}
    sims = [n.similarity for n in result]
    assert sims == sorted(sims, reverse=True)


def test_provider_filter_returns_k_rows_of_that_provider(crowded_db):
    conn, query = crowded_db
    result = similar_to_vector(conn, "m", query, k=20, flt=NeighbourFilter(providers=("lonely",)))
    assert len(result) == 20
    assert {n.record["provider"] for n in result} == {"lonely"}
    # they are the 20 best of that provider, by brute force
    vectors = {
        rid: np.frombuffer(blob, dtype="<f4")
        for rid, blob in conn.execute(
            "select r.id, v.embedding from records r join "
            + conn.execute("select vec_table from models").fetchone()[0]
            + " v on v.id = r.id where r.provider = 'lonely'"
        )
    }
    expected = sorted(vectors, key=lambda rid: -float(vectors[rid] @ query / np.linalg.norm(vectors[rid])))[:20]
    assert [n.id for n in result] == expected


def test_exclude_provider_returns_k_rows(crowded_db):
    conn, query = crowded_db
    result = similar_to_vector(conn, "m", query, k=25, flt=NeighbourFilter(exclude_providers=("crowd",)))
    assert len(result) == 25
    assert all(n.record["provider"] == "lonely" for n in result)


def test_exclude_subject_applies_inside_the_scan(crowded_db):
    conn, query = crowded_db
    flt = NeighbourFilter(providers=("lonely",), exclude_subject="shared-subject")
    result = similar_to_vector(conn, "m", query, k=25, flt=flt)
    assert len(result) == 25  # 30 lonely records, 5 share the excluded subject
    assert all(n.record["subject_id"] != "shared-subject" for n in result)


def test_fewer_matches_than_k_returns_all_matches(crowded_db):
    conn, query = crowded_db
    result = similar_to_vector(conn, "m", query, k=100, flt=NeighbourFilter(providers=("lonely",)))
    assert len(result) == 30


def test_similar_to_record_excludes_itself(crowded_db):
    conn, query = crowded_db
    record, neighbours = similar_to_record(conn, 1, k=5)
    assert record["id"] == 1
    assert len(neighbours) == 5
    assert 1 not in [n.id for n in neighbours]
    assert all(-1.0 <= n.similarity <= 1.0 + 1e-6 for n in neighbours)


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_bad_k(crowded_db, k):
    conn, query = crowded_db
    with pytest.raises(SimilarityError, match="k must be"):
        similar_to_vector(conn, "m", query, k=k)


def test_unknown_record_and_model(crowded_db):
    conn, query = crowded_db
    with pytest.raises(SimilarityError, match="no record with id 99999"):
        similar_to_record(conn, 99999)
    with pytest.raises(SimilarityError, match="unknown model 'nope'"):
        similar_to_vector(conn, "nope", query)


def test_wrong_query_dimensions(crowded_db):
    conn, _ = crowded_db
    with pytest.raises(SimilarityError, match="has 16"):
        similar_to_vector(conn, "m", np.ones(3, dtype=np.float32))
