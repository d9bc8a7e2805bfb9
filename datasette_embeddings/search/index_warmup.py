"""Building the fast index when Datasette starts, so no visitor's query waits for it.

The in-memory index of a model (:mod:`fast_index`) is read from its vec0 table:
about a second per 100,000 x 512 vectors, tens of seconds for a million.  Built on
first use, that time lands on whoever asks the first similarity question, and a
Datasette SQL query may even run out of its time limit meanwhile.  The ``startup``
hook therefore starts one daemon thread that walks every file database Datasette
serves and builds each model's index (``fast_index.warm``: within the memory budget,
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

log = logging.getLogger(__name__)

PLUGIN_NAME = "datasette-embeddings"
THREAD_NAME = "datasette-embeddings-index-warm"


def file_databases(datasette) -> list[tuple[str, bool]]:
    """``(path, immutable)`` of each database Datasette serves from a file (in-memory ones hold no index)."""
    return [
        (db.path, not db.is_mutable)
        for db in datasette.databases.values()
        if db.path and not db.is_memory
    ]


def warm_database(path: str, immutable: bool = False) -> list[str]:
    """Build the indexes of one database file on a connection of our own; the model labels warmed."""
    from . import memory_index as fast_index
    from ..storage import connection as sqlite_conn

    conn = sqlite_conn.connect(path, readonly=True, immutable=immutable)
    try:
        return fast_index.warm(conn)
    finally:
        conn.close()


def _run(databases: list[tuple[str, bool]]) -> None:
    for path, immutable in databases:
        started = time.perf_counter()
        try:
            labels = warm_database(path, immutable)
        except Exception as ex:  # a damaged or foreign file: its queries build (or fail) as before
            log.warning("datasette-embeddings: could not warm the fast index of %s: %s", path, ex)
            continue
        if labels:
            log.info(
                "datasette-embeddings: fast index of %s ready for %s in %.1f s",
                path, ", ".join(labels), time.perf_counter() - started,
            )


def warm_in_background(datasette) -> threading.Thread | None:
    """Start the warm-up thread, unless ``fast_index`` is switched off or ``warm: false``; the thread started.

    Reads the plugin config itself (``prepare_connection`` also does, but may not
    have run yet), so a bad ``fast_index`` block stops Datasette at startup.
    """
    from . import memory_index as fast_index

    settings = fast_index.configure(datasette.plugin_config(PLUGIN_NAME) or {})
    if not (settings.enabled and settings.warm):
        return None
    databases = file_databases(datasette)
    if not databases:
        return None
    thread = threading.Thread(target=_run, args=(databases,), name=THREAD_NAME, daemon=True)
    thread.start()
    return thread
