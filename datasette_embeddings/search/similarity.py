"""Nearest-neighbour queries: the one place the similar-records query is built.

Filters (only these providers, not these providers, not this subject) are
pushed into the vec0 KNN as metadata constraints, so a filtered query returns
k rows whenever k rows match.  Filtering after the top-k would silently return
fewer, which is the flaw this design exists to avoid.

Similarity is cosine similarity (1 = same direction); vec0's ``distance`` on a
``distance_metric=cosine`` column is ``1 - similarity``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..config import IndexSettings
from ..errors import SimilarityError, SimilarityNotFound
from . import memory_index as fast_index, neighbours
from .filters import MAX_K, Neighbour, NeighbourFilter, check_k
from ..storage.store import ModelInfo, Store, read_again_if_torn, record_from_row
from ..storage.vectors import VECTOR_DTYPE, from_blob, is_comparable, to_blob

def nearest_ids(
    conn, model: ModelInfo, vector: np.ndarray, k: int, flt: NeighbourFilter = NeighbourFilter(),
    exclude_ids: Sequence[int] = (), settings: IndexSettings = fast_index.DEFAULT_SETTINGS,
) -> list[tuple[int, float]]:
    """Top-k ``(record id, similarity)`` for ``vector`` among ``model``'s records.

    The in-memory index (fast_index) answers when it can; vec0 is the fallback
    and the reference the tests hold the fast path to.  A vector without a cosine
    (all zeros, or too long: see ``vectors.MIN_NORM``) has no neighbours, and such
    stored vectors are never anyone's neighbour.
    """
    vector = _checked_query(model, vector, k)
    if not is_comparable(vector):
        return []
    found = fast_index.search(conn, model, vector, k, flt, exclude_ids, settings)
    if found is not None:
        return found
    return vec0_nearest_ids(conn, model, vector, k, flt, exclude_ids)


def _checked_query(model: ModelInfo, vector, k: int) -> np.ndarray:
    check_k(k)
    vector = np.asarray(vector, dtype=VECTOR_DTYPE)
    if vector.shape != (model.dimensions,):
        raise SimilarityError(
            f"query vector has {vector.shape[-1] if vector.ndim else 0} dimensions; model '{model.label}' has {model.dimensions}"
        )
    return vector


def vec0_nearest_ids(
    conn, model: ModelInfo, vector: np.ndarray, k: int, flt: NeighbourFilter = NeighbourFilter(),
    exclude_ids: Sequence[int] = (),
) -> list[tuple[int, float]]:
    """The same answer as :func:`nearest_ids`, always by vec0's exact KNN scan (filters inside the scan)."""
    vector = _checked_query(model, vector, k)
    if not is_comparable(vector):
        return []
    where, params = flt.sql()
    ask = min(k + len(exclude_ids), 4096)
    skip = set(exclude_ids)
    while True:
        rows = _knn(conn, f"select id, distance from {model.vec_table} where embedding match ? and k = ?{where} order by distance",
                    [to_blob(vector), ask, *params])
        # a stored vector without a cosine (loaded before load refused them) has a NULL or
        # infinite distance, or (overflowing) exactly 1.0: it is nobody's neighbour, and the
        # scan is widened to still find k
        good = [
            (rid, 1.0 - float(dist)) for rid, dist in rows
            if dist is not None and math.isfinite(dist) and rid not in skip
            and (dist != 1.0 or _stored_is_comparable(conn, model, rid))
        ]
        if len(good) >= k or len(rows) < ask or ask >= 4096:
            return good[:k]
        ask = min(4096, ask * 2 + (len(rows) - len(good)))


def _knn(conn, sql: str, params: list) -> list:
    """A vec0 KNN, run again if vec0 reports a chunk rewritten under it (see ``store.read_again_if_torn``)."""
    return read_again_if_torn(lambda: conn.execute(sql, params).fetchall())


def _stored_is_comparable(conn, model: ModelInfo, record_id: int) -> bool:
    row = conn.execute(f"select embedding from {model.vec_table} where id = ?", [record_id]).fetchone()
    return row is not None and is_comparable(from_blob(row[0]))


def with_records(conn, pairs: list[tuple[int, float]]) -> list[Neighbour]:
    """Attach record data to ``(id, similarity)`` pairs, keeping their order."""
    if not pairs:
        return []
    ids = [rid for rid, _ in pairs]
    rows = conn.execute(
        "select id, provider, depiction_id, subject_id, model, created, attributes from records where id in (%s)"
        % ", ".join("?" for _ in ids),
        ids,
    ).fetchall()
    by_id = {r[0]: record_from_row(r) for r in rows}
    return [Neighbour(rid, sim, by_id[rid]) for rid, sim in pairs if rid in by_id]


def similar_to_vector(
    conn, model_label: str, vector, k: int = 20, flt: NeighbourFilter = NeighbourFilter(),
    settings: IndexSettings = fast_index.DEFAULT_SETTINGS,
) -> list[Neighbour]:
    store = Store(conn)
    model = store.model(model_label)
    if model is None:
        raise SimilarityNotFound(f"unknown model '{model_label}'")
    return with_records(conn, nearest_ids(conn, model, vector, k, flt, settings=settings))


def similar_to_record(
    conn, record_id: int, k: int = 20, flt: NeighbourFilter = NeighbourFilter(),
    settings: IndexSettings = fast_index.DEFAULT_SETTINGS,
) -> tuple[dict, list[Neighbour]]:
    """The record and its k most similar records under its own model (itself excluded)."""
    record = Store(conn).record(record_id)
    if record is None:
        raise SimilarityNotFound(f"no record with id {record_id}")
    return record, neighbours_of(conn, record, k, flt, settings)


def neighbours_of(
    conn, record: dict, k: int = 20, flt: NeighbourFilter = NeighbourFilter(),
    settings: IndexSettings = fast_index.DEFAULT_SETTINGS,
) -> list[Neighbour]:
    """:func:`similar_to_record` for a record the caller has already read (a page reads its row once).

    The stored ``neighbours`` table answers unfiltered queries while it is current,
    without reading the record's vector at all.
    """
    store = Store(conn)
    model = store.model(record["model"])
    if model is None:
        raise SimilarityError(f"record {record['id']} has no stored vector")
    pairs = None
    if flt == NeighbourFilter():  # the precomputed table only holds unfiltered neighbours
        check_k(k)
        pairs = neighbours.stored_neighbours(conn, model, record["id"], k)
    if pairs is None:
        vector = store.vector(record["id"], model)
        if vector is None:
            raise SimilarityError(f"record {record['id']} has no stored vector")
        pairs = nearest_ids(conn, model, vector, k, flt, exclude_ids=(record["id"],), settings=settings)
    return with_records(conn, pairs)


#: how many records "more like these" (and a map selection) may name at once
MAX_SELECTION = 500


def mean_vector(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The normalised mean of unit-normalised vectors (each counts the same, whatever its length)."""
    matrix = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
    norms = np.linalg.norm(matrix, axis=1)
    norms[norms == 0] = 1.0
    mean = (matrix / norms[:, None]).mean(axis=0)
    length = np.linalg.norm(mean)
    if not np.isfinite(length) or length == 0:
        raise SimilarityError("the records' vectors cancel out (their mean has no direction): choose other records")
    return (mean / length).astype(VECTOR_DTYPE)


def similar_to_records(
    conn, record_ids: Sequence[int], k: int = 20, flt: NeighbourFilter = NeighbourFilter()
) -> tuple[list[dict], list[Neighbour]]:
    """The records, and the k records most similar to their mean (the records themselves excluded).

    All records must share one model: a mean across models' spaces means nothing.
    """
    ids = list(dict.fromkeys(int(i) for i in record_ids))
    if not ids:
        raise SimilarityError("name at least one record: ?id=1&id=2...")
    if len(ids) > MAX_SELECTION:
        raise SimilarityError(f"at most {MAX_SELECTION} records at once, got {len(ids):,}")
    check_k(k)
    store = Store(conn)
    records = [store.record(i) for i in ids]
    missing = [str(i) for i, r in zip(ids, records) if r is None]
    if missing:
        raise SimilarityError(f"no record with id {', '.join(missing[:10])}")
    labels = sorted({r["model"] for r in records})
    if len(labels) > 1:
        raise SimilarityError(f"the records belong to different models ({', '.join(labels)}): choose records of one model")
    model = store.model(labels[0])
    vectors = [store.vector(i, model) for i in ids] if model else []
    if model is None or any(v is None for v in vectors):
        raise SimilarityError("a record has no stored vector")
    pairs = nearest_ids(conn, model, mean_vector(vectors), k, flt, exclude_ids=ids)
    return records, with_records(conn, pairs)
