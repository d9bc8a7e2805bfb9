"""Which llm model embeds queries for a stored model label: the one rule, used everywhere.

Before this module the mapping was written four times with four different rules
(SQL functions, the search page, the overview page, the runtime).  It also let
anonymous SQL name *any* installed llm model, so ``embed_text('3-small', ...)``
spent the operator's paid API key on a model the database does not hold.  The rule:

1. the plugin configuration's ``models`` mapping (label -> llm id) wins;
2. then the database's own ``models.llm_model_id`` column for that label;
3. then the label itself, when llm knows it as a model id or alias and the label is
   one this instance serves: stored in the database, or a configured llm id;
4. any other installed llm model only with ``allow_any_model: true``.
"""
from __future__ import annotations

import asyncio
from typing import Iterable

from ..config import PLUGIN_NAME, EmbeddingConfig
from ..errors import EmbeddingError
from . import runtime


def query_model_id(config: EmbeddingConfig, label: str, *, stored: bool, stored_llm_id: str | None = None) -> str | None:
    """The llm model id for ``label``, or None when no allowed model embeds queries for it."""
    if label in config.models:
        return config.models[label]
    if stored_llm_id:
        return stored_llm_id
    allowed = stored or label in config.models.values() or config.allow_any_model
    if allowed and runtime.is_known(label):
        return label
    return None


def require_query_model(config: EmbeddingConfig, name: str, *, stored: bool, stored_llm_id: str | None = None) -> str:
    """As :func:`query_model_id`, but an error that says how to fix it instead of None."""
    model_id = query_model_id(config, name, stored=stored, stored_llm_id=stored_llm_id)
    if model_id is not None:
        return model_id
    if stored:
        raise EmbeddingError(
            f"model '{name}' is stored in this database but no llm model embeds queries for it: "
            f"set plugins: {PLUGIN_NAME}: models: {{'{name}': <llm model id>}} in metadata.yml"
        )
    if runtime.is_known(name):
        raise EmbeddingError(
            f"model '{name}' is neither stored in this database nor configured, so it may not be used here "
            f"(an operator can allow any installed llm model with plugins: {PLUGIN_NAME}: allow_any_model: true)"
        )
    # the runtime's message lists the installed models
    runtime.get_model(name)
    raise EmbeddingError(f"unknown embedding model '{name}'")  # pragma: no cover - get_model raised


# ---------------------------------------------------------------- the models a server may use

def served_model_ids(config: EmbeddingConfig, stored: Iterable[tuple[str, str | None]]) -> list[str]:
    """The llm models requests may use: the configured ones, then what each stored ``(label, llm id)`` resolves to."""
    ids = list(config.models.values())
    for label, llm_id in stored:
        model_id = query_model_id(config, label, stored=True, stored_llm_id=llm_id)
        if model_id is not None:
            ids.append(model_id)
    return list(dict.fromkeys(ids))


async def load_served_models(datasette, config: EmbeddingConfig) -> list[str]:
    """At startup: start loading every model a request may use, in the background; the llm ids started.

    llm's plugins are imported first, before the server listens (see
    :func:`runtime.import_plugins`).  With ``warm_models: false`` nothing loads now and a
    model starts loading when a request first needs it (that request is told to come
    back).  With ``wait_for_models: true`` startup returns once every load ended.
    """
    from ..storage.store import Store

    if not config.query_embedding or not runtime.import_plugins() or not config.warm_models:
        return []
    stored: list[tuple[str, str | None]] = []
    for name, db in datasette.databases.items():
        if name == "_internal":
            continue
        try:
            models = await db.execute_fn(lambda conn: Store(conn).models())
        except Exception:  # not a datasette-embeddings database (no models table), or unreadable
            continue
        stored += [(m.label, m.llm_model_id) for m in models]
    ids = runtime.load_in_background(served_model_ids(config, stored))
    if config.wait_for_models:
        await asyncio.to_thread(runtime.wait_for_loads, ids)
    return ids
