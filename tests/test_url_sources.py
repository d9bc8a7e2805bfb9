"""A URL's columns are checked from its footer (HTTP range requests) before it is downloaded.

The loopback server counts every body byte it sends, so the tests measure what a
refused mapping cost rather than trust the client.
"""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from datasette_embeddings.files import loader
from datasette_embeddings.files.remote import TAIL_BYTES
from tests.helpers import write_met_plain
from tests.http_fixtures import serve

ROWS = 1500


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


@pytest.fixture(scope="module")
def big_met(tmp_path_factory):
    """A ~3 MB file in the Met's plain layout: 1,500 objects of 512-d vectors."""
    path = tmp_path_factory.mktemp("met") / "met.parquet"
    write_met_plain(path, n=ROWS, dims=512)
    data = path.read_bytes()
    assert len(data) > 3_000_000
    return path, data


def footer_budget(path) -> int:
    """What reading the footer may cost: the first tail request, or the footer itself if larger."""
    return max(TAIL_BYTES, pq.read_metadata(str(path)).serialized_size + 8)


@pytest.mark.parametrize("command", ["load", "validate"])
@pytest.mark.parametrize(
    "args,words",
    [
        (["--layout", "met-plain", "--map", "depiction_id=objectid"],
         ["column 'objectid' named by --map depiction_id=objectid is not in the file", "objectID, embedding, model, dim"]),
        (["--layout", "met-plain", "--map", "embeddings=dim"],
         ["field 'dim': wrong column type int32, expected list<float> (for embeddings)"]),
        (["--layout", "met-plain", "--attribute", "preview=https://images.example.org/{image}.jpg"],
         ["column 'image' named by --attribute preview="]),
        ([], ["missing required column(s): provider, depiction_id, subject_id, embeddings, created, attributes"]),
    ],
    ids=["missing-column", "mistyped-column", "missing-template-column", "not-the-shared-layout"],
)
def test_a_bad_mapping_on_a_url_transfers_only_the_footer(tmp_path, big_met, command, args, words):
    path, data = big_met
    db = tmp_path / "x.db"
    with serve({"/met.parquet": data}) as (base, log):
        url = f"{base}/met.parquet"
        target = [db, url] if command == "load" else [url]
        result = invoke(command, *target, *args)
        sent, requests = log.body_bytes, list(log.requests)
    assert result.exit_code == 1, result.output
    error = result.stderr.strip()
    assert error.startswith(f"Error: {url}"), error
    for w in words:
        assert w in error
    assert "nothing was downloaded" in error
    # measured at the server: every request a range request, and the footer's worth of bytes
    assert requests and all(r is not None for _m, _p, r in requests), requests
    assert sent <= footer_budget(path) and sent < len(data) / 40
    assert not db.exists()


def test_a_good_mapping_on_a_url_loads_after_the_footer_check(tmp_path, big_met):
    path, data = big_met
    db = tmp_path / "x.db"
    with serve({"/met.parquet": data}) as (base, log):
        result = invoke("load", db, f"{base}/met.parquet", "--layout", "met-plain")
        sent, requests = log.body_bytes, list(log.requests)
    assert result.exit_code == 0, result.stderr
    assert f"{ROWS:,} new" in result.stdout
    assert [r for _m, _p, r in requests] == [f"bytes=-{TAIL_BYTES}", None]
    assert sent == len(data) + TAIL_BYTES


def test_validate_url_with_a_good_mapping_reads_the_records(big_met):
    _path, data = big_met
    with serve({"/met.parquet": data}) as (base, _log):
        result = invoke("validate", f"{base}/met.parquet", "--layout", "met-plain", "--examples", "0")
    # the Met's plain files have no preview, title or credit line: every record is reported, none refused
    assert result.exit_code == 1 and "Error" not in result.stderr, result.output
    assert f"{ROWS:,} records, {ROWS:,} not following" in result.stdout
    assert f"missing preview: {ROWS:,}" in result.stdout


@pytest.mark.parametrize("command", ["load", "validate"])
def test_without_range_support_a_bad_mapping_is_found_after_the_download(tmp_path, big_met, command):
    path, data = big_met
    db = tmp_path / "x.db"
    with serve({"/met.parquet": data}, ranges=False) as (base, log):
        url = f"{base}/met.parquet"
        target = [db, url] if command == "load" else [url]
        result = invoke(command, *target, "--layout", "met-plain", "--map", "depiction_id=objectid")
        requests = list(log.requests)
    assert result.exit_code == 1
    error = result.stderr.strip()
    assert error.startswith(f"Error: {url}: column 'objectid' named by --map depiction_id=objectid is not in the file")
    assert "nothing was downloaded" not in error
    # the refused range request, then the whole download as before
    assert [r for _m, _p, r in requests] == [f"bytes=-{TAIL_BYTES}", None]
    assert not db.exists()


def test_without_range_support_a_good_mapping_still_loads(tmp_path, big_met):
    _path, data = big_met
    db = tmp_path / "x.db"
    with serve({"/met.parquet": data}, ranges=False) as (base, _log):
        result = invoke("load", db, f"{base}/met.parquet", "--layout", "met-plain")
    assert result.exit_code == 0, result.stderr
    assert f"{ROWS:,} new" in result.stdout


def test_check_url_schema_unit(big_met):
    path, data = big_met
    layout_ok = loader.Layout(columns={"depiction_id": "objectID", "embeddings": "embedding"}, provider="p")
    with serve({"/met.parquet": data}) as (base, _log):
        assert loader.check_url_schema(f"{base}/met.parquet", layout_ok) is True
        with pytest.raises(loader.LoadError, match="missing required column"):
            loader.check_url_schema(f"{base}/met.parquet")
        # the server is the obstacle: nothing decided, the download will tell
        assert loader.check_url_schema(f"{base}/missing.parquet", layout_ok) is False
    with serve({"/met.parquet": data}, ranges=False) as (base, _log):
        assert loader.check_url_schema(f"{base}/met.parquet", layout_ok) is False


def test_a_url_that_is_not_parquet_is_refused_from_its_tail(tmp_path):
    junk = b"<html>" + b"x" * 500_000 + b"</html>"
    with serve({"/page.parquet": junk}) as (base, log):
        result = invoke("load", tmp_path / "x.db", f"{base}/page.parquet")
        sent = log.body_bytes
    assert result.exit_code == 1
    assert "not a readable Parquet file" in result.stderr and "nothing was downloaded" in result.stderr
    assert sent == TAIL_BYTES


def test_a_bad_mapping_in_a_later_url_loads_none_of_the_sources(tmp_path, big_met):
    """Every source is checked before the first is loaded: the footers of both, no download."""
    path, data = big_met
    other = tmp_path / "other.parquet"
    write_met_plain(other, n=3)
    renamed = pq.read_table(str(other)).rename_columns(["object", "embedding", "model", "dim"])
    pq.write_table(renamed, str(other))
    db = tmp_path / "x.db"
    with serve({"/met.parquet": data, "/other.parquet": other.read_bytes()}) as (base, log):
        result = invoke("load", db, f"{base}/met.parquet", f"{base}/other.parquet", "--layout", "met-plain")
        sent, requests = log.body_bytes, list(log.requests)
    assert result.exit_code == 1
    assert f"Error: {base}/other.parquet: column 'objectID' named by --map depiction_id=objectID (of --layout met-plain)" in result.stderr
    assert [(p, r) for _m, p, r in requests] == [("/met.parquet", f"bytes=-{TAIL_BYTES}"), ("/other.parquet", f"bytes=-{TAIL_BYTES}")]
    assert sent <= footer_budget(path) + other.stat().st_size
    assert not db.exists()
