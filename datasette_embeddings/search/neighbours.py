"""The precomputed ``neighbours`` table: every record's k nearest records, for static publishing.

A site published read-only (or served from a machine too small to hold the
vectors in memory) can answer "more like this" with one indexed read.  The
table is computed with blocked matrix products over the same normalised matrix
the fast path uses (one block of rows against all rows at a time, so memory is
bounded by the block, not N x N), written in one transaction that replaces the
model's older rows.

``neighbour_runs`` remembers, per model, the k the table holds and the model's
data version when it was built: after a new ``load`` the table is stale and is
ignored (record pages fall back to live search) until ``datasette-embeddings neighbours`` runs again.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import distribution, memory_index as fast_index
from .links import top_k_between
from ..errors import InvalidRequestError, NotFoundError
from ..storage.store import ModelInfo, Store, data_version, stored_version

MAX_STORED_K = 1000

class NeighboursError(InvalidRequestError):
    """A neighbours build that cannot run (unknown model, bad k)."""


@dataclass
class BuildReport:
    model: str
    records: int
    k: int
    seconds: float


def top_k_blocks(
    matrix: np.ndarray, k: int, *, block_rows: int | None = None, unusable_rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For every row of a unit-row matrix, the k most similar other rows: ``(rows (n, k), similarities (n, k))``.

    One (block x n) product at a time keeps memory near ``block_rows * n * 4`` bytes
    (the blocked product of :func:`links.top_k_between`, with each row's own column excluded).
    ``unusable_rows`` (vectors without a cosine) are nobody's neighbour: their similarity is -inf.
    """
    if unusable_rows is not None and len(unusable_rows):
        # score only the comparable rows (a copy, only when some are not), then map back
        keep = np.ones(len(matrix), dtype=bool)
        keep[unusable_rows] = False
        rows = np.flatnonzero(keep)
        sub_rows, sub_sims = top_k_blocks(matrix[rows], k, block_rows=block_rows)
        k = sub_rows.shape[1]
        rows_out = np.zeros((len(matrix), k), dtype=np.int64)
        sims_out = np.full((len(matrix), k), -np.inf, dtype=np.float32)
        rows_out[rows] = rows[sub_rows]
        sims_out[rows] = sub_sims
        return rows_out, sims_out
    n = len(matrix)
    k = min(k, max(n - 1, 0))
    itself = np.arange(n, dtype=np.int64)
    return top_k_between(matrix, matrix, k, block_rows=block_rows, exclude=np.stack([itself, itself + 1], axis=1))


def build(conn, models: Sequence[str] = (), k: int = 10, progress: Callable[[str], None] | None = None) -> list[BuildReport]:
    """Compute and store the neighbours of every record of ``models`` (all models when empty)."""
    if not isinstance(k, int) or not 1 <= k <= MAX_STORED_K:
        raise NeighboursError(f"--k must be a whole number from 1 to {MAX_STORED_K}, got {k!r}")
    store = Store(conn)
    known = {m.label: m for m in store.models()}
    for label in models:
        if label not in known:
            raise NeighboursError(f"unknown model '{label}'; the database has: {', '.join(sorted(known)) or 'no models'}")
    chosen = [known[label] for label in (models or sorted(known))]
    reports = []
    for model in chosen:
        started = time.perf_counter()
        token = data_version(conn, model.label)
        index = fast_index.build(conn, model, token)
        rows, sims = top_k_blocks(index.matrix, k, unusable_rows=index.unusable_rows)
        lonely = set(index.unusable_rows.tolist())  # a vector without a cosine has no neighbours
        ids = index.ids
        seconds = time.perf_counter() - started
        conn.execute("begin immediate")
        try:
            conn.execute("delete from neighbours where model = ?", [model.label])
            stored_k = rows.shape[1]
            conn.executemany(
                "insert into neighbours (model, record_id, rank, neighbour_id, similarity) values (?, ?, ?, ?, ?)",
                (
                    (model.label, int(ids[i]), rank + 1, int(ids[rows[i, rank]]), float(sims[i, rank]))
                    for i in range(len(ids))
                    if i not in lonely
                    for rank in range(stored_k)
                    if np.isfinite(sims[i, rank])
                ),
            )
            conn.execute(
                "insert or replace into neighbour_runs (model, k, data_version, built, seconds) values (?, ?, ?, ?, ?)",
                [model.label, k, json.dumps(token), int(time.time()), round(time.perf_counter() - started, 3)],
            )
            if conn.execute("select 1 from sqlite_master where name = 'similarity_distributions'").fetchone():
                distribution.store(conn, model.label, json.dumps(token), index.matrix)
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise
        reports.append(BuildReport(model.label, len(ids), k, time.perf_counter() - started))
        if progress:
            progress(f"{model.label}: {len(ids):,} records, k={k}, {seconds:.1f}s")
    return reports


def current_k(conn, model: ModelInfo) -> int | None:
    """How many neighbours per record the table holds for ``model``, or None when it is absent or stale."""
    try:
        meta = conn.execute("select k, data_version from neighbour_runs where model = ?", [model.label]).fetchone()
    except Exception:  # no such table: neighbours never ran on this database
        return None
    if meta is None or meta[1] != stored_version(conn, model.label):
        return None
    return int(meta[0])


def stored_neighbours(conn, model: ModelInfo, record_id: int, k: int) -> list[tuple[int, float]] | None:
    """``(id, similarity)`` from the table when it holds at least k for this model and is current; else None."""
    stored = current_k(conn, model)
    if stored is None or stored < k:
        return None
    rows = conn.execute(
        "select neighbour_id, similarity from neighbours where record_id = ? order by rank limit ?", [record_id, k]
    ).fetchall()
    return [(rid, float(sim)) for rid, sim in rows]
