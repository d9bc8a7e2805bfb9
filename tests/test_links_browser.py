"""The demo's links page in headless Chromium against a real ``datasette`` server.

The database is the demo's real data (Met titles and Brooklyn texts under
all-MiniLM-L6-v2, the vectors shipped in demo/data), linked with the real
``datasette-embeddings links`` command; the server is started as ``make demo``
starts it (metadata.yml, the previews folder).  Writes docs/screenshots/links.png.
"""
import os
import pathlib
import subprocess
import sys

import pytest

from tests.helpers import CHROMIUM, launch_chromium, serving_datasette

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM) or not (ROOT / "demo" / "data").exists():
        pytest.skip("needs /usr/bin/chromium and demo/data")
    pytest.importorskip("playwright")
    bin_dir = pathlib.Path(sys.executable).parent
    db = tmp_path_factory.mktemp("links-browser") / "demo.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([str(bin_dir / "datasette-embeddings"), "load", str(db), str(ROOT / "demo" / "data"), "-q"],
                   check=True, env=env)
    subprocess.run([str(bin_dir / "datasette-embeddings"), "links", str(db), "--from", "met", "--to", "brooklyn",
                    "--model", MINILM, "--k", "3", "-q"], check=True, env=env)
    with serving_datasette(["serve", db, "--metadata", ROOT / "metadata.yml",
                            "--static", f"previews:{ROOT / 'demo' / 'previews'}"], db.parent, env=env) as (base, _proc):
        yield base


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


def test_links_page_shows_pairs_and_walks_to_the_next_page(server, page):
    page.goto(f"{server}/demo/-/links?model={MINILM}&from=met&size=10")
    links = page.locator("li.emb-link")
    assert links.count() == 10
    first = links.nth(0)
    assert first.locator("article.emb-card").count() == 2  # both records, side by side
    assert "The Metropolitan Museum of Art" in first.locator("article.emb-card").nth(0).inner_text()
    assert "Brooklyn Museum" in first.locator("article.emb-card").nth(1).inner_text()
    sims = [float(s) for s in page.locator(".emb-link-sim").all_inner_texts()]
    assert sims == sorted(sims, reverse=True) and 0 < sims[-1] <= sims[0] <= 1
    assert page.locator(".emb-notice").count() == 0  # stored and current: nothing to warn about
    page.screenshot(path=str(SHOTS / "links.png"), full_page=False)
    seen = set(page.locator("li.emb-link").evaluate_all("els => els.map(e => e.dataset.linkId)"))
    page.click("a[rel=next]")
    page.wait_for_load_state()
    after = page.locator("li.emb-link").evaluate_all("els => els.map(e => e.dataset.linkId)")
    assert len(after) == 10 and not seen & set(after)
    more = [float(s) for s in page.locator(".emb-link-sim").all_inner_texts()]
    assert max(more) <= min(sims)
    assert page.dialogs == []


def test_filter_form_and_on_the_fly_notice(server, page):
    page.goto(f"{server}/demo/-/links")
    page.select_option("select[name=model]", MINILM)
    page.select_option("select[name=from]", "brooklyn")  # no stored run from brooklyn: computed on the fly
    page.fill("input[name=min]", "0.5")
    page.click(".emb-link-filters input[type=submit]")
    page.wait_for_load_state()
    assert "from=brooklyn" in page.url and "min=0.5" in page.url
    notice = page.locator(".emb-notice").inner_text()
    assert "computed on the fly" in notice and "3,985 records of brooklyn" in notice
    sims = [float(s) for s in page.locator(".emb-link-sim").all_inner_texts()]
    assert sims and min(sims) >= 0.5
    assert "Brooklyn Museum" in page.locator("li.emb-link").nth(0).locator("article.emb-card").nth(0).inner_text()
