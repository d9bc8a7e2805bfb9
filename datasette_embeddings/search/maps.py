"""Stored maps and clusters: computed once by ``datasette-embeddings map``, read by the pages.

A published site is read-only, so the layout (``projection_points``), the clusters
(``clusters``) and the similarity distribution are computed here, before
publishing, and each stored row set carries the model's data version: after a
later ``load`` the pages say the map is stale instead of drawing records that
moved or vanished.

The vectors come from the same normalised matrix the fast path searches
(:func:`memory_index.build`), so a map, its clusters and a record page agree on
what "similar" means.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import clusters as clustering, distribution, memory_index as fast_index, projection
from ..errors import InvalidRequestError, NotFoundError
from ..storage.store import ModelInfo, Store, data_version, stored_version
from ..storage.vectors import from_blob, to_blob


@dataclass
class MapReport:
    model: str
    records: int
    clusters: int
    method: str
    seconds: float


def _known_models(store: Store, labels: Sequence[str]) -> list[ModelInfo]:
    known = {m.label: m for m in store.models()}
    for label in labels:
        if label not in known:
            raise NotFoundError(f"unknown model '{label}'; the database has: {', '.join(sorted(known)) or 'no models'}")
    return [known[label] for label in (labels or sorted(known))]


def record_texts(conn, label: str) -> dict[int, tuple[str, str]]:
    """``id -> (provider, words to label clusters with)``: the title, plus the text of text records."""
    out = {}
    for rid, provider, attributes in conn.execute(
        "select id, provider, attributes from records where model = ?", [label]
    ):
        try:
            attrs = json.loads(attributes) if attributes else {}
        except ValueError:
            attrs = {}
        if not isinstance(attrs, dict):
            attrs = {}
        parts = [attrs.get("subject_title"), attrs.get("text")]
        if str(attrs.get("type") or "image") == "text" and not str(attrs.get("preview") or "").startswith(("http:", "https:")):
            parts.append(attrs.get("preview"))
        out[rid] = (provider, " ".join(str(p) for p in parts if p))
    return out


def build(
    conn, models: Sequence[str] = (), *, method: str = "pca", n_clusters: int | None = None, seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[MapReport]:
    """Lay out, cluster and store every record of ``models`` (all models when empty).

    Everything is checked before anything is written: an unknown model, a cluster
    count above a model's records, or a NaN layout leaves the stored maps as they were.
    """
    if method not in projection.METHODS:
        raise InvalidRequestError(f"--method must be one of {', '.join(projection.METHODS)}, got '{method}'")
    store = Store(conn)
    if not store.is_initialised():
        raise NotFoundError("the database has no records and models tables (load Parquet files into it first)")
    store.migrate()
    chosen = _known_models(store, models)
    if n_clusters is not None:
        for model in chosen:
            clustering.check_cluster_count(n_clusters, model.record_count, model.label)
    reports = []
    for model in chosen:
        started = time.perf_counter()
        token = stored_version(conn, model.label)
        index = fast_index.build(conn, model, data_version(conn, model.label))
        matrix, ids = index.matrix, index.ids
        n = len(ids)
        if n == 0:
            raise InvalidRequestError(f"model '{model.label}' has no records to map")
        k = n_clusters if n_clusters is not None else clustering.default_cluster_count(n)
        clustering.check_cluster_count(k, n, model.label)
        xy = projection.layout(matrix, ids, method, seed)
        labels, centroids = clustering.kmeans(matrix, k, seed)
        texts = record_texts(conn, model.label)
        summaries = clustering.summarise(
            labels, centroids, [texts.get(int(i), ("", ""))[0] for i in ids], (texts.get(int(i), ("", ""))[1] for i in ids)
        )
        _write(conn, model.label, method, token, ids, xy, labels, summaries, matrix, time.perf_counter() - started)
        seconds = time.perf_counter() - started
        reports.append(MapReport(model.label, n, k, method, seconds))
        if progress:
            progress(f"{model.label}: {n:,} records, {method}, {k} clusters, {seconds:.1f}s")
    return reports


def _write(conn, label, method, token, ids, xy, labels, summaries, matrix, seconds) -> None:
    conn.execute("begin immediate")
    try:
        conn.execute("delete from projection_points where model = ?", [label])
        conn.execute("delete from clusters where model = ?", [label])
        conn.executemany(
            "insert into projection_points (model, record_id, x, y, cluster) values (?, ?, ?, ?, ?)",
            zip([label] * len(ids), ids.tolist(), xy[:, 0].tolist(), xy[:, 1].tolist(), labels.tolist()),
        )
        for s in summaries:
            cx, cy = (xy[s.member_rows].mean(axis=0).tolist() if s.size else (None, None))
            conn.execute(
                "insert into clusters (model, cluster, size, label, words, providers, provider_count, provider_diversity,"
                " centroid, x, y) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [label, s.cluster, s.size, s.label, json.dumps(s.words), json.dumps(s.providers), len(s.providers),
                 s.provider_diversity, to_blob(s.centroid), cx, cy],
            )
        conn.execute(
            "insert or replace into projections (model, method, data_version, record_count, cluster_count,"
            " x_min, x_max, y_min, y_max, built, seconds) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [label, method, token, len(ids), len(summaries), float(xy[:, 0].min()), float(xy[:, 0].max()),
             float(xy[:, 1].min()), float(xy[:, 1].max()), int(time.time()), round(seconds, 3)],
        )
        distribution.store(conn, label, token, matrix)
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise


# ---------------------------------------------------------------- reading (the pages)
def has_tables(conn) -> bool:
    return conn.execute("select 1 from sqlite_master where name = 'projections'").fetchone() is not None


def status(conn, label: str) -> dict | None:
    """The stored map of ``label`` with ``stale`` (a load since), or None when ``map`` never ran for it."""
    if not has_tables(conn):
        return None
    row = conn.execute(
        "select method, data_version, record_count, cluster_count, x_min, x_max, y_min, y_max, built, seconds"
        " from projections where model = ?",
        [label],
    ).fetchone()
    if row is None:
        return None
    method, version, count, clusters, x0, x1, y0, y1, built, seconds = row
    return {
        "model": label, "method": method, "records": count, "clusters": clusters,
        "bounds": [x0, x1, y0, y1], "built": built, "seconds": seconds,
        "stale": version != stored_version(conn, label),
    }


def points(conn, label: str, after: int = 0, size: int = 100_000) -> tuple[list[tuple], int | None]:
    """``(id, x, y, cluster, provider, type)`` rows in id order after ``after``; and the next ``after``."""
    rows = conn.execute(
        "select p.record_id, p.x, p.y, p.cluster, r.provider, r.type from projection_points p"
        " join records r on r.id = p.record_id where p.model = ? and p.record_id > ? order by p.record_id limit ?",
        [label, after, size + 1],
    ).fetchall()
    more = len(rows) > size
    rows = rows[:size]
    return rows, (rows[-1][0] if more and rows else None)


def cluster_rows(conn, label: str) -> list[dict]:
    rows = conn.execute(
        "select cluster, size, label, words, providers, provider_count, provider_diversity, x, y"
        " from clusters where model = ? order by cluster",
        [label],
    ).fetchall()
    return [
        {"cluster": c, "size": size, "label": text, "words": json.loads(words), "providers": json.loads(providers),
         "provider_count": pc, "provider_diversity": div, "x": x, "y": y}
        for c, size, text, words, providers, pc, div, x, y in rows
    ]


def cluster(conn, label: str, number: int) -> dict | None:
    found = [c for c in cluster_rows(conn, label) if c["cluster"] == number]
    return found[0] if found else None


def members(conn, label: str, number: int, after: int = 0, size: int = 48) -> tuple[list[int], int | None]:
    rows = conn.execute(
        "select record_id from projection_points where model = ? and cluster = ? and record_id > ?"
        " order by record_id limit ?",
        [label, number, after, size + 1],
    ).fetchall()
    ids = [r[0] for r in rows[:size]]
    return ids, (ids[-1] if len(rows) > size and ids else None)


def sample_members(conn, label: str, number: int, count: int = 6) -> list[int]:
    """A few members spread through the cluster (every n-th by id), for previews."""
    rows = conn.execute(
        "select record_id from projection_points where model = ? and cluster = ? order by record_id", [label, number]
    ).fetchall()
    if not rows:
        return []
    step = max(1, len(rows) // count)
    return [r[0] for r in rows[::step][:count]]


def nearest_clusters(conn, label: str, number: int, count: int = 5) -> list[tuple[int, float]]:
    """The clusters whose centroids are most similar to this one's: ``(cluster, cosine)``."""
    rows = conn.execute("select cluster, centroid from clusters where model = ? order by cluster", [label]).fetchall()
    if not rows:
        return []
    numbers = [r[0] for r in rows]
    if number not in numbers:
        return []
    matrix = np.stack([from_blob(r[1]) for r in rows])
    sims = matrix @ matrix[numbers.index(number)]
    order = [i for i in np.argsort(-sims, kind="stable") if numbers[i] != number][:count]
    return [(numbers[i], round(float(sims[i]), 4)) for i in order]
