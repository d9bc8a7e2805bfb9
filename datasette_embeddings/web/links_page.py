"""The links page (``/<db>/-/links``, ``.json``, ``.csv``): stored links, or links computed on the fly.

Rows come from the ``links`` table while the run that wrote them is current (its
data version is the model's).  A stale run is never served silently: the page
says which runs a ``load`` made stale and leaves their rows out.  When no current
run matches the request, the page computes the links on the fly with the same
blocked code as ``datasette-embeddings links`` (:mod:`search.links`), for at most
``links.on_the_fly_max_sources`` source records, and says that it did.

Pages walk with a keyset (``after``, the sort key of the last row shown), never
OFFSET, so page 10,000 costs what page 1 costs and there is no cap on how far a
client walks; the CSV twin streams every matching row.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from .gallery import card
from .params import int_param
from ..config import LinksSettings
from ..errors import InvalidRequestError, NotFoundError
from ..search import distribution, links as engine
from ..storage import judgements
from ..storage.store import Store, record_from_row

DEFAULT_SIZE = 50
MAX_SIZE = 1000
DEFAULT_K = 5
MAX_K = 50
SORTS = ("similarity", "source")
CSV_COLUMNS = (
    "id", "model", "level", "comparison", "similarity", "rank",
    "source_provider", "source_key", "source_id", "source_depiction_id", "source_title",
    "target_provider", "target_key", "target_id", "target_depiction_id", "target_title", "data_version",
)
_COLUMNS = ("id",) + engine.LINK_COLUMNS


@dataclass(frozen=True)
class LinkQuery:
    """What a visitor asked for: filters, sort, keyset position, page size."""

    source: str | None = None
    targets: tuple[str, ...] = ()
    model: str | None = None
    level: str | None = None
    comparison: str | None = None
    min: float | None = None
    max: float | None = None
    sort: str = "similarity"
    after: tuple | None = None
    size: int = DEFAULT_SIZE
    k: int = DEFAULT_K
    judged: str | None = None  # yes, no, or a label: see storage.judgements.judged_sql


# ---------------------------------------------------------------- parameters
def _float(args, name: str) -> float | None:
    raw = args.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or not -1.0 <= value <= 1.0:
        raise InvalidRequestError(f"{name} must be a number from -1 to 1, got '{raw[:40]}'")
    return value


def parse_after(raw: str | None, sort: str) -> tuple | None:
    """The keyset token: JSON ``[similarity, id]`` or ``[source_provider, source_key, rank, id]``."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    shapes = {"similarity": (float, int), "source": (str, str, int, int)}
    shape = shapes[sort]
    if (
        not isinstance(value, list) or len(value) != len(shape)
        or not all(isinstance(v, t) and not isinstance(v, bool) or (t is float and isinstance(v, int) and not isinstance(v, bool))
                   for v, t in zip(value, shape))
    ):
        raise InvalidRequestError(f"after must be the 'next' value of a previous page (sorted by {sort}), got '{raw[:60]}'")
    if sort == "similarity":
        value[0] = float(value[0])
    return tuple(value)


def parse(args) -> LinkQuery:
    """A :class:`LinkQuery` from query-string arguments; bad values name the parameter."""
    level = args.get("level") or None
    if level is not None and level not in engine.LEVELS:
        raise InvalidRequestError(f"level must be one of {', '.join(engine.LEVELS)}, got '{level[:40]}'")
    comparison = args.get("comparison") or None
    if comparison is not None and comparison not in engine.COMPARISONS:
        raise InvalidRequestError(f"comparison must be one of {', '.join(engine.COMPARISONS)}, got '{comparison[:40]}'")
    sort = args.get("sort") or "similarity"
    if sort not in SORTS:
        raise InvalidRequestError(f"sort must be one of {', '.join(SORTS)}, got '{sort[:40]}'")
    low, high = _float(args, "min"), _float(args, "max")
    return LinkQuery(
        source=args.get("from") or None,
        targets=tuple(dict.fromkeys(t for t in args.getlist("to") if t)),
        model=args.get("model") or None,
        level=level,
        comparison=comparison,
        min=low,
        max=high,
        sort=sort,
        after=parse_after(args.get("after"), sort),
        size=int_param(args, "size", DEFAULT_SIZE, 1, MAX_SIZE),
        k=int_param(args, "k", DEFAULT_K, 1, MAX_K),
        judged=judgements.check_judged(args.get("judged")),
    )


# ---------------------------------------------------------------- which runs answer
def runs_status(conn) -> list[dict]:
    """Every stored run with ``current`` (its data version is its model's)."""
    versions: dict[str, str] = {}
    out = []
    for run in engine.stored_runs(conn).values():
        out.append({**run, "current": engine.is_current(conn, run, versions)})
    return sorted(out, key=lambda r: (r["model"], r["level"], r["source_provider"], r["target_provider"]))


def _matches(run: dict, q: LinkQuery) -> bool:
    return (
        (q.model is None or run["model"] == q.model)
        and (q.level is None or run["level"] == q.level)
        and (q.source is None or run["source_provider"] == q.source)
        and (not q.targets or run["target_provider"] in q.targets)
    )


# ---------------------------------------------------------------- stored rows
def _stored_rows(conn, q: LinkQuery, stale: Sequence[dict], limit: int) -> list[dict]:
    where, params = ["1"], []
    for name, column in (("model", "model"), ("level", "level"), ("source", "source_provider"), ("comparison", "comparison")):
        value = getattr(q, name)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if q.targets:
        where.append(f"target_provider in ({', '.join('?' for _ in q.targets)})")
        params.extend(q.targets)
    if q.min is not None:
        where.append("similarity >= ?")
        params.append(q.min)
    if q.max is not None:
        where.append("similarity <= ?")
        params.append(q.max)
    if q.judged:
        term, values = judgements.judged_sql(conn, q.judged)
        where.append(term)
        params.extend(values)
    for run in stale:  # never serve a stale run's rows
        where.append("not (model = ? and level = ? and source_provider = ? and target_provider = ?)")
        params.extend([run["model"], run["level"], run["source_provider"], run["target_provider"]])
    if q.sort == "similarity":
        if q.after is not None:
            # the range term lets SQLite seek in the (similarity desc, id) index instead of walking from the top
            where.append("similarity <= ? and (similarity < ? or id > ?)")
            params.extend([q.after[0], q.after[0], q.after[1]])
        order = "similarity desc, id"
    else:
        if q.after is not None:
            where.append("(source_provider, source_key, rank, id) > (?, ?, ?, ?)")
            params.extend(q.after)
        order = "source_provider, source_key, rank, id"
    sql = f"select {', '.join(_COLUMNS)} from links where {' and '.join(where)} order by {order} limit ?"
    return [dict(zip(_COLUMNS, row)) for row in conn.execute(sql, params + [limit])]


# ---------------------------------------------------------------- links computed on the fly
def _on_the_fly_plan(conn, q: LinkQuery) -> tuple[Any, str, list[str], str] | None:
    """(model, from, to providers, level) to compute for, or None when nothing can be linked."""
    store = Store(conn)
    models = store.models()
    if q.model is not None:
        models = [m for m in models if m.label == q.model]
        if not models:
            known = ", ".join(m.label for m in store.models()) or "no models"
            raise NotFoundError(f"unknown model '{q.model}'; the database has: {known}")
    held: dict[str, list[str]] = {}
    for model, provider in conn.execute("select distinct model, provider from records order by model, provider"):
        held.setdefault(model, []).append(provider)
    for model in models:
        providers = held.get(model.label, [])
        source = q.source if q.source is not None else (providers[0] if providers else None)
        if source not in providers:
            continue
        targets = [t for t in q.targets if t in providers] if q.targets else [p for p in providers if p != source]
        if not targets:
            continue
        return model, source, targets, q.level or "depiction"
    if q.model is not None and q.source is not None:
        raise NotFoundError(f"model '{q.model}' has no records under provider '{q.source}'"
                            if q.source not in held.get(q.model, []) else
                            f"model '{q.model}' has no records under the providers to link to")
    return None


def compute_on_the_fly(conn, q: LinkQuery, max_sources: int) -> tuple[list[dict], dict] | None:
    """All links for the request's (model, from, to, level), computed now; ``(rows, about)``.

    ``about`` says what was computed: model, providers, level, how many source records
    were used of how many.  :func:`links.on_the_fly` keeps recent results, so paging is cheap.
    """
    chosen = _on_the_fly_plan(conn, q)
    if chosen is None:
        return None
    model, source, targets, level = chosen
    found = engine.on_the_fly(conn, model, source, targets, level=level, k=q.k,
                              comparisons=(q.comparison,) if q.comparison else (), max_sources=max_sources)
    out = [dict(zip(_COLUMNS, (i + 1,) + row)) for i, row in enumerate(found.rows)]
    about = {"model": model.label, "from": source, "to": targets, "level": level, "k": q.k,
             "sources_used": found.sources_used, "sources_total": found.sources_total}
    return out, about


def _sort_key(q: LinkQuery):
    if q.sort == "similarity":
        return lambda r: (-r["similarity"], r["id"])
    return lambda r: (r["source_provider"], r["source_key"], r["rank"], r["id"])


def _filter_computed(rows: list[dict], q: LinkQuery) -> list[dict]:
    key = _sort_key(q)
    kept = [
        r for r in rows
        if (q.comparison is None or r["comparison"] == q.comparison)
        and (q.min is None or r["similarity"] >= q.min)
        and (q.max is None or r["similarity"] <= q.max)
    ]
    kept.sort(key=key)
    if q.after is not None:
        mark = key(_row_from_after(q))
        kept = [r for r in kept if key(r) > mark]
    return kept


def _row_from_after(q: LinkQuery) -> dict:
    if q.sort == "similarity":
        return {"similarity": q.after[0], "id": q.after[1]}
    return {"source_provider": q.after[0], "source_key": q.after[1], "rank": q.after[2], "id": q.after[3]}


def after_token(row: dict, sort: str) -> str:
    if sort == "similarity":
        return json.dumps([row["similarity"], row["id"]])
    return json.dumps([row["source_provider"], row["source_key"], row["rank"], row["id"]], ensure_ascii=False)


# ---------------------------------------------------------------- one page
@dataclass
class LinkRows:
    """Raw rows of one page (or one CSV batch) and how they were found."""

    rows: list[dict]
    has_more: bool
    mode: str  # stored | computed | none
    runs: list[dict] = field(default_factory=list)
    stale: list[dict] = field(default_factory=list)
    computed: dict | None = None
    missing: list[str] = field(default_factory=list)  # target providers asked for without stored links


def fetch(conn, q: LinkQuery, settings: LinksSettings, cache_key: str = "") -> LinkRows:
    """One page of raw link rows (``q.size`` of them) for the request."""
    runs = runs_status(conn)
    matching = [r for r in runs if _matches(r, q)]
    current = [r for r in matching if r["current"]]
    stale = [r for r in matching if not r["current"]]
    if current:
        rows = _stored_rows(conn, q, stale, q.size + 1)
        found = LinkRows(rows[: q.size], len(rows) > q.size, "stored", runs, stale)
        if q.model and q.source and q.targets:  # providers asked for that no current run holds
            held = {r["target_provider"] for r in current}
            found.missing = [t for t in q.targets if t not in held and t not in {r["target_provider"] for r in stale}]
        return found
    if not settings.on_the_fly:
        return LinkRows([], False, "none", runs, stale)
    found = compute_on_the_fly(conn, q, settings.on_the_fly_max_sources)
    if found is None:
        return LinkRows([], False, "none", runs, stale)
    rows, about = found
    kept = _filter_computed(rows, q)
    if q.judged:
        kept = judgements.filter_rows(conn, kept, q.judged)
    return LinkRows(kept[: q.size], len(kept) > q.size, "computed", runs, stale, about)


def _records(conn, ids: Sequence[int]) -> dict[int, dict]:
    if not ids:
        return {}
    found = conn.execute(
        "select r.id, r.provider, r.depiction_id, r.subject_id, r.model, r.created, r.attributes "
        "from json_each(?) j join records r on r.id = j.value",
        [json.dumps(sorted(set(int(i) for i in ids)))],
    ).fetchall()
    return {row[0]: record_from_row(row) for row in found}


def _missing(record_id: int) -> dict:
    return {"id": record_id, "provider": "", "depiction_id": str(record_id), "subject_id": "", "model": "", "attributes": {}}


def links_page(conn, q: LinkQuery, settings: LinksSettings, *, record_base: str, cache_key: str = "") -> dict:
    """The page's data: links with both records as cards, the keyset, runs and notices."""
    found = fetch(conn, q, settings, cache_key)
    records = _records(conn, [r["source_id"] for r in found.rows] + [r["target_id"] for r in found.rows])
    links = []
    quantiles: dict[str, list[float] | None] = {}  # per model: where a score falls among random pairs
    for row in found.rows:
        source = records.get(row["source_id"]) or _missing(row["source_id"])
        target = records.get(row["target_id"]) or _missing(row["target_id"])
        model = row["model"]
        if model not in quantiles:  # a fused label has no stored distribution: nothing is shown
            quantiles[model] = distribution.for_model(conn, model) if not model.startswith("fused:") else None
        percent = distribution.percentile(quantiles[model], float(row["similarity"])) if quantiles[model] else None
        links.append({
            **{k: row[k] for k in _COLUMNS},
            "similarity": round(float(row["similarity"]), 6),
            "percentile": None if percent is None else math.floor(percent * 100) / 100,
            "percentile_text": distribution.describe(percent),
            "source": card(source, None, f"{record_base}/{row['source_id']}"),
            "target": card(target, None, f"{record_base}/{row['target_id']}"),
        })
    notices = []
    for run in found.stale:
        notices.append(
            f"The stored {run['level']} links of {run['model']} from {run['source_provider']} to "
            f"{run['target_provider']} are stale: the model's data changed after they were computed. "
            "They are not shown; run datasette-embeddings links again."
        )
    for target in found.missing:
        notices.append(
            f"No links of {q.model} from {q.source} to {target} are stored: run datasette-embeddings links "
            f"--from {q.source} --to {target} to add them."
        )
    if found.mode == "computed":
        c = found.computed
        used = (f"the first {c['sources_used']:,} of {c['sources_total']:,} records"
                if c["sources_used"] < c["sources_total"] else f"all {c['sources_total']:,} records")
        notices.append(
            f"No current links table for {c['model']} from {c['from']}: these {c['level']} links were computed "
            f"on the fly for {used} of {c['from']} (top {c['k']} per comparison type in each provider linked to)."
        )
    return {
        "links": links,
        "next": after_token(found.rows[-1], q.sort) if found.has_more and found.rows else None,
        "mode": found.mode,
        "computed": found.computed,
        "runs": found.runs,
        "notices": notices,
    }


def csv_batch(conn, q: LinkQuery, settings: LinksSettings, cache_key: str = "") -> tuple[list[list], str | None]:
    """One batch of CSV rows from ``q.after`` on, and the keyset to continue from (None: done)."""
    found = fetch(conn, q, settings, cache_key)
    records = _records(conn, [r["source_id"] for r in found.rows] + [r["target_id"] for r in found.rows])
    out = []
    for row in found.rows:
        s = records.get(row["source_id"]) or _missing(row["source_id"])
        t = records.get(row["target_id"]) or _missing(row["target_id"])
        out.append([
            row["id"], row["model"], row["level"], row["comparison"], row["similarity"], row["rank"],
            row["source_provider"], row["source_key"], row["source_id"], s["depiction_id"],
            (s["attributes"] or {}).get("subject_title", ""),
            row["target_provider"], row["target_key"], row["target_id"], t["depiction_id"],
            (t["attributes"] or {}).get("subject_title", ""), row["data_version"],
        ])
    nxt = after_token(found.rows[-1], q.sort) if found.has_more and found.rows else None
    return out, nxt


def with_after(q: LinkQuery, token: str | None, size: int | None = None) -> LinkQuery:
    return replace(q, after=parse_after(token, q.sort), size=size or q.size)


def choices(conn) -> dict:
    """What the filter form offers: models, providers, levels and comparisons."""
    models = [m.label for m in Store(conn).models()]
    providers = [r[0] for r in conn.execute("select distinct provider from records order by provider")]
    fused = sorted({r["model"] for r in engine.stored_runs(conn).values() if r["model"].startswith(engine.FUSED_PREFIX)})
    return {"models": models + fused, "providers": providers, "levels": list(engine.LEVELS),
            "comparisons": list(engine.COMPARISONS), "sorts": list(SORTS), "judged": list(judgements.JUDGED_CHOICES)}
