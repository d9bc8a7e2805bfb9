"""Keyword search at scale: the FTS5 index that ``load`` builds, queried the ways the site does.

    OPENBLAS_NUM_THREADS=1 python benchmarks/keyword_search.py --n 1000000

Builds a database with ``n`` records through the package's own migrations (so
``records_fts`` and its triggers are the real ones; records are inserted without
vectors, which keyword search never reads).  Titles and credit lines are drawn from
a Zipf-distributed vocabulary, so a few words are in a large share of records
(worst cases for ranking) and most words are rare, as in museum titles: the commonest
word is in about 12% of titles.

Measured, median of repeated runs per query word class (rare / medium / common,
one and two words):

* ``gallery page``: the gallery's ``q`` filter, first page of 48 in id order;
* ``gallery page + model``: the same under a model filter;
* ``ranked top 50``: BM25-ranked keyword results (the search page's keyword list);
* ``ranked top 50 + model``: the same under a model filter (the keyword half of a hybrid search,
  which always names the text model);
* ``counts``: the facet counts under ``q`` (model x provider x type);

and, as the baseline in the same run, a NumPy scan of the same titles for one
word (``np.char.find`` over the title array), the cost without an index.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasette_embeddings.search import keywords  # noqa: E402
from datasette_embeddings.storage.connection import connect  # noqa: E402
from datasette_embeddings.storage.store import Store  # noqa: E402
from datasette_embeddings.web import gallery  # noqa: E402

COMMON = ["portrait", "of", "the", "landscape", "with", "a", "woman", "man", "view", "still", "life", "study"]
PROVIDERS = ["met", "rijks", "brooklyn", "nga", "sfo"]
MODELS = ["clip", "minilm", "colour"]


def vocabulary(size: int, rng) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = set(COMMON)
    while len(words) < size:
        words.add("".join(rng.choice(letters, rng.integers(4, 10))))
    rest = sorted(words - set(COMMON))
    return COMMON + rest


def build(path: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vocab = np.array(vocabulary(50_000, rng))
    conn = connect(path)
    conn.execute("pragma journal_mode = off")
    conn.execute("pragma synchronous = off")
    Store(conn).migrate()
    # word ranks with p(r) ~ 1 / (r + 10): the commonest word is in about one title in ten
    # (as "portrait" or "the" are in museum titles), most words in a handful
    weights = 1.0 / (np.arange(len(vocab)) + 10.0)
    weights /= weights.sum()
    ranks = rng.choice(len(vocab), size=(n, 6), p=weights)
    lengths = rng.integers(2, 7, size=n)
    titles = np.array([" ".join(vocab[ranks[i, : lengths[i]]]) for i in range(n)])
    credits = vocab[rng.choice(len(vocab), size=n, p=weights)]
    started = time.perf_counter()
    conn.execute("begin")
    batch = []
    for i in range(n):
        kind = "text" if i % 7 == 0 else "image"
        attrs = {"type": kind, "subject_title": str(titles[i]), "subject_creditline": "by " + str(credits[i])}
        if kind == "text":
            attrs["preview"] = str(titles[i]) + " described"
        batch.append((i + 1, PROVIDERS[i % 5], f"d{i}", f"s{i // 2}", MODELS[i % 3], 1_700_000_000, json.dumps(attrs)))
        if len(batch) == 50_000:
            conn.executemany("insert into records (id, provider, depiction_id, subject_id, model, created, attributes) values (?, ?, ?, ?, ?, ?, ?)", batch)
            batch = []
    if batch:
        conn.executemany("insert into records (id, provider, depiction_id, subject_id, model, created, attributes) values (?, ?, ?, ?, ?, ?, ?)", batch)
    conn.execute("commit")
    print(f"built {n:,} records with the FTS triggers in {time.perf_counter() - started:.1f} s")
    conn.execute("insert into records_fts(records_fts) values('optimize')")
    conn.close()
    return titles


def timed(fn, repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--db", help="reuse (or create) this database file")
    args = parser.parse_args()
    path = args.db or os.path.join(tempfile.mkdtemp(), "keywords.db")
    titles = None
    if not os.path.exists(path):
        titles = build(path, args.n)
    conn = connect(path)
    n = conn.execute("select count(*) from records").fetchone()[0]
    vocab_counts: dict[str, int] = {}
    if titles is None:
        titles = np.array([t for t, in conn.execute("select title from records order by id")])
    # the words of the queries, chosen by how many records hold them
    sample = " ".join(titles[: min(n, 200_000)]).split()
    for w in sample:
        vocab_counts[w] = vocab_counts.get(w, 0) + 1
    by_freq = sorted(vocab_counts, key=vocab_counts.get)
    rare, medium = by_freq[len(by_freq) // 2], by_freq[int(len(by_freq) * 0.995)]
    queries = {
        "rare word": rare,
        "medium word": medium,
        "common word": "portrait",
        "two common words": "portrait woman",
        "common + rare": f"portrait {rare}",
        "half-typed prefix": "portr",
    }
    print(f"{n:,} records; load: {os.getloadavg()[0]:.1f}")
    print(f"{'query':<20} {'matches':>9} {'page':>8} {'page+model':>11} {'top50':>8} {'top50+model':>12} {'counts':>8}"
          f"  (ms, median of {args.repeat})")
    flt = gallery.GalleryFilter(q=None)
    for label, q in queries.items():
        matches = conn.execute("select count(*) from records_fts where records_fts match ?", [keywords.match_expression(q)]).fetchone()[0]
        page = timed(lambda: gallery._keyword_rows(conn, gallery.GalleryFilter(q=q), 0, 48), args.repeat)
        page_m = timed(lambda: gallery._keyword_rows(conn, gallery.GalleryFilter(q=q, model="minilm"), 0, 48), args.repeat)
        top = timed(lambda: keywords.ranked_ids(conn, q, limit=50), args.repeat)
        top_m = timed(lambda: keywords.ranked_ids(conn, q, keywords.KeywordFilter(model="minilm"), limit=50), args.repeat)
        counts = timed(lambda: gallery.keyword_counts(conn, q), max(1, args.repeat // 2))
        print(f"{label:<20} {matches:>9,} {page:>8.1f} {page_m:>11.1f} {top:>8.1f} {top_m:>12.1f} {counts:>8.1f}")
    del flt
    baseline = timed(lambda: np.flatnonzero(np.char.find(titles, "portrait") >= 0), 1)
    fts = timed(lambda: gallery._keyword_rows(conn, gallery.GalleryFilter(q="portrait"), 0, 48), args.repeat)
    print(f"NumPy scan of every title for 'portrait': {baseline:.0f} ms; indexed gallery page {fts:.1f} ms "
          f"({baseline / fts:.0f}x faster)")
    conn.close()


if __name__ == "__main__":
    main()
