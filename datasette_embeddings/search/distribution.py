"""What a cosine similarity means under one model: where it falls among random pairs.

Raw cosines are not comparable across models: 0.42 is unrelated under one
model and close under another.  ``map`` and ``neighbours`` sample random pairs of
distinct records, compute their cosines and store 1,001 quantiles (every 0.1%)
in ``similarity_distributions`` with the model's data version.  A page then shows
beside a score "higher than 99.7% of pairs" by interpolating in those quantiles;
when the stored distribution is stale (a later load) or absent, pages show
nothing rather than a wrong number.
"""
from __future__ import annotations

import json
import time

import numpy as np

from ..storage.store import stored_version

#: pairs sampled per model (all pairs when the model has fewer)
SAMPLE_PAIRS = 200_000
QUANTILES = 1001


def sample_similarities(matrix: np.ndarray, pairs: int = SAMPLE_PAIRS, seed: int = 0) -> np.ndarray:
    """Cosines of random pairs of distinct rows of a unit-row matrix (every pair when there are few)."""
    n = len(matrix)
    if n < 2:
        return np.empty(0, dtype=np.float64)
    if n * (n - 1) // 2 <= pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=pairs)
        j = rng.integers(0, n - 1, size=pairs)
        j = j + (j >= i)  # never a row with itself
    sims = np.empty(len(i), dtype=np.float64)
    step = 65536
    for start in range(0, len(i), step):
        a, b = matrix[i[start : start + step]], matrix[j[start : start + step]]
        sims[start : start + step] = np.einsum("ij,ij->i", a, b, dtype=np.float64)
    return sims[np.isfinite(sims)]


def quantiles_of(sims: np.ndarray) -> list[float]:
    if not len(sims):
        return []
    return [round(float(q), 6) for q in np.quantile(sims, np.linspace(0.0, 1.0, QUANTILES))]


def store(conn, label: str, data_version: str, matrix: np.ndarray) -> int:
    """Sample and store ``label``'s distribution (the caller holds the transaction); the pairs used."""
    sims = sample_similarities(matrix)
    conn.execute(
        "insert or replace into similarity_distributions (model, data_version, pairs, quantiles, built) values (?, ?, ?, ?, ?)",
        [label, data_version, int(len(sims)), json.dumps(quantiles_of(sims)), int(time.time())],
    )
    return int(len(sims))


def percentile(quantiles: list[float], similarity: float) -> float | None:
    """The share of sampled pairs (0..100) with a lower similarity, from stored quantiles."""
    if not quantiles or similarity is None:
        return None
    q = np.asarray(quantiles)
    levels = np.linspace(0.0, 100.0, len(q))
    if similarity <= q[0]:
        return 0.0
    if similarity >= q[-1]:
        return 100.0
    # quantiles may repeat (many equal cosines): take the highest level at or below the score
    return float(np.interp(similarity, q, levels))


def current(conn, label: str, data_version: str) -> list[float] | None:
    """The stored quantiles of ``label`` when they match ``data_version``; else None (absent or stale)."""
    try:
        row = conn.execute(
            "select data_version, quantiles from similarity_distributions where model = ?", [label]
        ).fetchone()
    except Exception:  # a database from before migration m003
        return None
    if row is None or row[0] != data_version:
        return None
    return json.loads(row[1])


def for_model(conn, label: str) -> list[float] | None:
    """The stored quantiles of ``label`` while current for its vectors (None when absent or stale)."""
    return current(conn, label, stored_version(conn, label))


def describe(percent: float | None) -> str | None:
    """'higher than 99.7% of pairs' (one decimal, never rounding up to a claim of 100%)."""
    if percent is None:
        return None
    shown = np.floor(percent * 10) / 10
    return f"higher than {shown:.1f}% of pairs under this model"
