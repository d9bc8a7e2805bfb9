"""README's examples for other sites' developers, run against the demo as `make demo` builds it.

The guided tour has its own test (tests/test_tour.py); this file keeps the rest of what a developer
copies from the README true: every file it names exists, every JSON twin in "The web interface" table
answers, the abridged JSON example holds the values the demo really gives, every SQL example runs,
and the `datasette --get` example prints what the README says.  These drift silently otherwise: a
module is renamed, the demo changes, a field is dropped, and the README still shows the old answer.
"""
from __future__ import annotations

import json
import pathlib
import re
from urllib.parse import quote

import pytest

from tests.gallery_fixtures import fetch
from tests.test_docs import _sections
from tests.test_tour import TEXT_MODEL, demo  # noqa: F401  (the demo fixture, built as `make demo-db` builds it)

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text under the heading ``title``, its subsections included."""
    found = [body for heading, body in _sections(README) if heading == title]
    assert found, f"README has no heading '{title}'"
    return found[0]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, content) of every fenced block, fences paired in order."""
    blocks, language, lines = [], None, []
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and language is None:
            language, lines = fence.group(1), []
        elif fence:
            blocks.append((language, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def fenced(text: str, language: str) -> list[str]:
    return [content for lang, content in code_blocks(text) if lang == language]


# -- files ---------------------------------------------------------------------------------------

# a path into the repository, not a URL path of the demo (/demo/-/gallery)
_REPO_PATH = re.compile(r"(?<![\w/.-])((?:datasette_embeddings|benchmarks|tests|docs|templates|demo)/(?!-/)[\w./-]*\w)")


def test_every_file_the_readme_names_exists():
    named = sorted({m.group(1) for m in _REPO_PATH.finditer(README) if "-/" not in m.group(1)})
    assert len(named) > 20
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, f"README names files that do not exist: {missing}"


def test_every_table_the_migrations_make_is_in_the_database_layout(tmp_path):
    """A migration that adds a table (or a column to ``models`` or ``records``) is documented, or this fails."""
    from datasette_embeddings.storage.connection import connect
    from datasette_embeddings.storage.store import Store

    conn = connect(str(tmp_path / "fresh.db"), readonly=False)
    Store(conn).migrate()
    names = [name for (name,) in conn.execute(
        "select name from sqlite_master where type in ('table', 'view') and name not like 'records_fts_%' "
        "and name not like 'sqlite_%'"
    )]
    layout = section("Database layout")
    rows = {re.match(r"\| `([^`]+)`", line).group(1): line for line in layout.splitlines() if re.match(r"\| `", line)}
    missing = [name for name in names if name not in rows]
    assert not missing, f"tables missing from README's Database layout: {missing}"
    for table in ("records", "models"):
        columns = [row[1] for row in conn.execute(f"pragma table_xinfo({table})")]
        undocumented = [c for c in columns if f"`{c}`" not in rows[table]]
        assert not undocumented, f"columns of {table} missing from README's Database layout: {undocumented}"


# -- the web interface table -------------------------------------------------------------------

def _json_twins() -> list[str]:
    """Every JSON twin of the table in "The web interface", its placeholders filled for the demo."""
    paths = []
    for line in section("The web interface").splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not cells[2].strip().startswith("`/"):
            continue
        page = re.findall(r"`([^`]+)`", cells[1])
        for twin in re.findall(r"`([^`]+\.json[^`]*)`", cells[2]):
            if "/links/judge" in twin:  # a POST, with its own tests (tests/test_judging_web.py)
                continue
            if twin.endswith("?...") and page:  # "the same query as the page"
                twin = twin[:-4] + page[0][page[0].index("?"):]
            paths.append(twin)
    return paths


def _filled(path: str) -> str:
    model = quote(TEXT_MODEL, safe="")
    path = path.replace("<db>", "demo").replace("<id>", "5").replace("<n>", "0")
    path = path.replace("<provider>/<depiction_id>", "met/DP159891")
    path = re.sub(r"=M\b", "=" + model, path)
    # the demo's two models share only two subjects, so their agreement is asked for at k=1
    path = path.replace("database=D&a=A&b=B&k=10", f"database=demo&a=colour-layout-v1&b={model}&k=1")
    path = path.replace("?id=...", "?id=1&id=2")
    assert not re.search(r"<\w+>|=[A-Z]\b|\.\.\.", path), f"placeholder left in {path}"
    return path


def test_the_web_interface_table_lists_the_json_twins():
    twins = _json_twins()
    assert len(twins) >= 12, twins
    assert "/<db>/-/gallery/<id>.json" in twins


@pytest.mark.slow
@pytest.mark.parametrize("twin", _json_twins())
def test_every_json_twin_in_the_web_interface_table_answers(demo, twin):  # noqa: F811
    path = _filled(twin)
    r = fetch(demo, path, follow_redirects=True)
    assert r.status_code == 200, (path, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), path
    assert r.json()["ok"] is True, path


# -- the abridged JSON example -------------------------------------------------------------------

def _example() -> tuple[str, object]:
    title = next(t for t in re.findall(r"^### (Example \(abridged\): .*)$", README, re.M))
    path = re.search(r"`(/[^`]+)`", title).group(1)
    return path, json.loads(fenced(section(title), "json")[0])


def _holds(expected, actual, where: str = "") -> list[str]:
    """What of ``expected`` is not in ``actual``; a ``"..."`` key or list item stands for what was left out."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        problems = []
        for key, value in expected.items():
            if key == "...":
                continue
            if key not in actual:
                problems.append(f"{where}.{key}: missing")
            else:
                problems += _holds(value, actual[key], f"{where}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {actual!r}"]
        shown = [item for item in expected if item != "..."]
        if "..." not in expected and len(actual) != len(expected):
            return [f"{where}: {len(expected)} items shown, {len(actual)} given"]
        if len(actual) < len(shown):
            return [f"{where}: {len(shown)} items shown, {len(actual)} given"]
        problems = []
        for i, item in enumerate(expected):
            if item != "...":
                problems += _holds(item, actual[i], f"{where}[{i}]")
        return problems
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return [] if abs(expected - actual) < 5e-4 else [f"{where}: README {expected}, demo {actual}"]
    return [] if expected == actual else [f"{where}: README {expected!r}, demo {actual!r}"]


def test_holds_reports_what_differs():
    assert _holds({"a": [1, "..."], "...": "..."}, {"a": [1, 2], "b": 3}) == []
    assert _holds({"a": 1}, {"a": 2}) == [".a: README 1, demo 2"]
    assert _holds({"a": [1]}, {"a": [1, 2]}) == [".a: 1 items shown, 2 given"]
    assert _holds({"b": 1}, {}) == [".b: missing"]


@pytest.mark.slow
def test_the_abridged_json_example_is_what_the_demo_answers(demo):  # noqa: F811
    path, expected = _example()
    r = fetch(demo, path)
    assert r.status_code == 200, r.text[:500]
    problems = _holds(expected, r.json())
    assert not problems, f"README's example of {path} differs from the demo: {problems}"


# -- SQL -----------------------------------------------------------------------------------------

def _sql_examples() -> list[str]:
    return [block for block in fenced(README, "sql")]


def _vec_table(ds, label: str) -> str:
    sql = "select vec_table from models where label = :label"
    return fetch(ds, f"/demo.json?_shape=array&sql={quote(sql)}&label={quote(label)}").json()[0]["vec_table"]


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(_sql_examples())))
def test_every_sql_example_runs_on_the_demo(demo, number):  # noqa: F811
    """Examples naming the placeholder CLIP table and label run with the demo's MiniLM model instead
    (its records start at id 7: the six images are loaded first)."""
    sql = _sql_examples()[number]
    sql = sql.replace("id in (1, 2, 3)", "id in (7, 8, 9)")
    sql = sql.replace("vec_clip_vit_b_32_0123abcd", _vec_table(demo, TEXT_MODEL))
    sql = sql.replace("'clip-ViT-B-32'", f"'{TEXT_MODEL}'").replace("'nga'", "'brooklyn'")
    r = fetch(demo, f"/demo.json?_shape=objects&sql={quote(sql)}&id=1")
    assert r.status_code == 200, (sql, r.text[:500])
    data = r.json()
    assert data["ok"], (sql, data.get("error"))
    # only the neighbours table is empty in the demo (`make demo` does not run `neighbours`)
    assert data["rows"] or "from neighbours" in sql, sql


@pytest.mark.slow
def test_the_datasette_get_example_prints_what_the_readme_says(demo):  # noqa: F811
    block = next(b for b in fenced(section("SQL functions"), "bash") if "--get" in b)
    path = re.search(r"--get '([^']+)'", block).group(1)
    printed = re.search(r"^# (\[.*?\])\s", block, re.M).group(1)
    assert fetch(demo, path).json() == json.loads(printed)


# -- command lines -------------------------------------------------------------------------------

def _command_lines() -> list[str]:
    """Every ``datasette-embeddings ...`` line of the README's code blocks, continuation lines joined."""
    lines = []
    for language, block in code_blocks(README):
        if language not in ("bash", "sh", ""):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("datasette-embeddings "):
                lines.append(line.split(" #")[0].strip())
    return lines


def test_every_command_line_in_the_readme_names_real_options():
    """An example that names a command or option the CLI does not have fails here (the reverse of
    tests/test_docs.py, which fails on an option the README does not name)."""
    import shlex

    import click

    from datasette_embeddings.cli import cli

    lines = _command_lines()
    assert len(lines) >= 25, lines
    problems = []
    for line in lines:
        words = shlex.split(line)[1:]
        command: click.Command = cli
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            if words[0] not in command.commands:
                problems.append(f"{line}: no command '{words[0]}'")
                break
            command = command.commands[words.pop(0)]
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        options |= {"--help", "--version"}
        problems += [f"{line}: no option {word}" for word in words
                     if word.startswith("-") and word.split("=")[0] not in options]
    assert not problems, problems


def test_the_readme_never_names_a_renamed_configuration_key():
    """Old key names are still recognised (to say what they became), so an old name in the README
    reads as valid; it is not: `max_image_bytes` in the Limits section outlived its rename."""
    from datasette_embeddings.config import RENAMED

    named = set(re.findall(r"`([\w.]+)`", README))
    stale = sorted(old for old in RENAMED if old in named and old not in RENAMED.values())
    assert not stale, f"README names renamed configuration keys: {[(old, RENAMED[old]) for old in stale]}"


_PYTHON_NAME = re.compile(
    r"`((?:datasette_embeddings\.)?(?:sql|search|files|embedding|storage|web|config|errors)\.[\w.]*\w)(?:\([^`]*\))?`"
)


def test_every_python_name_the_readme_gives_exists():
    """`search.links.register_sql_functions(conn)` was named long after it was gone."""
    import importlib

    names = sorted({m.group(1).removeprefix("datasette_embeddings.") for m in _PYTHON_NAME.finditer(README)
                    if m.group(1).rsplit(".", 1)[1] not in ("py", "png", "js", "json", "css", "html", "md")})
    assert names, "no Python names found"
    missing = []
    for name in names:
        parts = name.split(".")
        for split in range(len(parts), 0, -1):
            try:
                found = importlib.import_module("datasette_embeddings." + ".".join(parts[:split]))
            except ImportError:
                continue
            try:
                for attribute in parts[split:]:
                    found = getattr(found, attribute)
            except AttributeError:
                missing.append(name)
            break
        else:
            missing.append(name)
    assert not missing, f"README names Python objects that do not exist: {missing}"
