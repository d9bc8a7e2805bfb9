"""The map and clusters pages in headless Chromium, on the shipped demo collection.

The demo is loaded and mapped with the real commands, served by a real ``datasette``;
the screenshots of the map and of the clusters shared by the Met and Brooklyn go to
docs/screenshots/ for the README tour.
"""
import os
import pathlib

import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from tests.helpers import CHROMIUM, launch_chromium, serving_datasette

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
SHOTS = ROOT / "docs" / "screenshots"
TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs /usr/bin/chromium")
    pytest.importorskip("playwright")
    db = tmp_path_factory.mktemp("browser-map") / "demo.db"
    for args in (["load", str(db), str(DEMO / "data"), "-q"], ["map", str(db)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    with serving_datasette([db, "--static", f"previews:{DEMO / 'previews'}"], db.parent) as (base, _proc):
        yield base, db


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # no network beyond the local server: the Met's own preview URLs are not fetched in tests
    context.route("http*://**", lambda route: route.continue_() if "127.0.0.1" in route.request.url else route.abort())
    page = context.new_page()
    yield page
    context.close()


def _mapped_count(db) -> int:
    from datasette_embeddings.storage.connection import connect

    conn = connect(str(db))
    try:
        return conn.execute("select count(*) from projection_points where model = ?", [TEXT_MODEL]).fetchone()[0]
    finally:
        conn.close()


def painted_pixels(page) -> int:
    return page.evaluate("""() => {
        const c = document.getElementById('emb-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) n++;
        return n;
    }""")


def test_map_draws_every_point_hovers_and_clicks_through(server, page):
    base, db = server
    page.goto(f"{base}/demo/-/map?model={TEXT_MODEL}")
    page.wait_for_selector("#emb-map[data-loaded='1']", timeout=30000)
    expected = _mapped_count(db)
    assert page.evaluate("embMap.count()") == expected
    page.wait_for_function(f"embMap.drawn() == {expected}")
    assert painted_pixels(page) > 5000
    page.select_option("#emb-colour", "cluster")
    assert page.locator("#emb-legend li").count() > 10
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "map.png"))

    # hover a point: its title appears beside the pointer
    rid, x, y = page.evaluate("embMap.firstVisible()")
    box = page.locator("#emb-map").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#emb-tip:not([hidden]) strong", timeout=10000)
    shown = int(page.get_attribute("#emb-tip", "data-record-id"))
    title = page.locator("#emb-tip strong").inner_text()
    assert title and title != "…"

    # click: the record page of the hovered record
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_url(f"**/demo/-/gallery/{shown}")
    assert page.locator("h1.emb-record-title").inner_text() == title


def test_zoom_and_pan_redraw(server, page):
    base, _ = server
    page.goto(f"{base}/demo/-/map?model={TEXT_MODEL}")
    page.wait_for_selector("#emb-map[data-loaded='1']", timeout=30000)
    box = page.locator("#emb-map").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = page.evaluate("embMap.drawn()")
    page.mouse.move(cx, cy)
    for _ in range(6):
        page.mouse.wheel(0, -400)
    page.wait_for_function(f"embMap.drawn() < {before}")  # zoomed in: fewer points on screen
    zoomed = page.evaluate("embMap.drawn()")
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 300, cy + 200, steps=5)
    page.mouse.up()
    page.wait_for_function(f"embMap.drawn() != {zoomed}")
    page.click("#emb-reset")
    page.wait_for_function(f"embMap.drawn() == {before}")


def test_box_selection_opens_the_records_with_more_like_these(server, page):
    base, _ = server
    page.goto(f"{base}/demo/-/map?model={TEXT_MODEL}")
    page.wait_for_selector("#emb-map[data-loaded='1']", timeout=30000)
    rid, x, y = page.evaluate("embMap.firstVisible()")
    box = page.locator("#emb-map").bounding_box()
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + x - 3, box["y"] + y - 3)
    page.mouse.down()
    page.mouse.move(box["x"] + x + 3, box["y"] + y + 3, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    link = page.locator("#emb-more-like-these")
    link.wait_for()
    assert f"id={int(rid)}" in link.get_attribute("href")
    link.click()
    page.wait_for_selector("h1")
    assert page.locator("h1").inner_text().startswith("More like these")
    assert page.locator(".emb-card").count() > 1

    # a box around everything is over the limit, and says so
    page.goto(f"{base}/demo/-/map?model={TEXT_MODEL}")
    page.wait_for_selector("#emb-map[data-loaded='1']", timeout=30000)
    box = page.locator("#emb-map").bounding_box()
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + 10, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 10, min(box["y"] + box["height"], 890) - 10, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    assert "at most 500 can be opened" in page.locator("#emb-selection").inner_text()


def test_clusters_shared_by_met_and_brooklyn(server, page):
    base, _ = server
    page.goto(f"{base}/demo/-/clusters?model={TEXT_MODEL}&sort=diversity")
    first = page.locator(".emb-cluster").first
    mix = first.locator(".emb-mix-part").all_inner_texts()
    assert len(mix) == 2 and {m.split()[0] for m in mix} == {"met", "brooklyn"}
    page.screenshot(path=str(SHOTS / "clusters.png"))
