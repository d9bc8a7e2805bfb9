"""Every HTML page declares its language; other responses pass untouched."""
from tests.gallery_fixtures import ds, fetch, museum_db  # noqa: F401


def test_pages_have_lang_and_a_correct_length(ds):
    for path in ["/", "/museum", "/museum/records", "/museum/-/gallery", "/museum/-/search", "/-/embeddings",
                 "/museum/-/gallery/99999"]:
        r = fetch(ds, path)
        assert '<html lang="en">' in r.text[:500], path
        if "content-length" in r.headers:
            assert int(r.headers["content-length"]) == len(r.content), path


def test_json_is_untouched(ds):
    r = fetch(ds, "/museum/-/gallery.json?size=1")
    assert r.json()["ok"] is True and "lang" not in r.text[:20]
