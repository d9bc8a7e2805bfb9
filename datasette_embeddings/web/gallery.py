"""Data behind the gallery, record and overview pages: plain dicts, no HTML.

The HTML pages and their ``.json`` twins are rendered from the very same dicts,
so what a person sees and what another site fetches cannot drift apart.  Every
function takes a sqlite connection (run it through ``Database.execute_fn``).

Gallery pages use keyset pagination on ``records.id``: each filter combination
is split into "lanes" that one index of ``schema.py`` answers in id order
(``records_model_provider``, ``records_model_type``, ``records_provider``), the
lanes are read ``size + 1`` rows each and merged.  No OFFSET and no sort of the
whole match set, so page 5,000 costs what page 1 costs.
"""
from __future__ import annotations

import heapq
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .safe_urls import safe_http_url
from ..search.similarity import Neighbour, NeighbourFilter, similar_to_record
from ..storage.store import Store, record_from_row

DEFAULT_PAGE_SIZE = 48
MAX_PAGE_SIZE = 200
RECORD_COLUMNS = "id, provider, depiction_id, subject_id, model, created, attributes"


class GalleryError(ValueError):
    """A request naming something the database does not hold; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------- cards
def card(record: dict, similarity: float | None = None, record_url: str | None = None) -> dict:
    """The public face of a record: what a gallery card shows, with only safe URLs.

    ``text`` carries what must be shown as words: the text of a text record, or
    a preview that is not an http(s) URL (shown verbatim, never as a link).
    """
    attrs = record.get("attributes") or {}
    kind = str(attrs.get("type") or "image")
    preview = attrs.get("preview")
    preview_url = safe_http_url(preview)
    text = None
    if kind == "image":
        if preview and preview_url is None:
            text = str(preview)
    elif preview_url is not None:
        # a text record may carry an image of its subject as preview (the Met demo titles):
        # show the image, and keep the embedded words from `text` or the title
        text = _text(attrs.get("text")) or _text(attrs.get("subject_title"))
    else:
        text = None if preview is None else str(preview)
    title = attrs.get("subject_title")
    return {
        "id": record["id"],
        "url": record_url,
        "provider": record["provider"],
        "provider_name": _text(attrs.get("provider_name")) or record["provider"],
        "provider_url": safe_http_url(attrs.get("provider_url")),
        "model": record["model"],
        "type": kind,
        "depiction_id": record["depiction_id"],
        "subject_id": record["subject_id"],
        "title": _text(title) or record["depiction_id"],
        "text": text,
        "preview_url": preview_url,
        "depiction_url": safe_http_url(attrs.get("depiction_url")),
        "subject_url": safe_http_url(attrs.get("subject_url")),
        "creditline": _text(attrs.get("subject_creditline")),
        "similarity": None if similarity is None else round(float(similarity), 4),
    }


def _text(value) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def neighbour_cards(neighbours: Iterable[Neighbour], base_url: str) -> list[dict]:
    return [card(n.record, n.similarity, f"{base_url}/{n.id}") for n in neighbours]


def cards_from_rows(columns: Sequence[str], rows: Iterable, base_url: str) -> list[dict] | None:
    """Cards for arbitrary result rows (table and canned-query pages), or ``None``.

    A row is a record when it has ``id`` and ``attributes`` columns; rows that
    also carry ``match_id`` / ``match_attributes`` become pairs (link lists,
    near-duplicates).  Anything else is not a gallery and keeps its table.
    """
    cols = list(columns)
    if "id" not in cols or "attributes" not in cols:
        return None

    def record_of(row, prefix: str) -> dict | None:
        get = lambda name: row[cols.index(prefix + name)] if prefix + name in cols else None  # noqa: E731
        rid = get("id")
        if rid is None:
            return None
        raw = get("attributes")
        try:
            attrs = json.loads(raw) if isinstance(raw, str) and raw else {}
        except ValueError:
            attrs = {}
        if not isinstance(attrs, dict):
            attrs = {}
        return {
            "id": rid,
            "provider": get("provider") or "",
            "depiction_id": get("depiction_id") or str(rid),
            "subject_id": get("subject_id") or "",
            "model": get("model") or "",
            "attributes": attrs,
        }

    cards = []
    for row in rows:
        row = list(row)
        rec = record_of(row, "")
        if rec is None:
            continue
        sim = row[cols.index("similarity")] if "similarity" in cols else None
        c = card(rec, sim if isinstance(sim, (int, float)) else None, f"{base_url}/{rec['id']}")
        match = record_of(row, "match_") if "match_attributes" in cols else None
        if match is not None:
            c["match"] = card(match, None, f"{base_url}/{match['id']}")
        cards.append(c)
    return cards


# ---------------------------------------------------------------- facets
@dataclass
class FacetCounts:
    """Record counts by (model, provider) and (model, type): two covering-index scans."""

    by_model_provider: dict = field(default_factory=dict)
    by_model_type: dict = field(default_factory=dict)

    @property
    def providers(self) -> list[str]:
        return sorted({p for _, p in self.by_model_provider})

    @property
    def models(self) -> list[str]:
        return sorted({m for m, _ in self.by_model_provider} | {m for m, _ in self.by_model_type})

    def types(self, model: str | None = None) -> list[str]:
        return sorted({t for m, t in self.by_model_type if model is None or m == model})


_facet_lock = threading.Lock()
_facet_cache: dict = {}


def facet_counts(conn, cache_key: str = "") -> FacetCounts:
    """Counts for the facet lists, cached until the records table changes.

    On a million records the two GROUP BYs take a fraction of a second; the
    cache makes every later page free.  The key includes the highest id and the
    loader-maintained per-model counts, which change whenever records are loaded.
    """
    version = conn.execute("select max(id), (select sum(record_count) from models), (select count(*) from models) from records").fetchone()
    key = (cache_key, tuple(version))
    with _facet_lock:
        hit = _facet_cache.get(key)
    if hit is not None:
        return hit
    counts = FacetCounts(
        by_model_provider={
            (m, p): n
            for m, p, n in conn.execute(
                "select model, provider, count(*) from records indexed by records_model_provider group by model, provider"
            )
        },
        by_model_type={
            (m, t): n
            for m, t, n in conn.execute(
                "select model, type, count(*) from records indexed by records_model_type group by model, type"
            )
        },
    )
    with _facet_lock:
        for old in [k for k in _facet_cache if k[0] == cache_key]:
            del _facet_cache[old]
        _facet_cache[key] = counts
    return counts


@dataclass(frozen=True)
class GalleryFilter:
    providers: tuple[str, ...] = ()
    model: str | None = None
    type: str | None = None


def check_filter(counts: FacetCounts, flt: GalleryFilter | NeighbourFilter, model: str | None = None) -> None:
    """Reject names the database does not hold, so a typo is a 400, not an empty page."""
    known = set(counts.providers)
    providers = list(getattr(flt, "providers", ())) + list(getattr(flt, "exclude_providers", ()))
    for p in providers:
        if p not in known:
            raise GalleryError(f"unknown provider '{p}' (known: {', '.join(sorted(known)) or 'none'})")
    model = model if model is not None else getattr(flt, "model", None)
    if model is not None and model not in counts.models:
        raise GalleryError(f"unknown model '{model}' (known: {', '.join(counts.models) or 'none'})", status=404)
    kind = getattr(flt, "type", None)
    if kind is not None and kind not in counts.types():
        raise GalleryError(f"unknown type '{kind}' (known: {', '.join(counts.types()) or 'none'})")


def _facets(counts: FacetCounts, flt: GalleryFilter) -> dict:
    providers: Counter = Counter()
    models: Counter = Counter()
    for (m, p), n in counts.by_model_provider.items():
        if flt.model is None or m == flt.model:
            providers[p] += n
        if not flt.providers or p in flt.providers:
            models[m] += n
    types: Counter = Counter()
    for (m, t), n in counts.by_model_type.items():
        if flt.model is None or m == flt.model:
            types[t] += n

    def listing(counter: Counter, selected: Iterable[str]) -> list[dict]:
        chosen = set(selected)
        return [{"value": v, "count": counter[v], "selected": v in chosen} for v in sorted(counter)]

    return {
        "provider": listing(providers, flt.providers),
        "model": listing(models, [flt.model] if flt.model else []),
        "type": listing(types, [flt.type] if flt.type else []),
    }


def _total(counts: FacetCounts, flt: GalleryFilter) -> int | None:
    """Matching records, when the cached counts can tell (provider and type together cannot)."""
    if flt.providers and flt.type:
        return None
    if flt.type:
        return sum(n for (m, t), n in counts.by_model_type.items() if t == flt.type and flt.model in (None, m))
    return sum(
        n for (m, p), n in counts.by_model_provider.items()
        if flt.model in (None, m) and (not flt.providers or p in flt.providers)
    )


def _lanes(counts: FacetCounts, flt: GalleryFilter) -> list[tuple[str, list]]:
    """``(FROM/WHERE sql, params)`` pieces that each walk one index in id order."""
    if flt.providers:
        lanes = []
        for p in flt.providers:
            if flt.model:
                sql, params = "records indexed by records_model_provider where model = ? and provider = ?", [flt.model, p]
            else:
                sql, params = "records indexed by records_provider where provider = ?", [p]
            if flt.type:
                sql, params = sql + " and type = ?", params + [flt.type]
            lanes.append((sql, params))
        return lanes
    if flt.type:
        models = [flt.model] if flt.model else counts.models
        return [("records indexed by records_model_type where model = ? and type = ?", [m, flt.type]) for m in models]
    if flt.model:
        return [
            ("records indexed by records_model_type where model = ? and type = ?", [flt.model, t])
            for t in counts.types(flt.model)
        ]
    return [("records where 1", [])]


def gallery_page(
    conn, flt: GalleryFilter, *, after: int = 0, size: int = DEFAULT_PAGE_SIZE, base_url: str, cache_key: str = ""
) -> dict:
    """One page of records matching ``flt`` with ids above ``after``, plus facets."""
    counts = facet_counts(conn, cache_key)
    check_filter(counts, flt)
    rows: list = []
    for where, params in _lanes(counts, flt):
        lane = conn.execute(
            f"select {RECORD_COLUMNS} from {where} and id > ? order by id limit ?", [*params, after, size + 1]
        ).fetchall()
        rows = list(heapq.merge(rows, lane, key=lambda r: r[0]))[: size + 1]
    more = len(rows) > size
    rows = rows[:size]
    items = [card(record_from_row(r), None, f"{base_url}/{r[0]}") for r in rows]
    return {
        "filters": {"provider": list(flt.providers), "model": flt.model, "type": flt.type},
        "total": _total(counts, flt),
        "facets": _facets(counts, flt),
        "items": items,
        "after": after,
        "size": size,
        "next_after": rows[-1][0] if more else None,
    }


# ---------------------------------------------------------------- record page
def sibling_records(conn, record: dict) -> list[dict]:
    """The same depiction under every model (the unique key makes this one index probe)."""
    rows = conn.execute(
        "select id, model from records where provider = ? and depiction_id = ? order by model",
        [record["provider"], record["depiction_id"]],
    ).fetchall()
    return [{"id": rid, "model": model, "current": rid == record["id"]} for rid, model in rows]


def resolve_record_id(conn, record_id: int, model: str | None) -> int:
    """The record to show: ``record_id`` itself, or its depiction under ``model``."""
    record = Store(conn).record(record_id)
    if record is None:
        raise GalleryError(f"no record with id {record_id}", status=404)
    if model is None or model == record["model"]:
        return record_id
    for sibling in sibling_records(conn, record):
        if sibling["model"] == model:
            return sibling["id"]
    if Store(conn).model(model) is None:
        raise GalleryError(f"unknown model '{model}'", status=404)
    raise GalleryError(f"record {record_id} ({record['provider']} {record['depiction_id']}) has no embedding under model '{model}'", status=404)


def record_page(
    conn,
    record_id: int,
    *,
    k: int,
    providers: Sequence[str] = (),
    exclude_providers: Sequence[str] = (),
    exclude_subject: bool = False,
    model: str | None = None,
    base_url: str,
    cache_key: str = "",
) -> dict:
    """A record, its other models, and its k most similar records under the filter."""
    counts = facet_counts(conn, cache_key)
    record_id = resolve_record_id(conn, record_id, model)
    subject = Store(conn).record(record_id)["subject_id"]
    flt = NeighbourFilter(tuple(providers), tuple(exclude_providers), subject if exclude_subject else None)
    check_filter(counts, flt)
    record, neighbours = similar_to_record(conn, record_id, k, flt)
    this = card(record, None, f"{base_url}/{record['id']}")
    this["attributes"] = {str(key): str(value) for key, value in sorted(record["attributes"].items())}
    return {
        "record": this,
        "models": sibling_records(conn, record),
        "providers": counts.providers,
        "filters": {
            "k": k,
            "provider": list(flt.providers),
            "exclude_provider": list(flt.exclude_providers),
            "exclude_subject": flt.exclude_subject is not None,
        },
        "similar": neighbour_cards(neighbours, base_url),
    }


# ---------------------------------------------------------------- overview
def has_embeddings_tables(conn) -> bool:
    return Store(conn).is_initialised()


def database_overview(conn, cache_key: str = "") -> dict:
    """Models with dimensions and counts, providers with counts, for the overview page."""
    store = Store(conn)
    counts = facet_counts(conn, cache_key)
    providers: Counter = Counter()
    for (_, p), n in counts.by_model_provider.items():
        providers[p] += n
    return {
        "records": sum(providers.values()),
        "models": [
            {"label": m.label, "dimensions": m.dimensions, "records": m.record_count, "llm_model_id": m.llm_model_id}
            for m in store.models()
        ],
        "providers": [{"provider": p, "records": n} for p, n in sorted(providers.items())],
    }
