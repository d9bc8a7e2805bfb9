"""Two-dimensional layouts of a model's vectors, for the map.

PCA is the default because it needs nothing beyond NumPy, is deterministic and
takes seconds for a million rows (one d x d covariance, built block by block,
and its two leading eigenvectors).  It keeps the directions of largest spread,
so broad themes separate while fine neighbourhoods overlap.  UMAP keeps
neighbourhoods instead, at minutes per 100,000 rows and a heavy dependency
(numba): it is the optional ``umap`` extra.

A layout is refused when it would hold NaN or infinity (a vector with NaN in
it, or a method that failed to converge): a map with missing points would look
right and be wrong.
"""
from __future__ import annotations

import numpy as np

from ..errors import InvalidRequestError

METHODS = ("pca", "umap")


def check_finite(matrix: np.ndarray, ids: np.ndarray, what: str = "vector") -> None:
    """Refuse input that would make a NaN layout, naming a few records that cause it."""
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        sample = ", ".join(str(int(i)) for i in ids[bad][:5])
        raise InvalidRequestError(
            f"{int(bad.sum()):,} record(s) have a {what} with NaN or infinite values (record ids {sample}...): "
            "the layout would be NaN; fix or remove them and load again"
        )


def pca_2d(matrix: np.ndarray, block_rows: int = 65536) -> np.ndarray:
    """The rows projected on their two principal axes, as float64 ``(n, 2)``.

    The covariance is summed block by block (float64), so memory stays near
    one block beside the matrix.  Axis signs are fixed (largest loading
    positive) so the same data always draws the same way round.
    """
    n, dims = matrix.shape
    if n == 0:
        return np.zeros((0, 2))
    mean = np.zeros(dims)
    for start in range(0, n, block_rows):
        mean += matrix[start : start + block_rows].sum(axis=0, dtype=np.float64)
    mean /= n
    cov = np.zeros((dims, dims))
    for start in range(0, n, block_rows):
        block = matrix[start : start + block_rows].astype(np.float64) - mean
        cov += block.T @ block
    values, vectors = np.linalg.eigh(cov)
    axes = vectors[:, ::-1][:, :2] if dims >= 2 else np.hstack([vectors, np.zeros((dims, 1))])
    for j in range(axes.shape[1]):
        if axes[np.argmax(np.abs(axes[:, j])), j] < 0:
            axes[:, j] = -axes[:, j]
    out = np.empty((n, 2))
    for start in range(0, n, block_rows):
        out[start : start + block_rows] = (matrix[start : start + block_rows].astype(np.float64) - mean) @ axes
    return out


def umap_2d(matrix: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP with cosine distance (the ``umap`` extra); a clear error when it is not installed."""
    try:
        import umap  # type: ignore
    except ImportError:
        raise InvalidRequestError(
            "--method umap needs the umap-learn package: pip install 'datasette-museum-embeddings[umap]' (or use --method pca)"
        ) from None
    n = len(matrix)
    if n < 4:
        raise InvalidRequestError(f"--method umap needs at least 4 records, the model has {n}; use --method pca")
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, n - 1))
    return np.asarray(reducer.fit_transform(matrix), dtype=np.float64)


def layout(matrix: np.ndarray, ids: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A finite ``(n, 2)`` layout of ``matrix`` by ``method`` ("pca" or "umap")."""
    if method not in METHODS:
        raise InvalidRequestError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    check_finite(matrix, ids)
    xy = pca_2d(matrix) if method == "pca" else umap_2d(matrix, seed)
    if not np.isfinite(xy).all():
        raise InvalidRequestError(
            f"the {method} layout came out with NaN or infinite coordinates ({int((~np.isfinite(xy)).any(axis=1).sum()):,} points); "
            "nothing was stored"
        )
    return xy
