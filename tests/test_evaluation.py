"""Evaluation numbers against an example computed by hand, and the `evaluate` command."""
from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from datasette_embeddings.errors import InvalidRequestError
from datasette_embeddings.files import judgements_io
from datasette_embeddings.search import evaluation
from datasette_embeddings.storage.connection import connect

# the contract the links command writes; created here when this database has no links table yet
LINKS_TABLE = """
create table if not exists links (
    id integer primary key, model text not null, level text not null, comparison text not null,
    source_id integer not null, target_id integer not null,
    source_provider text not null, source_key text not null,
    target_provider text not null, target_key text not null,
    similarity real not null, rank integer not null, data_version text not null
)
"""

# (model, source, target, similarity, rank, verdict or None)
LINKS = [
    ("m-8", "met-d0", "rijks-d0", 0.92, 1, "same object"),
    ("m-8", "met-d0", "rijks-d1", 0.71, 2, "no link"),
    ("m-8", "met-d1", "rijks-d2", 0.81, 1, "similar object"),
    ("m-8", "met-d1", "rijks-d3", 0.55, 2, "same category"),
    ("m-8", "met-d2", "rijks-d4", 0.62, 1, "no link"),
    ("m-8", "met-d2", "rijks-d5", 0.33, 2, None),
    ("m-8", "met-d3", "rijks-d6", 0.48, 1, "same object"),
    ("m-4", "met-d0", "rijks-d0", 0.40, 1, None),  # judged under m-8: the pair's verdict counts for m-4 too
    ("m-4", "met-d9", "rijks-d9", 0.90, 1, None),
]


@pytest.fixture
def judged_db(tmp_path, loaded_db):
    conn = connect(str(loaded_db))
    conn.execute(LINKS_TABLE)
    conn.executemany(
        "insert into links (model, level, comparison, source_id, target_id, source_provider, source_key, "
        "target_provider, target_key, similarity, rank, data_version) values (?, 'depiction', 'image-image', 0, 0, 'met', ?, 'rijks', ?, ?, ?, '')",
        [(m, s, t, sim, rank) for m, s, t, sim, rank, _ in LINKS],
    )
    conn.close()
    path = tmp_path / "j.csv"
    with open(path, "w", newline="") as fp:
        w = csv.writer(fp)
        w.writerow(["model", "source_provider", "source_key", "target_provider", "target_key", "label", "judged_by", "judged_at"])
        # ann first said the 0.71 link was the same object, then changed her mind: the newer verdict counts
        w.writerow(["m-8", "met", "met-d0", "rijks", "rijks-d1", "same object", "ann", "2026-01-01T00:00:00Z"])
        for m, s, t, _, _, verdict in LINKS:
            if verdict:
                w.writerow([m, "met", s, "rijks", t, verdict, "ann", "2026-01-02T00:00:00Z"])
        # a judged pair that no stored link joins
        w.writerow(["m-8", "met", "met-d7", "rijks", "rijks-d7", "no link", "bob", "2026-01-02T00:00:00Z"])
    judgements_io.import_file(str(loaded_db), str(path))
    return loaded_db


def report(db, **kwargs):
    conn = connect(str(db), readonly=True)
    try:
        return evaluation.evaluate(conn, **kwargs)
    finally:
        conn.close()


def by_threshold(group):
    return {row["threshold"]: (row["judged"], row["positive"], row["precision"]) for row in group["thresholds"]}


def test_thresholds_are_0_30_to_0_95_by_0_05():
    assert evaluation.THRESHOLDS == (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_numbers_match_the_hand_computed_example(judged_db):
    r = report(judged_db)
    assert r["judgements"] == 7 and r["unmatched_judgements"] == 1
    m8 = next(g for g in r["groups"] if g["model"] == "m-8")
    assert (m8["links"], m8["judged"], m8["positive"], m8["precision"]) == (7, 6, 3, 0.5)
    t = by_threshold(m8)
    # judged similarities: .92 P, .71 N, .81 P, .55 N (same category), .62 N, .48 P
    for low in (0.3, 0.35, 0.4, 0.45):
        assert t[low] == (6, 3, 0.5)
    assert t[0.5] == (5, 2, 0.4)
    assert t[0.55] == (5, 2, 0.4)  # 0.55 is at the threshold, so it counts
    assert t[0.6] == (4, 2, 0.5)
    assert t[0.65] == t[0.7] == (3, 2, 0.6667)
    assert t[0.75] == t[0.8] == (2, 2, 1.0)
    assert t[0.85] == t[0.9] == (1, 1, 1.0)
    assert t[0.95] == (0, 0, None)
    # rank-1 links judged: .92 P, .81 P, .62 N, .48 P
    assert m8["precision_at_1"] == {"judged": 4, "positive": 3, "precision": 0.75}
    # 0.75 is the lowest threshold with precision >= 0.9 (0.70 has 0.67)
    assert m8["threshold_for_precision"] == 0.75
    assert m8["labels"] == {"same object": 2, "similar object": 1, "same category": 1, "no link": 2}


def test_a_pairs_verdict_counts_for_every_model_that_links_it(judged_db):
    m4 = next(g for g in report(judged_db)["groups"] if g["model"] == "m-4")
    assert (m4["links"], m4["judged"], m4["positive"]) == (2, 1, 1)
    t = by_threshold(m4)
    assert t[0.4] == (1, 1, 1.0) and t[0.45] == (0, 0, None)
    assert m4["threshold_for_precision"] == 0.3


def test_positives_and_target_are_configurable(judged_db):
    m8 = next(g for g in report(judged_db, positives=["same object", "similar object", "same category"])["groups"] if g["model"] == "m-8")
    assert m8["positive"] == 4
    assert by_threshold(m8)[0.55] == (5, 3, 0.6)
    m8 = next(g for g in report(judged_db, target=0.6)["groups"] if g["model"] == "m-8")
    assert m8["threshold_for_precision"] == 0.65


def test_models_filter(judged_db):
    assert [g["model"] for g in report(judged_db, models=["m-4"])["groups"]] == ["m-4"]


@pytest.mark.parametrize("kwargs, message", [({"positives": ["yes"]}, "unknown positive label 'yes'"), ({"target": 1.5}, "precision must be")])
def test_bad_options_are_named(judged_db, kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        report(judged_db, **kwargs)


def test_without_a_links_table_the_report_says_so(loaded_db):
    conn = connect(str(loaded_db))
    conn.execute("drop table if exists links")
    conn.close()
    r = report(loaded_db)
    assert r["has_links"] is False and r["groups"] == []
    assert "No links table" in evaluation.text_table(r)


def test_cli_evaluate_prints_the_table_and_json(judged_db):
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", str(judged_db)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    row = next(line for line in lines if line.startswith("m-8"))
    assert row.split() == ["m-8", "depiction", "image-image", "7", "6", "0.50", "0.75", "(4)", "0.75"]
    assert any(line.split()[:3] == ["0.65", "-", "(0)"] or line.startswith("0.65") for line in lines)
    assert "1 judged pair(s) are not among the stored links." in result.output
    result = runner.invoke(cli, ["evaluate", str(judged_db), "--json", "--positive", "same object", "--precision", "0.5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    m8 = next(g for g in data["groups"] if g["model"] == "m-8")
    assert data["positives"] == ["same object"] and m8["positive"] == 2
    # only .92 and .48 are positive now: 0.80 and 0.75 hold 1 of 2 (0.5), 0.70 holds 1 of 3
    assert m8["threshold_for_precision"] == 0.75


def test_cli_evaluate_bad_option_exits_1(judged_db):
    result = CliRunner().invoke(cli, ["evaluate", str(judged_db), "--positive", "maybe"])
    assert result.exit_code == 1 and "unknown positive label 'maybe'" in result.output


def test_the_threshold_is_the_lowest_that_reaches_the_target():
    rows = [
        {"threshold": 0.3, "judged": 4, "positive": 2, "precision": 0.5},
        {"threshold": 0.35, "judged": 0, "positive": 0, "precision": None},
        {"threshold": 0.4, "judged": 3, "positive": 3, "precision": 1.0},
        {"threshold": 0.45, "judged": 1, "positive": 0, "precision": 0.0},  # one bad link at the top does not undo it
    ]
    assert evaluation.threshold_reaching(rows, 0.9) == 0.4
    assert evaluation.threshold_reaching(rows, 0.5) == 0.3
    assert evaluation.threshold_reaching(rows[:2], 0.9) is None


def test_fused_rankings_are_evaluated_beside_their_models(tmp_path, loaded_db):
    result = CliRunner().invoke(cli, ["links", str(loaded_db), "--from", "met", "--to", "rijks", "--model", "m-8", "--model", "m-4", "--k", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    conn = connect(str(loaded_db), readonly=True)
    top = conn.execute("select source_key, target_key from links where model like 'fused:%' order by similarity desc, id limit 1").fetchone()
    under = {m for (m,) in conn.execute("select model from links where source_key = ? and target_key = ?", list(top))}
    conn.close()
    path = tmp_path / "j.csv"
    path.write_text("model,source_provider,source_key,target_provider,target_key,label,judged_by\n"
                    f"fused:m-4+m-8,met,{top[0]},rijks,{top[1]},same object,ann\n")
    judgements_io.import_file(str(loaded_db), str(path))
    groups = {g["model"]: g for g in report(loaded_db)["groups"]}
    assert set(groups) == {"m-4", "m-8", "fused:m-4+m-8"}
    fused = groups["fused:m-4+m-8"]
    assert (fused["links"], fused["judged"], fused["positive"]) == (40, 1, 1)
    # the same pair's verdict counts for each model that linked it too
    for label in ("m-4", "m-8"):
        assert groups[label]["judged"] == (1 if label in under else 0)
