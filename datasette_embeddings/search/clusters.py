"""k-means clusters of a model's vectors, and a label of words for each.

Clustering runs on the unit-length vectors, so Euclidean k-means groups by
cosine similarity (for unit vectors ``|a - b|^2 = 2 - 2 cos``).  scikit-learn's
``KMeans`` (k-means++ seeding, a fixed seed) runs up to 50,000 records;
above that ``MiniBatchKMeans`` keeps a million records to minutes.

Labels use class-based TF-IDF (as BERTopic names topics): all member texts
(titles, and the text of text records) of one cluster are one document; a
word's weight in a cluster is its frequency there, times
``log(1 + A / f)`` where ``A`` is the average number of words per cluster and
``f`` the word's frequency over all clusters.  Words common everywhere
("painting", "untitled") sink; the words that make a cluster different rise.
A word found in every cluster is left out of labels altogether: it cannot tell
one cluster from another.  Each record counts a word once.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..errors import InvalidRequestError

#: above this many records, MiniBatchKMeans replaces KMeans
MINIBATCH_ABOVE = 50_000
MAX_CLUSTERS = 1000
LABEL_WORDS = 4

_WORD = re.compile(r"[^\W\d_][\w'-]*[^\W_]|[^\W\d_]", re.UNICODE)
STOP_WORDS = frozenset(
    """
    a an the and or but of in on at to for from by with without into onto over under about above below
    as is are was were be been being it its this that these those his her their our your my he she they we
    you i me him them us no not nor so than too very can will just do does did has have had after before
    between during through up down out off again further then once here there when where why how all any
    both each few more most other some such only own same de la le les des du van der den het een und die
    das von zu et en el los las del di il lo ca circa c possibly probably attributed after style
    """.split()
)


@dataclass
class ClusterSummary:
    cluster: int
    size: int
    label: str
    words: list[str]
    providers: dict[str, int]
    provider_diversity: float
    centroid: np.ndarray
    member_rows: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, dtype=np.int64))


def default_cluster_count(n: int) -> int:
    """About sqrt(n / 2) clusters (a common rule of thumb), between 2 and 100, never more than n."""
    if n <= 1:
        return max(n, 0)
    return int(min(n, max(2, min(100, round(math.sqrt(n / 2))))))


def check_cluster_count(n_clusters: int, n_records: int, model: str) -> None:
    if not isinstance(n_clusters, int) or not 1 <= n_clusters <= MAX_CLUSTERS:
        raise InvalidRequestError(f"--clusters must be a whole number from 1 to {MAX_CLUSTERS}, got {n_clusters!r}")
    if n_records < n_clusters:
        raise InvalidRequestError(
            f"model '{model}' has {n_records:,} record(s), fewer than the {n_clusters:,} clusters asked for; "
            f"ask for at most {n_records:,}"
        )


def kmeans(matrix: np.ndarray, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (n,), centroids (k, d))`` of k-means on the rows of ``matrix``; centroids unit length."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = len(matrix)
    if n_clusters == 1:
        labels = np.zeros(n, dtype=np.int64)
    elif n > MINIBATCH_ABOVE:
        km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=4096)
        labels = km.fit_predict(matrix)
    else:
        km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=4)
        labels = km.fit_predict(matrix)
    labels = np.asarray(labels, dtype=np.int64)
    centroids = np.zeros((n_clusters, matrix.shape[1]), dtype=np.float64)
    np.add.at(centroids, labels, matrix.astype(np.float64))
    norms = np.linalg.norm(centroids, axis=1)
    norms[norms == 0] = 1.0
    centroids /= norms[:, None]
    if not np.isfinite(centroids).all():
        raise InvalidRequestError("k-means produced NaN centroids (are some vectors NaN?); nothing was stored")
    return labels, centroids.astype(np.float32)


def words_of(text: str | None) -> list[str]:
    """Lower-cased words of at least three letters, without stop words or numbers."""
    if not text:
        return []
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if len(w) >= 3 and w not in STOP_WORDS]


def class_tfidf(cluster_words: Sequence[Counter], top: int = LABEL_WORDS) -> list[list[str]]:
    """The ``top`` most distinctive words of each cluster (class-based TF-IDF, see the module docstring).

    Ties break alphabetically so labels are stable across runs.
    """
    totals: Counter = Counter()
    spread: Counter = Counter()  # in how many clusters each word occurs
    for counts in cluster_words:
        totals.update(counts)
        spread.update(counts.keys())
    everywhere = {w for w, n in spread.items() if n == len(cluster_words)} if len(cluster_words) > 1 else set()
    sizes = [sum(c.values()) for c in cluster_words]
    average = (sum(sizes) / len(sizes)) if sizes else 0.0
    out = []
    for counts, size in zip(cluster_words, sizes):
        if not size:
            out.append([])
            continue
        scored = [
            ((count / size) * math.log(1.0 + average / totals[word]), word)
            for word, count in counts.items()
            if word not in everywhere
        ]
        scored.sort(key=lambda sw: (-sw[0], sw[1]))
        out.append([word for _, word in scored[:top]])
    return out


def provider_diversity(counts: dict[str, int]) -> float:
    """How evenly a cluster mixes providers: exp(Shannon entropy), the 'effective number of providers' (1 = one provider)."""
    total = sum(counts.values())
    if not total:
        return 0.0
    entropy = -sum((c / total) * math.log(c / total) for c in counts.values() if c)
    return round(math.exp(entropy), 4)


def summarise(
    labels: np.ndarray, centroids: np.ndarray, providers: Sequence[str], texts: Iterable[str | None]
) -> list[ClusterSummary]:
    """Size, provider counts, diversity and a word label for each cluster (row i of the inputs is one record)."""
    k = len(centroids)
    words: list[Counter] = [Counter() for _ in range(k)]
    provider_counts: list[Counter] = [Counter() for _ in range(k)]
    for label, provider, text in zip(labels.tolist(), providers, texts):
        provider_counts[label][provider] += 1
        # one count per record and word: a title repeating a word does not outvote other records
        words[label].update(set(words_of(text)))
    tops = class_tfidf(words)
    out = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        counts = dict(sorted(provider_counts[c].items(), key=lambda pc: (-pc[1], pc[0])))
        out.append(
            ClusterSummary(
                cluster=c,
                size=int(len(members)),
                label=" · ".join(tops[c]) or f"cluster {c}",
                words=tops[c],
                providers=counts,
                provider_diversity=provider_diversity(counts),
                centroid=centroids[c],
                member_rows=members,
            )
        )
    return out
