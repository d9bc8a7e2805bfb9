"""Fast nearest-neighbour search: one normalised float32 matrix per model, in memory.

vec0 stays the portable store and the reference implementation, but its exact
scan costs about ten times a BLAS matrix-vector product over the same vectors.
This module keeps, per (database file, model), the model's vectors normalised
once (so cosine similarity is a dot product) with the rows grouped by provider:
a provider filter then scores only that provider's contiguous rows, which makes
"one provider of ten" cheaper than an unfiltered query instead of slower, and
never loses results (the filter is applied before the top-k, never after).

Why the matrix is read from vec0 rather than from a sidecar file written by
``load``: vec0 is the single source of truth, so there is nothing to keep in
step, databases loaded by older versions or copied without sidecars work, and a
read-only published database needs no extra files.  The read happens once per
process and model (its time is the "build ... from vec0" that benchmarks/knn.py
prints).  Datasette's ``startup`` hook builds every model's index in a background
thread (``fast_index: build_at_startup``, see :mod:`index_warmup`), so that time
is not spent on the first query.

No request ever builds an index or waits for one.  On a connection Datasette
serves requests with (marked by :func:`mark_served`), a query whose model has no
current index is answered by vec0's exact scan, and the build is handed to one
builder thread that reads on a private read-only connection, in one read
transaction (one snapshot, so a load committing meanwhile cannot tear it).  Why:
a request that built the index held a lock other requests waited for *while they
held their own connection's SQLite mutex* (inside ``embeddings_nearest``); the
garbage collector, run in the building thread, finalised a cursor of such a
connection and waited for its mutex: every database request hung for good (issue
12).  The request side therefore takes no lock the builder holds: the cache is
read without a lock (publishing an index is one dict assignment) and builds are
requested through a lock-free queue.  Connections we opened ourselves (the CLI,
benchmarks, tests) build synchronously, as before.

Staleness: each query compares the model's data version (``storage.store.data_version``,
one primary-key read) with the one the index was built from.

Memory is bounded (``max_memory_mb``): least recently used models are dropped,
and a model larger than the budget is not indexed at all (vec0 answers).  Above
``ann_threshold`` records an approximate HNSW index (faiss-cpu, the ``ann``
extra) is built in a background thread and used once ready; exact search
answers until then and whenever a filter is too selective for the approximate
index to return k rows.
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..config import IndexSettings
from ..storage.store import data_version
from ..storage.vectors import MAX_NORM, MIN_NORM, VECTOR_DTYPE

if TYPE_CHECKING:  # pragma: no cover
    from .filters import NeighbourFilter
    from ..storage.store import ModelInfo, Store

DEFAULT_SETTINGS = IndexSettings()
BUILDER_THREAD_NAME = "datasette-embeddings-index-builder"
#: after an index is dropped to make room (or its build failed), it is not built again for this
#: long (vec0 answers meanwhile): two models that do not fit together would otherwise rebuild in turn
REBUILD_COOLDOWN_SECONDS = 30.0
#: rows added to an HNSW graph per faiss call; between calls a build checks whether the process is exiting
ANN_ADD_BATCH = 2048
#: how long the interpreter's exit waits for graph builds to reach their next batch boundary
ANN_EXIT_JOIN_SECONDS = 60.0

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ graph builds and exit
class _AnnStopped(Exception):
    """A graph build given up because the process is exiting."""


_ann_stop = threading.Event()
_ann_threads: set[threading.Thread] = set()
_ann_threads_lock = threading.Lock()


def _stop_ann_builds() -> None:
    """At exit: stop every graph build at its next batch and wait for its thread.

    A daemon thread still inside faiss (its OpenMP workers running) when Python
    finalises aborted the process ("terminate called without an active exception",
    exit code 134) or hung it; ``datasette ... --get`` or the CLI exits while a
    build started by the startup warm-up is running.
    """
    _ann_stop.set()
    deadline = time.monotonic() + ANN_EXIT_JOIN_SECONDS
    with _ann_threads_lock:
        threads = list(_ann_threads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


atexit.register(_stop_ann_builds)


# ------------------------------------------------------------------ the index of one model
class _Ann:
    """An HNSW graph over the normalised matrix (faiss, inner product = cosine on unit rows).

    The graph keeps its own half-precision copy of the vectors (half the
    matrix again); candidates are re-scored exactly against the float32 matrix,
    so similarities stay exact and only the choice of rows is approximate.
    faiss filters natively: a provider filter becomes a range or
    bitmap selector that the graph walk honours, so no candidates are wasted.
    """

    def __init__(self, matrix: np.ndarray, settings: IndexSettings):
        import faiss

        self.settings = settings
        self.faiss = faiss
        self.index = faiss.IndexHNSWSQ(
            matrix.shape[1], faiss.ScalarQuantizer.QT_fp16, settings.ann_connectivity, faiss.METRIC_INNER_PRODUCT
        )
        self.index.hnsw.efConstruction = settings.ann_expansion_add
        self.index.train(matrix[: min(len(matrix), 10_000)])
        # a batch at a time, so that an exiting process stops the build at the next boundary
        for start in range(0, len(matrix), ANN_ADD_BATCH):
            if _ann_stop.is_set():
                raise _AnnStopped()
            self.index.add(matrix[start:start + ANN_ADD_BATCH])
        self.rows = len(matrix)
        # fp16 codes plus the bottom layer's 2 * M neighbour ids per row (upper layers add a few percent)
        self.nbytes = int(self.rows * (matrix.shape[1] * 2 + settings.ann_connectivity * 2 * 4) * 1.05)

    def candidates(self, query: np.ndarray, count: int, ranges: list[tuple[int, int]]) -> np.ndarray:
        """Row positions of about the ``count`` nearest rows inside ``ranges`` (approximate)."""
        faiss = self.faiss
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.settings.ann_expansion_search, count)
        keep = None
        if ranges != [(0, self.rows)]:
            if len(ranges) == 1:
                keep = faiss.IDSelectorRange(ranges[0][0], ranges[0][1])
            else:
                mask = np.zeros(self.rows, dtype=bool)
                for start, stop in ranges:
                    mask[start:stop] = True
                bits = np.packbits(mask, bitorder="little")
                keep = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
                keep.referenced_bits = bits  # the selector does not own the buffer
            params.sel = keep
        _, found = self.index.search(query[None, :], count, params=params)
        found = found[0]
        return found[found >= 0].astype(np.int64)


@dataclass
class ModelIndex:
    """One model's vectors, normalised, rows grouped by provider (ids ascending within a provider)."""

    label: str
    token: tuple
    ids: np.ndarray  # int64, row -> record id
    matrix: np.ndarray  # float32 (rows, dims), unit rows
    providers: dict[str, tuple[int, int]]  # provider -> [start, stop) rows
    # rows whose stored vector has no cosine (zero or too long): zero in ``matrix``, never a result
    unusable_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    by_id: np.ndarray = field(init=False)  # rows sorted by id, for id -> row
    ann: _Ann | None = None
    ann_state: str = "none"  # none | building | ready | failed | stopped (the process is exiting)
    ann_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.by_id = np.argsort(self.ids, kind="stable")

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.ids.nbytes + self.by_id.nbytes + (self.ann.nbytes if self.ann else 0))

    def rows_for_ids(self, ids: Sequence[int]) -> np.ndarray:
        if not len(ids) or not len(self.ids):
            return np.empty(0, dtype=np.int64)
        wanted = np.asarray(list(ids), dtype=np.int64)
        pos = np.searchsorted(self.ids, wanted, sorter=self.by_id)
        pos = np.minimum(pos, len(self.ids) - 1)
        rows = self.by_id[pos]
        return rows[self.ids[rows] == wanted]

    def ranges(self, providers: Sequence[str], exclude_providers: Sequence[str]) -> list[tuple[int, int]]:
        """The row ranges a provider filter selects, merged where adjacent."""
        excluded = set(exclude_providers)
        wanted = dict.fromkeys(providers) if providers else self.providers
        chosen = [self.providers[p] for p in wanted if p in self.providers and p not in excluded]
        merged: list[tuple[int, int]] = []
        for start, stop in sorted(chosen):
            if merged and merged[-1][1] == start:
                merged[-1] = (merged[-1][0], stop)
            elif stop > start:
                merged.append((start, stop))
        return merged

    def exact(self, query: np.ndarray, k: int, ranges: list[tuple[int, int]], excluded_rows: np.ndarray) -> list[tuple[int, float]]:
        """Score only the selected rows (one BLAS product per range), then a partial sort."""
        total = sum(stop - start for start, stop in ranges)
        if total == 0:
            return []
        if len(ranges) == 1:
            start, stop = ranges[0]
            scores = self.matrix[start:stop] @ query
            offsets = np.array([0]), np.array([start])
        else:
            scores = np.empty(total, dtype=np.float32)
            at = 0
            for start, stop in ranges:
                np.dot(self.matrix[start:stop], query, out=scores[at : at + stop - start])
                at += stop - start
            offsets = (
                np.cumsum([0] + [stop - start for start, stop in ranges[:-1]]),
                np.array([start for start, _ in ranges]),
            )
        if len(excluded_rows):
            # excluded rows -> positions in ``scores`` (only those inside the selected ranges)
            for (pos0, row0), (start, stop) in zip(zip(*offsets), ranges):
                inside = excluded_rows[(excluded_rows >= start) & (excluded_rows < stop)]
                scores[inside - row0 + pos0] = -np.inf
        kk = min(k, total)
        top = np.argpartition(-scores, kk - 1)[:kk] if kk < total else np.arange(total)
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[np.isfinite(scores[top])]
        # positions in ``scores`` -> rows
        seg = np.searchsorted(offsets[0], top, side="right") - 1
        rows = top - offsets[0][seg] + offsets[1][seg]
        return [(int(self.ids[r]), float(scores[p])) for r, p in zip(rows, top)]

    def approximate(
        self, query: np.ndarray, k: int, ranges: list[tuple[int, int]], excluded_rows: np.ndarray
    ) -> list[tuple[int, float]] | None:
        """HNSW candidates inside the filter's rows, re-scored exactly; None when short of k."""
        assert self.ann is not None
        rows = self.ann.candidates(query, (k + len(excluded_rows)) * self.ann.settings.ann_overfetch, ranges)
        if len(excluded_rows):
            rows = rows[~np.isin(rows, excluded_rows)]
        if len(rows) < k:
            return None  # too selective for the graph: the caller scores the subset exactly
        scores = self.matrix[rows] @ query
        order = np.argsort(-scores, kind="stable")[:k]
        return [(int(self.ids[rows[i]]), float(scores[i])) for i in order]


# ------------------------------------------------------------------ building and caching
class _Cache:
    """Process-wide, thread-safe, LRU-bounded map of (database path, model label) -> ModelIndex."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.indexes: OrderedDict[tuple[str, str], ModelIndex] = OrderedDict()
        self.build_locks: dict[tuple[str, str], threading.Lock] = {}
        self.evicted_at: dict[tuple[str, str], float] = {}

    def get(self, key: tuple[str, str], token: tuple) -> ModelIndex | None:
        """The current index, without blocking: requests call this while SQLite may hold their mutex.

        A dict read is atomic under the GIL and an index is complete before it is
        published, so no lock is needed to read; the recency update is skipped when
        another thread holds the lock (the order is a hint for eviction, not a promise).
        """
        index = self.indexes.get(key)
        if index is None or index.token != token:
            return None
        if self.lock.acquire(blocking=False):
            try:
                if key in self.indexes:
                    self.indexes.move_to_end(key)
            finally:
                self.lock.release()
        return index

    def holds(self, key: tuple[str, str], token: tuple) -> bool:
        """Whether a current index is held, without making it the most recently used."""
        with self.lock:
            index = self.indexes.get(key)
            return index is not None and index.token == token

    def has_room(self, key: tuple[str, str], nbytes: int, budget: float) -> bool:
        """Whether ``nbytes`` more fit in the budget beside the other indexes (nothing would be dropped)."""
        with self.lock:
            held = sum(index.nbytes for k, index in self.indexes.items() if k != key)
        return held + nbytes <= budget

    def build_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self.lock:
            return self.build_locks.setdefault(key, threading.Lock())

    def put(self, key: tuple[str, str], index: ModelIndex, budget: float) -> None:
        with self.lock:
            self.indexes[key] = index
            self.indexes.move_to_end(key)
            self._evict(budget)

    def _evict(self, budget: float) -> None:
        while len(self.indexes) > 1 and sum(i.nbytes for i in self.indexes.values()) > budget:
            evicted, _ = self.indexes.popitem(last=False)
            self.evicted_at[evicted] = time.monotonic()

    def clear(self) -> None:
        with self.lock:
            self.indexes.clear()
            self.evicted_at.clear()


_cache = _Cache()


# ------------------------------------------------------------------ building off the request path
#: a SQL function on each connection Datasette serves: 1 (mutable) or 2 (immutable).  The mark
#: lives on the connection itself: pysqlite3 connections take neither attributes nor weak
#: references, and a set of ``id(conn)`` wrongly marked a later connection that reused an id
SERVED_MARK = "datasette_embeddings_served"


def mark_served(conn, immutable: bool = False) -> None:
    """Datasette's ``prepare_connection``: queries on ``conn`` never build an index themselves.

    ``immutable`` (Datasette's ``-i``): the builder opens the file with ``immutable=1`` as
    Datasette does, taking no locks and leaving no ``-shm`` or ``-wal`` file beside it.
    """
    mark = 2 if immutable else 1
    conn.create_function(SERVED_MARK, 0, lambda: mark, deterministic=True)


def served(conn) -> bool | None:
    """None for a connection of our own; else whether Datasette serves it immutable."""
    try:
        mark = conn.execute(f"select {SERVED_MARK}()").fetchone()[0]
    except Exception:  # no such function: not a connection Datasette serves
        return None
    return mark == 2


class _Builder:
    """One daemon thread building requested indexes on private read-only connections.

    Requests only ever call :meth:`request`: a set membership test, a set insert and
    a ``SimpleQueue.put`` (C code that never waits), so a request can hold its
    connection's mutex while asking without anything waiting on it in turn.
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.pending: set[tuple[str, str]] = set()
        self.thread: threading.Thread | None = None
        self.idle = threading.Event()
        self.idle.set()
        self.builds = 0

    def request(self, path: str, label: str, settings: IndexSettings = DEFAULT_SETTINGS, immutable: bool = False) -> None:
        key = (path, label)
        if key in self.pending:
            return
        evicted = _cache.evicted_at.get(key)
        if evicted is not None and time.monotonic() - evicted < REBUILD_COOLDOWN_SECONDS:
            return
        self.pending.add(key)
        self.idle.clear()
        self.queue.put((path, label, settings, immutable))
        thread = self.thread
        if thread is None or not thread.is_alive():
            thread = threading.Thread(target=self._run, name=BUILDER_THREAD_NAME, daemon=True)
            self.thread = thread
            thread.start()

    def _run(self) -> None:
        while True:
            path, label, settings, immutable = self.queue.get()
            key = (path, label)
            try:
                build_from_file(path, label, settings, immutable)
            except Exception as ex:  # vec0 keeps answering; a query asks again after the cooldown
                _cache.evicted_at[key] = time.monotonic()
                log.warning("datasette-embeddings: could not build the fast index of %s in %s: %s", key[1], key[0], ex)
            finally:
                self.builds += 1
                self.pending.discard(key)
                if not self.pending:
                    self.idle.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until no build is queued or running (tests, benchmarks); False on timeout."""
        return self.idle.wait(timeout)


_builder = _Builder()


def wait_for_builds(timeout: float | None = None) -> bool:
    """Block until the builder thread has nothing queued or running; False on timeout."""
    return _builder.wait_idle(timeout)


def open_private(path: str, immutable: bool = False):
    """A read-only connection of our own to ``path`` (immutable when asked, or when it cannot be opened read-only)."""
    from ..storage import connection as sqlite_conn

    if immutable:
        return sqlite_conn.connect(path, immutable=True)
    try:
        conn = sqlite_conn.connect(path, readonly=True)
        conn.execute("select 1 from sqlite_master limit 1").fetchall()
        return conn
    except Exception:
        return sqlite_conn.connect(path, immutable=True)


def build_from_file(
    path: str, label: str, settings: IndexSettings = DEFAULT_SETTINGS, immutable: bool = False
) -> ModelIndex | None:
    """Build (and cache) the index of model ``label`` of database ``path`` on a private connection.

    One read transaction covers the token and both reads of :func:`build`, so the
    index is exactly one committed state of the database.  Skips (None) a model that
    is gone, already current, or too large for the budget.
    """
    from ..storage.store import Store

    key = (path, label)
    with _cache.build_lock(key):  # the startup warm-up builds under the same lock: never twice at once
        conn = open_private(path, immutable)
        try:
            conn.execute("begin")
            model = Store(conn).model(label)
            if model is None or not settings.enabled or estimated_bytes(model, settings) > settings.max_memory_mb * 1e6:
                return None
            token = data_version(conn, label)
            if _cache.holds(key, token):
                return None
            index = build(conn, model, token)
            conn.execute("commit")
        finally:
            conn.close()
        _cache.put(key, index, settings.max_memory_mb * 1e6)
    _start_ann(index, settings, False)
    return index


def clear_cache() -> None:
    """Forget every in-memory index (tests and benchmarks use it to measure a cold start).

    Waits (a bounded time) for the builder thread first, so a build in flight cannot put
    an index back just after the cache was cleared.
    """
    _builder.wait_idle(60)
    _cache.clear()


def database_path(conn) -> str | None:
    """The main database's file, or None for an in-memory database (nothing to key a cache on)."""
    for _seq, name, path in conn.execute("pragma database_list").fetchall():
        if name == "main":
            return os.path.realpath(path) if path else None
    return None


class _ChangedWhileReading(Exception):
    """The vec0 table changed between the two reads of :func:`build` (a load committed)."""


def build(conn, model: "ModelInfo", token: tuple) -> ModelIndex:
    """Read the model's vectors from its vec0 table, normalise them and group rows by provider.

    Two reads, so that each vector is written once, straight into its grouped row: the
    first reads ids and providers only (cheap: no vectors) and fixes every row's place;
    the second reads the vectors a batch at a time, normalises each batch with NumPy and
    scatters it into place.  That holds the matrix about once while building (a read,
    then a reordering copy, held it twice, and normalising the whole matrix at once
    briefly needed a third copy) and runs no Python loop per row.  The result is exactly
    what reading row by row gives: the same ``np.linalg.norm`` of each row, the same order
    (provider name, then id).  A load committing between the two reads is noticed (the ids
    differ) and the build starts again.
    """
    for _attempt in range(3):
        try:
            return _build_once(conn, model, token)
        except _ChangedWhileReading:
            continue
    raise RuntimeError(f"the vectors of model '{model.label}' kept changing while the index was built")


def _build_once(conn, model: "ModelInfo", token: tuple) -> ModelIndex:
    dims = int(model.dimensions)
    rows = conn.execute(f"select id, provider from {model.vec_table}").fetchall()
    n = len(rows)
    ids_read, providers = zip(*rows) if n else ((), ())
    del rows
    ids = np.fromiter(ids_read, dtype=np.int64, count=n)
    names = sorted(set(providers))  # ranked by name so the grouping is deterministic
    rank_of = {name: r for r, name in enumerate(names)}
    ranks = np.fromiter(map(rank_of.__getitem__, providers), dtype=np.int32, count=n)
    del ids_read, providers
    order = np.lexsort((ids, ranks))  # grouped row -> first-read row
    place = np.empty(n, dtype=np.int64)
    place[order] = np.arange(n)  # first-read row -> grouped row
    by_id = np.argsort(ids, kind="stable")
    matrix = np.empty((n, dims), dtype=np.float32)
    filled = 0
    unusable: list[np.ndarray] = []
    cursor = conn.execute(f"select id, embedding from {model.vec_table}")
    while batch := cursor.fetchmany(8192):
        batch_ids, blobs = zip(*batch)
        wanted = np.fromiter(batch_ids, dtype=np.int64, count=len(batch))
        if filled + len(batch) > n:
            raise _ChangedWhileReading
        first_read = by_id[np.minimum(np.searchsorted(ids, wanted, sorter=by_id), max(n - 1, 0))]
        if not np.array_equal(ids[first_read], wanted):
            raise _ChangedWhileReading
        block = np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE).reshape(len(batch), dims)
        with np.errstate(over="ignore", under="ignore"):
            norms = np.linalg.norm(block, axis=1)
        bad = ~((norms >= MIN_NORM) & (norms <= MAX_NORM))  # also NaN: vectors.MIN_NORM says why
        norms[bad] = 1.0
        rows_here = place[first_read]
        matrix[rows_here] = block / norms[:, None]
        if bad.any():
            matrix[rows_here[bad]] = 0.0
            unusable.append(rows_here[bad])
        filled += len(batch)
    if filled != n:
        raise _ChangedWhileReading
    bounds = np.searchsorted(ranks[order], np.arange(len(names) + 1))
    grouped = {name: (int(bounds[r]), int(bounds[r + 1])) for r, name in enumerate(names)}
    return ModelIndex(
        label=model.label, token=token, ids=ids[order], matrix=matrix, providers=grouped,
        unusable_rows=np.sort(np.concatenate(unusable)) if unusable else np.empty(0, dtype=np.int64),
    )


def estimated_bytes(model: "ModelInfo", settings: IndexSettings = DEFAULT_SETTINGS) -> int:
    """What the model's index will hold: the float32 matrix and ids, plus the graph above the threshold."""
    n, dims = int(model.record_count), int(model.dimensions)
    graph = n * (dims * 2 + settings.ann_connectivity * 8) if settings.ann and n >= settings.ann_threshold else 0
    return n * (dims * 4 + 16) + graph


def index_for(
    conn, model: "ModelInfo", settings: IndexSettings = DEFAULT_SETTINGS, *, wait_for_ann: bool = False
) -> ModelIndex | None:
    """The current index for ``model``, or None when vec0 should answer.

    On a connection Datasette serves (:func:`mark_served`) a missing or stale index is
    requested from the builder thread and None returned at once: the request never
    builds or waits.  On other connections (CLI, benchmarks, tests) it is built here.
    """
    if not settings.enabled or estimated_bytes(model, settings) > settings.max_memory_mb * 1e6:
        return None
    path = database_path(conn)
    if path is None:
        return None
    key = (path, model.label)
    token = data_version(conn, model.label)
    index = _cache.get(key, token)
    if index is None:
        immutable = served(conn)
        if immutable is not None:
            _builder.request(path, model.label, settings, immutable)
            return None
        with _cache.build_lock(key):
            index = _cache.get(key, token)
            if index is None:
                index = build(conn, model, token)
                _cache.put(key, index, settings.max_memory_mb * 1e6)
                _start_ann(index, settings, wait_for_ann)
    elif wait_for_ann and index.ann_state == "building":
        _wait_for_ann(index)
    return index


def warm(conn, settings: IndexSettings = DEFAULT_SETTINGS) -> list[str]:
    """Build the index of each model in the database behind ``conn`` not held yet; the labels warmed.

    For the startup warm-up (:mod:`index_warmup`).  Builds go through :func:`index_for`,
    so they take the same per-model build lock as queries: a query for a model being
    warmed waits for that build, and a model a query already built is not built again.
    Warming never makes room: a model is skipped when its estimated size would push
    another index (warmed earlier, or built by a query) out of the budget, so the
    warm-up cannot undo the least-recently-used order that queries set.
    """
    from ..storage.store import Store

    if not (settings.enabled and settings.build_at_startup):
        return []
    path = database_path(conn)
    if path is None:
        return []
    built = []
    for model in Store(conn).models():
        key = (path, model.label)
        if _cache.holds(key, data_version(conn, model.label)) or not _cache.has_room(key, estimated_bytes(model, settings), settings.max_memory_mb * 1e6):
            continue
        if index_for(conn, model, settings) is not None:
            built.append(model.label)
    return built


def ann_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _start_ann(index: ModelIndex, settings: IndexSettings, wait: bool) -> None:
    if not settings.ann or len(index.ids) < settings.ann_threshold or not ann_available() or _ann_stop.is_set():
        return
    index.ann_state = "building"

    def run() -> None:
        started = time.perf_counter()
        try:
            index.ann = _Ann(index.matrix, settings)
            index.ann_seconds = time.perf_counter() - started
            index.ann_state = "ready"
            with _cache.lock:
                _cache._evict(settings.max_memory_mb * 1e6)
        except _AnnStopped:
            index.ann_state = "stopped"
        except Exception:  # pragma: no cover - exact search keeps answering
            index.ann_state = "failed"
        finally:
            with _ann_threads_lock:
                _ann_threads.discard(threading.current_thread())

    thread = threading.Thread(target=run, name=f"ann-{index.label}", daemon=True)
    with _ann_threads_lock:
        _ann_threads.add(thread)
    thread.start()
    if wait:
        thread.join()


def _wait_for_ann(index: ModelIndex) -> None:
    while index.ann_state == "building":
        time.sleep(0.05)


def search(
    conn, model: "ModelInfo", vector: np.ndarray, k: int, flt: "NeighbourFilter", exclude_ids: Sequence[int] = (),
    settings: IndexSettings = DEFAULT_SETTINGS,
) -> list[tuple[int, float]] | None:
    """Top-k ``(record id, similarity)`` honouring ``flt``; None when the fast path cannot answer."""
    index = index_for(conn, model, settings)
    if index is None:
        return None
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0.0:
        return None  # vec0 decides what a zero or non-finite query means
    query = (vector / norm).astype(np.float32)
    ranges = index.ranges(flt.providers, flt.exclude_providers)
    excluded_ids = list(exclude_ids)
    if flt.exclude_subject is not None:
        excluded_ids += [
            r[0]
            for r in conn.execute(
                "select id from records where subject_id = ? and model = ?", [flt.exclude_subject, model.label]
            )
        ]
    excluded_rows = np.unique(np.concatenate([index.rows_for_ids(excluded_ids), index.unusable_rows]))
    selected = sum(stop - start for start, stop in ranges)
    if index.ann is not None and selected >= settings.ann_threshold:
        found = index.approximate(query, k, ranges, excluded_rows)
        if found is not None:
            return found
    return index.exact(query, k, ranges, excluded_rows)


def status(conn, model: "ModelInfo") -> dict[str, Any]:
    """What the fast path holds for a model (for operators and the benchmarks)."""
    path = database_path(conn)
    index = _cache.indexes.get((path, model.label)) if path else None
    return {
        "model": model.label,
        "exact": index is not None,
        "rows": int(len(index.ids)) if index else 0,
        "memory_mb": round(index.nbytes / 1e6, 1) if index else 0.0,
        "ann": index.ann_state if index else "none",
        "ann_build_seconds": round(index.ann_seconds, 1) if index else 0.0,
    }
