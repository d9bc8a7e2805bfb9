"""Model agreement (mean Jaccard of top-k neighbours over shared subjects) against a hand-computed example."""
import asyncio
import math

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.app import Datasette

from datasette_embeddings.cli import cli
from datasette_embeddings.errors import InvalidRequestError, NotFoundError
from datasette_embeddings.files import loader
from datasette_embeddings.search import agreement
from datasette_embeddings.storage.connection import connect
from tests.helpers import write_parquet

# subjects on a circle, in degrees: under "a" s3 sits between s1/s2; under "b" s5 moved next to s3
ANGLES_A = {"s1": [0], "s2": [10], "s3": [20], "s4": [90], "s5": [100]}
ANGLES_B = {"s1": [0, 0], "s2": [12], "s3": [20], "s4": [95], "s5": [30], "s6": [50]}  # two depictions of s1; s6 only in b
# top-2 under a: s1 {s2,s3} s2 {s1,s3} s3 {s1,s2} s4 {s3,s5} s5 {s3,s4}
# top-2 under b: s1 {s2,s3} s2 {s1,s3} s3 {s2,s5} s4 {s3,s5} s5 {s2,s3}   (s6 is not shared: left out)
# Jaccard:       1          1          1/3        1          1/3        -> mean 11/15


def _records(model, angles):
    out = []
    for subject, degrees in angles.items():
        for n, deg in enumerate(degrees):
            rad = math.radians(deg)
            out.append({"provider": "p", "depiction_id": f"{subject}-{model}-{n}", "subject_id": subject, "model": model,
                        "embeddings": np.array([math.cos(rad), math.sin(rad)], dtype=np.float32), "created": 1,
                        "attributes": {"subject_title": f"Subject {subject}"}})
    return out


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("agree")
    write_parquet(folder / "r.parquet", _records("a", ANGLES_A) + _records("b", ANGLES_B))
    loader.load(str(folder / "agree.db"), [str(folder / "r.parquet")])
    return folder / "agree.db"


def test_hand_computed_agreement(db):
    result = agreement.compare(connect(str(db)), "a", "b", k=2)
    assert result.subjects == 5
    assert result.mean_jaccard == pytest.approx(11 / 15, abs=1e-4)
    worst = [(d["subject_id"], d["jaccard"]) for d in result.disagreements]
    assert worst[:2] == [("s3", pytest.approx(1 / 3, abs=1e-4)), ("s5", pytest.approx(1 / 3, abs=1e-4))]
    assert all(j == 1.0 for _, j in worst[2:])


def test_bad_requests(db):
    conn = connect(str(db))
    with pytest.raises(NotFoundError, match="unknown model 'zz'"):
        agreement.compare(conn, "a", "zz")
    with pytest.raises(InvalidRequestError, match="same model"):
        agreement.compare(conn, "a", "a")
    with pytest.raises(InvalidRequestError, match="share 5 subject"):
        agreement.compare(conn, "a", "b", k=5)


def test_cli_prints_and_stores_and_the_page_shows_it(db):
    result = CliRunner().invoke(cli, ["compare", str(db), "--a", "a", "--b", "b", "--k", "2"])
    assert result.exit_code == 0, result.output
    assert "mean Jaccard of top-2 over 5 shared subjects: 0.733" in result.output
    assert "s3" in result.output
    conn = connect(str(db))
    assert agreement.stored(conn, "a", "b", 2).mean_jaccard == pytest.approx(0.7333, abs=1e-4)
    ds = Datasette([str(db)])
    data = asyncio.run(ds.client.get("/-/embeddings/compare.json?database=agree&a=a&b=b&k=2")).json()
    assert data["ok"] and data["agreement"]["mean_jaccard"] == pytest.approx(0.7333, abs=1e-4)
    assert data["stored"] is True
    first = data["agreement"]["disagreements"][0]
    assert first["subject_id"] == "s3" and first["url_a"].startswith("/agree/-/gallery/")
    html = asyncio.run(ds.client.get("/-/embeddings/compare?database=agree&a=a&b=b&k=2")).text
    assert "0.733" in html and "s3" in html
    bad = asyncio.run(ds.client.get("/-/embeddings/compare.json?database=agree&a=a&b=nope"))
    assert bad.status_code == 404


def test_the_page_computes_small_comparisons_on_the_fly(db):
    ds = Datasette([str(db)])
    data = asyncio.run(ds.client.get("/-/embeddings/compare.json?database=agree&a=b&b=a&k=1")).json()
    assert data["ok"] and data["stored"] is False and data["agreement"]["subjects"] == 5


def test_record_page_compares_two_models_side_by_side(db):
    conn = connect(str(db))
    rid = conn.execute("select id from records where model = 'a' and subject_id = 's3'").fetchone()[0]
    ds = Datasette([str(db)])
    data = asyncio.run(ds.client.get(f"/agree/-/gallery/{rid}/compare.json?with=b&k=2")).json()
    left = [(c["subject_id"], c["both"]) for c in data["a"]["similar"]]
    right = [(c["subject_id"], c["both"]) for c in data["b"]["similar"]]
    assert sorted(left) == [("s1", False), ("s2", True)]
    assert sorted(right) == [("s2", True), ("s5", False)]
    assert data["b"]["record"]["subject_id"] == "s3" and data["b"]["record"]["model"] == "b"
    html = asyncio.run(ds.client.get(f"/agree/-/gallery/{rid}/compare?with=b&k=2")).text
    assert html.count("emb-both") >= 2
    record_html = asyncio.run(ds.client.get(f"/agree/-/gallery/{rid}")).text
    assert f"/agree/-/gallery/{rid}/compare?with=b" in record_html
    missing = asyncio.run(ds.client.get(f"/agree/-/gallery/{rid}/compare.json?with=nope"))
    assert missing.status_code == 404
    s6 = conn.execute("select id from records where model = 'b' and subject_id = 's6'").fetchone()[0]
    none = asyncio.run(ds.client.get(f"/agree/-/gallery/{s6}/compare.json?with=a"))
    assert none.status_code == 404 and "no record of subject" in none.json()["error"]
