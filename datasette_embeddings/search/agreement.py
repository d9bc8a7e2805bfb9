"""How much two models agree: the same objects' nearest neighbours under each, compared.

Two models may embed different depictions of an object (an image under one, its
title under another), so they are compared on *subjects*: ``(provider,
subject_id)``.  Only subjects both models hold take part.  Under each model a
subject's vector is the normalised mean of its depictions' unit vectors; its top
``k`` neighbours are the k most similar other shared subjects.  Agreement on a
subject is the Jaccard index of the two top-k sets (1 = the same k neighbours,
0 = none in common); the collection's agreement is the mean over subjects, and
the subjects with the lowest Jaccard are where the models disagree most.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from . import memory_index as fast_index
from .neighbours import top_k_blocks
from ..errors import InvalidRequestError, NotFoundError
from ..storage.store import Store, data_version, stored_version

MAX_K = 100
DEFAULT_K = 10
#: pages compute an agreement on the fly up to this many shared subjects; above, `compare` stores it
PAGE_LIMIT = 20_000
DISAGREEMENTS = 25


@dataclass
class Agreement:
    a: str
    b: str
    k: int
    subjects: int
    mean_jaccard: float
    disagreements: list[dict] = field(default_factory=list)
    data_versions: tuple[str, str] = ("", "")

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "k": self.k, "subjects": self.subjects,
                "mean_jaccard": self.mean_jaccard, "disagreements": self.disagreements}


def _subject_matrix(conn, label: str) -> tuple[dict[tuple[str, str], int], np.ndarray, dict[tuple[str, str], int]]:
    """``subject -> row``, the subjects' unit mean vectors, and ``subject -> a record id`` (the lowest)."""
    model = Store(conn).model(label)
    index = fast_index.build(conn, model, data_version(conn, label))
    subject_of = {rid: (p, s) for rid, p, s in conn.execute(
        "select id, provider, subject_id from records where model = ?", [label])}
    keys = [subject_of.get(int(rid)) for rid in index.ids]
    rows: dict[tuple[str, str], int] = {}
    first: dict[tuple[str, str], int] = {}
    for rid, key in zip(index.ids.tolist(), keys):
        if key is None:
            continue
        rows.setdefault(key, len(rows))
        first[key] = min(first.get(key, rid), rid)
    sums = np.zeros((len(rows), index.matrix.shape[1]), dtype=np.float64)
    where = np.fromiter((rows[k] if k is not None else -1 for k in keys), dtype=np.int64, count=len(keys))
    keep = where >= 0
    np.add.at(sums, where[keep], index.matrix[keep])
    norms = np.linalg.norm(sums, axis=1)
    norms[norms == 0] = 1.0
    return rows, (sums / norms[:, None]).astype(np.float32), first


def shared_subjects(conn, a: str, b: str) -> int:
    row = conn.execute(
        "select count(*) from (select distinct provider, subject_id from records where model = ?"
        " intersect select distinct provider, subject_id from records where model = ?)", [a, b]
    ).fetchone()
    return int(row[0])


def check_models(conn, a: str, b: str, k: int) -> None:
    store = Store(conn)
    known = [m.label for m in store.models()]
    for label, name in ((a, "a"), (b, "b")):
        if not label:
            raise InvalidRequestError(f"name two models to compare: {name} is missing (known: {', '.join(known)})")
        if store.model(label) is None:
            raise NotFoundError(f"unknown model '{label}' (known: {', '.join(known) or 'none'})")
    if a == b:
        raise InvalidRequestError("a and b are the same model: choose two different models")
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidRequestError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")


def compare(conn, a: str, b: str, k: int = 10) -> Agreement:
    """The agreement of models ``a`` and ``b`` over the subjects both hold (see the module docstring)."""
    check_models(conn, a, b, k)
    rows_a, matrix_a, first_a = _subject_matrix(conn, a)
    rows_b, matrix_b, first_b = _subject_matrix(conn, b)
    shared = sorted(set(rows_a) & set(rows_b))
    if len(shared) <= k:
        raise InvalidRequestError(
            f"models '{a}' and '{b}' share {len(shared):,} subject(s) (provider + subject_id): "
            f"comparing top-{k} neighbours needs more than {k}"
        )
    ma = matrix_a[[rows_a[s] for s in shared]]
    mb = matrix_b[[rows_b[s] for s in shared]]
    top_a, _ = top_k_blocks(ma, k)
    top_b, _ = top_k_blocks(mb, k)
    jaccard = np.empty(len(shared))
    for i in range(len(shared)):
        sa, sb = set(top_a[i].tolist()), set(top_b[i].tolist())
        jaccard[i] = len(sa & sb) / len(sa | sb)
    order = sorted(range(len(shared)), key=lambda i: (jaccard[i], shared[i]))[:DISAGREEMENTS]
    worst = [
        {"provider": shared[i][0], "subject_id": shared[i][1], "jaccard": round(float(jaccard[i]), 4),
         "record_a": first_a[shared[i]], "record_b": first_b[shared[i]]}
        for i in order
    ]
    versions = (stored_version(conn, a), stored_version(conn, b))
    return Agreement(a, b, k, len(shared), round(float(jaccard.mean()), 4), worst, versions)


def store(conn, result: Agreement) -> None:
    conn.execute("begin immediate")
    try:
        conn.execute(
            "insert or replace into model_comparisons (a, b, k, data_version_a, data_version_b, subjects, mean_jaccard,"
            " disagreements, built) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [result.a, result.b, result.k, result.data_versions[0], result.data_versions[1], result.subjects,
             result.mean_jaccard, json.dumps(result.disagreements), int(time.time())],
        )
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise


def stored(conn, a: str, b: str, k: int) -> Agreement | None:
    """The stored comparison when it is current for both models; else None."""
    try:
        row = conn.execute(
            "select data_version_a, data_version_b, subjects, mean_jaccard, disagreements from model_comparisons"
            " where a = ? and b = ? and k = ?", [a, b, k]
        ).fetchone()
    except Exception:  # before migration m006
        return None
    if row is None:
        return None
    versions = (stored_version(conn, a), stored_version(conn, b))
    if (row[0], row[1]) != versions:
        return None
    return Agreement(a, b, k, row[2], row[3], json.loads(row[4]), versions)

