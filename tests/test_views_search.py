"""Search by text (a FAKE llm text model) and by uploaded image (the real colour-layout-v1 model)."""
import io
import re

import pytest
from PIL import Image

from tests.gallery_fixtures import FAKE_TEXT_MODEL, IMAGE_MODEL, IMAGES, csrf, ds, fetch, museum_db, upload  # noqa: F401


def test_text_search_finds_the_record_with_those_words(ds):
    data = fetch(ds, "/museum/-/search.json?q=The+Night+Watch").json()
    assert data["query"]["model"] == FAKE_TEXT_MODEL  # the only text model is chosen by default
    assert data["results"][0]["title"] == "The Night Watch"
    assert data["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    sims = [c["similarity"] for c in data["results"]]
    assert sims == sorted(sims, reverse=True) and len(sims) == 9


def test_text_search_provider_filter_and_k(ds):
    data = fetch(ds, "/museum/-/search.json?q=Portrait&provider=the-metropolitan-museum-of-art&k=1").json()
    assert len(data["results"]) == 1
    assert data["results"][0]["provider"] == "the-metropolitan-museum-of-art"
    assert data["results"][0]["title"] == "Portrait of a Woman with a Man at a Casement"


def test_search_page_offers_text_and_image_with_the_right_models(ds):
    html = fetch(ds, "/museum/-/search").text
    assert 'name="q"' in html and 'type="file"' in html and 'enctype="multipart/form-data"' in html
    assert f'<option value="{FAKE_TEXT_MODEL}"' in html and f'<option value="{IMAGE_MODEL}"' in html
    assert 'name="csrftoken"' in html
    models = {m["label"]: m for m in fetch(ds, "/museum/-/search.json").json()["models"]}
    assert models[IMAGE_MODEL]["image"] and not models[IMAGE_MODEL]["text"]
    assert models[FAKE_TEXT_MODEL]["text"] and not models[FAKE_TEXT_MODEL]["image"]


def test_text_search_html_shows_cards(ds):
    html = fetch(ds, "/museum/-/search?q=Vilaval+Ragini").text
    assert "Vilaval Ragini" in html and 'class="emb-card"' in html and 'class="emb-bar"' in html


def test_image_upload_with_csrf_token_finds_the_same_image(ds):
    data = (IMAGES / "SK-C-5.jpg").read_bytes()
    r = upload(ds, data, {"k": "3"})
    assert r.status_code == 200, r.text[:500]
    # the hostile copy shares the Night Watch's vector exactly: the two tie for first place
    first_two = re.findall(r'<h3 class="emb-title"><a href="[^"]+">([^<]+)</a>', r.text)[:2]
    assert "The Night Watch" in first_two


def test_the_upload_is_shown_back_as_a_small_thumbnail(ds):
    """The HTML page shows the upload re-encoded, at most 240 pixels, decoded by the bounded decoder."""
    import base64

    from datasette_embeddings.config import EmbeddingConfig
    from datasette_embeddings.web.search_page import thumbnail_data_url

    r = upload(ds, (IMAGES / "SK-C-5.jpg").read_bytes(), {"k": "2"})
    assert r.status_code == 200 and "data:image/jpeg;base64," in r.text
    big = io.BytesIO()
    Image.new("RGBA", (3000, 1500), (10, 20, 30, 0)).save(big, format="PNG")
    url = thumbnail_data_url(big.getvalue(), EmbeddingConfig())
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as thumb:
        assert thumb.size == (240, 120) and min(thumb.getpixel((5, 5))) >= 250  # transparency on white
    assert thumbnail_data_url(big.getvalue(), EmbeddingConfig(max_image_pixels=1000)) is None  # the pixel limit holds


def test_image_upload_png_of_a_print_finds_the_prints(ds):
    buffer = io.BytesIO()
    with Image.open(IMAGES / "RP-P-1906-1486.jpg") as image:
        image.convert("RGB").resize((300, 300)).save(buffer, format="PNG")
    r = fetch(ds, "/museum/-/search.json?k=3", "post", content=buffer.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert r.json()["query"]["model"] == IMAGE_MODEL
    assert {c["depiction_id"] for c in results} == {"RP-P-1906-1485", "RP-P-1906-1486", "RP-P-1906-1487"}


def test_upload_without_csrf_token_is_refused_when_cookies_are_sent(ds):
    _, cookies = csrf(ds)
    r = fetch(ds, "/museum/-/search", "post", files={"image": ("q.jpg", (IMAGES / "SK-C-5.jpg").read_bytes(), "image/jpeg")},
              cookies=cookies)
    assert r.status_code == 403


def test_upload_with_a_forged_token_is_refused(ds):
    _, cookies = csrf(ds)
    r = fetch(ds, "/museum/-/search", "post", data={"csrftoken": "forged"}, cookies=cookies,
              files={"image": ("q.jpg", (IMAGES / "SK-C-5.jpg").read_bytes(), "image/jpeg")})
    assert r.status_code == 403 and "CSRF" in r.text


def test_multipart_without_cookies_is_an_api_call_and_allowed(ds):
    r = upload(ds, (IMAGES / "SK-C-5.jpg").read_bytes(), {"k": "2"}, token=False, path="/museum/-/search.json")
    assert r.status_code == 200
    first_two = r.json()["results"]  # the hostile copy ties with the Night Watch (same vector)
    assert "SK-C-5" in {c["depiction_id"] for c in first_two} and first_two[0]["similarity"] == pytest.approx(1.0, abs=1e-4)


def test_csrf_skip_is_limited_to_multipart_posts_to_search():
    from datasette_embeddings.web.search_page import skips_asgi_csrf

    multipart = [(b"content-type", b"multipart/form-data; boundary=x")]
    assert skips_asgi_csrf({"type": "http", "method": "POST", "path": "/db/-/search", "headers": multipart})
    assert not skips_asgi_csrf({"type": "http", "method": "POST", "path": "/db/-/upload", "headers": multipart})
    assert not skips_asgi_csrf({"type": "http", "method": "POST", "path": "/db/-/search",
                                "headers": [(b"content-type", b"application/x-www-form-urlencoded")]})
    assert not skips_asgi_csrf({"type": "http", "method": "POST", "path": "/db/query", "headers": multipart})


def test_upload_of_a_non_image_is_415(ds):
    r = upload(ds, b"%PDF-1.4 not an image at all")
    assert r.status_code == 415 and "not a readable image" in r.text
    r = fetch(ds, "/museum/-/search.json", "post", content=b"GIF89a-but-broken", headers={"content-type": "image/gif"})
    assert r.status_code == 415 and "not a readable image" in r.json()["error"]


def test_upload_of_an_unaccepted_format_is_415(ds):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="BMP")
    r = fetch(ds, "/museum/-/search.json", "post", content=buffer.getvalue(), headers={"content-type": "image/bmp"})
    assert r.status_code == 415 and "BMP is not accepted" in r.json()["error"]


def _datasette_with(museum_db, **config):
    from datasette.app import Datasette

    return Datasette([str(museum_db)], metadata={"plugins": {"datasette-embeddings": config}})


def test_upload_over_the_size_limit_is_413(museum_db):
    small = _datasette_with(museum_db, max_upload_bytes=1024 * 1024)
    big = b"\xff\xd8" + b"0" * (1024 * 1024 + 200 * 1024)
    r = fetch(small, "/museum/-/search.json", "post", content=big, headers={"content-type": "image/jpeg"})
    assert r.status_code == 413 and "upload too large" in r.json()["error"]


def png_of_exactly(size: int) -> bytes:
    """A real, incompressible PNG padded with a private ancillary chunk to exactly ``size`` bytes."""
    import random
    import struct
    import zlib

    rng = random.Random(5)
    image = Image.frombytes("RGB", (1800, 1800), rng.randbytes(1800 * 1800 * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    data = out.getvalue()
    padding = size - len(data) - 12  # a chunk is length, type and CRC around its data
    assert padding >= 0
    body = b"\0" * padding
    chunk = struct.pack(">I", padding) + b"emBd" + body + struct.pack(">I", zlib.crc32(b"emBd" + body))
    end = data.rindex(b"IEND") - 4
    result = data[:end] + chunk + data[end:]
    assert len(result) == size
    return result


def test_one_upload_limit_regression_at_10162098_bytes(museum_db):
    """Two limits (10 MiB for the body, 10 MB for the image) once answered this file 400 "could not embed"."""
    image = png_of_exactly(10_162_098)
    path = f"/museum/-/search.json?model={IMAGE_MODEL}&k=3"
    # under the default limit of 10 MiB: searched, not refused on the way
    r = fetch(_datasette_with(museum_db), path, "post", content=image, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["results"]) == 3
    # one byte under its size, the same limit refuses it with 413 wherever it is checked
    r = fetch(_datasette_with(museum_db, max_upload_bytes=10_162_097), path, "post", content=image,
              headers={"content-type": "image/png"})
    assert r.status_code == 413 and "upload too large" in r.json()["error"]


def test_wrong_content_type_is_415(ds):
    r = fetch(ds, "/museum/-/search.json", "post", content=b'{"q": "x"}', headers={"content-type": "application/json"})
    assert r.status_code == 415 and "unsupported Content-Type" in r.json()["error"]


@pytest.mark.parametrize(
    "query, status, message",
    [
        (f"q=x&model={IMAGE_MODEL}&mode=vector", 400, f"model '{IMAGE_MODEL}' cannot embed text"),
        ("q=x&mode=fuzzy", 400, "mode must be one of vector, keyword, hybrid"),
        ("q=x&model=nope", 404, "unknown model 'nope'"),
        ("q=x&k=0", 400, "k must be a whole number"),
        ("q=x&k=lots", 400, "k must be a whole number"),
        ("q=x&provider=nobody", 400, "unknown provider 'nobody'"),
        ("q=" + "word+" * 1200, 400, "characters; at most"),  # the models module's max_text_length
    ],
)
def test_bad_search_parameters(ds, query, status, message):
    r = fetch(ds, f"/museum/-/search.json?{query}")
    assert r.status_code == status and message in r.json()["error"]
    r = fetch(ds, f"/museum/-/search?{query}")
    assert r.status_code == status and message.replace("'", "&#39;") in r.text


def test_image_with_a_text_only_model_is_400(ds):
    r = fetch(ds, f"/museum/-/search.json?model={FAKE_TEXT_MODEL}", "post",
              content=(IMAGES / "SK-C-5.jpg").read_bytes(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 400 and "cannot embed images" in r.json()["error"]
