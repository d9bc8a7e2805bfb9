"""Data behind the gallery page, and the cards and facets every page shares: plain dicts, no HTML.

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

import dataclasses
import heapq
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from urllib.parse import unquote, urlencode

from datasette.utils import tilde_decode, tilde_encode

from .safe_urls import safe_http_url
from ..errors import InvalidRequestError, NotFoundError
from ..search import keywords
from ..search.filters import Neighbour, NeighbourFilter
from ..storage.store import database_version, record_from_row

DEFAULT_PAGE_SIZE = 48
MAX_PAGE_SIZE = 200
#: values listed per facet (the largest by record count, plus the chosen ones); a "more" link
#: asks for ten times as many, up to MAX_FACET_SIZE: 50,000 providers made a 5.7 MB page
DEFAULT_FACET_SIZE = 30
MAX_FACET_SIZE = 1000
RECORD_COLUMNS = "id, provider, depiction_id, subject_id, model, created, attributes"


# ---------------------------------------------------------------- stable addresses
GALLERY_MARKER = "/-/gallery/"


def record_address(database_path: str, provider: str, depiction_id: str, model: str | None = None) -> str:
    """``/<db>/-/record/<provider>/<depiction_id>[?model=...]``: an address that survives reloads.

    Record ids depend on load order; provider and depiction id are the record's
    own key.  Both are tilde-encoded as Datasette encodes table names (every
    character but letters, digits, ``_`` and ``-``), so ``/``, ``.``, ``?``, ``#``
    and ``%`` in museum ids round-trip and a trailing ``.json`` stays unambiguous.
    """
    path = f"{database_path}/-/record/{tilde_encode(provider)}/{tilde_encode(depiction_id)}"
    return path + ("?" + urlencode({"model": model}) if model else "")


def decode_address_part(part: str) -> str:
    """One tilde-encoded segment back to the id; %-escapes a client added are undone first.

    Our addresses never hold a literal ``%`` (it is ``~25``), so a ``%`` can only
    come from a client percent-encoding the path: undoing that first gives back
    our tilde form, which then decodes to the id.
    """
    return tilde_decode(unquote(part))


def _address_of(record: dict, record_url: str | None) -> str | None:
    if not record_url or GALLERY_MARKER not in record_url:
        return None
    return record_address(record_url.rsplit(GALLERY_MARKER, 1)[0], record["provider"], record["depiction_id"], record["model"])


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
        "address": _address_of(record, record_url),
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
        # a subject URI that is not a web link (x-sfomuseum:object:...): shown as text, never linked
        "subject_uri": None if safe_http_url(attrs.get("subject_url")) else _text(attrs.get("subject_url")),
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
    """Record counts by (model, provider, type): every facet and total is a sum over these.

    One table of counts for every combination is what keeps the numbers coherent:
    a facet's counts are taken under all the *other* current filters, and the
    total under all of them, so a selected value's count always equals the total.
    """

    by_key: dict = field(default_factory=dict)

    @property
    def providers(self) -> list[str]:
        return sorted({p for _, p, _ in self.by_key})

    @property
    def models(self) -> list[str]:
        return sorted({m for m, _, _ in self.by_key})

    def types(self, model: str | None = None) -> list[str]:
        return sorted({t for m, _, t in self.by_key if model is None or m == model})

    def providers_under(self, model: str | None) -> list[str]:
        """Providers holding at least one record under ``model`` (all of them for None)."""
        return sorted({p for m, p, _ in self.by_key if model is None or m == model})


_facet_lock = threading.Lock()
_facet_cache: dict = {}
COUNTS_SQL = "select model, provider, type, count(*) from records{where} group by model, provider, type"


def facet_counts(conn, cache_key: str = "") -> FacetCounts:
    """Counts for the facet lists, cached until a load changes any model's data.

    On a million records the two GROUP BYs take a fraction of a second; the
    cache makes every later page free.  The key is every model's data version
    (:func:`storage.store.database_version`), which every write bumps, so an
    update that changes a record's type is seen too, not only new records.
    """
    key = (cache_key, database_version(conn))
    with _facet_lock:
        hit = _facet_cache.get(key)
    if hit is not None:
        return hit
    counts = FacetCounts(by_key={(m, p, t): n for m, p, t, n in conn.execute(COUNTS_SQL.format(where=""))})
    with _facet_lock:
        for old in [k for k in _facet_cache if k[0] == cache_key]:
            del _facet_cache[old]
        _facet_cache[key] = counts
    return counts


#: above this many records holding the words, the gallery shows no counts under ``q``:
#: counting reads every match (about a second per 100,000 at 1M records), listing a page does not
KEYWORD_COUNT_LIMIT = 20_000


def keyword_counts(conn, q: str, limit: int | None = None) -> FacetCounts | None:
    """The same counts over the records holding the words of ``q``; None when more than ``limit`` do.

    The limit is checked first by reading at most ``limit + 1`` matches, so a
    common word costs what ``limit`` matches cost, never a pass over all of them.
    """
    limit = KEYWORD_COUNT_LIMIT if limit is None else limit
    found = keywords.matching_ids_sql(q)
    if found is None or not keywords.has_keyword_index(conn):
        return FacetCounts()
    sql, params = found
    (n,) = conn.execute(f"select count(*) from ({sql} limit ?)", [*params, limit + 1]).fetchone()
    if n > limit:
        return None
    return FacetCounts(by_key={
        (m, p, t): n for m, p, t, n in conn.execute(COUNTS_SQL.format(where=f" where id in ({sql})"), params)
    })


@dataclass(frozen=True)
class GalleryFilter:
    providers: tuple[str, ...] = ()
    model: str | None = None
    type: str | None = None
    q: str | None = None


def check_filter(counts: FacetCounts, flt: GalleryFilter | NeighbourFilter, model: str | None = None) -> None:
    """Reject names the database does not hold, so a typo is a 400, not an empty page."""
    known = set(counts.providers)
    providers = list(getattr(flt, "providers", ())) + list(getattr(flt, "exclude_providers", ()))
    for p in providers:
        if p not in known:
            raise InvalidRequestError(f"unknown provider '{p}' (known: {', '.join(sorted(known)) or 'none'})")
    model = model if model is not None else getattr(flt, "model", None)
    if model is not None and model not in counts.models:
        raise NotFoundError(f"unknown model '{model}' (known: {', '.join(counts.models) or 'none'})")
    kind = getattr(flt, "type", None)
    if kind is not None and kind not in counts.types():
        raise InvalidRequestError(f"unknown type '{kind}' (known: {', '.join(counts.types()) or 'none'})")


def _passes(flt: GalleryFilter, m: str, p: str, t: str) -> tuple[bool, bool, bool]:
    return (flt.model is None or m == flt.model, not flt.providers or p in flt.providers, flt.type is None or t == flt.type)


def largest(counter: dict, limit: int, chosen: Iterable[str] = ()) -> list[str]:
    """The ``limit`` values with most records (ties by name) plus the chosen ones, sorted by name."""
    keep = set(heapq.nsmallest(limit, counter, key=lambda v: (-(counter[v] or 0), v))) if len(counter) > limit else set(counter)
    return sorted(keep | (set(chosen) & set(counter)))


def _facets(counts: FacetCounts, flt: GalleryFilter, limit: int = DEFAULT_FACET_SIZE) -> tuple[dict, dict]:
    """Each facet counted under every other current filter; values with nothing there are left out.

    A selected value with no records is kept (so it can be unselected) and says why.  At most
    ``limit`` values are listed per facet (the largest, plus the selected ones); the second dict
    says how many each facet leaves out.
    """
    providers: Counter = Counter()
    models: Counter = Counter()
    types: Counter = Counter()
    for (m, p, t), n in counts.by_key.items():
        ok_m, ok_p, ok_t = _passes(flt, m, p, t)
        if ok_m and ok_t:
            providers[p] += n
        if ok_p and ok_t:
            models[m] += n
        if ok_m and ok_p:
            types[t] += n

    def listing(counter: Counter, selected: Iterable[str], facet: str) -> list[dict]:
        chosen = set(selected)
        items = []
        for v in sorted(set(counter) | chosen):
            item = {"value": v, "count": counter[v], "selected": v in chosen}
            if not counter[v]:
                item["reason"] = f"no {facet} '{v}' records under the other filters"
            items.append(item)
        items = [i for i in items if i["count"] or i["selected"]]
        keep = set(largest({i["value"]: i["count"] for i in items}, limit, chosen))
        return [i for i in items if i["value"] in keep]

    facets = {
        "provider": listing(providers, flt.providers, "provider"),
        "model": listing(models, [flt.model] if flt.model else [], "model"),
        "type": listing(types, [flt.type] if flt.type else [], "type"),
    }
    hidden = {
        facet: len({v for v, n in counter.items() if n} - {i["value"] for i in facets[facet]})
        for facet, counter in (("provider", providers), ("model", models), ("type", types))
    }
    return facets, hidden


def _total(counts: FacetCounts, flt: GalleryFilter) -> int:
    """Records matching every filter at once."""
    return sum(n for (m, p, t), n in counts.by_key.items() if all(_passes(flt, m, p, t)))


def empty_reason(full: FacetCounts, flt: GalleryFilter) -> str:
    """Why nothing matches, naming the filters that exclude each other."""
    if flt.q:
        if not any(all(_passes(flt, m, p, t)) for m, p, t in full.by_key):
            return empty_reason(full, GalleryFilter(flt.providers, flt.model, flt.type))
        return f"no record's title, text or credit line holds every word of '{flt.q}' under these filters"
    parts = []
    if flt.providers:
        parts.append("provider " + " or ".join(flt.providers))
    if flt.type:
        parts.append(f"type {flt.type}")
    where = " with " + " and ".join(parts) if parts else ""
    if flt.model:
        under = {p for m, p, _ in full.by_key if m == flt.model}
        missing = [p for p in flt.providers if p not in under]
        if missing:
            return f"{', '.join(missing)} has no records under model '{flt.model}' (it has records under: " + \
                ", ".join(sorted({m for m, p, _ in full.by_key if p in missing})) + ")"
        return f"no records under model '{flt.model}'{where}"
    return f"no records{where}"


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


def _keyword_rows(conn, flt: GalleryFilter, after: int, size: int) -> list:
    """Records holding the words, in id order from ``after``: FTS5 walks its rowids in order and stops early."""
    expression = keywords.match_expression(flt.q or "")
    if expression is None:
        return []
    where, params = keywords.KeywordFilter(flt.model, flt.providers, flt.type).where("r")
    columns = ", ".join("r." + c.strip() for c in RECORD_COLUMNS.split(","))
    return conn.execute(
        f"select {columns} from records_fts f cross join records r on r.id = f.rowid "
        f"where records_fts match ? and f.rowid > ?{where} order by f.rowid limit ?",
        [expression, after, *params, size + 1],
    ).fetchall()


def gallery_page(
    conn, flt: GalleryFilter, *, after: int = 0, size: int = DEFAULT_PAGE_SIZE, base_url: str, cache_key: str = "",
    facet_size: int = DEFAULT_FACET_SIZE,
) -> dict:
    """One page of records matching ``flt`` with ids above ``after``, plus facets."""
    counts = facet_counts(conn, cache_key)
    check_filter(counts, flt)
    if flt.q and keywords.match_expression(flt.q) is None:
        flt = dataclasses.replace(flt, q=None)  # punctuation only: no words to look for
    if flt.q and not keywords.has_keyword_index(conn):
        raise InvalidRequestError("this database has no keyword index yet: run `datasette-embeddings load` on it once to add it")
    shown = keyword_counts(conn, flt.q) if flt.q else counts
    uncounted = shown is None
    if flt.q:
        rows = _keyword_rows(conn, flt, after, size)
    else:
        rows = []
        for where, params in _lanes(counts, flt):
            lane = conn.execute(
                f"select {RECORD_COLUMNS} from {where} and id > ? order by id limit ?", [*params, after, size + 1]
            ).fetchall()
            rows = list(heapq.merge(rows, lane, key=lambda r: r[0]))[: size + 1]
    more = len(rows) > size
    rows = rows[:size]
    items = [card(record_from_row(r), None, f"{base_url}/{r[0]}") for r in rows]
    if uncounted:
        # too many matches to count: the facets offer the values, without numbers
        facets, hidden = _facets(counts, flt, facet_size)
        for listed in facets.values():
            for item in listed:
                item["count"] = None
                item.pop("reason", None)
        total = None
    else:
        facets, hidden = _facets(shown, flt, facet_size)
        total = _total(shown, flt)
    return {
        "filters": {"provider": list(flt.providers), "model": flt.model, "type": flt.type, "q": flt.q},
        "total": total,
        "counted": not uncounted,
        "empty_reason": empty_reason(counts, flt) if total == 0 or (total is None and not rows) else None,
        "facets": facets,
        "facets_hidden": hidden,
        "items": items,
        "after": after,
        "size": size,
        "next_after": rows[-1][0] if more else None,
    }


def provider_totals(counts: FacetCounts, model: str | None = None) -> Counter:
    """Records per provider (under ``model`` only, when given)."""
    totals: Counter = Counter()
    for (m, p, _), n in counts.by_key.items():
        if model is None or m == model:
            totals[p] += n
    return totals
