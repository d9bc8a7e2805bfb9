"""SQL functions on every connection: ``embed_text``, ``embed_image``, ``vec_cosine``, ``vec_mean``.

``embed_text(model, text)`` and ``embed_image(model, image_blob)`` return the
little-endian float32 BLOB that sqlite-vec takes directly::

    select r.* from vec_clip_vit_b_32_1a2b3c4d v join records r on r.id = v.id
    where v.embedding match embed_text('clip-ViT-B-32', 'a ship in a storm') and k = 10

``model`` is a stored model label (mapped to an llm model through plugin
configuration or the ``models`` table) or an llm model id/alias.  Every refusal is
a SQL error carrying a clear message; no function ever returns an error as a value.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..embedding import runtime as models
from . import udf as sqlite_udf
from ..embedding.runtime import EmbeddingConfig, EmbeddingError
from ..storage.vectors import VectorError, cosine_similarity, parse_vector, to_blob


def _stored_model(conn, label: str) -> tuple[bool, str | None]:
    """Whether this database stores ``label``, and its ``models.llm_model_id``."""
    try:
        row = conn.execute("select llm_model_id from models where label = ?", [label]).fetchone()
    except Exception:  # not a datasette-embeddings database
        return False, None
    return (row is not None), (row[0] if row and row[0] else None)


def _model_name(value: Any, function: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EmbeddingError(f"{function}(): the first argument must be a model label or llm model id")
    return value


def register_functions(conn, config: EmbeddingConfig | None = None) -> None:
    """Register the functions on ``conn`` with the limits and switch of ``config``."""
    config = config or EmbeddingConfig()

    def resolve(name: str) -> str:
        if name in config.models:
            return config.models[name]
        stored, llm_id = _stored_model(conn, name)
        if stored and not llm_id and not models.is_known(name):
            raise EmbeddingError(
                f"model '{name}' is stored in this database but no llm model embeds queries for it: "
                f"set plugins: datasette-embeddings: models: {{'{name}': <llm model id>}} in metadata.yml"
            )
        return models.resolve(name, config, llm_id)

    def embed_text(model: Any, text: Any) -> bytes:
        name = _model_name(model, "embed_text")
        config.require_enabled()
        _argument("embed_text", "text", text, str, "TEXT")
        return to_blob(models.embed_text(resolve(name), text, config=config))

    def embed_image(model: Any, image: Any) -> bytes:
        name = _model_name(model, "embed_image")
        config.require_enabled()
        _argument("embed_image", "image", image, bytes, "a BLOB of image bytes", " (embed_image never reads files or fetches URLs)")
        return to_blob(models.embed_image(resolve(name), image, config=config))

    sqlite_udf.create_function(conn, "embeddings_check_number", 4, check_number, deterministic=True)
    sqlite_udf.create_function(conn, "embeddings_check_choice", 3, check_choice, deterministic=True)
    sqlite_udf.create_function(conn, "embed_text", 2, embed_text)
    sqlite_udf.create_function(conn, "embed_image", 2, embed_image)
    sqlite_udf.create_function(conn, "vec_cosine", 2, vec_cosine, deterministic=True)
    sqlite_udf.create_aggregate(conn, "vec_mean", 1, VecMean)


def vec_cosine(a: Any, b: Any) -> float | None:
    """Cosine similarity (1 = same direction) of two BLOB or JSON-array vectors; NULL in, NULL out.

    vec0 tables declared with ``distance_metric=cosine`` report ``distance`` = 1 - this.
    """
    if a is None or b is None:
        return None
    try:
        return cosine_similarity(parse_vector(a), parse_vector(b))
    except VectorError as ex:
        raise EmbeddingError(f"vec_cosine(): {ex}") from None


class VecMean:
    """``vec_mean(embedding)``: the normalised mean of the group's vectors, as a float32 BLOB.

    Each vector is scaled to unit length before averaging (as cosine similarity
    ignores length, a long vector should not outweigh the others), and the mean
    is scaled to unit length: the direction "in the middle" of the records, ready
    to ``match`` against a vec0 table.  NULLs are skipped; no vectors give NULL;
    vectors of different lengths, zero vectors, or vectors that cancel out are errors.
    """

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def step(self, value: Any) -> None:
        if value is None:
            return
        try:
            vector = parse_vector(value).astype(np.float64)
        except VectorError as ex:
            raise EmbeddingError(f"vec_mean(): {ex}") from None
        if self.total is not None and vector.shape != self.total.shape:
            raise EmbeddingError(f"vec_mean(): vectors differ in length: {self.total.shape[0]} and {vector.shape[0]}")
        norm = float(np.linalg.norm(vector))
        if norm == 0.0 or not np.isfinite(norm):
            raise EmbeddingError("vec_mean(): a zero (or NaN) vector has no direction")
        vector /= norm
        self.total = vector if self.total is None else self.total + vector
        self.count += 1

    def finalize(self) -> bytes | None:
        if self.total is None:
            return None
        norm = float(np.linalg.norm(self.total))
        if norm < 1e-12:
            raise EmbeddingError("vec_mean(): the vectors cancel out (their mean has no direction)")
        return to_blob(self.total / norm)


def _argument(function: str, argument: str, value: Any, kind: type, expected: str, note: str = "") -> None:
    if value is None:
        raise EmbeddingError(f"{function}(): {argument} is NULL")
    if not isinstance(value, kind):
        raise EmbeddingError(f"{function}(): {argument} must be {expected}, got {_sql_type(value)}{note}")


def _sql_type(value: Any) -> str:
    if isinstance(value, str):
        return "TEXT"
    if isinstance(value, bytes):
        return "BLOB"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    return "NULL"


# ---------------------------------------------------------------- canned-query parameter checks
def check_number(value: Any, name: Any, low: Any, high: Any) -> int:
    """1 when ``value`` is a number in ``low..high`` or empty (a form not yet submitted); else an error.

    SQLite's own ``cast('abc' as real)`` is 0, so a mistyped threshold silently
    meant "everything"; the canned queries test their numbers with this first.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1
    try:
        number = float(str(value).strip())
    except ValueError:
        number = None
    if number is None or number != number or not float(low) <= number <= float(high):
        raise EmbeddingError(f"{name} must be a number from {_plain(low)} to {_plain(high)}, got '{str(value)[:40]}'")
    return 1


def check_choice(value: Any, name: Any, choices: Any) -> int:
    """1 when ``value`` is one of the JSON array ``choices`` or empty; else an error naming the choices."""
    import json

    if value is None or (isinstance(value, str) and not value.strip()):
        return 1
    allowed = json.loads(choices)
    if value not in allowed:
        raise EmbeddingError(f"unknown {name} '{str(value)[:80]}' (known: {', '.join(map(str, allowed)) or 'none'})")
    return 1


def _plain(number: Any) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)
