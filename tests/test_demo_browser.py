"""The demo in headless Chromium, as `make demo` serves it: README screenshots, phone widths, accessibility.

A real ``datasette serve -i`` runs on the demo database (loaded as the Makefile loads it) with
metadata.yml, the shipped previews and ``--cors``.  The README's screenshots of the demo are taken
here (docs/screenshots/demo-*.png).
"""
import os
import pathlib

import pytest

from click.testing import CliRunner

from datasette_embeddings import cli
from datasette_embeddings.files import loader
from tests.helpers import launch_chromium, serving_datasette
from tests.test_browser import CHROMIUM, images_loaded
from tests.test_tour import makefile_demo_files

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs /usr/bin/chromium")
    pytest.importorskip("playwright")
    db = tmp_path_factory.mktemp("demo-browser") / "demo.db"
    loader.load(str(db), [str(ROOT / f) for f in makefile_demo_files()])
    # links, judgements and a map of the small image model, so the links, evaluation, map and
    # clusters pages have content to lay out (the MiniLM ones take minutes; test_tour builds those)
    for args in (["links", str(db), "--from", "rijksmuseum", "--to", "met", "--model", "colour-layout-v1", "--k", "2", "--quiet"],
                 ["judgements", "import", str(db), str(ROOT / "demo" / "judgements.csv")],
                 ["map", str(db), "--model", "colour-layout-v1"]):
        done = CliRunner().invoke(cli.cli, args, catch_exceptions=False)
        assert done.exit_code == 0, (args, done.output)
    args = ["serve", "-i", db, "--metadata", ROOT / "metadata.yml", "--static", f"previews:{ROOT / 'demo' / 'previews'}",
            "--cors", "--setting", "sql_time_limit_ms", "10000"]
    with serving_datasette(args, db.parent, timeout=120) as (base, _proc):
        yield base


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as b:
        yield b


def new_page(browser, viewport):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    return context, page


PAGES = [
    "/demo/-/gallery",
    "/demo/-/gallery?q=portrait+lady",
    "/demo/-/record/met/DP159891",
    "/demo/-/record/rijksmuseum/RP-P-1906-1485",
    "/demo/-/search?q=storm&mode=keyword",
    "/-/embeddings",
    "/demo/cross_provider_links?model=colour-layout-v1&provider_a=rijksmuseum&provider_b=met&threshold=0",
    "/demo/near_duplicates?model=colour-layout-v1&threshold=0.9",
    "/demo/records",
    "/demo/-/gallery/999999999",
    "/demo/-/links?model=colour-layout-v1",
    "/demo/-/links/evaluation",
    "/demo/-/map?model=colour-layout-v1",
    "/demo/-/clusters?model=colour-layout-v1",
    "/demo/-/clusters/0?model=colour-layout-v1",
    "/-/embeddings/compare?database=demo&a=colour-layout-v1&b=sentence-transformers/all-MiniLM-L6-v2&k=1",
    "/-/embeddings/compare?database=demo&a=colour-layout-v1&b=sentence-transformers/all-MiniLM-L6-v2&k=5",
    "/demo/-/record/met/436896~23title",
    "/demo/cross_provider_links",
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_fit_a_390_px_phone(demo_server, browser, path):
    context, page = new_page(browser, PHONE)
    try:
        page.goto(demo_server + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width} px wide"
    finally:
        context.close()


HEADING_JUMPS = """() => {
  const levels = Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6')).map(h => +h.tagName[1]);
  const jumps = [];
  levels.forEach((l, i) => { const prev = i ? levels[i - 1] : 0; if (l > prev + 1) jumps.push([prev, l]); });
  return {levels, jumps};
}"""

CARD_TAB_STOPS = """() => Array.from(document.querySelectorAll('.emb-card')).map(card =>
  Array.from(card.querySelectorAll('a[href], button, input, select, textarea, [tabindex]'))
    .filter(e => e.tabIndex >= 0 && !e.closest('[aria-hidden=true]')).length)"""

CARD_NAMES = """() => Array.from(document.querySelectorAll('.emb-card')).map(card =>
  Array.from(card.querySelectorAll('a[href], img'))
    .filter(e => !e.closest('[aria-hidden=true]'))
    .map(e => (e.getAttribute('aria-label') || e.getAttribute('alt') || e.textContent || '').trim())
    .filter(Boolean))"""


@pytest.mark.parametrize("path", PAGES[:6])
def test_accessibility_points(demo_server, browser, path):
    context, page = new_page(browser, {"width": 1280, "height": 900})
    try:
        page.goto(demo_server + path)
        assert page.evaluate("document.documentElement.lang") == "en"
        headings = page.evaluate(HEADING_JUMPS)
        assert headings["levels"] and headings["levels"][0] == 1 and headings["jumps"] == [], headings
        stops = page.evaluate(CARD_TAB_STOPS)
        assert all(n == 1 for n in stops), stops
        for names in page.evaluate(CARD_NAMES):
            assert len(names) == len(set(names)), names  # nothing in a card is announced twice
        assert page.dialogs == []
    finally:
        context.close()


BROKEN_IMAGES_SHOWN = """() => Array.from(document.images)
  .filter(i => i.complete && i.naturalWidth === 0 && !i.hidden && i.getClientRects().length)
  .map(i => i.getAttribute('src'))"""


@pytest.mark.parametrize("path", ["/demo/-/gallery", "/demo/-/gallery?q=storm", "/demo/-/record/met/DP159891"])
def test_no_broken_image_is_shown(demo_server, browser, path):
    """A preview that cannot load (the Met's own image URLs, offline) gives way to the card's text."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context, page = new_page(browser, {"width": 1280, "height": 900})
    try:
        page.goto(demo_server + path)
        # the images in view (lazy ones further down are not fetched yet) have loaded or failed
        page.wait_for_function("Array.from(document.images).filter(i => i.getBoundingClientRect().top < innerHeight)"
                               ".every(i => i.complete)", timeout=20000)
        # a failed image is `complete` before its error event has run the handler that hides it: give
        # the handlers their turn (a few seconds at most) before judging what is shown
        try:
            page.wait_for_function(f"({BROKEN_IMAGES_SHOWN})().length === 0", timeout=5000)
        except PlaywrightTimeout:
            pass
        assert page.evaluate(BROKEN_IMAGES_SHOWN) == []
        # the two Met paintings whose images ship with the demo show them under their titles too
        if path.startswith("/demo/-/record/"):
            assert page.locator(".emb-depictions img[src='/previews/DP159891.jpg']").evaluate("i => i.naturalWidth > 0")
    finally:
        context.close()


def test_image_search_shows_the_upload_and_scrolls_to_the_results(demo_server, browser):
    context, page = new_page(browser, PHONE)
    try:
        page.goto(demo_server + "/demo/-/search")
        page.set_input_files("input[type=file]", str(ROOT / "demo" / "previews" / "SK-C-5.jpg"))
        page.locator("input[type=submit][value='Find similar']").click()
        page.wait_for_selector("#results .emb-grid .emb-card")
        assert page.locator("#results figure img").evaluate("img => img.complete && img.naturalWidth > 0")
        top = page.locator("#results").evaluate("e => e.getBoundingClientRect().top")
        assert page.evaluate("window.scrollY") > 0 and abs(top) < 50, top  # the results, not the forms, are in view
        assert page.locator("#results .emb-title").first.inner_text() == "The Night Watch, Rembrandt van Rijn (1642)"
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    finally:
        context.close()


def test_readme_screenshots_from_the_demo(demo_server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context, page = new_page(browser, {"width": 1280, "height": 900})
    try:
        page.goto(demo_server + "/demo/-/gallery")
        images_loaded(page, ".emb-card:nth-child(-n+6) img")
        page.screenshot(path=str(SHOTS / "demo-gallery.png"))
        page.goto(demo_server + "/demo/-/record/rijksmuseum/RP-P-1906-1485")
        images_loaded(page, ".emb-hero img")
        page.screenshot(path=str(SHOTS / "demo-record.png"))
        page.goto(demo_server + "/demo/-/search?q=portrait+of+a+woman")
        page.wait_for_selector("#results")
        page.screenshot(path=str(SHOTS / "demo-search.png"))
        page.goto(demo_server + "/demo/-/gallery?q=portrait+lady")
        page.screenshot(path=str(SHOTS / "demo-keyword.png"))
    finally:
        context.close()
    context, page = new_page(browser, PHONE)
    try:
        page.goto(demo_server + "/demo/-/gallery")
        images_loaded(page, ".emb-card:nth-child(-n+4) img")
        page.screenshot(path=str(SHOTS / "demo-gallery-phone.png"))
    finally:
        context.close()
