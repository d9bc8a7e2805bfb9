"""Export records back to the canonical Parquet layout."""
from __future__ import annotations

import os
from typing import Sequence

from .parquet_io import ParquetRecordWriter
from ..storage.connection import connect
from ..storage.store import Store


class ExportError(Exception):
    """The database or the selection cannot be exported; the message says why."""


def _open(db_path: str) -> Store:
    """A read-only store, refusing files that are not datasette-embeddings databases."""
    try:
        conn = connect(db_path, readonly=True)
        store = Store(conn)
        initialised = store.is_initialised()
    except Exception as ex:
        raise ExportError(f"{db_path}: cannot open database ({ex})") from None
    if not initialised:
        conn.close()
        raise ExportError(f"{db_path}: not a datasette-embeddings database (no records table)")
    return store


def _check_selection(store: Store, providers: Sequence[str], models: Sequence[str]) -> None:
    """An unknown name is almost always a typo: say so instead of writing an empty file."""
    known_models = {m.label for m in store.models()}
    for label in models:
        if label not in known_models:
            raise ExportError(f"unknown model '{label}' (known: {', '.join(sorted(known_models)) or 'none'})")
    if providers:
        known = {row[0] for row in store.conn.execute("select distinct provider from records")}
        for provider in providers:
            if provider not in known:
                raise ExportError(f"unknown provider '{provider}' (known: {', '.join(sorted(known)) or 'none'})")


def export(db_path: str, out_path: str, *, providers: Sequence[str] = (), models: Sequence[str] = ()) -> int:
    """Write the selected records to ``out_path``; vectors come out bit-identical to what was loaded."""
    store = _open(db_path)
    conn = store.conn
    try:
        _check_selection(store, providers, models)
        # write beside the target and rename: a failed export never leaves half a file
        partial = out_path + ".partial"
        try:
            with ParquetRecordWriter(partial) as writer:
                for record in store.iter_records(providers=providers, models=models):
                    record.pop("id")
                    writer.write(record)
            os.replace(partial, out_path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return writer.count
    finally:
        conn.close()


def info(db_path: str) -> dict:
    """Providers, models, dimensions and counts of a database."""
    store = _open(db_path)
    conn = store.conn
    try:
        return {
            "models": [
                {"label": m.label, "dimensions": m.dimensions, "records": m.record_count, "llm_model_id": m.llm_model_id, "vec_table": m.vec_table}
                for m in store.models()
            ],
            "providers": store.summary(),
            "records": conn.execute("select count(*) from records").fetchone()[0],
        }
    finally:
        conn.close()
