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
DIST_NAME = "datasette-museum-embeddings"  # setup.py's name; the test below checks they agree
OUR_TEMPLATES = sorted(p.name for p in (ROOT / "templates").glob("*.html"))


def test_the_templates_we_ship_exist():
    assert {"embeddings_gallery.html", "embeddings_record.html", "embeddings_search.html", "embeddings_overview.html",
            "embeddings_error.html", "_table.html", "query.html"} <= set(OUR_TEMPLATES)


def test_datasette_lists_our_templates_from_the_installed_package():
    plugins = fetch(Datasette([]), "/-/plugins.json").json()
    # found by its hooks: an environment installed before the rename lists the old distribution name
    (ours,) = [p for p in plugins if "register_routes" in p["hooks"] and "canned_queries" in p["hooks"]]
    assert ours["name"] in (DIST_NAME, "datasette-embeddings")
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
    (whl,) = out.glob("datasette_museum_embeddings-*.whl")
    return whl


def test_wheel_contains_the_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packaged = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("datasette_embeddings/templates/") and n.endswith(".html"))
    assert packaged == OUR_TEMPLATES
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "embeddings = datasette_embeddings" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_contains_the_map_script(wheel):
    assert "datasette_embeddings/static/map.js" in zipfile.ZipFile(wheel).namelist()


def test_wheel_contains_the_stylesheet(wheel):
    assert "datasette_embeddings/static/embeddings.css" in zipfile.ZipFile(wheel).namelist()


def test_wheel_is_the_one_the_readme_publishes(wheel):
    """README's publish line installs the wheel `pip wheel` builds, under our distribution name."""
    readme = (ROOT / "README.md").read_text()
    assert f"--install 'wheels/{wheel.name}" in readme or f"--install wheels/{wheel.name}" in readme


def test_setup_and_readme_use_our_own_distribution_name():
    """'datasette-embeddings' on PyPI is another project: README must never tell people to install it."""
    import re

    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'name="([^"]+)"', setup).group(1) == DIST_NAME
    readme = (ROOT / "README.md").read_text()
    installs = re.findall(r"pip install[^\n`]*", readme) + re.findall(r"--install[= ]\S+", readme)
    wrong = [line for line in installs if re.search(r"(?<![-\w])datasette-embeddings(?![-\w])", line)
             and "uninstall" not in line]
    assert wrong == []
    assert f"pip install {DIST_NAME}" in readme
