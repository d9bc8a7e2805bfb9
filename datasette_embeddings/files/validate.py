"""``validate``: which records of a file or database break the OEmbeddings rules, and how.

The rules themselves are in :mod:`.oembeddings`.  This module walks a Parquet
file (any accepted layout, read through ``load``'s own reader, so it refuses
what ``load`` refuses) or a database's ``records`` table, and counts each
problem with a few examples, so a publisher can fix the file and a user can see
what a collection's pages will lack.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..errors import RecordError
from . import oembeddings
from .layouts import Layout
from .loader import FileReport, check_footer, checked_batches

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
    #: footer keys the rows contradict, with ``footer_mismatch="warn"`` (as ``load`` warns)
    warnings: list[str] = field(default_factory=list)
    #: records per (provider, model): what ``load`` would report loading
    per_provider_model: Counter = field(default_factory=Counter)

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
            "warnings": self.warnings,
            "per_provider_model": [
                {"provider": provider, "model": model, "records": n}
                for (provider, model), n in sorted(self.per_provider_model.items())
            ],
        }


def validate_file(path: str, *, layout: Layout | None = None, examples: int = DEFAULT_EXAMPLES,
                  source: str | None = None, footer_mismatch: str = "error") -> ValidationReport:
    """Every OEmbeddings problem in a Parquet file; rows numbered from 0 as ``load`` numbers them.

    The file is read as ``load`` reads it (:func:`.loader.checked_batches`, then the
    footer check), so a file ``load`` would refuse is refused here with the same
    message: a :class:`RecordError` naming ``source``, row and field, or the
    :class:`.loader.LoadError` of a contradicted footer.
    """
    name = source or path
    report = ValidationReport(source=name, kind="parquet")
    read = FileReport(source=name)
    seen_dims: dict[str, tuple[int, int]] = {}
    try:
        for batch, _ in checked_batches(path, read, seen_dims, layout=layout, grouped=False):
            n = len(batch)
            report.records += n
            masks = batch.attribute_problems
            report.nonconforming += int(oembeddings.nonconforming(masks, n).sum())
            for problem_name, mask in masks.items():
                rows = np.flatnonzero(mask)
                problem = report.problems.setdefault(problem_name, Problem())
                problem.count += len(rows)
                for i in rows[: max(0, examples - len(problem.examples))]:
                    i = int(i)
                    problem.examples.append({
                        "row": batch.first_row + i,
                        "provider": batch.provider[i],
                        "depiction_id": batch.depiction_id[i],
                        "model": batch.model[i],
                    })
    except RecordError as ex:
        # name what the user gave (the URL), not a temporary download, as load does
        raise RecordError(ex.message, source=name, row=ex.row, field=ex.field) from None
    check_footer(path, name, read, seen_dims, footer_mismatch)
    report.warnings = read.warnings
    report.per_provider_model = read.per_provider_model
    return report


def validate_database(db_path: str, *, examples: int = DEFAULT_EXAMPLES) -> ValidationReport:
    """Every OEmbeddings problem among a database's stored records."""
    from ..errors import EmbeddingsError
    from ..storage.store import Store

    try:
        conn = Store.open(db_path).conn
    except EmbeddingsError as ex:
        raise RecordError(str(ex)) from None  # the message names the file
    try:
        report = ValidationReport(source=db_path, kind="sqlite")
        cursor = conn.execute("select id, provider, depiction_id, model, attributes from records order by id")
        for rid, provider, depiction_id, model, attributes in cursor:
            report.records += 1
            report.per_provider_model[(provider, model)] += 1
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
