"""Cross-collection links: for every record of one provider, its k best matches in another.

One KNN query per record is the slow way (the ``cross_provider_links`` canned query
ran into Datasette's time limit on the demo).  Here the model's normalised matrix
(:mod:`memory_index`) is multiplied block by block: a fixed block of source rows
against the whole target matrix, the top k of each row kept, the block dropped.
Memory is bounded by the block (``block_rows x targets`` floats), not by
``sources x targets``, and the result is exact: every pair is scored.

The top k of a block is found in two steps, because ``argpartition`` over 100,000
columns costs as much as the matrix product itself: the columns are cut into
chunks of 256, the k chunks with the highest maxima are kept (each of the k best
scores lies in a chunk whose maximum is at least the k-th best, and at most k
chunks have such a maximum) and only their columns are ranked.  Same answer, about
a fifth of the time.

Levels:

* ``depiction``: records are linked as they are (one image, one text sentence).
* ``subject``: the depictions of a subject (several images, one record per
  sentence, an image and its title) are one object.  A subject pair's score is
  the best of its depiction pairs (max-of-max), and the row names that depiction
  pair.  It is what a curator checks ("these two images match"), it is exact
  with the same blocked products (a column reduction by subject), and unlike a
  mean of each depiction's best match it does not punish an object for having a
  weak extra photograph or a boilerplate sentence.

Comparison types come from the records' ``type``: a CLIP-like model holds images
and texts, and ``image-text`` similarities sit on another scale than
``image-image`` ones, so each comparison type gets its own top k.

Several models are fused per (source, target) key pair with reciprocal rank
fusion: ``score = sum over models of 1 / (60 + rank)``, with a model's best rank
over its comparison types; stored under the label ``fused:<a>+<b>`` with
``similarity`` = the score divided by its maximum (rank 1 in every model), so 1.0
means every model ranked the pair first.

Each (model, from, to, level) computed is a row of ``links_runs`` holding the
model's data version; a later ``load`` changes that version, which makes the run
stale: pages then say so (and compute on the fly) instead of serving old rows.
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import memory_index as fast_index
from ..errors import InvalidRequestError, NotFoundError
from ..storage.store import ModelInfo, Store, data_version, stored_version

LEVELS = ("depiction", "subject")
COMPARISONS = ("image-image", "text-text", "text-image", "image-text")
RRF_K = 60
FUSED_PREFIX = "fused:"
MAX_K = 1000
CHUNK = 256  # columns per chunk of the two-step top k
DEFAULT_BLOCK_BYTES = 256e6  # one block of scores, float32

LINK_COLUMNS = (
    "model", "level", "comparison", "source_id", "target_id", "source_provider", "source_key",
    "target_provider", "target_key", "similarity", "rank", "data_version",
)


# ------------------------------------------------------------------ the blocked top k
def _block_rows(n_targets: int, block_rows: int | None) -> int:
    if block_rows is not None:
        return max(1, int(block_rows))
    return int(max(16, min(2048, DEFAULT_BLOCK_BYTES / (4 * max(n_targets, 1)))))


def top_k_of_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest scores of each row, best first: ``(columns (b, k), scores (b, k))``.

    Ties are broken by the lower column.  Rows with fewer than k finite scores have
    ``-inf`` scores at the end (their columns mean nothing).
    """
    b, n = scores.shape
    k = min(k, n)
    if k == 0:
        return np.empty((b, 0), dtype=np.int64), np.empty((b, 0), dtype=np.float32)
    if n >= CHUNK * k * 4:
        full = (n // CHUNK) * CHUNK
        maxima = scores[:, :full].reshape(b, full // CHUNK, CHUNK).max(axis=2)
        chunks = np.argpartition(maxima, maxima.shape[1] - k, axis=1)[:, -k:]
        candidates = (chunks[:, :, None] * CHUNK + np.arange(CHUNK)).reshape(b, -1)
        if full < n:  # the short last chunk is always a candidate
            candidates = np.concatenate([candidates, np.broadcast_to(np.arange(full, n), (b, n - full))], axis=1)
        values = np.take_along_axis(scores, candidates, axis=1)
        pick = np.argpartition(values, values.shape[1] - k, axis=1)[:, -k:]
        top = np.take_along_axis(candidates, pick, axis=1)
    else:
        top = np.argpartition(scores, n - k, axis=1)[:, -k:]
    top.sort(axis=1)  # lower column first, so the stable sort below breaks ties by column
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.int64), np.take_along_axis(top_scores, order, axis=1)


def _exclude(scores: np.ndarray, ranges: np.ndarray | None, start: int) -> None:
    """Set ``scores[i, lo:hi] = -inf`` for each block row i, ``(lo, hi) = ranges[start + i]``."""
    if ranges is None:
        return
    part = ranges[start:start + len(scores)]
    width = part[:, 1] - part[:, 0]
    if np.all(width <= 1):
        rows = np.nonzero(width == 1)[0]
        scores[rows, part[rows, 0]] = -np.inf
        return
    for i in np.nonzero(width > 0)[0]:
        scores[i, part[i, 0]:part[i, 1]] = -np.inf


def _run_blocks(blocks: Sequence[tuple[int, int]], work: Callable[[int, int], int], workers: int,
                progress: Callable[[int], None] | None) -> None:
    """``work(start, stop)`` for every block, in ``workers`` threads.

    NumPy releases the GIL in the product and in the partitions, so blocks run side by
    side on separate cores; each writes its own rows of the output, and at most
    ``workers`` score blocks are alive at once.  Progress is reported from the calling
    thread, in block order, so callers need no lock.
    """
    if workers <= 1 or len(blocks) <= 1:
        for start, stop in blocks:
            done = work(start, stop)
            if progress:
                progress(done)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="links-block") as pool:
        for done in pool.map(lambda block: work(*block), blocks):
            if progress:
                progress(done)


def top_k_between(
    source: np.ndarray, target: np.ndarray, k: int, *, block_rows: int | None = None,
    exclude: np.ndarray | None = None, progress: Callable[[int], None] | None = None, workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """For each source row, the k target rows of highest dot product (cosine on unit rows).

    ``exclude`` (optional, ``(len(source), 2)``) gives per source row a range of target
    columns that may not match (the record itself, or its own subject).  Returns
    ``(columns (n, k), similarities (n, k))`` best first, ``-inf`` where fewer than k
    targets were allowed.  Memory: ``workers`` blocks of ``block_rows x len(target)`` scores.
    """
    n = len(source)
    k = min(k, len(target))
    cols_out = np.zeros((n, k), dtype=np.int64)
    sims_out = np.full((n, k), -np.inf, dtype=np.float32)
    if k == 0 or n == 0:
        return cols_out, sims_out
    step = _block_rows(len(target), block_rows)
    target_t = target.T

    def work(start: int, stop: int) -> int:
        scores = source[start:stop] @ target_t
        _exclude(scores, exclude, start)
        cols_out[start:stop], sims_out[start:stop] = top_k_of_rows(scores, k)
        return stop - start

    _run_blocks([(start, min(start + step, n)) for start in range(0, n, step)], work, workers, progress)
    return cols_out, sims_out


def subject_top_k(
    source: np.ndarray, source_groups: np.ndarray, target: np.ndarray, target_groups: np.ndarray, k: int, *,
    block_rows: int | None = None, exclude_same: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None, workers: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Subject-level top k: rows of ``source``/``target`` are grouped (contiguous runs).

    ``source_groups`` / ``target_groups`` are the start row of each group (ascending, first 0).
    A group pair scores the best of its row pairs.  ``exclude_same`` maps each source group
    to a target group it may not match (-1: none).  Returns per source group
    ``(target groups (g, k), scores (g, k), source rows (g, k), target rows (g, k))``, the
    last two naming the row pair that gave the score; ``-inf`` scores where absent.
    """
    n_groups, n_targets = len(source_groups), len(target_groups)
    k = min(k, n_targets)
    out_groups = np.zeros((n_groups, k), dtype=np.int64)
    out_scores = np.full((n_groups, k), -np.inf, dtype=np.float32)
    out_src = np.zeros((n_groups, k), dtype=np.int64)
    out_tgt = np.zeros((n_groups, k), dtype=np.int64)
    if k == 0 or n_groups == 0:
        return out_groups, out_scores, out_src, out_tgt
    bounds = np.append(source_groups, len(source))
    target_bounds = np.append(target_groups, len(target))
    step = _block_rows(len(target), block_rows)
    target_t = target.T
    blocks = []  # whole groups only, as many as fit in a block (at least one)
    g = 0
    while g < n_groups:
        last = int(np.searchsorted(bounds, bounds[g] + step, side="right")) - 1
        last = min(max(last, g + 1), n_groups)
        blocks.append((g, last))
        g = last

    def work(g: int, last: int) -> int:
        r0, r1 = int(bounds[g]), int(bounds[last])
        scores = source[r0:r1] @ target_t
        if exclude_same is not None:
            for group in range(g, last):
                other = exclude_same[group]
                if other >= 0:
                    scores[bounds[group] - r0:bounds[group + 1] - r0, target_bounds[other]:target_bounds[other + 1]] = -np.inf
        by_target = np.maximum.reduceat(scores, target_groups, axis=1)
        by_pair = np.maximum.reduceat(by_target, bounds[g:last] - r0, axis=0)
        top, top_scores = top_k_of_rows(by_pair, k)
        out_groups[g:last], out_scores[g:last] = top, top_scores
        for i in range(last - g):
            a0, a1 = int(bounds[g + i] - r0), int(bounds[g + i + 1] - r0)
            for j in range(k):
                if not np.isfinite(top_scores[i, j]):
                    continue
                t = top[i, j]
                b0, b1 = int(target_bounds[t]), int(target_bounds[t + 1])
                block = scores[a0:a1, b0:b1]
                flat = int(np.argmax(block))
                out_src[g + i, j] = r0 + a0 + flat // (b1 - b0)
                out_tgt[g + i, j] = b0 + flat % (b1 - b0)
        return r1 - r0

    _run_blocks(blocks, work, workers, progress)
    return out_groups, out_scores, out_src, out_tgt


# ------------------------------------------------------------------ one provider's records under a model
@dataclass
class Side:
    """One provider's records under one model: matrix rows (in the index) and their keys."""

    provider: str
    rows: np.ndarray  # int64 rows of the model index's matrix
    ids: np.ndarray  # int64 records.id
    types: np.ndarray  # object: 'image' | 'text'
    depictions: np.ndarray  # object
    subjects: np.ndarray  # object

    def subset(self, mask: np.ndarray) -> "Side":
        return Side(self.provider, self.rows[mask], self.ids[mask], self.types[mask], self.depictions[mask], self.subjects[mask])

    def sorted_by_subject(self) -> "Side":
        order = np.lexsort((self.ids, self.subjects.astype(str)))
        return self.subset(order)


def _side(conn, index: fast_index.ModelIndex, model: ModelInfo, provider: str, limit: int | None = None) -> Side:
    sql = "select id, type, depiction_id, subject_id from records where model = ? and provider = ? order by id"
    params: list = [model.label, provider]
    if limit is not None:
        sql += " limit ?"
        params.append(int(limit))
    rows = conn.execute(sql, params).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix_rows = index.rows_for_ids(ids)
    if len(matrix_rows) != len(ids):  # a load committed between the index and this read
        keep = np.isin(ids, index.ids[matrix_rows])
        rows = [r for r, kept in zip(rows, keep) if kept]
        ids = ids[keep]
    if len(index.unusable_rows) and len(matrix_rows):
        # a vector without a cosine (vectors.MIN_NORM) links to nothing and nothing links to it
        usable = ~np.isin(matrix_rows, index.unusable_rows)
        if not usable.all():
            matrix_rows, ids = matrix_rows[usable], ids[usable]
            rows = [r for r, kept in zip(rows, usable) if kept]
    return Side(
        provider=provider,
        rows=matrix_rows,
        ids=ids,
        types=np.array([r[1] if r[1] in ("image", "text") else "image" for r in rows], dtype=object),
        depictions=np.array([r[2] for r in rows], dtype=object),
        subjects=np.array([r[3] for r in rows], dtype=object),
    )


# ------------------------------------------------------------------ computing one run
@dataclass
class Run:
    """One computed (model, from, to, level): its rows (tuples in LINK_COLUMNS order) and settings."""

    model: str
    level: str
    source_provider: str
    target_provider: str
    k: int
    threshold: float
    comparisons: tuple[str, ...]
    data_version: str
    rows: list[tuple] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model, self.level, self.source_provider, self.target_provider)


def _matrix(index: fast_index.ModelIndex, rows: np.ndarray) -> np.ndarray:
    """The rows of the index's matrix; a view (no copy) when they are one contiguous run."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
        return index.matrix[int(rows[0]):int(rows[-1]) + 1]
    return index.matrix[rows]


def compute_run(
    index: fast_index.ModelIndex, source: Side, target: Side, *, model: str, level: str, k: int,
    threshold: float, comparisons: Sequence[str] = (), version: str = "",
    block_rows: int | None = None, progress: Callable[[int], None] | None = None, workers: int = 1,
) -> Run:
    """Links from ``source`` to ``target`` under one model, per comparison type, exact."""
    started = time.perf_counter()
    run = Run(model, level, source.provider, target.provider, k, threshold, tuple(comparisons), version)
    same_provider = source.provider == target.provider
    wanted = comparisons or COMPARISONS
    for comparison in COMPARISONS:
        if comparison not in wanted:
            continue
        source_type, target_type = comparison.split("-")
        src = source.subset(source.types == source_type)
        tgt = target.subset(target.types == target_type)
        if not len(src.ids) or not len(tgt.ids):
            continue
        if level == "subject" or same_provider:
            src, tgt = src.sorted_by_subject(), tgt.sorted_by_subject()
        if level == "depiction":
            run.rows.extend(_depiction_rows(index, src, tgt, run, comparison, same_provider, block_rows, progress, workers))
        else:
            run.rows.extend(_subject_rows(index, src, tgt, run, comparison, same_provider, block_rows, progress, workers))
    run.seconds = time.perf_counter() - started
    return run


def _depiction_rows(index, src: Side, tgt: Side, run: Run, comparison: str, same_provider: bool,
                    block_rows, progress, workers: int = 1) -> Iterable[tuple]:
    exclude = None
    if same_provider:  # not the record itself, nor another depiction of its own subject
        tgt_subjects = tgt.subjects.astype(str)
        src_subjects = src.subjects.astype(str)
        exclude = np.stack([np.searchsorted(tgt_subjects, src_subjects, side="left"),
                            np.searchsorted(tgt_subjects, src_subjects, side="right")], axis=1)
    cols, sims = top_k_between(_matrix(index, src.rows), _matrix(index, tgt.rows), run.k,
                               block_rows=block_rows, exclude=exclude, progress=progress, workers=workers)
    keep = np.isfinite(sims) & (sims >= run.threshold)
    for i, j in zip(*np.nonzero(keep)):
        t = cols[i, j]
        yield (run.model, run.level, comparison, int(src.ids[i]), int(tgt.ids[t]), src.provider, src.depictions[i],
               tgt.provider, tgt.depictions[t], float(sims[i, j]), int(j) + 1, run.data_version)


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.empty(0, dtype=np.int64)
    change = np.nonzero(sorted_keys[1:] != sorted_keys[:-1])[0] + 1
    return np.concatenate([[0], change]).astype(np.int64)


def _subject_rows(index, src: Side, tgt: Side, run: Run, comparison: str, same_provider: bool,
                  block_rows, progress, workers: int = 1) -> Iterable[tuple]:
    src_subjects, tgt_subjects = src.subjects.astype(str), tgt.subjects.astype(str)
    src_starts, tgt_starts = _group_starts(src_subjects), _group_starts(tgt_subjects)
    exclude = None
    if same_provider:
        names = tgt_subjects[tgt_starts]
        pos = np.searchsorted(names, src_subjects[src_starts])
        pos_clipped = np.minimum(pos, max(len(names) - 1, 0))
        exclude = np.where((pos < len(names)) & (names[pos_clipped] == src_subjects[src_starts]), pos_clipped, -1)
    groups, scores, src_rows, tgt_rows = subject_top_k(
        _matrix(index, src.rows), src_starts, _matrix(index, tgt.rows), tgt_starts, run.k,
        block_rows=block_rows, exclude_same=exclude, progress=progress, workers=workers,
    )
    keep = np.isfinite(scores) & (scores >= run.threshold)
    for g, j in zip(*np.nonzero(keep)):
        a, b = src_rows[g, j], tgt_rows[g, j]
        yield (run.model, run.level, comparison, int(src.ids[a]), int(tgt.ids[b]), src.provider, src.subjects[a],
               tgt.provider, tgt.subjects[b], float(scores[g, j]), int(j) + 1, run.data_version)


# ------------------------------------------------------------------ fusion
def fused_label(models: Sequence[str]) -> str:
    """``fused:<a>+<b>``, the labels sorted so the same models always give the same label."""
    return FUSED_PREFIX + "+".join(sorted(models))


def fuse(runs: Sequence[Run], k: int, threshold: float = 0.0) -> Run:
    """Reciprocal rank fusion of the same (from, to, level) computed under several models.

    Per model, a key pair counts with its best rank over the model's comparison types;
    ``score = sum 1 / (60 + rank)`` over the models that list it.  The fused row names
    the depiction pair (and comparison) of the model that ranked it best (the first
    model on a tie).  ``similarity`` is the score over its maximum (rank 1 everywhere),
    and ``threshold`` applies to it.
    """
    first = runs[0]
    label = fused_label([r.model for r in runs])
    version = json.dumps({r.model: json.loads(r.data_version) for r in runs}, sort_keys=True)
    out = Run(label, first.level, first.source_provider, first.target_provider, k, threshold, first.comparisons, version)
    best: dict[tuple[str, str], dict[int, tuple]] = {}
    for m, run in enumerate(runs):
        for row in run.rows:
            pair = (row[6], row[8])
            per_model = best.setdefault(pair, {})
            if m not in per_model or row[10] < per_model[m][10]:
                per_model[m] = row
    top_score = len(runs) / (RRF_K + 1)
    by_source: dict[str, list[tuple[float, int, str, tuple]]] = {}
    for (source_key, target_key), per_model in best.items():
        score = sum(1.0 / (RRF_K + row[10]) for row in per_model.values())
        winner = min(per_model.items(), key=lambda item: (item[1][10], item[0]))[1]
        by_source.setdefault(source_key, []).append((score / top_score, target_key, winner))
    for source_key in sorted(by_source):
        ranked = sorted(by_source[source_key], key=lambda item: (-item[0], item[1]))[:k]
        rank = 0
        for score, _target_key, row in ranked:
            if score < threshold:
                continue
            rank += 1
            out.rows.append((label, row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                             round(score, 6), rank, version))
    out.seconds = sum(r.seconds for r in runs)
    return out


# ------------------------------------------------------------------ the whole command
@dataclass
class Plan:
    models: list[ModelInfo]
    source: str
    targets: dict[str, list[str]]  # model label -> target providers


def _provider_counts(conn) -> dict[str, dict[str, int]]:
    """model -> provider -> record count."""
    out: dict[str, dict[str, int]] = {}
    for model, provider, n in conn.execute("select model, provider, count(*) from records group by model, provider"):
        out.setdefault(model, {})[provider] = n
    return out


def plan(conn, source: str, targets: Sequence[str] = (), models: Sequence[str] = (), *,
         k: int = 5, level: str = "depiction", comparisons: Sequence[str] = (), threshold: float = 0.0) -> Plan:
    """Check every name before any work: unknown names list the known ones; a model without
    records under a provider asked for says so."""
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidRequestError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    if level not in LEVELS:
        raise InvalidRequestError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    for comparison in comparisons:
        if comparison not in COMPARISONS:
            raise InvalidRequestError(f"unknown comparison '{comparison}'; one of {', '.join(COMPARISONS)}")
    if not -1.0 <= threshold <= 1.0:
        raise InvalidRequestError(f"threshold must be from -1 to 1, got {threshold}")
    store = Store(conn)
    known_models = {m.label: m for m in store.models()}
    counts = _provider_counts(conn)
    providers = sorted({p for per in counts.values() for p in per})
    for name in [source, *targets]:
        if name not in providers:
            raise NotFoundError(f"unknown provider '{name}'; the database has: {', '.join(providers) or 'no providers'}")
    for label in models:
        if label not in known_models:
            raise NotFoundError(f"unknown model '{label}'; the database has: {', '.join(sorted(known_models)) or 'no models'}")
    chosen = [known_models[label] for label in dict.fromkeys(models)] if models else [
        known_models[label] for label in sorted(known_models)
    ]
    plan_targets: dict[str, list[str]] = {}
    for model in chosen:
        held = counts.get(model.label, {})
        wanted = list(dict.fromkeys(targets)) if targets else [p for p in sorted(held) if p != source]
        missing = [p for p in [source, *wanted] if p not in held]
        if models and missing:
            raise NotFoundError(f"model '{model.label}' has no records under provider '{missing[0]}'")
        if missing or not wanted:
            continue  # without --model: only the models holding every provider asked for
        plan_targets[model.label] = wanted
    chosen = [m for m in chosen if m.label in plan_targets]
    if not chosen:
        asked = ", ".join(dict.fromkeys([source, *targets])) if targets else f"{source} and another provider"
        raise NotFoundError(f"no model has records under {asked}")
    return Plan(chosen, source, plan_targets)


@dataclass
class Summary:
    model: str
    target_provider: str
    links: int
    seconds: float
    skipped: bool


def stored_runs(conn) -> dict[tuple[str, str, str, str], dict]:
    """(model, level, from, to) -> the stored run's settings; empty before any ``links`` ran."""
    try:
        rows = conn.execute(
            "select model, level, source_provider, target_provider, k, threshold, comparisons, data_version, "
            "links, computed, seconds from links_runs"
        ).fetchall()
    except Exception:  # no such table: the database predates migration m004_links
        return {}
    return {
        tuple(r[:4]): {"model": r[0], "level": r[1], "source_provider": r[2], "target_provider": r[3], "k": r[4],
                       "threshold": r[5], "comparisons": r[6], "data_version": r[7], "links": r[8],
                       "computed": r[9], "seconds": r[10]}
        for r in rows
    }


def is_current(conn, run: dict, versions: dict[str, str] | None = None) -> bool:
    versions = versions if versions is not None else {}
    label = run["model"]
    if label.startswith(FUSED_PREFIX):  # current when each fused model's version is what it saw
        try:
            seen = json.loads(run["data_version"])
            return all(json.dumps(token) == _version_of(conn, m, versions) for m, token in seen.items())
        except (ValueError, AttributeError):
            return False
    return run["data_version"] == _version_of(conn, label, versions)


def _version_of(conn, label: str, versions: dict[str, str]) -> str:
    if label not in versions:
        versions[label] = stored_version(conn, label)
    return versions[label]


def compute(
    conn, source: str, targets: Sequence[str] = (), models: Sequence[str] = (), *, k: int = 5,
    threshold: float = 0.0, level: str = "depiction", comparisons: Sequence[str] = (),
    block_rows: int | None = None, progress: Callable[[int, int], None] | None = None,
    force: bool = False, workers: int = 1,
) -> list[Summary]:
    """Compute and store links (the ``links`` command); all runs are written in one transaction.

    A (model, from, to, level) whose stored run has the same settings and the model's
    current data version is skipped.  With several models, their fused ranking is
    stored too.  Errors are raised before anything is written.
    """
    the_plan = plan(conn, source, targets, models, k=k, level=level, comparisons=comparisons, threshold=threshold)
    Store(conn).migrate()  # the links tables (m004) on a database loaded before them; no rows yet
    stored = stored_runs(conn)
    comparisons_text = ",".join(sorted(comparisons))
    versions = {m.label: stored_version(conn, m.label) for m in the_plan.models}

    def unchanged(label: str, target: str, version: str) -> bool:
        old = stored.get((label, level, source, target))
        return bool(old and not force and old["data_version"] == version and old["k"] == k
                    and abs(old["threshold"] - threshold) < 1e-12 and old["comparisons"] == comparisons_text)

    todo: list[tuple[ModelInfo, str]] = [
        (m, t) for m in the_plan.models for t in the_plan.targets[m.label] if not unchanged(m.label, t, versions[m.label])
    ]
    counts = _provider_counts(conn)
    total = sum(counts[m.label][source] for m, _t in todo)
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], total)

    runs: dict[tuple[str, str], Run] = {}
    summaries: list[Summary] = []
    indexes: dict[str, fast_index.ModelIndex] = {}
    for model in the_plan.models:
        for target in the_plan.targets[model.label]:
            if (model, target) not in todo:
                old = stored[(model.label, level, source, target)]
                summaries.append(Summary(model.label, target, old["links"], 0.0, True))
                continue
            if model.label not in indexes:
                indexes.clear()  # one model's matrix in memory at a time
                indexes[model.label] = fast_index.build(conn, model, data_version(conn, model.label))
            index = indexes[model.label]
            run = compute_run(
                index, _side(conn, index, model, source), _side(conn, index, model, target), model=model.label,
                level=level, k=k, threshold=threshold, comparisons=comparisons, version=versions[model.label],
                block_rows=block_rows, progress=step, workers=workers,
            )
            runs[(model.label, target)] = run
            summaries.append(Summary(model.label, target, len(run.rows), run.seconds, False))
    indexes.clear()
    fused: list[Run] = []
    if len(the_plan.models) > 1:
        labels = [m.label for m in the_plan.models]
        shared = [t for t in the_plan.targets[labels[0]] if all(t in the_plan.targets[x] for x in labels)]
        for target in shared:
            label = fused_label(labels)
            version = json.dumps({x: json.loads(versions[x]) for x in labels}, sort_keys=True)
            if unchanged(label, target, version) and not any((x, target) in runs for x in labels):
                summaries.append(Summary(label, target, stored[(label, level, source, target)]["links"], 0.0, True))
                continue
            parts = [runs.get((x, target)) or _load_run(conn, x, level, source, target, versions[x]) for x in labels]
            run = fuse(parts, k, threshold=0.0)
            run.threshold, run.comparisons = threshold, tuple(comparisons)
            fused.append(run)
            summaries.append(Summary(label, target, len(run.rows), run.seconds, False))
    write_runs(conn, list(runs.values()) + fused)
    return summaries


def _load_run(conn, label: str, level: str, source: str, target: str, version: str) -> Run:
    """A stored, current run read back (for fusing it with a model that was recomputed)."""
    run = Run(label, level, source, target, 0, 0.0, (), version)
    run.rows = [
        tuple(r) for r in conn.execute(
            f"select {', '.join(LINK_COLUMNS)} from links where model = ? and level = ? and source_provider = ? "
            "and target_provider = ?", [label, level, source, target]
        )
    ]
    return run


def write_runs(conn, runs: Sequence[Run]) -> None:
    """Replace each run's rows and its ``links_runs`` row, all in one transaction."""
    if not runs:
        return
    conn.execute("begin immediate")
    try:
        for run in runs:
            conn.execute(
                "delete from links where model = ? and level = ? and source_provider = ? and target_provider = ?",
                list(run.key),
            )
            conn.executemany(
                f"insert into links ({', '.join(LINK_COLUMNS)}) values ({', '.join('?' for _ in LINK_COLUMNS)})",
                run.rows,
            )
            conn.execute(
                "insert or replace into links_runs (model, level, source_provider, target_provider, k, threshold, "
                "comparisons, data_version, links, computed, seconds) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*run.key, run.k, run.threshold, ",".join(sorted(run.comparisons)), run.data_version,
                 len(run.rows), int(time.time()), round(run.seconds, 3)],
            )
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise


# ------------------------------------------------------------------ on the fly (pages, SQL)
class _Recent:
    """A few recent on-the-fly results, keyed by everything they depend on (data version included)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.lock = threading.Lock()
        self.items: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            return None

    def put(self, key: tuple, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_recent = _Recent()


@dataclass
class OnTheFly:
    """Links computed for a request: rows in LINK_COLUMNS order, and how many sources were used."""

    model: str
    source: str
    targets: list[str]
    level: str
    k: int
    rows: list[tuple]
    sources_used: int
    sources_total: int


def on_the_fly(
    conn, model: ModelInfo, source: str, targets: Sequence[str], *, level: str = "depiction", k: int = 5,
    comparisons: Sequence[str] = (), max_sources: int = 10_000, threshold: float = -1.0,
) -> OnTheFly:
    """Links of the first ``max_sources`` records of ``source``, computed now with the blocked code.

    Uses the model's cached in-memory index when the server holds one.  The result is kept
    (a few, least recently used dropped) per database, data version and request, so paging
    through it or asking the same SQL again does not recompute.
    """
    version = stored_version(conn, model.label)
    key = (fast_index.database_path(conn), model.label, level, source, tuple(targets), k, tuple(comparisons),
           version, max_sources, threshold)
    hit = _recent.get(key) if key[0] else None
    if hit is not None:
        return hit
    index = fast_index.index_for(conn, model)
    if index is None:
        index = fast_index.build(conn, model, data_version(conn, model.label))
    total = conn.execute("select count(*) from records where model = ? and provider = ?", [model.label, source]).fetchone()[0]
    source_side = _side(conn, index, model, source, limit=max_sources)
    rows: list[tuple] = []
    for target in targets:
        run = compute_run(index, source_side, _side(conn, index, model, target), model=model.label, level=level,
                          k=k, threshold=threshold, comparisons=comparisons, version=version)
        rows.extend(run.rows)
    result = OnTheFly(model.label, source, list(targets), level, k, rows, len(source_side.ids), total)
    if key[0]:
        _recent.put(key, result)
    return result


def links_json(store: Store, model_label, source, target, k=1, threshold=-1.0) -> str:
    """``embeddings_links()``: JSON ``[[source_id, target_id, similarity, rank, comparison], ...]``."""
    if not model_label or not source or not target:  # a canned query's form before it is filled in
        return "[]"
    if not isinstance(model_label, str):
        raise ValueError("embeddings_links: model must be text")
    model = store.model(model_label)
    if model is None:
        raise ValueError(f"embeddings_links: unknown model '{model_label}'")
    if not isinstance(source, str) or not isinstance(target, str):
        raise ValueError("embeddings_links: providers must be text")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"embeddings_links: k must be a whole number from 1 to {MAX_K}")
    try:
        threshold = float(threshold if threshold is not None else -1.0)
    except (TypeError, ValueError):
        raise ValueError("embeddings_links: threshold must be a number") from None
    found = on_the_fly(store.conn, model, source, [target], k=k, max_sources=10**12, threshold=threshold)
    return json.dumps([[r[3], r[4], round(r[9], 6), r[10], r[2]] for r in found.rows])


def run_is_current(conn, model_label, source, target, level) -> int:
    """``embeddings_links_current()``: 1 when the ``links`` table holds a current run for these, else 0."""
    run = stored_runs(conn).get((model_label, level, source, target))
    return 1 if run is not None and is_current(conn, run) else 0
