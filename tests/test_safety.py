"""Third-party attributes are untrusted: escaped text everywhere, only http(s) URLs as href/src."""
import re

import pytest

from datasette_embeddings.web.page_hooks import render_cell
from datasette_embeddings.web.safe_urls import safe_http_url
from tests.gallery_fixtures import (  # noqa: F401
    DATA_PREVIEW, EVIL_DEPICTION, EVIL_PREVIEW, EVIL_TITLE, FAKE_TEXT_MODEL, IMAGE_MODEL, ds, fetch, museum_db, rid,
)

UNSAFE_ATTRIBUTE = re.compile(r"""\b(href|src|action|formaction)\s*=\s*["']?\s*(javascript|data|vbscript):""", re.I)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://example.org/a.jpg", "https://example.org/a.jpg"),
        ("http://example.org/a b", None),
        ("  https://example.org/x  ", "https://example.org/x"),
        ("HTTPS://EXAMPLE.ORG/", "HTTPS://EXAMPLE.ORG/"),
        ("javascript:alert(1)", None),
        ("JaVaScRiPt:alert(1)", None),
        (" javascript:alert(1)", None),
        ("java\tscript:alert(1)", None),
        ("data:image/png;base64,AAAA", None),
        ("vbscript:msgbox", None),
        ("//evil.example/x.jpg", None),
        ("/relative/path.jpg", "/relative/path.jpg"),
        ("/\\evil.example/x.jpg", None),
        ("/%2F/evil.example", "/%2F/evil.example"),
        ("https:///nohost", None),
        ("ftp://example.org/a.jpg", None),
        ("https://exa\x00mple.org", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_safe_http_url(value, expected):
    assert safe_http_url(value) == expected


def assert_safe(html: str) -> None:
    assert not UNSAFE_ATTRIBUTE.search(html), UNSAFE_ATTRIBUTE.search(html).group(0)
    assert "<script>alert" not in html
    assert "<img src=x onerror" not in html
    assert "<b>Evil</b>" not in html


def evil_pages(museum_db) -> list[str]:
    evil_image = rid(museum_db, "evil", EVIL_DEPICTION)
    evil_text = rid(museum_db, "evil", EVIL_DEPICTION, FAKE_TEXT_MODEL)
    night_watch = rid(museum_db, "rijksmuseum", "SK-C-5")
    return [
        "/museum/-/gallery?provider=evil",
        "/museum/-/gallery",
        f"/museum/-/gallery/{evil_image}",
        f"/museum/-/gallery/{evil_text}",
        f"/museum/-/gallery/{night_watch}",  # the evil twin is its nearest neighbour
        "/museum/-/search?q=Evil+Night+Watch",
        "/museum/-/search?q=data+preview",
        "/museum/records?provider=evil",
        "/museum/records?provider=evil&_embeddings=table",
        f"/museum/records/{evil_image}",
        f"/museum/similar_records?provider=rijksmuseum&depiction_id=SK-C-5&model={IMAGE_MODEL}&k=3",
        f"/museum/near_duplicates?model={IMAGE_MODEL}&threshold=0.9",
        "/museum/-/gallery?provider=%3Cscript%3Ealert(1)%3C/script%3E",
        "/museum/-/gallery/1?k=%3Cscript%3Ealert(1)%3C/script%3E",
        "/-/embeddings",
    ]


def test_every_page_escapes_text_and_drops_unsafe_urls(ds, museum_db):
    for path in evil_pages(museum_db):
        r = fetch(ds, path)
        assert r.status_code in (200, 400), (path, r.status_code)
        assert_safe(r.text)


def test_evil_title_and_preview_show_as_plain_text(ds, museum_db):
    evil_image = rid(museum_db, "evil", EVIL_DEPICTION)
    html = fetch(ds, f"/museum/-/gallery/{evil_image}").text
    assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;Evil" in html
    assert "javascript:alert(1)</div>" in html  # the preview, as words
    assert "&lt;img src=x onerror=alert(4)&gt;" in html  # the credit line
    gallery = fetch(ds, "/museum/-/gallery?provider=evil").text
    assert "data:text/html,&lt;script&gt;alert(3)&lt;/script&gt;" in gallery


def test_json_carries_no_unsafe_urls(ds, museum_db):
    evil_image = rid(museum_db, "evil", EVIL_DEPICTION)
    data = fetch(ds, f"/museum/-/gallery/{evil_image}.json").json()
    record = data["record"]
    assert record["preview_url"] is None and record["subject_url"] is None
    assert record["provider_url"] is None and record["depiction_url"] is None
    assert record["text"] == EVIL_PREVIEW and record["title"] == EVIL_TITLE  # JSON is data; consumers escape
    cards = fetch(ds, "/museum/-/gallery.json?provider=evil").json()["items"]
    assert {c["text"] for c in cards} == {EVIL_PREVIEW, DATA_PREVIEW}
    assert all(c["preview_url"] is None for c in cards)


@pytest.mark.parametrize(
    "value, column",
    [
        (EVIL_PREVIEW, "preview"),
        (DATA_PREVIEW, "preview"),
        ("javascript:alert(1)//.jpg", "preview_url"),
        ("https://example.org/page.html", "subject_url"),
        (12, "preview"),
    ],
)
def test_render_cell_leaves_unsafe_or_non_image_values_to_datasette(value, column):
    assert render_cell(value, column) is None


def test_render_cell_thumbnail_is_escaped():
    html = str(render_cell('https://example.org/a.jpg?x="><script>alert(1)</script>', "preview"))
    assert "<script>" not in html and "&#34;&gt;&lt;script&gt;" in html
    html = str(render_cell('{"preview": "https://example.org/a.jpg", "subject_title": "<script>x</script>"}', "attributes"))
    assert 'src="https://example.org/a.jpg"' in html and "<script>" not in html


def test_attributes_render_as_a_list_where_only_http_values_are_links():
    html = str(render_cell('{"preview": "javascript:alert(1)", "type": "image", "subject_url": "https://example.org/o/1", '
                           '"subject_title": "<b>x</b>", "n": 3}', "attributes"))
    assert "<img" not in html and 'href="javascript' not in html and "javascript:alert(1)" in html  # as text
    assert '<dt>subject_url</dt><dd><a href="https://example.org/o/1"' in html
    assert "<dt>subject_title</dt><dd>&lt;b&gt;x&lt;/b&gt;</dd>" in html and "<dt>n</dt><dd>3</dd>" in html


def test_created_is_a_date_in_the_records_table(ds):
    assert str(render_cell(1_700_000_000, "created", "records")) == (
        '<time datetime="2023-11-14T22:13:20Z" title="1700000000">2023-11-14 22:13 UTC</time>')
    assert render_cell(1_700_000_000, "created", "other_table") is None
    html = fetch(ds, "/museum/records?_embeddings=table").text
    assert "2023-11-14 22:13 UTC</time>" in html and '<dl class="emb-cell-attrs"' in html


def test_preview_urls_render_as_thumbnails_in_any_table(ds):
    html = fetch(ds, "/museum/records?provider=rijksmuseum&_embeddings=table").text
    assert '<img src="https://images.example.org/SK-C-5.jpg"' in html
