"""End to end in headless Chromium against a real ``datasette`` server on 127.0.0.1.

The database holds the real collection images embedded with the real built-in
``colour-layout-v1`` model; Datasette itself serves the image files (``--static``),
so the gallery shows real pictures.  Screenshots go to docs/screenshots/ for the README.
"""
import os
import pathlib

import pytest

from tests.helpers import CHROMIUM, free_port, launch_chromium, serving_datasette

from tests.gallery_fixtures import EVIL_DEPICTION, IMAGES, build_database, rid

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs /usr/bin/chromium")
    pytest.importorskip("playwright")
    port = free_port()
    folder = tmp_path_factory.mktemp("browser")
    # "museum" is the real collection only (the screenshots); "hostile" adds the hostile records.
    # Previews must be absolute http(s) URLs, so the data names the port before the server starts.
    db = build_database(folder, image_base_url=f"http://127.0.0.1:{port}/images/", test_records=False)
    hostile = build_database(folder, image_base_url=f"http://127.0.0.1:{port}/images/", name="hostile")
    with serving_datasette([db, hostile, "--static", f"images:{IMAGES}"], folder, port=port) as (base, _proc):
        yield base, db, hostile


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()


def images_loaded(page, selector: str) -> int:
    page.wait_for_function(
        f"Array.from(document.querySelectorAll('{selector}')).every(i => i.complete)", timeout=15000)
    return page.evaluate(f"Array.from(document.querySelectorAll('{selector}')).filter(i => i.naturalWidth > 0).length")


def test_gallery_record_and_walk(server, page):
    base, db, hostile = server
    page.goto(f"{base}/museum/-/gallery?model=colour-layout-v1")
    cards = page.locator(".emb-card")
    assert cards.count() == 6
    assert images_loaded(page, ".emb-card img") == 6  # every real image loaded
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "gallery.png"), full_page=True)

    page.get_by_role("link", name="Portrait of Erasmus (print; title unverified)").first.click()
    page.wait_for_selector(".emb-record-title")
    assert "Portrait of Erasmus" in page.locator("h1.emb-record-title").inner_text()
    similar = page.locator(".emb-grid .emb-card")
    assert similar.count() == 5  # every other real image
    titles = similar.locator(".emb-title").all_inner_texts()
    assert titles[:2] == ["Portrait of Erasmus (print; title unverified)"] * 2  # the two other prints
    values = [float(v) for v in page.locator(".emb-sim-value").all_inner_texts()]
    assert values == sorted(values, reverse=True) and values[0] > 0.9
    widths = page.eval_on_selector_all(".emb-bar > span", "els => els.map(e => e.getBoundingClientRect().width)")
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    images_loaded(page, "img")
    page.screenshot(path=str(SHOTS / "record.png"), full_page=True)

    # walk: a neighbour's card opens its own record page
    href = similar.nth(2).locator("a.emb-thumb").get_attribute("href")
    similar.nth(2).locator("a.emb-thumb").click()
    page.wait_for_url(f"**{href}")
    assert page.locator(".emb-grid .emb-card").count() == 5

    # only other providers: no Rijksmuseum results
    page.goto(f"{base}/museum/-/gallery/{rid(db, 'rijksmuseum', 'RP-P-1906-1485')}")
    page.get_by_role("link", name="Only other providers").click()
    page.wait_for_url("**exclude_provider=rijksmuseum**")
    assert "rijksmuseum" not in " ".join(page.locator(".emb-grid .emb-card").evaluate_all(
        "els => els.map(e => e.querySelector('a').href)"))
    assert "Rijksmuseum" not in page.locator(".emb-grid").inner_text()
    assert page.dialogs == []


def test_upload_an_image_and_see_results(server, page):
    base, _, _ = server
    page.goto(f"{base}/museum/-/search")
    page.set_input_files("input[type=file]", str(IMAGES / "SK-C-5.jpg"))
    page.locator("input[type=submit][value='Find similar']").click()
    page.wait_for_selector(".emb-grid .emb-card")
    assert page.locator(".emb-grid .emb-title").first.inner_text() == "The Night Watch"
    assert float(page.locator(".emb-sim-value").first.inner_text()) > 0.99
    assert "result" in page.locator("h2").last.inner_text()
    images_loaded(page, ".emb-card:nth-child(-n+6) img")
    page.screenshot(path=str(SHOTS / "search.png"), full_page=True)


def test_hostile_record_opens_no_dialog(server, page):
    base, db, hostile = server
    evil = rid(hostile, "evil", EVIL_DEPICTION)
    page.goto(f"{base}/hostile/-/gallery/{evil}")
    page.goto(f"{base}/hostile/-/gallery?provider=evil")
    for link in page.locator(".emb-card a").all():
        href = link.get_attribute("href") or ""
        assert href.startswith("/") or href.startswith("http"), href
    page.locator(".emb-card a.emb-thumb").first.click()
    page.wait_for_selector(".emb-record-title")
    assert "<script>" in page.locator(".emb-record-title").inner_text()  # shown as text
    page.goto(f"{base}/hostile/records?provider=evil")
    page.goto(f"{base}/hostile/records?provider=evil&_embeddings=table")
    page.goto(f"{base}/hostile/-/search")
    page.set_input_files("input[type=file]", str(IMAGES / "SK-C-5.jpg"))
    page.locator("input[type=submit][value='Find similar']").click()
    page.wait_for_selector(".emb-grid .emb-card")
    assert "<script>alert('title')</script>Evil" in page.locator(".emb-grid .emb-title").all_inner_texts()[:2]
    page.wait_for_timeout(300)
    assert page.dialogs == []


def test_phone_layout_has_two_columns(server, browser):
    base, _, _ = server
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = context.new_page()
    page.goto(f"{base}/museum/-/gallery?model=colour-layout-v1")
    lefts = page.eval_on_selector_all(".emb-card", "els => els.map(e => Math.round(e.getBoundingClientRect().left))")
    assert len(set(lefts)) == 2
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    images_loaded(page, ".emb-card:nth-child(-n+4) img")  # the rest load lazily when scrolled to
    page.screenshot(path=str(SHOTS / "gallery-phone.png"))
    context.close()
