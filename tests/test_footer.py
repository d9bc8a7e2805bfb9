"""go-embeddingsdb's footer metadata: written by export, checked by load, shown by info (files and URLs)."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from datasette_embeddings.files import footer
from tests.helpers import dump_database, make_records, write_go_layout, write_parquet
from tests.http_fixtures import serve


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def go_footer(records) -> dict[str, str]:
    """The footer go-embeddingsdb would write for ``records`` (built independently of our writer)."""
    models, providers, mp, pm, dims = [], [], {}, {}, {}
    for r in records:
        if r["model"] not in models:
            models.append(r["model"])
        if r["provider"] not in providers:
            providers.append(r["provider"])
        mp.setdefault(r["model"], [])
        if r["provider"] not in mp[r["model"]]:
            mp[r["model"]].append(r["provider"])
        pm.setdefault(r["provider"], [])
        if r["model"] not in pm[r["provider"]]:
            pm[r["provider"]].append(r["model"])
        dims.setdefault(r["model"], len(r["embeddings"]))
    kv = {"embeddingsdb:models": ";".join(models), "embeddingsdb:providers": ";".join(providers)}
    for m, d in dims.items():
        kv[f"embeddingsdb:model:{m}:dimensions"] = str(d)
    for m, ps in mp.items():
        kv[f"embeddingsdb:model:{m}:providers"] = ";".join(ps)
    for p, ms in pm.items():
        kv[f"embeddingsdb:provider:{p}:models"] = ";".join(ms)
    return kv


@pytest.fixture
def sfo_records():
    return make_records(n=6, providers=("sfomuseum-data-media-collection", "nga"),
                        models={"apple/mobileclip_s0": 8, "google/siglip2-so400m-patch14-384": 12})


def footer_of(path) -> dict[str, str]:
    return footer.embeddingsdb_keys(pq.read_metadata(str(path)).metadata)


# ---------------------------------------------------------------- export writes the keys

def test_export_writes_the_go_embeddingsdb_footer_keys(tmp_path, sfo_records):
    src = tmp_path / "src.parquet"
    write_parquet(src, sfo_records)
    db = tmp_path / "x.db"
    assert invoke("load", db, src).exit_code == 0
    out = tmp_path / "out.parquet"
    assert invoke("export", db, "-o", out).exit_code == 0
    kv = footer_of(out)
    expected = go_footer(sfo_records)
    assert set(kv) == set(expected)
    for key, value in expected.items():
        assert set(kv[key].split(";")) == set(value.split(";")), key
    assert kv["embeddingsdb:model:apple/mobileclip_s0:dimensions"] == "8"
    assert kv["embeddingsdb:model:google/siglip2-so400m-patch14-384:dimensions"] == "12"


def test_export_of_one_provider_names_only_that_provider(tmp_path, sfo_records):
    src = tmp_path / "src.parquet"
    write_parquet(src, sfo_records)
    db = tmp_path / "x.db"
    invoke("load", db, src)
    out = tmp_path / "nga.parquet"
    assert invoke("export", db, "-o", out, "--provider", "nga", "--model", "apple/mobileclip_s0").exit_code == 0
    kv = footer_of(out)
    assert kv["embeddingsdb:providers"] == "nga"
    assert kv["embeddingsdb:models"] == "apple/mobileclip_s0"
    assert kv["embeddingsdb:provider:nga:models"] == "apple/mobileclip_s0"
    assert kv["embeddingsdb:model:apple/mobileclip_s0:providers"] == "nga"
    assert "embeddingsdb:provider:sfomuseum-data-media-collection:models" not in kv


# ---------------------------------------------------------------- load checks them

def test_a_go_layout_file_with_a_true_footer_loads(tmp_path, sfo_records):
    src = tmp_path / "go.parquet"
    write_go_layout(src, sfo_records, footer=go_footer(sfo_records))
    db = tmp_path / "x.db"
    result = invoke("load", db, src)
    assert result.exit_code == 0, result.output + result.stderr
    assert "Warning" not in result.stderr
    assert "24 new" in result.output


def test_an_export_loads_back_without_footer_warnings(tmp_path, sfo_records):
    src = tmp_path / "src.parquet"
    write_parquet(src, sfo_records)
    db, db2 = tmp_path / "a.db", tmp_path / "b.db"
    invoke("load", db, src)
    out = tmp_path / "out.parquet"
    invoke("export", db, "-o", out)
    result = invoke("load", db2, out)
    assert result.exit_code == 0 and "Warning" not in result.stderr


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("embeddingsdb:models", "apple/mobileclip_s0", ["leaves out google/siglip2-so400m-patch14-384"]),
        ("embeddingsdb:providers", "sfomuseum-data-media-collection;nga;moma", ["lists moma, which no row has"]),
        ("embeddingsdb:model:apple/mobileclip_s0:dimensions", "512", ["says 512 dimensions", "have 8"]),
        ("embeddingsdb:model:apple/mobileclip_s0:dimensions", "many", ["'many', not a number"]),
        ("embeddingsdb:provider:nga:models", "apple/mobileclip_s0", ["leaves out google/siglip2-so400m-patch14-384"]),
        ("embeddingsdb:model:apple/mobileclip_s2:providers", "nga", ["lists nga, which no row has"]),
    ],
)
def test_a_footer_contradicting_the_rows_is_refused_naming_the_key_and_nothing_is_loaded(tmp_path, sfo_records, key, value, words):
    kv = go_footer(sfo_records)
    kv[key] = value
    src = tmp_path / "go.parquet"
    write_go_layout(src, sfo_records, footer=kv)
    # an existing database keeps exactly what it had
    db = tmp_path / "x.db"
    other = tmp_path / "other.parquet"
    write_parquet(other, make_records(n=3, providers=("met",), models={"m": 4}))
    assert invoke("load", db, other).exit_code == 0
    before = dump_database(db)
    result = invoke("load", db, src)
    assert result.exit_code == 1
    assert f"footer key '{key}'" in result.stderr
    for w in words:
        assert w in result.stderr
    assert "nothing loaded" in result.stderr
    assert dump_database(db) == before
    # a new database is not left behind
    fresh = tmp_path / "fresh.db"
    assert invoke("load", fresh, src).exit_code == 1
    assert not fresh.exists()


def test_footer_mismatch_warn_loads_the_rows_and_names_the_key(tmp_path, sfo_records):
    kv = go_footer(sfo_records)
    kv["embeddingsdb:model:apple/mobileclip_s0:dimensions"] = "512"
    src = tmp_path / "go.parquet"
    write_go_layout(src, sfo_records, footer=kv)
    db = tmp_path / "x.db"
    result = invoke("load", db, src, "--footer-mismatch", "warn")
    assert result.exit_code == 0
    assert "Warning:" in result.stderr and "embeddingsdb:model:apple/mobileclip_s0:dimensions" in result.stderr
    assert "24 new" in result.output


def test_an_older_footer_without_dimension_keys_is_checked_on_what_it_has(tmp_path, sfo_records):
    kv = {k: v for k, v in go_footer(sfo_records).items() if not k.endswith(":dimensions")}
    src = tmp_path / "go.parquet"
    write_go_layout(src, sfo_records, footer=kv)
    result = invoke("load", tmp_path / "x.db", src)
    assert result.exit_code == 0, result.stderr


def test_disagreements_unit():
    stats = footer.FileStats()
    stats.add_rows(["a", "a", "b"], ["m1", "m2", "m1"], [4, 8, 4])
    assert stats.rows == 3
    summary = footer.parse(stats.key_values())
    assert footer.disagreements(summary, stats) == []
    # model names may hold ':' and '/'
    s2 = footer.FileStats()
    s2.add("p:1", "org/model:v2", 3)
    parsed = footer.parse(s2.key_values())
    assert parsed.dimensions == {"org/model:v2": "3"}
    assert parsed.provider_models == {"p:1": ["org/model:v2"]}


# ---------------------------------------------------------------- info reads only the footer

def test_info_on_a_parquet_file_shows_the_footer(tmp_path, sfo_records):
    src = tmp_path / "go.parquet"
    write_go_layout(src, sfo_records, footer=go_footer(sfo_records))
    result = invoke("info", src)
    assert result.exit_code == 0, result.output
    assert "24 rows" in result.output
    assert "apple/mobileclip_s0  8-d  (sfomuseum-data-media-collection, nga)" in result.output
    assert "google/siglip2-so400m-patch14-384  12-d" in result.output
    data = json.loads(invoke("info", src, "--json").stdout)
    assert data["rows"] == 24 and data["shared_layout"] is True
    assert {m["label"]: m["dimensions"] for m in data["models"]} == {
        "apple/mobileclip_s0": 8, "google/siglip2-so400m-patch14-384": 12}
    assert data["footer"]["embeddingsdb:providers"] == "sfomuseum-data-media-collection;nga"


def test_info_on_a_file_without_footer_says_so(tmp_path):
    src = tmp_path / "plain.parquet"
    write_parquet(src, make_records(n=3))
    result = invoke("info", src)
    assert result.exit_code == 0
    assert "No embeddingsdb footer metadata" in result.output


def test_info_still_describes_a_database(loaded_db):
    data = json.loads(invoke("info", loaded_db, "--json").stdout)
    assert data["records"] == 80


def test_info_refuses_a_file_that_is_neither(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a table")
    result = invoke("info", junk)
    assert result.exit_code == 1 and "neither a Parquet file nor a SQLite database" in result.stderr


@pytest.fixture
def big_go_file(tmp_path):
    """A ~3.7 MB go-layout file with a footer: info must not need its rows."""
    records = make_records(n=1500, providers=("sfomuseum-data-media-collection",), models={"apple/mobileclip_s0": 512})
    path = tmp_path / "big.parquet"
    write_go_layout(path, records, footer=go_footer(records))
    return path


def test_info_url_reads_only_the_footer_measured_at_the_server(big_go_file):
    data = big_go_file.read_bytes()
    assert len(data) > 3_000_000
    with serve({"/big.parquet": data}) as (base, log):
        result = invoke("info", f"{base}/big.parquet", "--json")
        assert result.exit_code == 0, result.output + result.stderr
        info = json.loads(result.stdout)
        sent = log.body_bytes
    assert info["rows"] == 1500 and info["bytes"] == len(data)
    assert info["models"] == [{"label": "apple/mobileclip_s0", "dimensions": 512, "providers": ["sfomuseum-data-media-collection"]}]
    # what the server sent, counted by the server: the tail, nothing like the file
    assert sent == info["bytes_read"]
    assert sent <= 64 * 1024 + pq.read_metadata(str(big_go_file)).serialized_size + 8
    assert sent < len(data) / 50
    assert all(r is not None for _m, _p, r in log.requests), "every request was a range request"


def test_info_url_on_a_server_without_range_support_refuses_instead_of_downloading(big_go_file):
    with serve({"/big.parquet": big_go_file.read_bytes()}, ranges=False) as (base, log):
        result = invoke("info", f"{base}/big.parquet")
    assert result.exit_code == 1
    assert "does not support HTTP range requests" in result.stderr


def test_info_url_not_found(big_go_file):
    with serve({}) as (base, _log):
        result = invoke("info", f"{base}/missing.parquet")
    assert result.exit_code == 1 and "HTTP 404" in result.stderr


def test_load_url_still_streams_the_whole_file(tmp_path, big_go_file):
    data = big_go_file.read_bytes()
    with serve({"/big.parquet": data}) as (base, log):
        result = invoke("load", tmp_path / "x.db", f"{base}/big.parquet")
        sent = log.body_bytes
        requests = list(log.requests)
    assert result.exit_code == 0, result.stderr
    assert "1,500 new" in result.output
    # the footer first (one range request for the tail, its columns checked), then the whole file once
    assert [r for _m, _p, r in requests] == ["bytes=-65536", None]
    assert sent == len(data) + 64 * 1024
