"""Data behind the record page: one record, its other models, and its neighbours."""
from __future__ import annotations

from typing import Sequence

from ..config import IndexSettings
from ..errors import NotFoundError
from ..search.filters import NeighbourFilter
from ..search.similarity import neighbours_of
from ..storage.store import Store, record_from_row
from .gallery import RECORD_COLUMNS, card, check_filter, facet_counts, neighbour_cards, provider_totals


def sibling_records(conn, record: dict) -> list[dict]:
    """One entry per model the record's *subject* has: where the model switch goes.

    The same depiction under that model when there is one, else the subject's
    first depiction under it, so a painting's image (an image model) and its
    title (a text model) switch into each other although their depictions differ.
    """
    rows = conn.execute(
        "select id, model, depiction_id from records where provider = ? and "
        "(depiction_id = ? or subject_id = ?) order by model, depiction_id != ?, id",
        [record["provider"], record["depiction_id"], record["subject_id"], record["depiction_id"]],
    ).fetchall()
    out: dict[str, dict] = {}
    for rid, model, depiction in rows:
        if model not in out:
            out[model] = {"id": rid, "model": model, "current": rid == record["id"], "depiction_id": depiction}
        elif rid == record["id"]:
            out[model].update(id=rid, current=True, depiction_id=depiction)
    return list(out.values())


#: at most this many other depictions of one object are listed on its page
MAX_DEPICTIONS = 60


def subject_depictions(conn, record: dict, base_url: str) -> list[dict]:
    """The object's other depictions under every model, as cards (this depiction's other models are the model switch)."""
    rows = conn.execute(
        f"select {RECORD_COLUMNS} from records where subject_id = ? and provider = ? and depiction_id != ? "
        "order by model, depiction_id limit ?",
        [record["subject_id"], record["provider"], record["depiction_id"], MAX_DEPICTIONS],
    ).fetchall()
    return [card(record_from_row(r), None, f"{base_url}/{r[0]}") for r in rows]


def find_by_address(conn, provider: str, depiction_id: str, model: str | None) -> int:
    """The record id for a stable address; without a model, an image record first, then by model label."""
    rows = conn.execute(
        "select id, model, type from records where provider = ? and depiction_id = ? order by type != 'image', model",
        [provider, depiction_id],
    ).fetchall()
    if not rows:
        raise NotFoundError(f"no record with provider '{provider}' and depiction_id '{depiction_id}'")
    if model is None:
        return rows[0][0]
    for rid, label, _ in rows:
        if label == model:
            return rid
    raise NotFoundError(
        f"provider '{provider}' depiction '{depiction_id}' has no record under model '{model}' "
        f"(it has: {', '.join(label for _, label, _ in rows)})"
    )


def resolve_record(conn, record_id: int, model: str | None) -> dict:
    """The record to show, read once for the whole page: ``record_id`` itself, or its depiction under ``model``."""
    store = Store(conn)
    record = store.record(record_id)
    if record is None:
        raise NotFoundError(f"no record with id {record_id}")
    if model is None or model == record["model"]:
        return record
    for sibling in sibling_records(conn, record):
        if sibling["model"] == model:
            return store.record(sibling["id"])
    if store.model(model) is None:
        raise NotFoundError(f"unknown model '{model}'")
    raise NotFoundError(f"record {record_id} ({record['provider']} {record['depiction_id']}) has no embedding under model '{model}'")


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
    settings: IndexSettings = IndexSettings(),
) -> dict:
    """A record, its other models, and its k most similar records under the filter."""
    counts = facet_counts(conn, cache_key)
    record = resolve_record(conn, record_id, model)
    flt = NeighbourFilter(tuple(providers), tuple(exclude_providers), record["subject_id"] if exclude_subject else None)
    check_filter(counts, flt)
    neighbours = neighbours_of(conn, record, k, flt, settings)
    this = card(record, None, f"{base_url}/{record['id']}")
    this["attributes"] = {str(key): str(value) for key, value in sorted(record["attributes"].items())}
    return {
        "record": this,
        "models": sibling_records(conn, record),
        "depictions": subject_depictions(conn, record, base_url),
        # only providers with records under this model: another could only return nothing
        "providers": counts.providers_under(record["model"]),
        "provider_counts": provider_totals(counts, record["model"]),
        "filters": {
            "k": k,
            "provider": list(flt.providers),
            "exclude_provider": list(flt.exclude_providers),
            "exclude_subject": flt.exclude_subject is not None,
        },
        "similar": neighbour_cards(neighbours, base_url),
    }
