"""Judgements: the table and its current view, CSV/Parquet import and export, the CLI."""
from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from datasette_embeddings.errors import RecordError
from datasette_embeddings.files import judgements_io
from datasette_embeddings.storage import judgements
from datasette_embeddings.storage.connection import connect
from tests.helpers import file_hashes

HEADER = ["model", "level", "source_provider", "source_key", "target_provider", "target_key", "label", "note",
          "judged_by", "judged_at"]


def write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="") as fp:
        w = csv.writer(fp)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def good_rows():
    return [
        ["m-8", "depiction", "met", "met-d0", "rijks", "rijks-d3", "same object", "", "ann", "2026-01-01T10:00:00Z"],
        ["m-8", "depiction", "met", "met-d1", "rijks", "rijks-d1", "no link", "different subject", "ann", "2026-01-01T10:01:00Z"],
        ["m-4", "subject", "met", "met-s0", "rijks", "rijks-s2", "same category", "", "bob", "2026-01-02T09:00:00+01:00"],
    ]


def count(db):
    conn = connect(str(db), readonly=True)
    try:
        return conn.execute("select count(*) from link_judgements").fetchone()[0]
    finally:
        conn.close()


def test_import_adds_rows_and_reimport_adds_nothing(tmp_path, loaded_db):
    path = write_csv(tmp_path / "j.csv", good_rows())
    assert judgements_io.import_file(str(loaded_db), path) == (3, 0)
    assert judgements_io.import_file(str(loaded_db), path) == (0, 3)
    conn = connect(str(loaded_db), readonly=True)
    rows = judgements.history(conn)
    conn.close()
    assert [j.label for j in rows] == ["same object", "no link", "same category"]
    assert rows[1].note == "different subject" and rows[0].note is None
    assert rows[2].judged_at == "2026-01-02T08:00:00Z"  # normalised to UTC
    assert rows[2].level == "subject"


@pytest.mark.parametrize(
    "bad, message",
    [
        (["m-8", "depiction", "met", "met-d2", "rijks", "rijks-d2", "maybe", "", "ann", ""], "unknown label 'maybe'"),
        (["m-8", "depiction", "met", "met-d2", "rijks", "nope", "no link", "", "ann", ""], "target record not in the database"),
        (["m-8", "depiction", "louvre", "met-d2", "rijks", "rijks-d2", "no link", "", "ann", ""], "source record not in the database"),
        (["m-9", "depiction", "met", "met-d2", "rijks", "rijks-d2", "no link", "", "ann", ""], "unknown model 'm-9'"),
        (["m-8", "depiction", "met", "met-s1", "rijks", "rijks-d2", "no link", "", "ann", ""], "source record"),  # subject id at depiction level
        (["m-8", "sentence", "met", "met-d2", "rijks", "rijks-d2", "no link", "", "ann", ""], "unknown level"),
        (["m-8", "depiction", "met", "met-d2", "rijks", "rijks-d2", "no link", "", "", ""], "judged_by is empty"),
        (["m-8", "depiction", "met", "met-d2", "rijks", "rijks-d2", "no link", "", "ann", "yesterday"], "judged_at must be"),
    ],
)
def test_a_bad_row_is_named_and_leaves_the_database_byte_identical(tmp_path, loaded_db, bad, message):
    # the good rows first, so a writer that inserted as it went would have changed the file
    path = write_csv(tmp_path / "j.csv", good_rows() + [bad])
    before = file_hashes(loaded_db)
    with pytest.raises(RecordError) as info:
        judgements_io.import_file(str(loaded_db), path)
    assert "row 4" in str(info.value) and message in str(info.value)
    assert file_hashes(loaded_db) == before


def test_a_bad_row_after_earlier_imports_writes_nothing(tmp_path, loaded_db):
    judgements_io.import_file(str(loaded_db), write_csv(tmp_path / "a.csv", good_rows()[:1]))
    before = file_hashes(loaded_db)
    bad = good_rows()[1:] + [["m-8", "depiction", "met", "met-d2", "rijks", "gone", "no link", "", "ann", ""]]
    with pytest.raises(RecordError):
        judgements_io.import_file(str(loaded_db), write_csv(tmp_path / "b.csv", bad))
    assert file_hashes(loaded_db) == before
    assert count(loaded_db) == 1


def test_missing_columns_are_named(tmp_path, loaded_db):
    path = write_csv(tmp_path / "j.csv", [["m-8", "met"]], header=["model", "source_provider"])
    with pytest.raises(judgements_io.JudgementsFileError, match="missing column.*source_key"):
        judgements_io.import_file(str(loaded_db), path)


def test_extra_columns_are_ignored_and_by_fills_judged_by(tmp_path, loaded_db):
    header = ["source_title", "model", "source_provider", "source_key", "target_provider", "target_key", "label"]
    path = write_csv(tmp_path / "j.csv", [["A portrait", "m-8", "met", "met-d0", "rijks", "rijks-d0", "similar object"]], header)
    assert judgements_io.import_file(str(loaded_db), path, judged_by="cat") == (1, 0)
    conn = connect(str(loaded_db), readonly=True)
    (j,) = judgements.history(conn)
    conn.close()
    assert (j.judged_by, j.level, j.label) == ("cat", "depiction", "similar object")


def test_newest_judgement_by_a_person_counts_and_history_stays(tmp_path, loaded_db):
    rows = [
        ["m-8", "depiction", "met", "met-d0", "rijks", "rijks-d3", "no link", "", "ann", "2026-01-01T10:00:00Z"],
        ["m-8", "depiction", "met", "met-d0", "rijks", "rijks-d3", "same object", "on reflection", "ann", "2026-01-03T10:00:00Z"],
        ["m-8", "depiction", "met", "met-d0", "rijks", "rijks-d3", "same category", "", "bob", "2026-01-02T10:00:00Z"],
    ]
    judgements_io.import_file(str(loaded_db), write_csv(tmp_path / "j.csv", rows))
    conn = connect(str(loaded_db), readonly=True)
    try:
        assert len(judgements.history(conn)) == 3
        current = judgements.current(conn)
        assert sorted((j.judged_by, j.label) for j in current) == [("ann", "same object"), ("bob", "same category")]
        # across people, the newest verdict is the link's
        verdict = judgements.verdicts(conn)[("depiction", "met", "met-d0", "rijks", "rijks-d3")]
        assert (verdict.judged_by, verdict.label) == ("ann", "same object")
        shown = judgements.for_pairs(conn, "depiction", [("met", "met-d0", "rijks", "rijks-d3"), ("met", "met-d1", "rijks", "rijks-d1")])
        assert list(shown) == [("met", "met-d0", "rijks", "rijks-d3")]
        assert [j.judged_by for j in shown[("met", "met-d0", "rijks", "rijks-d3")]] == ["ann", "bob"]
    finally:
        conn.close()


def test_judgements_survive_a_reload(tmp_path, loaded_db, small_parquet):
    from datasette_embeddings.files import loader

    judgements_io.import_file(str(loaded_db), write_csv(tmp_path / "j.csv", good_rows()))
    rebuilt = tmp_path / "rebuilt.db"
    loader.load(str(rebuilt), [str(small_parquet)])
    out = str(tmp_path / "export.csv")
    assert judgements_io.export_file(str(loaded_db), out) == 3
    assert judgements_io.import_file(str(rebuilt), out) == (3, 0)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_export_then_import_round_trips(tmp_path, loaded_db, small_parquet, suffix):
    from datasette_embeddings.files import loader

    judgements_io.import_file(str(loaded_db), write_csv(tmp_path / "j.csv", good_rows()))
    out = str(tmp_path / f"export.{suffix}")
    judgements_io.export_file(str(loaded_db), out)
    other = tmp_path / "other.db"
    loader.load(str(other), [str(small_parquet)])
    judgements_io.import_file(str(other), out)
    a, b = connect(str(loaded_db), readonly=True), connect(str(other), readonly=True)
    try:
        assert judgements.history(a) == judgements.history(b)
    finally:
        a.close()
        b.close()


def test_import_reads_parquet(tmp_path, loaded_db):
    rows = good_rows()
    table = pa.table({name: [r[i] for r in rows] for i, name in enumerate(HEADER)})
    path = str(tmp_path / "j.parquet")
    pq.write_table(table, path)
    assert judgements_io.import_file(str(loaded_db), path) == (3, 0)


def test_fused_labels_accept_records_of_their_models(tmp_path, loaded_db):
    rows = [["fused:m-4+m-8", "depiction", "met", "met-d0", "rijks", "rijks-d0", "same object", "", "ann", ""]]
    assert judgements_io.import_file(str(loaded_db), write_csv(tmp_path / "j.csv", rows)) == (1, 0)
    rows = [["fused:m-4+m-9", "depiction", "met", "met-d0", "rijks", "nope", "same object", "", "ann", ""]]
    with pytest.raises(RecordError, match="target record"):
        judgements_io.import_file(str(loaded_db), write_csv(tmp_path / "k.csv", rows))


def test_cli_import_and_export(tmp_path, loaded_db):
    runner = CliRunner()
    path = write_csv(tmp_path / "j.csv", good_rows())
    result = runner.invoke(cli, ["judgements", "import", str(loaded_db), path])
    assert result.exit_code == 0, result.output
    assert "3 judgements added, 0 already stored" in result.output
    out = tmp_path / "out.csv"
    result = runner.invoke(cli, ["judgements", "export", str(loaded_db), "-o", str(out), "--current"])
    assert result.exit_code == 0, result.output
    with open(out) as fp:
        exported = list(csv.DictReader(fp))
    assert [r["label"] for r in exported] == ["same object", "no link", "same category"]
    assert list(exported[0]) == HEADER


def test_cli_import_error_exits_1_naming_the_row(tmp_path, loaded_db):
    path = write_csv(tmp_path / "j.csv", good_rows() + [["m-8", "depiction", "met", "met-d0", "rijks", "rijks-d0", "perhaps", "", "ann", ""]])
    before = file_hashes(loaded_db)
    result = CliRunner().invoke(cli, ["judgements", "import", str(loaded_db), path])
    assert result.exit_code == 1
    assert "row 4" in result.output and "unknown label 'perhaps'" in result.output
    assert file_hashes(loaded_db) == before
