"""Files in other layouts: --map, --provider, --model, --attribute, --set-attribute and --layout met-plain."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from datasette_embeddings.files import layouts
from tests.helpers import dump_database, make_records, write_met_plain, write_parquet


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def records_of(db) -> list[dict]:
    from datasette_embeddings.storage.connection import connect
    from datasette_embeddings.storage.store import Store

    conn = connect(str(db), readonly=True)
    try:
        return sorted(Store(conn).iter_records(), key=lambda r: (r["model"], r["depiction_id"]))
    finally:
        conn.close()


def test_met_plain_layout_loads(tmp_path):
    src = tmp_path / "met.parquet"
    ids, vectors = write_met_plain(src)
    db = tmp_path / "x.db"
    result = invoke("load", db, src, "--layout", "met-plain")
    assert result.exit_code == 0, result.output
    assert "5 new" in result.output
    rows = records_of(db)
    assert [r["depiction_id"] for r in rows] == [str(i) for i in ids]
    r = rows[0]
    assert r["provider"] == "metmuseum" and r["model"] == "apple/MobileCLIP-S1" and r["subject_id"] == "34"
    assert r["attributes"] == {
        "type": "image",
        "subject_url": "https://www.metmuseum.org/art/collection/search/34",
        "provider_name": "The Metropolitan Museum of Art",
        "provider_url": "https://www.metmuseum.org",
    }
    assert r["embeddings"].tobytes() == vectors[0].tobytes()
    # loading it again changes nothing
    again = invoke("load", db, src, "--layout", "met-plain")
    assert "5 unchanged" in again.output


def test_met_plain_with_explicit_maps_instead_of_the_preset(tmp_path):
    src = tmp_path / "met.parquet"
    write_met_plain(src, n=3)
    db = tmp_path / "x.db"
    result = invoke("load", db, src, "--map", "embeddings=embedding", "--map", "depiction_id=objectID",
                    "--provider", "the-met", "--attribute", "subject_url=https://www.metmuseum.org/art/collection/search/{objectID}",
                    "--set-attribute", "type=image")
    assert result.exit_code == 0, result.output
    assert "ignored columns: dim" in result.output
    rows = records_of(db)
    assert {r["provider"] for r in rows} == {"the-met"}
    assert rows[0]["attributes"]["subject_url"].endswith("/34") and rows[0]["attributes"]["type"] == "image"


def test_model_constant_when_the_file_has_no_model_column(tmp_path):
    path = tmp_path / "nomodel.parquet"
    pq.write_table(pa.table({
        "id": ["a", "b"], "vec": pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32())),
        "title": ["First", None], "year": [1889, 1890],
    }), str(path))
    db = tmp_path / "x.db"
    result = invoke("load", db, path, "--map", "depiction_id=id", "--map", "embeddings=vec", "--provider", "p",
                    "--model", "my/model", "--attribute", "subject_title=title", "--attribute", "date=year")
    assert result.exit_code == 0, result.output
    rows = records_of(db)
    assert [r["model"] for r in rows] == ["my/model", "my/model"]
    assert rows[0]["attributes"] == {"subject_title": "First", "date": "1889"}
    # a null value leaves the attribute out
    assert rows[1]["attributes"] == {"date": "1890"}
    assert rows[0]["created"] == 0


def test_attribute_from_a_column_adds_to_the_files_own_attributes(tmp_path):
    records = make_records(n=3)
    table = pa.Table.from_batches(pq.read_table(str(_write(tmp_path, records))).to_batches())
    table = table.append_column("creditline", pa.array(["Gift of A", "Gift of B", None]))
    path = tmp_path / "with_credit.parquet"
    pq.write_table(table, str(path))
    db = tmp_path / "x.db"
    result = invoke("load", db, path, "--attribute", "subject_creditline=creditline")
    assert result.exit_code == 0, result.output
    rows = sorted(records_of(db), key=lambda r: r["depiction_id"])
    assert rows[0]["attributes"]["subject_creditline"] == "Gift of A"
    assert rows[0]["attributes"]["subject_title"] == records[0]["attributes"]["subject_title"]
    assert "subject_creditline" not in rows[2]["attributes"]


def _write(tmp_path, records):
    path = tmp_path / "base.parquet"
    write_parquet(path, records)
    return path


@pytest.mark.parametrize(
    "args,words",
    [
        (["--map", "depiction_id=objectid"], ["column 'objectid' named by --map depiction_id=objectid is not in the file",
                                              "objectID, embedding, model, dim"]),
        (["--map", "embeddings=embeddings"], ["column 'embeddings' named by --map embeddings=embeddings"]),
        (["--attribute", "subject_title=title"], ["column 'title' named by --attribute subject_title=title"]),
        (["--attribute", "subject_url=https://x.org/{object_id}"], ["column 'object_id' named by --attribute"]),
        (["--map", "colour=model"], ["'colour' is not a record field"]),
        (["--map", "depiction_id"], ["expected NAME=VALUE"]),
        (["--layout", "met-fancy"], ["unknown layout 'met-fancy' (known: met-plain)"]),
    ],
)
def test_a_mapping_naming_a_missing_column_is_refused_and_nothing_is_loaded(tmp_path, args, words):
    src = tmp_path / "met.parquet"
    write_met_plain(src)
    # an existing database keeps what it had
    db = tmp_path / "x.db"
    other = tmp_path / "other.parquet"
    write_parquet(other, make_records(n=2))
    invoke("load", db, other)
    before = dump_database(db)
    base = [] if "--layout" in args else ["--layout", "met-plain"]
    result = invoke("load", db, src, *base, *args)
    assert result.exit_code in (1, 2)
    for w in words:
        assert w in result.output
    assert dump_database(db) == before
    fresh = tmp_path / "fresh.db"
    assert invoke("load", fresh, src, *base, *args).exit_code in (1, 2)
    assert not fresh.exists()


def test_a_mapping_error_in_a_later_file_loads_none_of_the_files(tmp_path):
    good = tmp_path / "a.parquet"
    bad = tmp_path / "b.parquet"
    write_met_plain(good)
    pq.write_table(pa.table({"object": [1], "embedding": pa.array([[1.0] * 8], pa.list_(pa.float32())),
                             "model": ["m"], "dim": pa.array([8], pa.int32())}), str(bad))
    db = tmp_path / "x.db"
    result = invoke("load", db, good, bad, "--layout", "met-plain")
    assert result.exit_code == 1
    assert f"{bad}: column 'objectID'" in result.output
    assert not db.exists()


def test_a_file_without_provider_needs_a_provider(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"depiction_id": ["a"], "embeddings": pa.array([[1.0, 2.0]], pa.list_(pa.float32())),
                             "model": ["m"]}), str(path))
    result = invoke("load", tmp_path / "x.db", path, "--model", "m")
    assert result.exit_code == 1
    assert "no 'provider' column" in result.output and "--provider" in result.output


def test_the_dim_column_must_match_each_vector(tmp_path):
    src = tmp_path / "met.parquet"
    write_met_plain(src, n=4, dims=8, dim_column=[8, 8, 512, 8])
    result = invoke("load", tmp_path / "x.db", src, "--layout", "met-plain")
    assert result.exit_code == 1
    assert "row 2, field 'dim': says 512 but the vector has 8 dimensions" in result.output


def test_a_nested_column_cannot_become_an_attribute(tmp_path):
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"depiction_id": ["a"], "embeddings": pa.array([[1.0, 2.0]], pa.list_(pa.float32())),
                             "tags": pa.array([["x", "y"]])}), str(path))
    result = invoke("load", tmp_path / "x.db", path, "--provider", "p", "--model", "m", "--attribute", "tags=tags")
    assert result.exit_code == 1
    assert "field 'tags'" in result.output and "only text, number or boolean" in result.output


def test_map_from_columns_is_the_same_as_row_by_row():
    a = pa.array(["x", None, "", "w"])
    b = pa.array(["1", "2", None, "4"])
    arr = layouts._map_from_columns({"b": b, "a": a}, 4)
    assert arr.to_pylist() == [[("a", "x"), ("b", "1")], [("b", "2")], [], [("a", "w"), ("b", "4")]]


def test_info_json_of_a_met_plain_file_says_it_is_another_layout(tmp_path):
    src = tmp_path / "met.parquet"
    write_met_plain(src)
    data = json.loads(invoke("info", src, "--json").stdout)
    assert data["shared_layout"] is False and data["columns"] == ["objectID", "embedding", "model", "dim"]
