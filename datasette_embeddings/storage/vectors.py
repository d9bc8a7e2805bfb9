"""Vector encodings shared by the store, the SQL functions and the web views.

sqlite-vec stores ``float[N]`` as little-endian float32 BLOBs (:data:`VECTOR_DTYPE`).
One vector crosses into or out of SQL through :func:`to_blob` / :func:`from_blob`; the
bulk paths that decode a whole batch of BLOBs in one NumPy call (``memory_index.build``,
``parquet_io``) use the same dtype, because a Python call per vector would cost them
most of their speed.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np


#: the one encoding of a stored vector
VECTOR_DTYPE = "<f4"


class VectorError(ValueError):
    """A value could not be read as a vector."""


def to_blob(vector: Any) -> bytes:
    """Encode a sequence or array of numbers as a little-endian float32 BLOB."""
    arr = np.asarray(vector, dtype=VECTOR_DTYPE)
    if arr.ndim != 1:
        raise VectorError(f"expected a one-dimensional vector, got shape {arr.shape}")
    return arr.tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    """Decode a float32 BLOB (as vec0 stores it)."""
    if len(blob) % 4:
        raise VectorError(f"a float32 vector BLOB must be a multiple of 4 bytes, got {len(blob)}")
    return np.frombuffer(blob, dtype=VECTOR_DTYPE)


def parse_vector(value: Any) -> np.ndarray:
    """Read a vector given as a float32 BLOB or a JSON array (the two forms sqlite-vec accepts)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        arr = from_blob(bytes(value))
    elif isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as ex:
            raise VectorError(f"not a JSON array of numbers: {ex}") from None
        if not isinstance(parsed, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in parsed
        ):
            raise VectorError("a vector given as text must be a JSON array of numbers")
        arr = np.asarray(parsed, dtype="<f4")
    else:
        raise VectorError(f"expected a float32 BLOB or a JSON array, got {type(value).__name__}")
    if arr.size == 0:
        raise VectorError("the vector is empty")
    return arr


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity (1 = same direction); vec0's cosine distance is 1 minus this."""
    if a.shape != b.shape:
        raise VectorError(f"vectors differ in length: {a.shape[0]} and {b.shape[0]}")
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        raise VectorError("cosine similarity is undefined for a zero vector")
    return float(np.dot(a.astype(np.float64), b.astype(np.float64)) / (na * nb))
