"""OEmbeddings attributes: validate FILE|DB, the count load prints, and how pages show the keys."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from datasette_embeddings.cli import cli
from datasette_embeddings.files import oembeddings
from tests.helpers import make_records, write_duckdb_layout, write_parquet

#: the real attribute maps of SFO Museum's OEmbeddings examples (tests/data keeps none; copied
#: here as data: one image, one text, one with a non-http subject URI, one with empty title/credit)
REAL = [
    {"type": "image", "preview": "https://static.sfomuseum.org/media/184/675/679/9/1846756799_PG4baq1KGNmIGvFmVCSDrS0bMSTFHVYV_n.jpg",
     "depiction_url": "https://collection.sfomuseum.org/images/1846756799/",
     "subject_url": "https://collection.sfomuseum.org/objects/1846754371/#1846756799",
     "subject_title": "postcard: QSL card, Wake Island", "subject_creditline": "Gift of Jon E. Krupnick",
     "provider_name": "SFO Museum Aviation Collection", "provider_url": "https://collection.sfomuseum.org"},
    {"type": "text", "preview": "Color postcard; QSL card for KW6HF at Wake Island.",
     "subject_url": "x-sfomuseum:object:1846754371", "subject_title": "postcard: QSL card, Wake Island",
     "subject_creditline": "Gift of Jon E. Krupnick", "provider_name": "SFO Museum Aviation Collection",
     "provider_url": "https://collection.sfomuseum.org", "custom_field": "Hi there!"},
    {"type": "text", "preview": "Color postcard.", "subject_url": "x-sfomuseum:object:1846754371",
     "subject_title": "", "subject_creditline": "", "provider_name": "SFO Museum Aviation Collection",
     "provider_url": "https://collection.sfomuseum.org"},
]

#: crafted problems, each row with the problems it must be reported for
CRAFTED = [
    ({k: v for k, v in REAL[0].items() if k != "subject_creditline"}, ["missing subject_creditline"]),
    ({**REAL[0], "type": "video"}, ["type is neither image nor text"]),
    ({**REAL[0], "preview": "a picture of a card"}, ["preview is not a URI (type image)"]),
    ({**REAL[1], "preview": "words are fine for text"}, []),
    ({**REAL[0], "subject_url": "collection.sfomuseum.org/objects/1"}, ["subject_url is not a URI"]),
    ({**REAL[0], "provider_url": "https://x.org/a b"}, ["provider_url is not a URI"]),
    ({**REAL[0], "depiction_url": ""}, ["empty depiction_url"]),
    ({**REAL[0], "provider_name": ""}, ["empty provider_name"]),
    ({"type": "image"}, ["missing preview", "missing subject_url", "missing subject_title", "missing subject_creditline",
                         "missing provider_name", "missing provider_url"]),
    ({}, ["missing type", "missing preview", "missing subject_url", "missing subject_title", "missing subject_creditline",
          "missing provider_name", "missing provider_url"]),
]


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def crafted_records() -> list[dict]:
    records = make_records(n=len(REAL) + len(CRAFTED), providers=("sfomuseum",), models={"m": 4})
    for record, attrs in zip(records, REAL + [a for a, _ in CRAFTED]):
        record["attributes"] = attrs
    return records


def expected_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for _attrs, problems in CRAFTED:
        for p in problems:
            counts[p] = counts.get(p, 0) + 1
    return counts


def test_the_real_examples_conform():
    for attrs in REAL:
        assert oembeddings.problems(attrs) == []


def test_each_crafted_row_has_exactly_its_problems():
    for attrs, problems in CRAFTED:
        assert sorted(oembeddings.problems(attrs)) == sorted(problems), attrs


@pytest.mark.parametrize("writer", [write_parquet, write_duckdb_layout], ids=["map", "json-string"])
def test_validate_file_reports_counts_and_examples(tmp_path, writer):
    path = tmp_path / "crafted.parquet"
    writer(path, crafted_records())
    result = invoke("validate", path, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["records"] == len(REAL) + len(CRAFTED)
    assert data["nonconforming"] == sum(1 for _a, p in CRAFTED if p)
    assert {name: p["count"] for name, p in data["problems"].items()} == expected_counts()
    # examples name the row (counted from 0, as load does) and the record key
    first_bad = len(REAL)
    assert data["problems"]["missing subject_creditline"]["examples"][0] == {
        "row": first_bad, "provider": "sfomuseum", "depiction_id": f"sfomuseum-d{first_bad}", "model": "m"}
    text = invoke("validate", path, "--examples", "1")
    assert text.exit_code == 1
    assert f"{len(REAL) + len(CRAFTED)} records, {data['nonconforming']} not following the OEmbeddings attribute rules" in text.stdout
    assert "  missing provider_url: 2" in text.stdout
    assert f"      row {first_bad + 8}  sfomuseum  sfomuseum-d{first_bad + 8}  m" in text.stdout


def test_validate_exits_0_when_everything_conforms(tmp_path):
    records = make_records(n=3, models={"m": 4})
    for r, attrs in zip(records, REAL):
        r["attributes"] = attrs
    path = tmp_path / "ok.parquet"
    write_parquet(path, records)
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output
    assert "3 records, 0 not following" in result.stdout


def test_load_counts_nonconforming_records_and_loads_them_all_then_validate_db_agrees(tmp_path):
    path = tmp_path / "crafted.parquet"
    write_parquet(path, crafted_records())
    db = tmp_path / "x.db"
    result = invoke("load", db, path)
    assert result.exit_code == 0, result.output
    bad = sum(1 for _a, p in CRAFTED if p)
    assert f"{len(REAL) + len(CRAFTED)} new" in result.stdout
    assert f"; {bad} record(s) do not follow the OEmbeddings attribute rules (see validate)" in result.stdout
    data = json.loads(invoke("validate", db, "--json").stdout)
    assert data["kind"] == "sqlite" and data["nonconforming"] == bad
    assert {name: p["count"] for name, p in data["problems"].items()} == expected_counts()
    assert set(data["problems"]["empty provider_name"]["examples"][0]) == {"id", "provider", "depiction_id", "model"}


def test_load_of_conforming_records_says_nothing_about_them(tmp_path):
    records = make_records(n=3, models={"m": 4})
    for r, attrs in zip(records, REAL):
        r["attributes"] = attrs
    path = tmp_path / "ok.parquet"
    write_parquet(path, records)
    result = invoke("load", tmp_path / "x.db", path)
    assert result.exit_code == 0 and "OEmbeddings" not in result.stdout


def test_validate_refuses_what_it_cannot_read(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not really parquet")
    result = invoke("validate", junk)
    assert result.exit_code == 1 and "not a readable Parquet file" in result.output
    assert invoke("validate", tmp_path / "missing.parquet").exit_code == 2


_values = st.sampled_from(["", "image", "text", "video", "https://x.org/1", "x-sfo:object:1", "no scheme", "a b:c", "ftp://f"])
_keys = st.sampled_from(list(oembeddings.REQUIRED + oembeddings.OPTIONAL) + ["custom"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(_keys, _values, max_size=9), min_size=1, max_size=12), st.integers(0, 3))
def test_column_wise_masks_equal_the_row_by_row_rules(rows, offset):
    arr = pa.array([sorted(r.items()) for r in rows], pa.map_(pa.string(), pa.string()))
    arr = arr.slice(min(offset, len(rows) - 1))
    as_dicts = [dict(x) for x in arr.to_pylist()]
    fast = oembeddings.problem_masks(arr)
    slow = oembeddings.problem_masks_from_dicts(as_dicts)
    assert {k: v.tolist() for k, v in fast.items()} == {k: v.tolist() for k, v in slow.items()}


# ---------------------------------------------------------------- pages

def test_record_page_shows_the_credit_line_and_a_non_http_subject_uri_as_text(tmp_path):
    from datasette.app import Datasette

    records = make_records(n=3, providers=("sfomuseum",), models={"m": 4})
    for r, attrs in zip(records, REAL):
        r["attributes"] = attrs
    path = tmp_path / "sfo.parquet"
    write_parquet(path, records)
    db = tmp_path / "sfo.db"
    assert invoke("load", db, path).exit_code == 0
    ds = Datasette([str(db)])
    html = asyncio.run(ds.client.get("/sfo/-/gallery/2")).text
    assert "Gift of Jon E. Krupnick" in html
    assert "x-sfomuseum:object:1846754371" in html
    assert 'href="x-sfomuseum' not in html
    data = asyncio.run(ds.client.get("/sfo/-/gallery/2.json")).json()
    assert data["record"]["subject_url"] is None
    assert data["record"]["subject_uri"] == "x-sfomuseum:object:1846754371"
    assert data["record"]["creditline"] == "Gift of Jon E. Krupnick"
    # an http subject URL is a link, and no URI text is added
    first = asyncio.run(ds.client.get("/sfo/-/gallery/1.json")).json()["record"]
    assert first["subject_url"].startswith("https://") and first["subject_uri"] is None
