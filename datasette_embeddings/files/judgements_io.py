"""Judgements to and from CSV or Parquet: how a read-only published site ships its curators' work.

A curator judges links on a writable copy (or in a spreadsheet), exports them,
and the published database imports the file at build time.  Import is all or
nothing: every row is checked (label, level, time, and that both records exist
in the database) before anything is written, in one transaction, so a bad row
leaves the database exactly as it was and the message names the row.
"""
from __future__ import annotations

import csv
import os
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import EmbeddingsError, RecordError
from ..storage import judgements as store_judgements
from ..storage.store import Store

REQUIRED = ("model", "source_provider", "source_key", "target_provider", "target_key", "label")
OPTIONAL = ("level", "note", "judged_by", "judged_at")


class JudgementsFileError(EmbeddingsError):
    """The file, the database or a row cannot be used; the message says which and why."""


def _format(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    raise JudgementsFileError(f"{path}: give a .csv or .parquet file")


def read_rows(path: str) -> Iterator[tuple[int, dict]]:
    """``(row number, {column: text})`` for each data row; row 1 is the first row after a CSV header.

    Columns other than the judgement's own are ignored, so a curator's sheet may
    carry titles and similarities beside the verdicts.
    """
    kind = _format(path)
    if kind == "csv":
        with open(path, newline="", encoding="utf-8-sig") as fp:
            reader = csv.DictReader(fp)
            _check_columns(path, reader.fieldnames or [])
            for number, row in enumerate(reader, start=1):
                yield number, {k: (v if v is None else str(v)) for k, v in row.items() if k is not None}
        return
    table = pq.read_table(path)
    _check_columns(path, table.column_names)
    for number, row in enumerate(table.to_pylist(), start=1):
        yield number, {k: (None if v is None else str(v)) for k, v in row.items()}


def _check_columns(path: str, columns) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise JudgementsFileError(f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(REQUIRED + OPTIONAL)})")


def parse(path: str, judged_by: str | None = None) -> list[store_judgements.Judgement]:
    """Every row of the file as a checked judgement; the first bad row raises RecordError naming it."""
    out = []
    try:
        for number, row in read_rows(path):
            who = (row.get("judged_by") or "").strip() or judged_by
            if not who:
                raise RecordError("judged_by is empty and no --by was given", source=path, row=number, field="judged_by")
            try:
                out.append(
                    store_judgements.make(
                        model=row.get("model") or "", level=row.get("level") or "depiction",
                        source_provider=row.get("source_provider") or "", source_key=row.get("source_key") or "",
                        target_provider=row.get("target_provider") or "", target_key=row.get("target_key") or "",
                        label=row.get("label") or "", note=row.get("note"), judged_by=who,
                        judged_at=(row.get("judged_at") or "").strip() or None,
                    )
                )
            except EmbeddingsError as ex:
                raise RecordError(str(ex), source=path, row=number) from None
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException) as ex:
        raise JudgementsFileError(f"{path}: cannot read ({ex})") from None
    return out


def import_file(db_path: str, path: str, judged_by: str | None = None) -> tuple[int, int]:
    """Add the file's judgements to the database in one transaction: ``(added, already stored)``.

    Nothing is written unless every row is good: rows are parsed, then checked
    against the records inside a transaction that is rolled back on the first
    bad row (and which has then written nothing, not even the schema).
    """
    if not os.path.exists(db_path):
        raise JudgementsFileError(f"{db_path}: no such database")
    rows = parse(path, judged_by)
    store = Store.open(db_path, readonly=False)
    conn = store.conn
    try:
        conn.execute("begin immediate")
        try:
            for number, judgement in enumerate(rows, start=1):
                try:
                    store_judgements.check_records(conn, judgement)
                except EmbeddingsError as ex:
                    raise RecordError(str(ex), source=path, row=number) from None
            store.migrate()  # inside the transaction: the judgements table, if this database predates it
            counts = store_judgements.add(conn, rows)
            conn.execute("commit")
        except BaseException:
            if conn.in_transaction:
                conn.execute("rollback")
            raise
        return counts
    finally:
        conn.close()


def export_file(db_path: str, path: str, *, current_only: bool = False) -> int:
    """Write the database's judgements (the whole history, or each person's current ones) to CSV or Parquet."""
    kind = _format(path)
    conn = Store.open(db_path).conn
    try:
        rows = store_judgements.current(conn) if current_only else store_judgements.history(conn)
    finally:
        conn.close()
    columns = store_judgements.COLUMNS
    partial = path + ".partial"
    try:
        if kind == "csv":
            with open(partial, "w", newline="", encoding="utf-8") as fp:
                writer = csv.writer(fp)
                writer.writerow(columns)
                for j in rows:
                    writer.writerow(["" if v is None else v for v in (getattr(j, c) for c in columns)])
        else:
            table = pa.table({c: pa.array([getattr(j, c) for j in rows], type=pa.string()) for c in columns})
            pq.write_table(table, partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return len(rows)
