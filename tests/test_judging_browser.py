"""Judging and evaluation in headless Chromium, on the demo data, against a real ``datasette`` server.

A curator signed in (the ``ds_actor`` cookie Datasette's ``--root`` would set) clicks a
verdict on the links page and lands back on it with the verdict shown; a visitor sees
verdicts but no buttons; the evaluation page draws MiniLM's line.  Screenshots go to
docs/screenshots/ for the README.
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
SECRET = "judging-browser-test-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs /usr/bin/chromium")
    pytest.importorskip("playwright")
    db = tmp_path_factory.mktemp("judging") / "demo.db"
    runner = CliRunner()
    for args in (
        ["load", str(db), str(DEMO / "data"), "--quiet"],
        ["links", str(db), "--from", "met", "--to", "brooklyn", "--model", TEXT_MODEL, "--k", "5", "--quiet"],
        ["judgements", "import", str(db), str(DEMO / "judgements.csv")],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DATASETTE_SECRET": SECRET}
    with serving_datasette([db], db.parent, env=env) as (base, _proc):
        yield base, db


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as b:
        yield b


def root_cookie() -> str:
    from datasette.app import Datasette

    return Datasette(secret=SECRET).sign({"a": {"id": "root"}}, "actor")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def test_a_curator_judges_a_link_and_sees_it(server, page):
    base, db = server
    page.context.add_cookies([{"name": "ds_actor", "value": root_cookie(), "url": base}])
    url = f"{base}/demo/-/links?model={TEXT_MODEL}&size=6"
    page.goto(url)
    links = page.locator("li.emb-link")
    assert links.count() == 6
    assert page.locator("form.emb-judge-form").count() == 6
    # the first link (0.834) carries the demo curator's verdict
    assert links.nth(0).locator(".emb-verdict").first.inner_text() == "similar object"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "links-judging.png"), full_page=False)
    third = links.nth(2)
    third.locator("input[name=note]").fill("checked in the browser")
    third.locator("button[value='same category']").click()
    page.wait_for_load_state()
    assert page.url == url.replace(" ", "%20") or page.url.endswith("size=6")
    verdicts = page.locator("li.emb-link").nth(2).locator(".emb-judgement")
    assert "same category" in verdicts.first.inner_text()
    assert "root" in verdicts.first.inner_text() and "checked in the browser" in verdicts.first.inner_text()


def test_a_visitor_sees_verdicts_without_buttons(server, page):
    base, _ = server
    page.goto(f"{base}/demo/-/links?model={TEXT_MODEL}&size=6")
    assert page.locator("form.emb-judge-form").count() == 0
    assert page.locator("li.emb-link").nth(0).locator(".emb-verdict").first.inner_text() == "similar object"


def test_the_evaluation_chart_draws_minilm(server, page):
    base, _ = server
    page.goto(f"{base}/demo/-/links/evaluation")
    chart = page.locator("svg.emb-chart")
    assert chart.is_visible()
    series = page.locator("g.emb-chart-series")
    assert series.count() == 1 and series.first.get_attribute("data-model") == TEXT_MODEL
    assert page.locator("g.emb-chart-series polyline").count() == 1
    box = chart.bounding_box()
    assert box["width"] > 400 and box["height"] > 150
    page.screenshot(path=str(SHOTS / "evaluation.png"), full_page=True)
