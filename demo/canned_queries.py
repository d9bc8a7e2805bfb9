"""Write the demo's canned queries into metadata.yml: exactly what web/canned.py builds.

The published demo ships its queries in metadata.yml (so they carry a title and
description and show in Datasette's own listing) instead of relying on the
``canned_queries`` hook; tests/test_canned.py fails when the two drift apart.
After changing web/canned.py, run by maintainers:

    python demo/canned_queries.py

Only each query's ``sql`` block is rewritten, in place, so the file's comments,
order and hand-wrapped text stay as they are.
"""
from __future__ import annotations

import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datasette_embeddings.storage.store import ModelInfo, vec_table_name  # noqa: E402
from datasette_embeddings.web import canned  # noqa: E402

METADATA = ROOT / "metadata.yml"
#: indentation of a query's name, and of its SQL lines, under databases: demo: queries:
NAME_INDENT, SQL_INDENT = " " * 6, " " * 10


def demo_queries(metadata: dict) -> dict[str, dict]:
    """The queries canned.py builds for the demo: its stored models (the labels metadata.yml maps) and providers."""
    import pyarrow.parquet as pq

    labels = sorted(metadata["plugins"]["datasette-embeddings"]["models"])
    providers = sorted({p for f in (ROOT / "demo" / "data").glob("*.parquet")
                        for p in pq.read_table(str(f), columns=["provider"]).column(0).to_pylist()})
    return canned.queries_for([ModelInfo(label, vec_table_name(label), 0, 0) for label in labels], providers=providers)


def with_queries(text: str, queries: dict[str, dict]) -> str:
    """``text`` (metadata.yml) with each named query's ``sql: |-`` block replaced."""
    lines = text.splitlines()
    for name, query in queries.items():
        start = lines.index(f"{NAME_INDENT}{name}:")
        sql_at = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "sql: |-")
        end = sql_at + 1
        while end < len(lines) and lines[end].startswith(SQL_INDENT):
            end += 1
        lines[sql_at + 1:end] = [SQL_INDENT + line for line in query["sql"].strip().splitlines()]
    return "\n".join(lines) + "\n"


def main() -> None:
    text = METADATA.read_text()
    queries = demo_queries(yaml.safe_load(text))
    new = with_queries(text, queries)
    shipped = yaml.safe_load(new)["databases"]["demo"]["queries"]
    for name, query in queries.items():  # the rewrite must read back as exactly the generated SQL
        assert shipped[name]["sql"].strip() == query["sql"].strip(), name
    METADATA.write_text(new)
    print(f"{METADATA.name}: {', '.join(queries)} written" if new != text else f"{METADATA.name}: already current")


if __name__ == "__main__":
    main()
