"""Datasette finds our templates from the editable install and from a built wheel."""
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest
from datasette.app import Datasette

from tests.gallery_fixtures import fetch

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUR_TEMPLATES = sorted(p.name for p in (ROOT / "templates").glob("*.html"))


def test_the_templates_we_ship_exist():
    assert {"embeddings_gallery.html", "embeddings_record.html", "embeddings_search.html", "embeddings_overview.html",
            "embeddings_error.html", "_table.html", "query.html"} <= set(OUR_TEMPLATES)


def test_datasette_lists_our_templates_from_the_installed_package():
    plugins = fetch(Datasette([]), "/-/plugins.json").json()
    (ours,) = [p for p in plugins if p["name"] == "datasette-embeddings"]
    assert ours["templates"] is True
    assert {"register_routes", "render_cell", "canned_queries", "table_actions", "database_actions"} <= set(ours["hooks"])


def test_package_templates_dir_is_the_top_level_templates():
    import datasette_embeddings

    package_templates = pathlib.Path(datasette_embeddings.__file__).parent / "templates"
    assert sorted(p.name for p in package_templates.glob("*.html")) == OUR_TEMPLATES


def test_overview_renders_from_the_plugin_templates():
    r = fetch(Datasette([]), "/-/embeddings")
    assert r.status_code == 200 and "No database here holds embeddings yet" in r.text


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    """Built from a copy of the checkout, so setuptools' build/ never lands in the shared tree."""
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "checkout"
    shutil.copytree(ROOT, source, symlinks=True,
                    ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.db"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (whl,) = out.glob("datasette_embeddings-*.whl")
    return whl


def test_wheel_contains_the_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packaged = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("datasette_embeddings/templates/") and n.endswith(".html"))
    assert packaged == OUR_TEMPLATES
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "embeddings = datasette_embeddings" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_contains_the_map_script(wheel):
    assert "datasette_embeddings/static/map.js" in zipfile.ZipFile(wheel).namelist()
