"""``validate``: which records of a file or database break the OEmbeddings rules, and how.

The rules themselves are in :mod:`.oembeddings`.  This module walks a Parquet
file (any accepted layout, read in batches like ``load``) or a database's
``records`` table, and counts each problem with a few examples, so a publisher
can fix the file and a user can see what a collection's pages will lack.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import RecordError
from . import oembeddings
from .layouts import Layout
from .parquet_io import read_batches

DEFAULT_EXAMPLES = 3


@dataclass
class Problem:
    count: int = 0
    examples: list[dict] = field(default_factory=list)


@dataclass
class ValidationReport:
    source: str
    kind: str  # "parquet" or "sqlite"
    records: int = 0
    nonconforming: int = 0
    problems: dict[str, Problem] = field(default_factory=dict)

    def add(self, name: str, example: dict, limit: int) -> None:
        problem = self.problems.setdefault(name, Problem())
        problem.count += 1
        if len(problem.examples) < limit:
            problem.examples.append(example)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "records": self.records,
            "nonconforming": self.nonconforming,
            "problems": {
                name: {"count": p.count, "examples": p.examples}
                for name, p in sorted(self.problems.items(), key=lambda kv: (-kv[1].count, kv[0]))
            },
        }


def validate_file(path: str, *, layout: Layout | None = None, examples: int = DEFAULT_EXAMPLES,
                  source: str | None = None) -> ValidationReport:
    """Every OEmbeddings problem in a Parquet file; rows numbered from 0 as ``load`` numbers them."""
    report = ValidationReport(source=source or path, kind="parquet")
    for batch in read_batches(path, layout=layout):
        n = len(batch)
        report.records += n
        masks = batch.attribute_problems
        report.nonconforming += int(oembeddings.nonconforming(masks, n).sum())
        for name, mask in masks.items():
            rows = np.flatnonzero(mask)
            problem = report.problems.setdefault(name, Problem())
            problem.count += len(rows)
            for i in rows[: max(0, examples - len(problem.examples))]:
                i = int(i)
                problem.examples.append({
                    "row": batch.first_row + i,
                    "provider": batch.provider[i],
                    "depiction_id": batch.depiction_id[i],
                    "model": batch.model[i],
                })
    return report


def validate_database(db_path: str, *, examples: int = DEFAULT_EXAMPLES) -> ValidationReport:
    """Every OEmbeddings problem among a database's stored records."""
    from ..storage.connection import connect
    from ..storage.store import Store

    try:
        conn = connect(db_path, readonly=True)
    except Exception as ex:
        raise RecordError(f"cannot open database ({ex})", source=db_path) from None
    try:
        if not Store(conn).is_initialised():
            raise RecordError("not a datasette-embeddings database (no records table)", source=db_path)
        report = ValidationReport(source=db_path, kind="sqlite")
        cursor = conn.execute("select id, provider, depiction_id, model, attributes from records order by id")
        for rid, provider, depiction_id, model, attributes in cursor:
            report.records += 1
            try:
                attrs = json.loads(attributes) if attributes else {}
            except ValueError:
                attrs = {}
            found = oembeddings.problems(attrs if isinstance(attrs, dict) else {})
            if found:
                report.nonconforming += 1
            for name in found:
                report.add(name, {"id": rid, "provider": provider, "depiction_id": depiction_id, "model": model}, examples)
        return report
    finally:
        conn.close()
