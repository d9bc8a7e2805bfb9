"""Clustered synthetic embeddings shared by the benchmarks.

Real embeddings are clustered (many photographs of similar objects); uniform
noise flatters approximate indexes, so every benchmark draws from Gaussian
clusters around random unit centres, with queries drawn from the same clusters.
"""
from __future__ import annotations

import numpy as np


def clustered(n: int, dims: int, *, clusters: int = 1000, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """``n`` float32 vectors in ``clusters`` Gaussian clusters (not normalised, like llm-clip's)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dims), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dims), dtype=np.float32)
    step = 65536
    for start in range(0, n, step):
        stop = min(start + step, n)
        which = rng.integers(0, clusters, stop - start)
        noise = rng.standard_normal((stop - start, dims), dtype=np.float32) * (spread / np.sqrt(dims))
        out[start:stop] = centres[which] + noise
    return out


def queries(n: int, dims: int, *, clusters: int = 1000, spread: float = 0.35, seed: int = 1, base_seed: int = 0) -> np.ndarray:
    """Query vectors near the same cluster centres as :func:`clustered` with ``seed=base_seed``."""
    rng = np.random.default_rng(base_seed)
    centres = rng.standard_normal((clusters, dims), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    qrng = np.random.default_rng(seed)
    which = qrng.integers(0, clusters, n)
    noise = qrng.standard_normal((n, dims), dtype=np.float32) * (spread / np.sqrt(dims))
    return (centres[which] + noise).astype(np.float32)


def exact_top_k(matrix_normalised: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """The NumPy brute-force baseline: one matrix-vector product and a partial sort."""
    q = query / np.linalg.norm(query)
    scores = matrix_normalised @ q
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def normalised(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return len(set(map(int, found)) & set(map(int, truth))) / len(truth)
