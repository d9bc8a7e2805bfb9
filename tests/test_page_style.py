"""Every page we add is a Datasette page: Datasette's base template and app.css, then our one stylesheet.

Issue 16 asked for "one visual style that fits Datasette's".  These tests fail if a page stops
extending Datasette's ``base.html`` (no header with breadcrumbs, no footer, no app.css), if it
brings its own inline styles back, or if our stylesheet starts setting fonts of its own.  Run on the
demo data (as `make demo` loads it), with links, a map and judgements so every page has content.
"""
import pathlib
import re

import pytest
import yaml
from click.testing import CliRunner
from datasette.app import Datasette

from datasette_embeddings import cli
from tests.gallery_fixtures import fetch
from tests.test_tour import makefile_demo_files

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMAGE_MODEL = "colour-layout-v1"
TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = tmp_path_factory.mktemp("style") / "demo.db"
    runner = CliRunner()
    for args in (
        ["load", str(db), *[str(ROOT / f) for f in makefile_demo_files()]],
        ["links", str(db), "--from", "rijksmuseum", "--to", "met", "--model", IMAGE_MODEL, "--k", "2", "--quiet"],
        ["judgements", "import", str(db), str(ROOT / "demo" / "judgements.csv")],
        ["map", str(db), "--model", IMAGE_MODEL],
    ):
        done = runner.invoke(cli.cli, args, catch_exceptions=False)
        assert done.exit_code == 0, (args, done.output)
    metadata = yaml.safe_load((ROOT / "metadata.yml").read_text())
    return Datasette(immutables=[str(db)], metadata=metadata, static_mounts=[("previews", str(ROOT / "demo" / "previews"))])


def _first_cluster(ds) -> str:
    return str(fetch(ds, f"/demo/-/clusters.json?model={IMAGE_MODEL}").json()["clusters"][0]["cluster"])


#: (path, status): every kind of page we add, and the Datasette pages where our cards appear
PAGES = [
    ("/-/embeddings", 200),
    (f"/-/embeddings/compare?database=demo&a={IMAGE_MODEL}&b={TEXT_MODEL}&k=1", 200),
    (f"/-/embeddings/compare?database=demo&a={IMAGE_MODEL}&b={TEXT_MODEL}&k=5", 400),  # too few shared objects
    ("/demo/-/gallery", 200),
    ("/demo/-/gallery?q=portrait+lady", 200),
    ("/demo/-/gallery?q=zzzqqq", 200),
    ("/demo/-/record/met/DP159891", 200),
    ("/demo/-/search", 200),
    ("/demo/-/search?q=storm&mode=keyword", 200),
    (f"/demo/-/links?model={IMAGE_MODEL}", 200),
    ("/demo/-/links/evaluation", 200),
    (f"/demo/-/map?model={IMAGE_MODEL}", 200),
    (f"/demo/-/clusters?model={IMAGE_MODEL}", 200),
    ("CLUSTER", 200),
    ("/demo/-/gallery/999999999", 404),
    ("/demo/cross_provider_links", 200),
    (f"/demo/cross_provider_links?model={IMAGE_MODEL}&provider_a=rijksmuseum&provider_b=met&threshold=0", 200),
    ("/demo/records", 200),
]


def _get(ds, path: str):
    if path == "CLUSTER":
        path = f"/demo/-/clusters/{_first_cluster(ds)}?model={IMAGE_MODEL}"
    r = fetch(ds, path)
    if r.status_code in (301, 302):
        r = fetch(ds, r.headers["location"])
    return r


@pytest.mark.parametrize("path, status", PAGES)
def test_each_page_is_a_datasette_page_with_our_one_stylesheet(site, path, status):
    r = _get(site, path)
    if status is not None:
        assert r.status_code == status, (path, r.text[:300])
    html = r.text
    # Datasette's base.html: app.css first, the header with its breadcrumbs, the content section, the footer
    assert re.search(r'<link rel="stylesheet" href="/-/static/app\.css\?', html), path
    assert "<header><nav>" in html and 'class="crumbs"' in html, path
    assert '<section class="content">' in html and '<footer class="ft">' in html, path
    # ours, once, after app.css, as a versioned file of the plugin (never inline)
    ours = re.findall(r'<link rel="stylesheet" href="(/-/static-plugins/[^/"]+/embeddings\.css\?[0-9a-f]+)">', html)
    assert len(ours) == 1, path
    assert html.index("/-/static/app.css") < html.index(ours[0])
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html, flags=re.S)
    if "/-/" in path or path == "CLUSTER":
        # our pages: no inline styles; titled as Datasette's are, with the content in our scope
        assert styles == [], f"{path} carries inline styles of its own"
        assert 'class="page-header"' in html and '<div class="emb">' in html, path
    else:
        # Datasette's pages keep Datasette's own inline styles, and gain none of ours
        assert not any(".emb" in s or "form.sql" in s for s in styles), path


def test_our_stylesheet_is_served_and_leaves_fonts_and_colours_to_datasette(site):
    html = fetch(site, "/demo/-/gallery").text
    url = re.search(r'href="(/-/static-plugins/[^"]+/embeddings\.css)\?', html).group(1)
    r = fetch(site, url)
    assert r.status_code == 200 and "text/css" in r.headers["content-type"]
    css = r.text
    # no font of our own: only Datasette's Helvetica (form fields) and monospace (untrusted text)
    fonts = set(re.findall(r"font-family:\s*([^;}]+)", css))
    assert fonts <= {"Helvetica, sans-serif", "monospace"}, fonts
    assert "serif;" not in css.replace("sans-serif;", "")
    # app.css's colours for links and buttons, not a palette of our own
    assert "#276890" in css and "#007bff" in css
    # every rule is scoped to our pages' .emb wrapper, except the two canned-query fixes
    selectors = [s.strip() for block in re.findall(r"([^{}]+)\{[^{}]*\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S))
                 for s in block.split(",") if s.strip() and not s.strip().startswith("@")]
    unscoped = {s for s in selectors if not s.startswith(".emb") and not s.startswith("form.sql")}
    assert unscoped == set(), unscoped
