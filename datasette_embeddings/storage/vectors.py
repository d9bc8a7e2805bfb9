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

#: sqlite-vec's own limit for ``float[N]`` columns; no vector anywhere in the package is longer
MAX_DIMENSIONS = 8192
#: a JSON array of MAX_DIMENSIONS numbers written out in full ("-1.2345678901234567e-300, ") fits here
MAX_JSON_CHARS = MAX_DIMENSIONS * 32

#: Euclidean lengths a stored vector may have.  vec0 computes cosine distance in float32:
#: a zero vector has no direction (vec0 answers NULL), a vector of 3e38 values overflows its
#: squared length (NULL or 1.0 for every pair) and one of 1e-30 values underflows (-inf).
#: Between these bounds every square, length and dot product stays a normal float32, so
#: cosine similarity is defined and exact enough; real embeddings have lengths near 1 to 100.
MIN_NORM = 1e-12
MAX_NORM = 1e12


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
    """Read a vector given as a float32 BLOB or a JSON array (the two forms sqlite-vec accepts).

    The size is checked before anything is decoded (a 400 MB ``randomblob`` is refused
    from its length alone), and NaN or infinite numbers are an error, never a NULL result.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) > MAX_DIMENSIONS * 4:
            raise VectorError(
                f"the BLOB holds {len(value) // 4:,} float32 numbers; at most {MAX_DIMENSIONS:,} dimensions are supported"
            )
        arr = from_blob(bytes(value))
    elif isinstance(value, str):
        if len(value) > MAX_JSON_CHARS:
            raise VectorError(
                f"the JSON array is {len(value):,} characters long; vectors have at most {MAX_DIMENSIONS:,} dimensions"
            )
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
    if arr.size > MAX_DIMENSIONS:
        raise VectorError(f"the vector has {arr.size:,} dimensions; at most {MAX_DIMENSIONS:,} are supported")
    if not np.isfinite(arr).all():
        raise VectorError(f"the vector holds a NaN or infinite number at position {int(np.argmin(np.isfinite(arr)))}")
    return arr


def norm_problem(norm: float) -> str | None:
    """Why a vector of this Euclidean length cannot be compared by cosine, or None when it can."""
    if not np.isfinite(norm) or norm > MAX_NORM:
        return f"its length (Euclidean norm) is too large to compare (at most {MAX_NORM:g})"
    if norm < MIN_NORM:
        return "it is all zeros (or nearly): a vector without a direction has no cosine similarity"
    return None


def is_comparable(vector: np.ndarray) -> bool:
    """Whether cosine similarity with this vector is defined (see MIN_NORM / MAX_NORM): the
    record pages, ``embeddings_nearest`` and the fast index give such a vector no neighbours."""
    return norm_problem(float(np.linalg.norm(np.asarray(vector, dtype=np.float64)))) is None


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity (1 = same direction); vec0's cosine distance is 1 minus this."""
    if a.shape != b.shape:
        raise VectorError(f"vectors differ in length: {a.shape[0]} and {b.shape[0]}")
    a = a.astype(np.float64)  # float64 throughout: 3e38-valued float32 vectors overflow in float32
    b = b.astype(np.float64)
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        raise VectorError("cosine similarity is undefined for a zero vector")
    return float(np.dot(a / na, b / nb))
