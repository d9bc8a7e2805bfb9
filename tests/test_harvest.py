"""embed from the web: http(s) and IIIF images, bounded, retried, concurrent, cached; exit 1 when nothing embedded.

Every test runs against a loopback server (tests/http_fixtures.py) that logs each
request, so what was fetched (and what was not) is asserted at the server.
"""
from __future__ import annotations

import csv
import io
import os
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from datasette_embeddings.cli import cli
from datasette_embeddings.files import downloads
from tests.http_fixtures import Response, serve

NAMES = ["RP-P-1906-1485", "RP-P-1906-1486", "DP159891", "SK-C-5"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def images(data_dir) -> dict[str, bytes]:
    return {name: (data_dir / "images" / f"{name}.jpg").read_bytes() for name in NAMES}


def iiif_route(images: dict[str, bytes], sizes: list[str]):
    """A IIIF-style image service: /iiif/<id>/full/<size>/0/default.jpg, rendered by Pillow."""
    pattern = re.compile(r"^/iiif/([^/]+)/full/([^/]+)/0/default\.jpg$")

    def route(path: str):
        match = pattern.match(path)
        if not match or match.group(1) not in images:
            return Response(404, b"no such image")
        ident, size = match.groups()
        sizes.append(size)
        image = Image.open(io.BytesIO(images[ident])).convert("RGB")
        if size not in ("full", "max"):
            w, h = (int(v) for v in size.lstrip("!").split(","))
            image.thumbnail((w, h))
        out = io.BytesIO()
        image.save(out, "JPEG")
        return Response(200, out.getvalue(), {"Content-Type": "image/jpeg"})

    return route


def routes_for(images, sizes, extra=None):
    iiif = iiif_route(images, sizes)
    table = {f"/img/{name}.jpg": data for name, data in images.items()}
    table.update(extra or {})

    def route(path: str):
        if path.startswith("/iiif/"):
            return iiif(path)
        found = table.get(path)
        return found(path) if callable(found) else (found if found is not None else Response(404, b"missing"))

    return route


def write_manifest(path, rows: list[dict]) -> str:
    fields = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as fp:
        writer = csv.DictWriter(fp, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def read_records(path) -> list[dict]:
    table = pq.read_table(str(path))
    rows = table.to_pylist()
    for r in rows:
        r["attributes"] = dict(r["attributes"])
    return rows


# ---------------------------------------------------------------- IIIF URLs

@pytest.mark.parametrize(
    "url,expected",
    [
        ("https://iiif.example.org/iiif/2/abc/full/full/0/default.jpg", "https://iiif.example.org/iiif/2/abc/full/!512,512/0/default.jpg"),
        ("https://iiif.example.org/iiif/3/abc/full/max/0/default.jpg", "https://iiif.example.org/iiif/3/abc/full/!512,512/0/default.jpg"),
        ("https://iiif.example.org/iiif/3/abc/full/4000,/0/default.png", "https://iiif.example.org/iiif/3/abc/full/!512,512/0/default.png"),
        ("https://iiif.example.org/iiif/3/abc/full/200,/0/default.jpg", "https://iiif.example.org/iiif/3/abc/full/200,/0/default.jpg"),
        ("https://iiif.example.org/iiif/3/abc/full/!300,300/0/default.jpg", "https://iiif.example.org/iiif/3/abc/full/!300,300/0/default.jpg"),
        ("https://iiif.example.org/iiif/3/abc/info.json", "https://iiif.example.org/iiif/3/abc/full/!512,512/0/default.jpg"),
        ("https://example.org/images/abc.jpg", None),
    ],
)
def test_iiif_urls_are_asked_for_a_sized_rendition(url, expected):
    assert downloads.iiif_sized(url, 512) == expected


def test_iiif_identifier():
    assert downloads.iiif_identifier("https://x.org/iiif/3/RP-P-1906-1485/full/max/0/default.jpg") == "RP-P-1906-1485"
    assert downloads.iiif_identifier("https://x.org/iiif/3/a%2Fb/info.json") == "a/b"


# ---------------------------------------------------------------- harvesting

def test_embed_harvests_http_and_iiif_images(tmp_path, images, data_dir):
    sizes: list[str] = []
    with serve(routes_for(images, sizes)) as (base, log):
        manifest = write_manifest(tmp_path / "m.csv", [
            {"provider": "rijks", "image": f"{base}/img/RP-P-1906-1485.jpg", "title": "A print"},
            {"provider": "rijks", "iiif": f"{base}/iiif/RP-P-1906-1486"},
            {"provider": "met", "image": f"{base}/iiif/DP159891/full/full/0/default.jpg", "depiction_id": "met-1"},
            {"provider": "rijks", "image": f"{base}/iiif/SK-C-5/info.json", "preview": "https://example.org/nw.jpg"},
        ])
        out = tmp_path / "out.parquet"
        result = run("embed", manifest, "-o", out, "--iiif-size", "64")
        assert result.exit_code == 0, result.output
        assert "4 image(s) downloaded" in result.output
    rows = read_records(out)
    assert [r["depiction_id"] for r in rows] == ["RP-P-1906-1485", "RP-P-1906-1486", "met-1", "SK-C-5"]
    # the URL fetched is the preview unless the manifest gives one
    assert rows[0]["attributes"]["preview"] == f"{base}/img/RP-P-1906-1485.jpg"
    assert rows[1]["attributes"]["preview"] == f"{base}/iiif/RP-P-1906-1486/full/!64,64/0/default.jpg"
    assert rows[3]["attributes"]["preview"] == "https://example.org/nw.jpg"
    assert rows[0]["attributes"]["subject_title"] == "A print"
    # IIIF: only sized renditions were asked for, never the full image
    assert sizes == ["!64,64"] * 3
    assert not any("/full/full/" in p for _m, p, _r in log.requests)


def test_a_downloaded_image_embeds_like_the_same_file_on_disk(tmp_path, images, data_dir):
    with serve(routes_for(images, [])) as (base, _log):
        manifest = write_manifest(tmp_path / "m.csv", [{"provider": "p", "image": f"{base}/img/DP159891.jpg"}])
        remote = tmp_path / "remote.parquet"
        assert run("embed", manifest, "-o", remote).exit_code == 0
    local_manifest = write_manifest(tmp_path / "l.csv", [{"provider": "p", "image": str(data_dir / "images" / "DP159891.jpg")}])
    local = tmp_path / "local.parquet"
    assert run("embed", local_manifest, "-o", local).exit_code == 0
    a, b = read_records(remote)[0], read_records(local)[0]
    assert np.asarray(a["embeddings"], np.float32).tobytes() == np.asarray(b["embeddings"], np.float32).tobytes()


def test_failures_in_passing_are_retried(tmp_path, images):
    calls = {"n": 0}

    def flaky(path):
        calls["n"] += 1
        if calls["n"] <= 2:
            return Response(503, b"busy", {"Retry-After": "0"})
        return Response(200, images["DP159891"])

    with serve(routes_for(images, [], {"/flaky.jpg": flaky})) as (base, log):
        manifest = write_manifest(tmp_path / "m.csv", [{"provider": "p", "image": f"{base}/flaky.jpg"}])
        result = run("embed", manifest, "-o", tmp_path / "o.parquet", "--retries", "3")
        assert result.exit_code == 0, result.output
        assert log.count("/flaky.jpg") == 3


@pytest.mark.parametrize(
    "route,args,reason",
    [
        (Response(404, b"gone"), [], "HTTP 404"),
        (Response(200, b"x" * 200_000), ["--max-image-bytes", "100000"], "200,000 bytes, more than the limit of 100,000"),
        (Response(200, b"x" * 5000, delay=3), ["--timeout", "0.5", "--retries", "0"], "gave up after 1 try"),
        (Response(200, b"x" * 50_000, stall_after=1000), ["--timeout", "0.5", "--retries", "0"], "gave up after 1 try"),
        (Response(500, b"broken"), ["--retries", "1"], "HTTP 500 Internal Server Error (gave up after 2 tries)"),
    ],
    ids=["not-found", "too-large", "slow", "stalled", "server-error"],
)
def test_bounded_downloads_skip_the_image_and_keep_the_others(tmp_path, images, route, args, reason):
    with serve(routes_for(images, [], {"/bad.jpg": route}), stall_seconds=2) as (base, log):
        manifest = write_manifest(tmp_path / "m.csv", [
            {"provider": "p", "image": f"{base}/bad.jpg", "depiction_id": "bad"},
            {"provider": "p", "image": f"{base}/img/DP159891.jpg"},
        ])
        out = tmp_path / "o.parquet"
        result = run("embed", manifest, "-o", out, *args)
        assert result.exit_code == 0, result.output
        assert "skipped" in result.output and f"{base}/bad.jpg" in result.output and reason in result.output
        assert [r["depiction_id"] for r in read_records(out)] == ["DP159891"]
        if "404" in reason:
            assert log.count("/bad.jpg") == 1  # a 404 is not retried
        # --strict: the same failure stops the run and leaves no file
        strict_out = tmp_path / "strict.parquet"
        strict = run("embed", manifest, "-o", strict_out, "--strict", *args)
        assert strict.exit_code == 1 and reason in strict.output
        assert not strict_out.exists()


def test_a_run_stopped_early_shuts_its_download_threads_down_itself(tmp_path, images):
    """--strict stops at the first failure: the download pool is shut down by the run, not left to the
    garbage collector (which once shut it down from inside threading's bookkeeping: a hang for good)."""
    import gc
    import threading

    def fetch_threads():
        return [t for t in threading.enumerate() if t.name.startswith("datasette-embeddings-fetch") and t.is_alive()]

    with serve(routes_for(images, [], {"/bad.jpg": Response(404, b"gone")})) as (base, _log):
        manifest = write_manifest(tmp_path / "m.csv", [{"provider": "p", "image": f"{base}/bad.jpg"}] + [
            {"provider": "p", "image": f"{base}/img/{n}.jpg"} for n in NAMES])
        gc.disable()  # only the run itself may end its threads here
        try:
            strict = run("embed", manifest, "-o", tmp_path / "strict.parquet", "--strict")
            assert strict.exit_code == 1 and "HTTP 404" in strict.output
            assert not fetch_threads(), fetch_threads()
        finally:
            gc.enable()


def test_downloads_run_a_few_at_a_time_and_records_keep_manifest_order(tmp_path, images):
    slow = {f"/s{i}.jpg": Response(200, images[NAMES[i % 4]], delay=0.3) for i in range(8)}
    with serve(routes_for(images, [], slow)) as (base, log):
        manifest = write_manifest(tmp_path / "m.csv", [
            {"provider": "p", "image": f"{base}/s{i}.jpg", "depiction_id": f"d{i}"} for i in range(8)
        ])
        out = tmp_path / "o.parquet"
        result = run("embed", manifest, "-o", out, "--concurrency", "3")
        assert result.exit_code == 0, result.output
        assert 2 <= log.max_inflight <= 3
    assert [r["depiction_id"] for r in read_records(out)] == [f"d{i}" for i in range(8)]


def test_an_interrupted_harvest_resumes_from_the_cache(tmp_path, images):
    cache = tmp_path / "cache"
    outage = {"/img/SK-C-5.jpg": Response(404, b"not now")}
    extra = {"/img/SK-C-5.jpg": lambda path: outage.get(path) or images["SK-C-5"]}
    with serve(routes_for(images, [], extra)) as (base, log):
        manifest = write_manifest(tmp_path / "m.csv", [{"provider": "p", "image": f"{base}/img/{n}.jpg"} for n in NAMES]
                                  + [{"provider": "p", "iiif": f"{base}/iiif/DP159891", "depiction_id": "met-iiif"}])
        # first run: one image fails (as in an outage that cut the harvest short)
        first = run("embed", manifest, "-o", tmp_path / "first.parquet", "--cache", cache)
        assert first.exit_code == 0, first.output
        assert "4 image(s) downloaded" in first.output
        # a half-written file of a killed run is left in the cache: never taken for an image
        (cache / "0123abcd.99.1.part").write_bytes(b"\xff\xd8 half a jpeg")
        outage.clear()
        before = len(log.requests)
        second = run("embed", manifest, "-o", tmp_path / "second.parquet", "--cache", cache)
        assert second.exit_code == 0, second.output
        assert "1 image(s) downloaded; 4 image(s) from the cache" in second.output
        assert [p for _m, p, _r in log.requests[before:]] == ["/img/SK-C-5.jpg"]
    assert [r["depiction_id"] for r in read_records(tmp_path / "second.parquet")] == NAMES + ["met-iiif"]
    assert not [n for n in os.listdir(cache) if n.endswith(".part") and not n.startswith("0123abcd")]


def test_embed_exits_1_when_nothing_was_embedded(tmp_path, images):
    with serve(routes_for(images, [])) as (base, _log):
        manifest = write_manifest(tmp_path / "m.csv", [
            {"provider": "p", "image": f"{base}/img/nothing-{i}.jpg"} for i in range(3)])
        out = tmp_path / "o.parquet"
        result = run("embed", manifest, "-o", out)
    assert result.exit_code == 1
    assert "nothing was embedded; 3 image(s) skipped, so no file was written" in result.output
    assert not out.exists()


def test_a_folder_of_unreadable_images_exits_1(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not an image")
    out = tmp_path / "o.parquet"
    result = run("embed", folder, "--provider", "p", "-o", out)
    assert result.exit_code == 1 and "nothing was embedded" in result.output
    assert not out.exists()


def test_a_non_http_image_url_is_refused(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", [{"provider": "p", "image": "ftp://example.org/a.jpg"}])
    result = run("embed", manifest, "-o", tmp_path / "o.parquet")
    assert result.exit_code == 1 and "is not http(s)" in result.output


def test_the_harvest_file_carries_the_go_embeddingsdb_footer(tmp_path, images):
    from datasette_embeddings.files import footer

    with serve(routes_for(images, [])) as (base, _log):
        manifest = write_manifest(tmp_path / "m.csv", [
            {"provider": "rijks", "image": f"{base}/img/RP-P-1906-1485.jpg"},
            {"provider": "met", "image": f"{base}/img/DP159891.jpg"},
        ])
        out = tmp_path / "o.parquet"
        assert run("embed", manifest, "-o", out).exit_code == 0
    kv = footer.embeddingsdb_keys(pq.read_metadata(str(out)).metadata)
    dims = len(read_records(out)[0]["embeddings"])
    assert kv["embeddingsdb:models"] == "colour-layout-v1"
    assert set(kv["embeddingsdb:providers"].split(";")) == {"rijks", "met"}
    assert kv["embeddingsdb:model:colour-layout-v1:dimensions"] == str(dims)
    assert kv["embeddingsdb:provider:met:models"] == "colour-layout-v1"
