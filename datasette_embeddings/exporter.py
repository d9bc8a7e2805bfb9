"""Export records back to the canonical Parquet layout."""
from __future__ import annotations

from typing import Sequence

from .parquet_io import ParquetRecordWriter
from .sqlite_conn import connect
from .store import Store


def export(db_path: str, out_path: str, *, providers: Sequence[str] = (), models: Sequence[str] = ()) -> int:
    """Write the selected records to ``out_path``; vectors come out bit-identical to what was loaded."""
    conn = connect(db_path, readonly=True)
    try:
        store = Store(conn)
        with ParquetRecordWriter(out_path) as writer:
            for record in store.iter_records(providers=providers, models=models):
                record.pop("id")
                writer.write(record)
        return writer.count
    finally:
        conn.close()


def info(db_path: str) -> dict:
    """Providers, models, dimensions and counts of a database."""
    conn = connect(db_path, readonly=True)
    try:
        store = Store(conn)
        return {
            "models": [
                {"label": m.label, "dimensions": m.dimensions, "records": m.record_count, "llm_model_id": m.llm_model_id, "vec_table": m.vec_table}
                for m in store.models()
            ],
            "providers": store.summary(),
            "records": conn.execute("select count(*) from records").fetchone()[0] if store.is_initialised() else 0,
        }
    finally:
        conn.close()
