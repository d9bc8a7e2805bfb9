"""Data behind "compare models": one object's neighbours under two models, and two models' agreement.

Plain dicts, no HTML; the pages and their ``.json`` twins render the same data.
Records are matched across models on their subject, ``(provider, subject_id)``:
the object may be embedded as an image under one model and as its title under another.
"""
from __future__ import annotations

from urllib.parse import quote

from .gallery import card, neighbour_cards
from ..errors import NotFoundError
from ..search import agreement
from ..search.similarity import similar_to_record
from ..storage.store import Store


def counterpart(conn, record: dict, label: str) -> int | None:
    """The record of the same subject under ``label``: the same depiction when it exists, else the lowest id."""
    row = conn.execute(
        "select id from records where provider = ? and subject_id = ? and model = ?"
        " order by depiction_id != ?, id limit 1",
        [record["provider"], record["subject_id"], label, record["depiction_id"]],
    ).fetchone()
    return row[0] if row else None


def other_models(conn, record: dict) -> list[str]:
    """Models other than the record's own that hold its subject (the 'compare with' choices)."""
    return [r[0] for r in conn.execute(
        "select distinct model from records where provider = ? and subject_id = ? and model != ? order by model",
        [record["provider"], record["subject_id"], record["model"]],
    )]


def compare_record(conn, record_id: int, other: str, k: int, base_url: str) -> dict:
    """Two columns: the record's k neighbours under its model and its subject's under ``other``."""
    store = Store(conn)
    record = store.record(record_id)
    if record is None:
        raise NotFoundError(f"no record with id {record_id}")
    if store.model(other) is None:
        known = ", ".join(m.label for m in store.models())
        raise NotFoundError(f"unknown model '{other}' (known: {known})")
    if other == record["model"]:
        raise NotFoundError(f"record {record_id} is already under model '{other}': choose another model to compare with")
    twin_id = counterpart(conn, record, other)
    if twin_id is None:
        raise NotFoundError(
            f"no record of subject {record['subject_id']} ({record['provider']}) under model '{other}'"
        )
    columns = []
    for rid in (record_id, twin_id):
        rec, neighbours = similar_to_record(conn, rid, k)
        columns.append({"record": card(rec, None, f"{base_url}/{rec['id']}"),
                        "model": rec["model"], "similar": neighbour_cards(neighbours, base_url)})
    subjects = [{(c["provider"], c["subject_id"]) for c in col["similar"]} for col in columns]
    for col, others in zip(columns, reversed(subjects)):
        for c in col["similar"]:
            c["both"] = (c["provider"], c["subject_id"]) in others
    return {
        "a": columns[0],
        "b": columns[1],
        "k": k,
        "both": len(subjects[0] & subjects[1]),
        "models": other_models(conn, record),
    }


def agreement_page(conn, a: str, b: str, k: int, base_url: str) -> dict:
    """The stored agreement of two models when current, else computed here if small enough."""
    agreement.check_models(conn, a, b, k)
    result = agreement.stored(conn, a, b, k)
    was_stored = result is not None
    if result is None:
        shared = agreement.shared_subjects(conn, a, b)
        if shared > agreement.PAGE_LIMIT:
            raise NotFoundError(
                f"models '{a}' and '{b}' share {shared:,} subjects, more than a page computes "
                f"({agreement.PAGE_LIMIT:,}): run `datasette-embeddings compare DB --a '{a}' --b '{b}' --k {k}`"
            )
        result = agreement.compare(conn, a, b, k)
    data = result.as_dict()
    for d in data["disagreements"]:
        d["url_a"] = f"{base_url}/{d['record_a']}"
        d["url_b"] = f"{base_url}/{d['record_b']}"
        d["compare_url"] = f"{base_url}/{d['record_a']}/compare?with={quote(b, safe='')}"
        title = conn.execute("select json_extract(attributes, '$.subject_title') from records where id = ?",
                             [d["record_a"]]).fetchone()
        d["title"] = (title[0] if title and title[0] else d["subject_id"])
    return {"agreement": data, "stored": was_stored}
