"""The package's import graph: layers only import downward, and no module imports itself back.

The README's Architecture section draws these layers; this test keeps the code to it.  Imports
inside functions count too (the hooks import lazily), read from the source with ``ast``.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "datasette_embeddings"

#: a part of the package may import parts of a lower rank, and itself; never a higher or equal other
RANKS = {
    "errors": 0,
    "config": 1,
    "storage": 2,
    "embedding": 3,
    "search": 3,
    "files": 4,
    "sql": 4,
    "web": 5,
    "cli": 6,
    "__init__": 6,
}


def part_of(module: str) -> str:
    """``datasette_embeddings.search.links`` -> ``search``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        found[name] = path
    return found


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (relative imports resolved; ``from . import x`` is module x)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("datasette_embeddings"):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                out.add(candidate if candidate in known else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("datasette_embeddings"))
    out.discard(name)
    return {m for m in out if m in known}


GRAPH = {name: imports_of(name, path, set(modules())) for name, path in modules().items()}


def test_every_part_of_the_package_has_a_rank():
    assert {part_of(m) for m in GRAPH} - {"static"} <= set(RANKS)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down(module):
    rank = RANKS[part_of(module)]
    upward = [
        target for target in GRAPH[module]
        if part_of(target) != part_of(module) and RANKS[part_of(target)] >= rank
        and not target == "datasette_embeddings"  # the package's own docstring-only root is not a layer
    ]
    assert upward == [], f"{module} imports {upward}, which are not below it"


def test_no_import_circle():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_the_readme_architecture_section_names_every_part():
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    for part in RANKS:
        if part in ("__init__", "cli", "errors", "config"):
            assert f"{part}.py" in section, part
        else:
            assert f"{part}/" in section, part
    for name in GRAPH:
        leaf = name.split(".")[-1]
        if leaf not in ("datasette_embeddings", "__init__") and "." in name:
            assert f"{leaf}" in section, f"README Architecture section does not mention {name}"
