"""What a database holds, for ``datasette-embeddings info``: models, providers, counts."""
from __future__ import annotations

from ..storage.store import Store


def database_info(db_path: str) -> dict:
    """Providers, models, dimensions and counts of a database."""
    store = Store.open(db_path)
    conn = store.conn
    try:
        conn.execute("begin")  # one snapshot for all the counts
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
