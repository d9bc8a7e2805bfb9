"""Hostile requests against a real datasette server on 127.0.0.1.

Every one gets a 4xx with a message, never a 5xx or a traceback, and the server
keeps answering afterwards.  The test client tests in test_views_*.py cover the
same handlers in-process; these prove it over real HTTP, with real request bodies.
"""
import io

import httpx
import pytest
from PIL import Image

from tests.helpers import free_port, load_benchmark

http_load = load_benchmark("http_load")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("hostile") / "load.db")
    http_load.build_database(db, 300)
    port = free_port()
    proc = http_load.start_server(db, port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client
    proc.terminate()
    proc.wait(timeout=30)


def png(size, colour=(10, 20, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 0).save(buffer, "PNG")
    return buffer.getvalue()


def assert_client_error(response, *words):
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text
    for word in words:
        assert word.lower() in response.text.lower()


def assert_still_up(client):
    assert client.get("/load/-/gallery/1.json?k=3").status_code == 200


SEARCH = "/load/-/search.json?model=colour-layout-v1"


@pytest.mark.parametrize(
    "name, body, content_type, words",
    [
        ("text bytes sent as a JPEG", b"this is not an image at all", "image/jpeg", ["not a readable image"]),
        ("truncated PNG", png((64, 64))[:60], "image/png", ["image"]),
        ("empty body", b"", "image/png", ["empty"]),
        ("unsupported content type", b"{}", "application/json", ["unsupported content-type"]),
    ],
)
def test_bad_raw_uploads(server, name, body, content_type, words):
    assert_client_error(server.post(SEARCH, content=body, headers={"Content-Type": content_type}), *words)
    assert_still_up(server)


def test_decompression_bomb_is_refused_before_decoding(server):
    bomb = png((12_000, 12_000), mode="L")  # 144 megapixels that compress to a few hundred KB
    assert len(bomb) < 2_000_000
    assert_client_error(server.post(SEARCH, content=bomb, headers={"Content-Type": "image/png"}), "pixels")
    assert_still_up(server)


def test_oversized_body(server):
    body = b"\x89PNG\r\n\x1a\n" + b"\0" * (11 * 1024 * 1024)
    response = server.post(SEARCH, content=body, headers={"Content-Type": "image/png"})
    assert response.status_code == 413
    assert_still_up(server)


def test_many_files_in_one_form(server):
    files = [("image", (f"f{i}.txt", b"not an image", "image/png")) for i in range(50)]
    assert_client_error(server.post(SEARCH, files=files), "image")
    assert_still_up(server)


def test_form_with_cookie_but_no_csrf_token(server):
    response = server.post(
        "/load/-/search", files={"image": ("q.png", png((32, 32)), "image/png")},
        data={"model": "colour-layout-v1"}, headers={"Cookie": "ds_csrftoken=forged"},
    )
    server.cookies.clear()  # the server's answer set a CSRF cookie; later tests are cookie-less API clients
    assert response.status_code == 403
    assert "csrf" in response.text.lower()
    assert_still_up(server)


def test_a_good_upload_still_works(server):
    server.cookies.clear()
    response = server.post(SEARCH + "&k=5", content=png((48, 48)), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 5


@pytest.mark.parametrize(
    "path",
    [
        "/load/-/gallery/1.json?k=-1",
        "/load/-/gallery/1.json?k=100000000000000000000",
        "/load/-/gallery/1.json?k=ten",
        "/load/-/gallery/1.json?model=no-such-model",
        "/load/-/gallery/999999.json",
        "/load/-/gallery/..%2F..%2Fetc%2Fpasswd.json",
        "/load/-/gallery.json?provider=..%2F..%2Fetc%2Fpasswd&model=nope",
        "/load/-/gallery.json?size=-5",
        "/load/-/search.json?q=x&model=no-such-model",
    ],
)
def test_bad_parameters_are_4xx(server, path):
    assert_client_error(server.get(path))
    assert_still_up(server)


def test_embed_image_reads_no_files_or_urls(server):
    for argument in ("'/etc/passwd'", "'file:///etc/passwd'", "'http://127.0.0.1:1/x.png'"):
        response = server.get("/load.json", params={"sql": f"select embed_image('colour-layout-v1', {argument})"})
        assert response.status_code == 400
        assert "root:" not in response.text


def test_long_embedding_query_is_stopped_by_the_time_limit(server):
    """Many embed_image calls in one query: Datasette's time limit ends it, and workers stay free."""
    image_hex = png((64, 64)).hex()
    sql = (
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 200000) "
        f"select count(embed_image('colour-layout-v1', x'{image_hex}')) from n"
    )
    response = server.get("/load.json", params={"sql": sql})
    assert response.status_code == 400
    assert "too long" in response.text.lower()
    for _ in range(5):
        assert_still_up(server)
