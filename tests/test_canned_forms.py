"""Canned queries with real forms: checked parameters, select boxes filled from the database."""
import pytest

from tests.gallery_fixtures import FAKE_TEXT_MODEL, IMAGE_MODEL, ds, fetch, museum_db  # noqa: F401


def run(ds, name, **params):
    return fetch(ds, f"/museum/{name}.json", params={**params, "_shape": "array"})


@pytest.mark.parametrize("name, params, message", [
    ("near_duplicates", {"model": IMAGE_MODEL, "threshold": "abc"}, "threshold must be a number from -1 to 1, got 'abc'"),
    ("near_duplicates", {"model": IMAGE_MODEL, "threshold": "2"}, "threshold must be a number from -1 to 1"),
    ("near_duplicates", {"model": "nope", "threshold": "0.5"}, "unknown model 'nope' (known: colour-layout-v1, fake-words-8)"),
    ("cross_provider_links", {"model": IMAGE_MODEL, "provider_a": "rijksmuseum", "provider_b": "nobody", "threshold": "0"},
     "unknown provider_b 'nobody'"),
    ("similar_records", {"model": IMAGE_MODEL, "provider": "rijksmuseum", "depiction_id": "SK-C-5", "k": "ten"},
     "k must be a number from 1 to 1000"),
    ("text_search", {"model": FAKE_TEXT_MODEL, "q": "night", "k": "0"}, "k must be a number from 1 to 1000"),
])
def test_bad_parameters_are_errors_not_empty_results(ds, name, params, message):
    r = run(ds, name, **params)
    assert r.status_code == 400, r.text[:300]
    assert message in r.text


def test_good_parameters_still_answer_and_an_unsubmitted_form_is_no_error(ds):
    r = run(ds, "near_duplicates", model=IMAGE_MODEL, threshold="0.9")
    assert r.status_code == 200 and len(r.json()) >= 1
    page = fetch(ds, "/museum/near_duplicates")
    assert page.status_code == 200 and "must be a number" not in page.text


def test_query_page_carries_the_choices_for_select_boxes(ds):
    import json
    import re

    html = fetch(ds, "/museum/cross_provider_links").text
    blob = re.search(r'<script type="application/json" id="emb-param-choices">(.*?)</script>', html, re.S).group(1)
    choices = json.loads(blob)
    assert choices["model"]["options"] == [IMAGE_MODEL, FAKE_TEXT_MODEL] and choices["model"]["default"] == IMAGE_MODEL
    assert "rijksmuseum" in choices["provider_a"]["options"] and choices["provider_a"]["default"] != choices["provider_b"]["default"]
    assert choices["threshold"]["number"]["min"] == -1 and choices["k"]["number"]["max"] == 1000
    # the defaults are values the query accepts and that return rows
    d = {k: choices[k]["default"] for k in ("model", "provider_a", "provider_b")}
    got = run(ds, "cross_provider_links", threshold=choices["threshold"]["number"]["default"], **d)
    assert got.status_code == 200
