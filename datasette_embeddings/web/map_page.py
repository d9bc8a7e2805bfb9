"""Data behind the map, the clusters pages and "more like these": plain dicts, no HTML.

The map's points travel as compact parallel arrays (``/<db>/-/map.json``):
coordinates quantised to whole numbers ``0..65535`` over the layout's bounds,
providers and types as indexes into short name lists.  A point then costs about
25 bytes of JSON instead of about 120 as an object, so 100,000 points are ~2.5 MB
and a million load in pages of 100,000 that the page draws as they arrive.
"""
from __future__ import annotations

import json
import math
from typing import Sequence

from .gallery import card, neighbour_cards
from ..errors import InvalidRequestError, NotFoundError
from ..search import distribution, maps
from ..search.similarity import MAX_SELECTION, NeighbourFilter, similar_to_records, with_records
from ..storage.store import Store, stored_version

SCALE = 65535
DEFAULT_POINTS_PAGE = 100_000
MAX_POINTS_PAGE = 250_000
DEFAULT_MEMBERS_PAGE = 48
MAX_MEMBERS_PAGE = 200
SAMPLES_PER_CLUSTER = 6
CLUSTER_SORTS = ("size", "diversity", "label", "cluster")


def mapped_models(conn) -> list[str]:
    if not maps.has_tables(conn):
        return []
    return [r[0] for r in conn.execute("select model from projections order by model")]


def resolve_model(conn, label: str | None) -> tuple[str, dict]:
    """The model to show (the first mapped one when none is named) and its stored map status."""
    mapped = mapped_models(conn)
    if label is None:
        if not mapped:
            raise NotFoundError(
                "no model of this database has a map yet: run `datasette-embeddings map DB` before publishing"
            )
        label = mapped[0]
    if Store(conn).model(label) is None:
        known = [m.label for m in Store(conn).models()]
        raise NotFoundError(f"unknown model '{label}' (known: {', '.join(known) or 'none'})")
    status = maps.status(conn, label)
    if status is None:
        raise NotFoundError(f"model '{label}' has no map yet: run `datasette-embeddings map DB --model '{label}'`")
    return label, status


def _legend(conn, label: str) -> tuple[list[str], list[str]]:
    providers = [r[0] for r in conn.execute(
        "select distinct provider from records indexed by records_model_provider where model = ? order by provider", [label]
    )]
    types = [r[0] for r in conn.execute(
        "select distinct type from records indexed by records_model_type where model = ? order by type", [label]
    )]
    return providers, types


def map_page(conn, label: str | None) -> dict:
    """What the map page needs before the points arrive: the model, the legend, the clusters."""
    label, status = resolve_model(conn, label)
    providers, types = _legend(conn, label)
    clusters = maps.cluster_rows(conn, label)
    return {
        "model": label,
        "map": status,
        "models": [{"label": m, "selected": m == label} for m in mapped_models(conn)],
        "providers": providers,
        "types": types,
        "clusters": [{"cluster": c["cluster"], "label": c["label"], "size": c["size"]} for c in clusters],
        "max_selection": MAX_SELECTION,
    }


def map_points(conn, label: str | None, after: int = 0, size: int = DEFAULT_POINTS_PAGE) -> dict:
    """One page of points as parallel arrays (see the module docstring); ``next_after`` pages on."""
    label, status = resolve_model(conn, label)
    providers, types = _legend(conn, label)
    p_index = {p: i for i, p in enumerate(providers)}
    t_index = {t: i for i, t in enumerate(types)}
    x0, x1, y0, y1 = status["bounds"]
    sx = SCALE / (x1 - x0) if x1 > x0 else 0.0
    sy = SCALE / (y1 - y0) if y1 > y0 else 0.0
    rows, next_after = maps.points(conn, label, after, size)
    return {
        "model": label,
        "map": status,
        "providers": providers,
        "types": types,
        "scale": SCALE,
        "count": len(rows),
        "after": after,
        "next_after": next_after,
        "points": {
            "id": [r[0] for r in rows],
            "x": [round((r[1] - x0) * sx) for r in rows],
            "y": [round((r[2] - y0) * sy) for r in rows],
            "cluster": [r[3] for r in rows],
            "provider": [p_index.get(r[4], -1) for r in rows],
            "type": [t_index.get(r[5], -1) for r in rows],
        },
    }


def compact_json(data: dict) -> str:
    """JSON without the spaces Datasette's ``Response.json`` puts after every comma."""
    return json.dumps(data, separators=(",", ":"))


def record_cards(conn, ids: Sequence[int], base_url: str) -> list[dict]:
    """Cards for up to MAX_SELECTION records, in the order asked (for hover and selection previews)."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise InvalidRequestError("name at least one record: ?id=1&id=2...")
    if len(ids) > MAX_SELECTION:
        raise InvalidRequestError(f"at most {MAX_SELECTION} records at once, got {len(ids):,}")
    return [card(found.record, None, f"{base_url}/{found.id}") for found in with_records(conn, [(i, None) for i in ids])]


def _provider_mix(providers: dict[str, int], size: int) -> list[dict]:
    return [
        {"provider": p, "count": n, "share": round(100.0 * n / size, 1) if size else 0.0}
        for p, n in providers.items()
    ]


def clusters_page(conn, label: str | None, sort: str, base_url: str, cluster_url: str) -> dict:
    """Every cluster of the model with its label, size, provider mix and a few previews."""
    if sort not in CLUSTER_SORTS:
        raise InvalidRequestError(f"sort must be one of {', '.join(CLUSTER_SORTS)}, got '{sort[:40]}'")
    label, status = resolve_model(conn, label)
    rows = maps.cluster_rows(conn, label)
    keys = {
        "size": lambda c: (-c["size"], c["cluster"]),
        "diversity": lambda c: (-c["provider_diversity"], -c["provider_count"], -c["size"], c["cluster"]),
        "label": lambda c: (c["label"].lower(), c["cluster"]),
        "cluster": lambda c: c["cluster"],
    }
    rows.sort(key=keys[sort])
    out = []
    for c in rows:
        samples = maps.sample_members(conn, label, c["cluster"], SAMPLES_PER_CLUSTER)
        out.append({
            **{k: c[k] for k in ("cluster", "label", "words", "size", "provider_count", "provider_diversity")},
            "providers": _provider_mix(c["providers"], c["size"]),
            "url": cluster_url(c["cluster"]),
            "samples": record_cards(conn, samples, base_url) if samples else [],
        })
    return {"model": label, "map": status, "sort": sort, "sorts": list(CLUSTER_SORTS), "clusters": out,
            "models": [{"label": m, "selected": m == label} for m in mapped_models(conn)]}


def cluster_page(
    conn, label: str | None, number: int, *, after: int, size: int, base_url: str, cluster_url
) -> dict:
    """One cluster: its summary, a page of members, and the clusters nearest to it."""
    label, status = resolve_model(conn, label)
    c = maps.cluster(conn, label, number)
    if c is None:
        raise NotFoundError(f"model '{label}' has no cluster {number} (it has {status['clusters']}: 0 to {status['clusters'] - 1})")
    ids, next_after = maps.members(conn, label, number, after, size)
    by_number = {row["cluster"]: row for row in maps.cluster_rows(conn, label)}
    nearest = [
        {"cluster": n, "similarity": sim, "label": by_number[n]["label"], "size": by_number[n]["size"], "url": cluster_url(n)}
        for n, sim in maps.nearest_clusters(conn, label, number)
    ]
    return {
        "model": label,
        "map": status,
        "cluster": {**c, "providers": _provider_mix(c["providers"], c["size"]), "url": cluster_url(number)},
        "members": record_cards(conn, ids, base_url) if ids else [],
        "after": after,
        "size": size,
        "next_after": next_after,
        "nearest": nearest,
    }


def more_like_these(conn, ids: Sequence[int], *, k: int, flt: NeighbourFilter, base_url: str) -> dict:
    """The chosen records and the records most similar to their mean (``/-/gallery/similar``)."""
    records, neighbours = similar_to_records(conn, ids, k, flt)
    model = records[0]["model"]
    quantiles = distribution.current(conn, model, stored_version(conn, model))
    similar = with_percentiles(neighbour_cards(neighbours, base_url), quantiles)
    return {
        "model": model,
        "selection": [card(r, None, f"{base_url}/{r['id']}") for r in records],
        "filters": {"k": k, "provider": list(flt.providers), "exclude_provider": list(flt.exclude_providers)},
        "similar": similar,
        "max_selection": MAX_SELECTION,
    }


def with_percentiles(cards: list[dict], quantiles: list[float] | None) -> list[dict]:
    """Add ``percentile`` and its words to each card with a similarity, when a current distribution exists."""
    for c in cards:
        if c.get("similarity") is not None and quantiles:
            pct = distribution.percentile(quantiles, c["similarity"])
            c["percentile"] = None if pct is None else math.floor(pct * 100) / 100  # never rounds up to 100
            c["percentile_text"] = distribution.describe(pct)
        else:
            c.setdefault("percentile", None)
            c.setdefault("percentile_text", None)
    return cards
