"""Curators' judgements of links: the ``link_judgements`` table and its current view.

A judgement names both records by their natural keys (provider plus depiction_id,
or subject_id for subject-level links) and the model whose link the curator saw,
so it survives a database rebuilt from Parquet and links recomputed with other
settings.  Rows are only added, never updated: the newest row by a person for a
link is that person's current judgement (``link_judgements_current``), the older
rows are the history.

This is the only module that writes SQL for these tables; the file formats live
in ``files/judgements_io.py``, the evaluation in ``search/evaluation.py``.
"""
from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from ..errors import InvalidRequestError, NotFoundError

#: the four verdicts, strongest first (Heritage Weaver's scale)
LABELS = ("same object", "similar object", "same category", "no link")
LEVELS = ("depiction", "subject")
#: the columns of a judgement, in the order files and JSON use them
COLUMNS = (
    "model", "level", "source_provider", "source_key", "target_provider", "target_key",
    "label", "note", "judged_by", "judged_at",
)
FUSED_PREFIX = "fused:"


@dataclass(frozen=True)
class Judgement:
    model: str
    level: str
    source_provider: str
    source_key: str
    target_provider: str
    target_key: str
    label: str
    note: str | None
    judged_by: str
    judged_at: str

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def pair(self) -> tuple[str, str, str, str]:
        return (self.source_provider, self.source_key, self.target_provider, self.target_key)


def now() -> str:
    """The current time as stored: ISO 8601, UTC, whole seconds (sorts as text)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalise_time(value: str) -> str:
    """Any ISO 8601 time as the stored form; a time without a zone is taken as UTC."""
    text = value.strip()
    try:
        parsed = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise InvalidRequestError(f"judged_at must be an ISO 8601 time such as 2026-11-30T12:00:00Z, got '{value[:40]}'")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make(
    *, model: str, source_provider: str, source_key: str, target_provider: str, target_key: str, label: str,
    judged_by: str, level: str = "depiction", note: str | None = None, judged_at: str | None = None,
) -> Judgement:
    """A checked judgement: known label and level, every key present; raises InvalidRequestError naming the field."""
    values = {
        "model": model, "source_provider": source_provider, "source_key": source_key,
        "target_provider": target_provider, "target_key": target_key, "judged_by": judged_by,
    }
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequestError(f"{name} is required")
    label = (label or "").strip()
    if label not in LABELS:
        raise InvalidRequestError(f"unknown label '{label[:40]}'; use one of: {', '.join(LABELS)}")
    level = (level or "depiction").strip()
    if level not in LEVELS:
        raise InvalidRequestError(f"unknown level '{level[:40]}'; use depiction or subject")
    note = note.strip() if isinstance(note, str) and note.strip() else None
    return Judgement(
        model=model.strip(), level=level, source_provider=source_provider.strip(), source_key=source_key.strip(),
        target_provider=target_provider.strip(), target_key=target_key.strip(), label=label, note=note,
        judged_by=judged_by.strip(), judged_at=normalise_time(judged_at) if judged_at else now(),
    )


def table_exists(conn) -> bool:
    return conn.execute("select 1 from sqlite_master where name = 'link_judgements'").fetchone() is not None


def _component_models(label: str) -> list[str] | None:
    """The models a fused label combines (``fused:a+b``), or None for a plain label."""
    if not label.startswith(FUSED_PREFIX):
        return None
    return [part for part in label[len(FUSED_PREFIX):].split("+") if part]


def check_records(conn, judgement: Judgement) -> None:
    """Raise NotFoundError when a side of the link names no record of the database.

    A plain model must hold both records; for a fused label (``fused:a+b``) any of
    the fused models, or any model at all when the label cannot be split.
    """
    column = "depiction_id" if judgement.level == "depiction" else "subject_id"
    components = _component_models(judgement.model)
    if components is None:
        models = [judgement.model]
        if not conn.execute("select 1 from models where label = ?", models).fetchone():
            raise NotFoundError(f"unknown model '{judgement.model}'")
    else:
        models = components
    for side, provider, key in (
        ("source", judgement.source_provider, judgement.source_key),
        ("target", judgement.target_provider, judgement.target_key),
    ):
        placeholders = ",".join("?" for _ in models)
        found = conn.execute(
            f"select 1 from records where provider = ? and {column} = ? and model in ({placeholders}) limit 1",
            [provider, key, *models],
        ).fetchone()
        if found is None:
            raise NotFoundError(
                f"{side} record not in the database: provider '{provider}', {column} '{key}', model '{judgement.model}'"
            )


def add(conn, judgements: Iterable[Judgement]) -> tuple[int, int]:
    """Insert judgements inside the caller's transaction: ``(added, already stored)``.

    A row identical to a stored one (same link, person, time and label) is not
    added twice, so importing an export again changes nothing.
    """
    added = already = 0
    for j in judgements:
        cursor = conn.execute(
            "insert or ignore into link_judgements (model, level, source_provider, source_key, target_provider, "
            "target_key, label, note, judged_by, judged_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [j.model, j.level, j.source_provider, j.source_key, j.target_provider, j.target_key, j.label, j.note,
             j.judged_by, j.judged_at],
        )
        if cursor.rowcount:
            added += 1
        else:
            already += 1
    return added, already


def _rows(conn, sql: str, params: Sequence = ()) -> list[Judgement]:
    return [Judgement(*row) for row in conn.execute(sql, list(params)).fetchall()]


_SELECT = "select " + ", ".join(COLUMNS)


def history(conn) -> list[Judgement]:
    """Every judgement ever stored, oldest first."""
    if not table_exists(conn):
        return []
    return _rows(conn, f"{_SELECT} from link_judgements order by judged_at, id")


def current(conn) -> list[Judgement]:
    """Each person's newest judgement of each link."""
    if not table_exists(conn):
        return []
    return _rows(conn, f"{_SELECT} from link_judgements_current order by judged_at, id")


def for_pairs(conn, level: str, pairs: Sequence[tuple[str, str, str, str]]) -> dict[tuple, list[Judgement]]:
    """Current judgements of the given ``(source_provider, source_key, target_provider, target_key)`` pairs.

    Keyed by pair, newest first, whatever model proposed the link when it was
    judged: whether two records show the same object does not depend on the model
    (the stored model says which model's link the curator was looking at).
    """
    out: dict[tuple, list[Judgement]] = {}
    if not pairs or not table_exists(conn):
        return out
    wanted = set(pairs)
    # one indexed read per distinct source keeps this cheap for a page of links
    for provider, key in sorted({(p[0], p[1]) for p in wanted}):
        for j in _rows(
            conn,
            f"{_SELECT} from link_judgements_current where source_provider = ? and source_key = ? and level = ? "
            "order by judged_at desc, id desc",
            [provider, key, level],
        ):
            if j.pair in wanted:
                out.setdefault(j.pair, []).append(j)
    return out


def verdicts(conn) -> dict[tuple[str, str, str, str, str], Judgement]:
    """One verdict per judged link, ``(level, source_provider, source_key, target_provider, target_key)``.

    The newest current judgement of the pair counts, across people and models: a
    later curator's word replaces an earlier one, as a person's own newer verdict does.
    """
    out: dict[tuple, Judgement] = {}
    for j in current(conn):  # oldest first, so the newest ends up stored
        out[(j.level, *j.pair)] = j
    return out


#: what ``judged=`` accepts on the links page: yes, no, or one label (the link's newest verdict)
JUDGED_CHOICES = ("yes", "no") + LABELS


def check_judged(value: str | None) -> str | None:
    """A ``judged`` filter value, checked; InvalidRequestError names the choices."""
    if value is None or value == "":
        return None
    if value not in JUDGED_CHOICES:
        raise InvalidRequestError(f"judged must be one of {', '.join(JUDGED_CHOICES)}, got '{value[:40]}'")
    return value


def judged_sql(conn, judged: str, table: str = "links") -> tuple[str, list]:
    """A WHERE term keeping the rows of ``table`` (a links-shaped table) that match the filter.

    ``yes``: the pair has a judgement at the link's level (any model, anyone); ``no``:
    it has none; a label: the pair's newest judgement has that label.  One indexed
    lookup per row (the unique index starts with the pair).
    """
    if not table_exists(conn):
        return ("1" if judged == "no" else "0"), []
    pair = (
        f"j.source_provider = {table}.source_provider and j.source_key = {table}.source_key "
        f"and j.target_provider = {table}.target_provider and j.target_key = {table}.target_key and j.level = {table}.level"
    )
    if judged == "yes":
        return f"exists (select 1 from link_judgements j where {pair})", []
    if judged == "no":
        return f"not exists (select 1 from link_judgements j where {pair})", []
    return f"(select j.label from link_judgements j where {pair} order by j.judged_at desc, j.id desc limit 1) = ?", [judged]


def filter_rows(conn, rows: Sequence[dict], judged: str) -> list[dict]:
    """The same filter over link dicts held in memory (links computed on the fly)."""
    found = verdicts(conn)
    out = []
    for row in rows:
        verdict = found.get((row["level"], row["source_provider"], row["source_key"], row["target_provider"], row["target_key"]))
        if (judged == "yes" and verdict) or (judged == "no" and not verdict) or (verdict and verdict.label == judged):
            out.append(row)
    return out
