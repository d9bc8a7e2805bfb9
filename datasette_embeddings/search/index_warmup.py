"""Building the fast index when Datasette starts, so no visitor's query waits for it.

The in-memory index of a model (:mod:`memory_index`) is read from its vec0 table:
about a second per 100,000 x 512 vectors, tens of seconds for a million.  Built on
first use, that time lands on whoever asks the first similarity question, and a
Datasette SQL query may even run out of its time limit meanwhile.  The ``startup``
hook therefore starts one daemon thread that walks every file database Datasette
serves and builds each model's index (``memory_index.warm``: within the memory budget,
never evicting, under the same per-model lock that queries take).

The thread opens its own connection to each file, read-only (``immutable=1`` for
databases Datasette opened immutable, exactly as Datasette does), so it never
holds one of Datasette's connections and never writes.  Any failure is logged
and the database skipped: the indexes are then built on first use as before.
"""
from __future__ import annotations

import logging
import threading
import time

from ..config import IndexSettings
from ..storage.connection import connect
from . import memory_index

log = logging.getLogger(__name__)

THREAD_NAME = "datasette-embeddings-index-warm"


def file_databases(datasette) -> list[tuple[str, bool]]:
    """``(path, immutable)`` of each database Datasette serves from a file (in-memory ones hold no index)."""
    return [
        (db.path, not db.is_mutable)
        for db in datasette.databases.values()
        if db.path and not db.is_memory
    ]


def warm_database(path: str, immutable: bool = False, settings: IndexSettings = IndexSettings()) -> list[str]:
    """Build the indexes of one database file on a connection of our own; the model labels warmed."""
    conn = connect(path, readonly=True, immutable=immutable)
    try:
        return memory_index.warm(conn, settings)
    finally:
        conn.close()


def _run(databases: list[tuple[str, bool]], settings: IndexSettings) -> None:
    for path, immutable in databases:
        started = time.perf_counter()
        try:
            labels = warm_database(path, immutable, settings)
        except Exception as ex:  # a damaged or foreign file: its queries build (or fail) as before
            log.warning("datasette-embeddings: could not warm the fast index of %s: %s", path, ex)
            continue
        if labels:
            log.info(
                "datasette-embeddings: fast index of %s ready for %s in %.1f s",
                path, ", ".join(labels), time.perf_counter() - started,
            )


def build_indexes_in_background(datasette, settings: IndexSettings) -> threading.Thread | None:
    """Start the warm-up thread, unless the fast index is off or ``build_at_startup: false``; the thread started."""
    if not (settings.enabled and settings.build_at_startup):
        return None
    databases = file_databases(datasette)
    if not databases:
        return None
    thread = threading.Thread(target=_run, args=(databases, settings), name=THREAD_NAME, daemon=True)
    thread.start()
    return thread
