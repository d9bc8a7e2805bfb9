"""SQL functions on every connection: ``embed_text``, ``embed_image``, ``vec_cosine``, ``vec_mean``, ``embeddings_nearest``,
``embeddings_links``, ``embeddings_links_current``.

``embed_text(model, text)`` and ``embed_image(model, image_blob)`` return the
little-endian float32 BLOB that sqlite-vec takes directly::

    select r.* from vec_clip_vit_b_32_1a2b3c4d v join records r on r.id = v.id
    where v.embedding match embed_text('clip-ViT-B-32', 'a ship in a storm') and k = 10

``model`` is a stored model label or a configured llm model id, resolved by
:mod:`embedding.resolver` (any other installed llm model only with
``allow_any_model: true``).  Every refusal is
a SQL error carrying a clear message; no function ever returns an error as a value.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..config import PluginConfig
from ..embedding import resolver, runtime
from ..errors import EmbeddingError, SimilarityError
from ..search import links, memory_index
from ..search.filters import NeighbourFilter
from ..search.similarity import nearest_ids
from ..storage.store import Store
from ..storage.vectors import VectorError, cosine_similarity, parse_vector, to_blob
from . import udf


def _stored_model(conn, label: str) -> tuple[bool, str | None]:
    """Whether this database stores ``label``, and its ``models.llm_model_id``."""
    try:
        row = conn.execute("select llm_model_id from models where label = ?", [label]).fetchone()
    except Exception as ex:
        if "no such table" in str(ex):  # not a datasette-embeddings database
            return False, None
        raise  # e.g. "interrupted" by the time limit: let the query end with that, not a wrong refusal
    return (row is not None), (row[0] if row and row[0] else None)


def _model_name(value: Any, function: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EmbeddingError(f"{function}(): the first argument must be a model label or llm model id")
    return value


def register_functions(conn, config: PluginConfig | None = None) -> None:
    """Register every SQL function on ``conn``, with the limits and switches of the instance's ``config``.

    The nearest-neighbour functions share one :class:`Store`, made here rather than
    per call: cheap now, but a per-call sqlite-utils ``Database`` once expired the
    query calling the function ("abort due to ROLLBACK").
    """
    config = config or PluginConfig()
    embedding = config.embedding
    store = Store(conn)

    def resolve(name: str) -> str:
        stored, llm_id = _stored_model(conn, name)
        return resolver.require_query_model(embedding, name, stored=stored, stored_llm_id=llm_id)

    def embed_text(model: Any, text: Any) -> bytes:
        name = _model_name(model, "embed_text")
        runtime.require_enabled(embedding)
        _argument("embed_text", "text", text, str, "TEXT")
        return to_blob(runtime.embed_text(resolve(name), text, config=embedding))

    def embed_image(model: Any, image: Any) -> bytes:
        name = _model_name(model, "embed_image")
        runtime.require_enabled(embedding)
        _argument("embed_image", "image", image, bytes, "a BLOB of image bytes", " (embed_image never reads files or fetches URLs)")
        return to_blob(runtime.embed_image(resolve(name), image, config=embedding))

    def nearest(model_label: Any, query: Any, k: Any, provider: Any = None) -> str:
        return _nearest_json(store, config, model_label, query, k, provider)

    def index_status(label: Any) -> str:
        model = store.model(label) if isinstance(label, str) else None
        if model is None:
            raise ValueError(f"embeddings_index_status: unknown model {label!r}")
        return json.dumps(memory_index.status(conn, model))

    udf.create_function(conn, "embeddings_check_number", 4, check_number, deterministic=True)
    udf.create_function(conn, "embeddings_check_choice", 3, check_choice, deterministic=True)
    udf.create_function(conn, "embeddings_check_found", 3, check_found, deterministic=True)
    udf.create_function(conn, "embed_text", 2, embed_text)
    udf.create_function(conn, "embed_image", 2, embed_image)
    udf.create_function(conn, "vec_cosine", 2, vec_cosine, deterministic=True)
    udf.create_aggregate(conn, "vec_mean", 1, VecMean)
    udf.create_function(conn, "embeddings_nearest", 3, lambda m, q, k: nearest(m, q, k))
    udf.create_function(conn, "embeddings_nearest", 4, nearest)
    udf.create_function(conn, "embeddings_index_status", 1, index_status)
    # cross-collection links with the blocked products of `datasette-embeddings links` (search/links.py)
    udf.create_function(conn, "embeddings_links", 3, lambda m, a, b: links.links_json(store, m, a, b))
    udf.create_function(conn, "embeddings_links", 4, lambda m, a, b, k: links.links_json(store, m, a, b, k))
    udf.create_function(conn, "embeddings_links", 5, lambda m, a, b, k, t: links.links_json(store, m, a, b, k, t))
    # deterministic: constant within one statement, so SQLite evaluates it once per query
    udf.create_function(conn, "embeddings_links_current", 4, lambda m, a, b, level: links.run_is_current(conn, m, a, b, level),
                        deterministic=True)


def _nearest_json(store: Store, config: PluginConfig, model_label: Any, query: Any, k: Any, provider: Any = None) -> str:
    """``embeddings_nearest(model, vector, k [, provider])`` -> JSON ``[{"id", "similarity"}]`` for json_each."""
    if not isinstance(model_label, str):
        raise ValueError("embeddings_nearest: model_label must be text")
    model = store.model(model_label)
    if model is None:
        raise ValueError(f"embeddings_nearest: unknown model '{model_label}'")
    try:
        vector = parse_vector(query)
    except VectorError as ex:
        raise ValueError(f"embeddings_nearest: query_vector: {ex}") from None
    if not isinstance(k, int):
        raise ValueError("embeddings_nearest: k must be an integer")
    flt = NeighbourFilter(providers=(provider,)) if provider is not None else NeighbourFilter()
    try:
        pairs = nearest_ids(store.conn, model, vector, k, flt, settings=config.fast_index)
    except SimilarityError as ex:
        raise ValueError(f"embeddings_nearest: {ex}") from None
    return json.dumps([{"id": rid, "similarity": round(sim, 6)} for rid, sim in pairs])


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


def check_found(value: Any, given: Any, message: Any) -> Any:
    """``value``, unless it is NULL although the visitor gave ``given``: then ``message`` as the error.

    A canned query's record that does not exist otherwise reached ``embeddings_nearest``
    as a NULL vector, and the visitor read about a "query_vector" they never typed
    instead of the provider and depiction they did.  An empty ``given`` (the form
    before it is submitted) is not an error: the query just finds nothing.
    """
    if value is None and given is not None and str(given).strip():
        raise EmbeddingError(str(message))
    return value


def _plain(number: Any) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)
