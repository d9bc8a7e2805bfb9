"""The demo's hand-judged links: they import into the demo database and name real MiniLM links."""
import csv
import pathlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from datasette_embeddings.files import judgements_io, loader
from datasette_embeddings.storage import judgements
from datasette_embeddings.storage.connection import connect

DEMO = pathlib.Path(__file__).resolve().parent.parent / "demo"
TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def rows():
    with open(DEMO / "judgements.csv", newline="") as fp:
        return list(csv.DictReader(fp))


def test_the_rule_is_written_down_beside_the_sources():
    text = (DEMO / "SOURCES.md").read_text()
    assert "## Judged links" in text
    for label in judgements.LABELS:
        assert f"**{label}**" in text


def test_at_least_150_met_to_brooklyn_minilm_links_every_label_known():
    found = rows()
    assert len(found) >= 150
    assert {(r["model"], r["level"], r["source_provider"], r["target_provider"]) for r in found} == {
        (TEXT_MODEL, "depiction", "met", "brooklyn")
    }
    assert {r["label"] for r in found} <= set(judgements.LABELS)
    assert len({(r["source_key"], r["target_key"]) for r in found}) == len(found)


def test_similarity_and_rank_columns_are_the_vectors_own():
    """The listed pairs are what the shipped vectors say: the similarity, and that many better targets."""
    def unit(name):
        t = pq.read_table(DEMO / "data" / name, columns=["depiction_id", "embeddings"])
        x = np.array(t.column("embeddings").to_pylist(), dtype=np.float32)
        return {k: i for i, k in enumerate(t.column("depiction_id").to_pylist())}, x / np.linalg.norm(x, axis=1, keepdims=True)

    met_ids, met = unit("met-titles.parquet")
    bro_ids, bro = unit("brooklyn-texts.parquet")
    for r in rows():
        scores = bro @ met[met_ids[r["source_key"]]]
        similarity = scores[bro_ids[r["target_key"]]]
        assert abs(similarity - float(r["similarity"])) < 0.001, r
        better = int((scores > similarity + 1e-6).sum())
        tied = int((abs(scores - similarity) <= 1e-6).sum())  # identical Brooklyn texts score alike
        assert better < int(r["rank"]) <= better + tied, r


def test_they_import_into_the_demo_database(tmp_path):
    db = tmp_path / "demo.db"
    loader.load(str(db), [str(DEMO / "data")])
    added, already = judgements_io.import_file(str(db), str(DEMO / "judgements.csv"))
    assert (added, already) == (len(rows()), 0)
    conn = connect(str(db), readonly=True)
    try:
        assert len(judgements.current(conn)) == len(rows())
    finally:
        conn.close()


def test_the_readme_tour_numbers_hold(tmp_path):
    """The tour quotes MiniLM's precision on the demo's judgements: keep it true."""
    from click.testing import CliRunner

    from datasette_embeddings.cli import cli
    from datasette_embeddings.search import evaluation

    db = tmp_path / "demo.db"
    loader.load(str(db), [str(DEMO / "data")])
    result = CliRunner().invoke(cli, ["links", str(db), "--from", "met", "--to", "brooklyn", "--model", TEXT_MODEL, "--k", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    judgements_io.import_file(str(db), str(DEMO / "judgements.csv"))
    conn = connect(str(db), readonly=True)
    try:
        (group,) = evaluation.evaluate(conn)["groups"]
        top = conn.execute("select source_key, target_key, similarity from links order by similarity desc limit 1").fetchone()
    finally:
        conn.close()
    at = {row["threshold"]: row for row in group["thresholds"]}
    assert group["links"] == 26395
    assert (round(at[0.3]["precision"], 2), round(at[0.5]["precision"], 2), round(at[0.7]["precision"], 2)) == (0.55, 0.73, 0.9)
    assert at[0.7]["judged"] == 31 and group["threshold_for_precision"] == 0.7
    assert round(group["precision_at_1"]["precision"], 2) == 0.48
    verdict = {(r["source_key"], r["target_key"]): r["label"] for r in rows()}
    assert round(top[2], 3) == 0.834 and verdict[(top[0], top[1])] == "similar object"
