"""`info FILE|URL`: what the footer alone says, including the row groups' column statistics."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from datasette_embeddings.files import file_info
from datasette_embeddings.files.remote import TAIL_BYTES
from tests.helpers import make_records, write_go_layout, write_met_plain, write_parquet
from tests.http_fixtures import serve


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def info_json(*args) -> dict:
    result = invoke("info", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_row_groups_of_one_provider_and_model_are_counted_from_their_statistics(tmp_path):
    # make_records orders rows by provider, then model: row groups of 4 each hold one pair
    records = make_records(n=4, providers=("sfomuseum", "nga"), models={"apple/mobileclip_s0": 8, "google/siglip2": 12})
    path = tmp_path / "plain.parquet"
    write_parquet(path, records, row_group_size=4)
    data = info_json(path)
    assert data["footer"] == {}
    assert data["statistics"] == {
        "groups": [
            {"provider": "nga", "model": "apple/mobileclip_s0", "dimensions": 8, "rows": 4},
            {"provider": "nga", "model": "google/siglip2", "dimensions": 12, "rows": 4},
            {"provider": "sfomuseum", "model": "apple/mobileclip_s0", "dimensions": 8, "rows": 4},
            {"provider": "sfomuseum", "model": "google/siglip2", "dimensions": 12, "rows": 4},
        ],
        "unknown_rows": 0,
    }
    text = invoke("info", path).stdout
    assert "Rows per provider and model (from the row groups' column statistics):" in text
    assert "  sfomuseum  google/siglip2  12-d  4 rows" in text


def test_row_groups_mixing_providers_are_counted_as_unknown(tmp_path):
    records = make_records(n=3, providers=("a", "b"), models={"m": 8})
    path = tmp_path / "mixed.parquet"
    write_parquet(path, records, row_group_size=4)  # rows 0-3: a, a, a, b
    stats = info_json(path)["statistics"]
    assert stats == {"groups": [{"provider": "b", "model": "m", "dimensions": 8, "rows": 2}], "unknown_rows": 4}
    text = invoke("info", path).stdout
    assert "4 rows in row groups whose statistics name no single provider and model" in text


def test_statistics_agree_with_what_load_loads(tmp_path):
    records = make_records(n=5, providers=("met",), models={"m": 16})
    path = tmp_path / "go.parquet"
    write_go_layout(path, records)
    groups = info_json(path)["statistics"]["groups"]
    db = tmp_path / "x.db"
    assert invoke("load", db, path).exit_code == 0
    stored = info_json(db)
    assert [(g["provider"], g["model"], g["rows"]) for g in groups] == [
        (p["provider"], p["model"], p["count"]) for p in stored["providers"]]
    assert [g["dimensions"] for g in groups] == [m["dimensions"] for m in stored["models"]]


def test_info_with_a_mapping_describes_the_mapped_columns(tmp_path):
    path = tmp_path / "met.parquet"
    write_met_plain(path, n=6, dims=8)
    plain = info_json(path)
    assert plain["shared_layout"] is False and plain["statistics"]["unknown_rows"] == 6
    mapped = info_json(path, "--layout", "met-plain")
    assert mapped["statistics"]["groups"] == [
        {"provider": "metmuseum", "model": "apple/MobileCLIP-S1", "dimensions": 8, "rows": 6}]
    mapped = info_json(path, "--layout", "met-plain", "--provider", "the-met", "--model", "met-s1")
    assert [(g["provider"], g["model"]) for g in mapped["statistics"]["groups"]] == [("the-met", "met-s1")]


def test_info_url_with_a_mapping_reads_only_the_footer(tmp_path):
    path = tmp_path / "met.parquet"
    write_met_plain(path, n=1500, dims=512)
    data = path.read_bytes()
    with serve({"/met.parquet": data}) as (base, log):
        info = info_json(f"{base}/met.parquet", "--layout", "met-plain")
        sent = log.body_bytes
    assert info["statistics"]["groups"] == [
        {"provider": "metmuseum", "model": "apple/MobileCLIP-S1", "dimensions": 512, "rows": 1500}]
    assert sent == info["bytes_read"] <= max(TAIL_BYTES, pq.read_metadata(str(path)).serialized_size + 8)
    assert sent < len(data) / 40


def test_info_refuses_mapping_options_for_a_database(tmp_path):
    db = tmp_path / "x.db"
    write_parquet(tmp_path / "a.parquet", make_records(n=2))
    assert invoke("load", db, tmp_path / "a.parquet").exit_code == 0
    result = invoke("info", db, "--map", "depiction_id=objectID")
    assert result.exit_code == 1 and "is a database" in result.stderr


def test_schema_of_a_local_file_and_a_url_are_the_same(tmp_path):
    path = tmp_path / "met.parquet"
    write_met_plain(path)
    with serve({"/met.parquet": path.read_bytes()}) as (base, _log):
        assert file_info.schema_of(f"{base}/met.parquet") == file_info.schema_of(str(path))
