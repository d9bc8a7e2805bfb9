"""Data behind the ``/-/embeddings`` overview: each database's models and providers."""
from __future__ import annotations

from ..storage.store import Store, has_tables
from .gallery import facet_counts, provider_totals


def has_embeddings_tables(conn) -> bool:
    """Whether a database is one of ours: our pages and actions show only for those."""
    return has_tables(conn, "records", "models")


def database_overview(conn, cache_key: str = "") -> dict:
    """Models with dimensions and counts, providers with counts, for the overview page."""
    store = Store(conn)
    counts = facet_counts(conn, cache_key)
    providers = provider_totals(counts)
    return {
        "records": sum(providers.values()),
        "models": [
            {"label": m.label, "dimensions": m.dimensions, "records": m.record_count, "llm_model_id": m.llm_model_id}
            for m in store.models()
        ],
        "providers": [{"provider": p, "records": n} for p, n in sorted(providers.items())],
    }
