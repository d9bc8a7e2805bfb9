"""Keyword search over titles, texts and credit lines (SQLite FTS5), and its fusion with vectors.

The index is ``records_fts`` (migration ``m007_keyword_index``): external-content
FTS5 over generated columns of ``records``, kept current by triggers, so it needs
no model and no query-time embedding.  What a visitor types is never handed to
FTS5's query language: it is cut into words and each word is quoted, so
``AND``, ``NEAR``, ``*``, quotes and column filters are plain words here and no
input can be an FTS5 syntax error.

Fusion (reciprocal rank fusion): a record's fused score is the sum over the two
ranked lists it appears in of ``1 / (RRF_K + rank)``, rank counted from 1.  It
uses ranks only, so BM25 scores and cosine similarities, which live on different
scales, never need to be made comparable; ``RRF_K = 60`` (the constant of the
original paper) keeps one list's top result from outweighing agreement between both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..errors import InvalidRequestError

#: the constant of reciprocal rank fusion (Cormack, Clarke and Buettcher, 2009)
RRF_K = 60
MAX_QUERY_WORDS = 32
MAX_QUERY_CHARS = 500
_WORD = re.compile(r"\w+", re.UNICODE)


def has_keyword_index(conn) -> bool:
    """True when the database has ``records_fts`` (loaded by a version with migration m007)."""
    return conn.execute("select 1 from sqlite_master where name = 'records_fts'").fetchone() is not None


def match_expression(text: str) -> str | None:
    """An FTS5 MATCH expression that finds records holding every word of ``text`` (None: no words).

    Each word is quoted as an FTS5 string, so the query language never sees the
    visitor's operators; the last word also matches as a prefix, so a half-typed
    word ("rembr") already finds something.
    """
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidRequestError(f"q is {len(text)} characters; at most {MAX_QUERY_CHARS} are allowed")
    words = _WORD.findall(text)
    if not words:
        return None
    if len(words) > MAX_QUERY_WORDS:
        raise InvalidRequestError(f"q has {len(words)} words; at most {MAX_QUERY_WORDS} are allowed")
    quoted = ['"' + w.replace('"', '""') + '"' for w in words]
    quoted[-1] += " *"
    return " ".join(quoted)


@dataclass(frozen=True)
class KeywordFilter:
    """Restrictions applied together with the words (each one is an AND)."""

    model: str | None = None
    providers: tuple[str, ...] = ()
    type: str | None = None

    def where(self, alias: str = "r") -> tuple[str, list]:
        clauses, params = [], []
        if self.model is not None:
            clauses.append(f"{alias}.model = ?")
            params.append(self.model)
        if self.providers:
            clauses.append(f"{alias}.provider in ({', '.join('?' * len(self.providers))})")
            params.extend(self.providers)
        if self.type is not None:
            clauses.append(f"{alias}.type = ?")
            params.append(self.type)
        return (" and " + " and ".join(clauses)) if clauses else "", params


#: a filtered ranking first ranks this many times ``limit`` matches without the filter
OVERFETCH = 8


def ranked_ids(conn, text: str, flt: KeywordFilter = KeywordFilter(), limit: int = 100) -> list[tuple[int, float]]:
    """Up to ``limit`` ``(record id, bm25 score)`` best first (a lower BM25 is better in FTS5).

    Title words weigh more than credit-line words: a match in the title is what a
    visitor typing a title expects first.  FTS5 ranks alone first (no join: the
    join to ``records`` per match was most of the time for common words); with a
    filter, the best ``OVERFETCH * limit`` are filtered, and only when too few
    pass is the ranking redone with the filter inside it.
    """
    expression = match_expression(text)
    if expression is None or not has_keyword_index(conn):
        return []
    score = "bm25(records_fts, 10.0, 5.0, 2.0)"
    where, params = flt.where()
    fetch = limit if not where else limit * OVERFETCH
    ranked = conn.execute(
        f"select rowid, {score} as score from records_fts where records_fts match ? order by score, rowid limit ?",
        [expression, fetch],
    ).fetchall()
    if not where:
        return [(rid, s) for rid, s in ranked]
    ids = [rid for rid, _ in ranked]
    # NOT INDEXED: one primary-key lookup per candidate.  Left to itself, the planner reads the
    # filter's index instead (records_model_type for a model), every record of the model: a
    # third of a million rows at 1M records, 30 ms, for a few hundred candidates (1 ms).
    passing = {
        rid for rid, in conn.execute(
            f"select r.id from records r not indexed where r.id in ({', '.join('?' * len(ids))}){where}", [*ids, *params]
        )
    } if ids else set()
    kept = [(rid, s) for rid, s in ranked if rid in passing]
    if len(kept) >= limit or len(ranked) < fetch:
        return kept[:limit]
    return [
        (rid, s)
        for rid, s in conn.execute(
            f"select f.rowid, {score} as score from records_fts f cross join records r "
            f"on r.id = f.rowid where records_fts match ?{where} order by score, f.rowid limit ?",
            [expression, *params, limit],
        )
    ]


def matching_ids_sql(text: str) -> tuple[str, list] | None:
    """``(subquery, params)`` selecting the ids of every record holding the words, for an ``id in (...)``."""
    expression = match_expression(text)
    if expression is None:
        return None
    return "select rowid from records_fts where records_fts match ?", [expression]


def reciprocal_rank_fusion(*rankings: Sequence[int], k: int = RRF_K) -> list[tuple[int, float]]:
    """Ids by fused score, best first: the sum of ``1 / (k + rank)`` over the lists holding them.

    Ties (rare: equal ranks in mirrored lists) keep the order in which ids first
    appear, lists taken in the order given.
    """
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, rid in enumerate(ranking, start=1):
            scores[rid] = scores.get(rid, 0.0) + 1.0 / (k + rank)
    order = {rid: i for i, rid in enumerate(scores)}
    return sorted(scores.items(), key=lambda item: (-item[1], order[item[0]]))
