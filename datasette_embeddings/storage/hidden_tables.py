"""Which tables Datasette should hide: vec0 tables and their shadow tables.

Datasette 0.65 hides a table marked ``hidden`` in metadata, and every table
whose name starts with a hidden one's, so hiding each model's vec0 table also
hides its ``_chunks``, ``_rowids``... shadow tables.  The names are read from
the ``models`` table whenever Datasette opens a connection.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_vec_tables: dict[str, set[str]] = {}


def remember_vec_tables(conn, database: str) -> None:
    try:
        names = {r[0] for r in conn.execute(
            "select name from sqlite_master where type = 'table' and sql like 'CREATE VIRTUAL TABLE%USING vec0%'"
        )}
    except Exception:
        return
    with _lock:
        _vec_tables[database] = names


def hidden_tables_metadata() -> dict:
    with _lock:
        snapshot = {db: sorted(names) for db, names in _vec_tables.items()}
    return {
        "databases": {
            db: {"tables": {name: {"hidden": True} for name in names + ["_sqlite_migrations", "sqlite_sequence"]}}
            for db, names in snapshot.items()
        }
    }
